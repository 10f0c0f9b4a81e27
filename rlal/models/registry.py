"""The model registry: names to builder functions, with input validation.

Each model file decorates its builders with :func:`register_model`; :func:`create_model` looks a name up,
checks the arguments that come from the user (class count, channels, input size) and calls the builder as
``builder(num_classes=..., in_channels=..., input_size=...)``. A builder raises :class:`RlalError` itself when
``input_size`` is too small for its architecture (see :func:`rlal.models.common.check_input_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from torch import nn

from rlal.errors import RlalError

Family = Literal["cifar", "imagenet"]
"""What a model is designed for: ``cifar`` (32x32 inputs, also fine at 28x28) or ``imagenet`` (224x224)."""

_FAMILIES = ("cifar", "imagenet")

Builder = Callable[..., nn.Module]
_B = TypeVar("_B", bound=Builder)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, the input family it is designed for, a one-line description and
    the builder ``builder(num_classes, in_channels, input_size) -> nn.Module``."""

    name: str
    family: Family
    description: str
    builder: Builder


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: Family, description: str) -> Callable[[_B], _B]:
    """Decorator that registers a builder under ``name``; the builder is returned unchanged.

    Registering a name twice or an unknown family is a programming error (``ValueError``).
    """
    if family not in _FAMILIES:
        raise ValueError(f"model family must be one of {_FAMILIES}, got {family!r}")

    def decorator(builder: _B) -> _B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name=name, family=family, description=description, builder=builder)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises :class:`RlalError` listing the valid ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise RlalError(f"unknown model {name!r} (valid: {', '.join(list_models())})") from None


def create_model(
    name: str, *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32
) -> nn.Module:
    """Build a freshly initialised model ``name`` for ``num_classes`` classes and ``in_channels`` x
    ``input_size`` x ``input_size`` inputs. Bad arguments raise :class:`RlalError` naming the argument."""
    entry = model_entry(name)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("input_size", input_size)
    return entry.builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size)


def _check_positive_int(argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RlalError(f"{argument} must be a positive integer, got {value!r}")
