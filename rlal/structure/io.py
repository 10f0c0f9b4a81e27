"""Save and load pruned models: an architecture spec (JSON) plus the weights (safetensors), in one directory.

    <directory>/spec.json              how to rebuild the dense model, residual policy, input shape,
                                        keep count per layer, optional class names
    <directory>/weights.safetensors    the pruned model's state dict

:func:`load_pruned` rebuilds the dense model (a zoo name with its ``num_classes``/``in_channels``/
``input_size``; or the dense model instance the caller passes; or, only with ``trust_factory=True``, a user
factory ``"package.module:function"`` called with the JSON ``kwargs``), finds its layers under the saved
policy, cuts every layer to its saved width (which channel indices does not matter: the weights overwrite
them) and loads the weights.

**What loading trusts.** The weights are read with safetensors, never unpickled, and a zoo spec only picks
one of rlal's own models and its sizes. But a spec is data from wherever the directory came from, and a
factory spec names code: loading it imports that module and calls that function with the spec's arguments
(``os:system`` with ``{"command": ...}`` would run a shell command). So a factory is never imported unless
the caller either passes the dense model (then the spec's factory is ignored) or opts in with
``trust_factory=True`` (``--trust-factory`` on the command line); without that, such a spec raises
:class:`~rlal.errors.UntrustedFactory` before anything is imported. Even with the opt-in, a module lying
in the pruned directory itself is refused: the factory must come from an installed package or a path the
user put on ``sys.path``.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlal.checkpoint import atomic_write
from rlal.errors import RlalError, UntrustedFactory
from rlal.structure.layers import POLICIES, Policy, find_layers
from rlal.structure.plan import Plan
from rlal.structure.surgery import cut
from rlal.structure.trace import check_input_shape

MAX_CLASSES = 100_000
"""Most classes a loaded model may have (ImageNet-21k has 21,841): a classifier's weights grow with it."""
MAX_INPUT_CHANNELS = 64
MAX_INPUT_SIDE = 4096
MAX_INPUT_VALUES = 1 << 24
"""Most values of one input example (``3 x 2364 x 2364``): loading traces the model on one example, and its
activations grow with it."""

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "rlal-pruned-model/1"
TRUST_HINT = "pass trust_factory=True (--trust-factory on the command line) or the dense model (model=...)"

# Dotted identifiers only: no relative imports, no paths, nothing importlib would read another way.
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class ArchSpec:
    """How to rebuild a dense model: a zoo ``model`` name or a ``factory`` (``"package.module:function"``),
    with JSON-serialisable keyword arguments."""

    model: str | None = None
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def zoo(cls, name: str, *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ArchSpec:
        """A model of the zoo, built with ``rlal.models.create_model(name, ...)``."""
        kwargs = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
        return cls(model=name, kwargs=kwargs)

    @classmethod
    def from_factory(cls, target: str, **kwargs: Any) -> ArchSpec:
        """A user model built by calling the importable function ``target``
        (``"package.module:function"``) with ``kwargs``."""
        return cls(factory=target, kwargs=kwargs)

    def build(self, *, trust_factory: bool = False) -> nn.Module:
        """A freshly built dense model. A factory spec imports and calls the factory, so it needs
        ``trust_factory=True``; without it :class:`UntrustedFactory` is raised and nothing is imported."""
        if self.model is not None:
            from rlal.models import create_model  # the zoo is only needed for zoo specs

            check_zoo_sizes(self.kwargs)
            try:
                return create_model(self.model, **dict(self.kwargs))
            except TypeError as exc:
                raise RlalError(f"bad arguments for zoo model {self.model}: {exc}") from None
        module_name, function = self._factory_parts()
        if not trust_factory:
            raise UntrustedFactory(
                f"the spec names the factory {self.factory!r}, code that loading would import and run; "
                f"if you trust it, {TRUST_HINT}"
            )
        try:
            builder = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise RlalError(f"cannot import factory {self.factory}: {exc}") from None
        try:
            model = builder(**dict(self.kwargs))
        except RlalError:
            raise
        except Exception as exc:  # the user's factory can raise anything
            raise RlalError(f"factory {self.factory} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise RlalError(f"factory {self.factory} returned {type(model).__name__}, not an nn.Module")
        return model

    def accepted_keywords(self, names: list[str], *, trust_factory: bool = False) -> list[str]:
        """Which of ``names`` the factory's signature takes as keywords (all of them for ``**kwargs``).
        Imports the factory's module, so it needs ``trust_factory=True`` as :meth:`build` does."""
        module_name, function = self._factory_parts()
        if not trust_factory:
            raise UntrustedFactory(f"reading the factory {self.factory!r} imports its code; {TRUST_HINT}")
        try:
            builder = getattr(importlib.import_module(module_name), function)
            parameters = inspect.signature(builder).parameters.values()
        except (ImportError, AttributeError) as exc:
            raise RlalError(f"cannot import factory {self.factory}: {exc}") from None
        except (TypeError, ValueError):  # no signature to read (a builtin): pass nothing
            return []
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return list(names)
        keywords = {p.name for p in parameters
                    if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
        return [name for name in names if name in keywords]

    def factory_origin(self) -> Path | None:
        """Where the factory's top-level module would be imported from (its file or package directory),
        found without running any of its code; None for a zoo spec or a module not found."""
        if self.factory is None:
            return None
        top = self._factory_parts()[0].partition(".")[0]
        try:
            found = importlib.util.find_spec(top)  # a top-level name: located, not executed
        except (ImportError, ValueError):
            return None
        if found is None:
            return None
        if found.origin not in (None, "built-in", "frozen"):
            return Path(found.origin)
        locations = list(found.submodule_search_locations or [])  # a namespace package has no origin
        return Path(locations[0]) if locations else None

    def _factory_parts(self) -> tuple[str, str]:
        if not isinstance(self.factory, str) or not _FACTORY.fullmatch(self.factory):
            raise RlalError(f"factory must look like 'package.module:function', got {self.factory!r}")
        module_name, _, function = self.factory.partition(":")
        return module_name, function

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        head = {"model": self.model} if self.model is not None else {"factory": self.factory}
        return {**head, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: object) -> ArchSpec:
        """Parse the JSON form; raises RlalError (the caller adds the file name)."""
        if not isinstance(data, dict) or ("model" in data) == ("factory" in data):
            raise RlalError("'arch' must be an object with either 'model' or 'factory'")
        kwargs = data.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise RlalError("'arch.kwargs' must be an object")
        name = data.get("model", data.get("factory"))
        if not isinstance(name, str):
            raise RlalError("'arch.model' / 'arch.factory' must be a string")
        return cls(model=name, kwargs=kwargs) if "model" in data else cls(factory=name, kwargs=kwargs)


def check_zoo_sizes(kwargs: Mapping[str, Any]) -> None:
    """Refuse zoo-model arguments too large to be a real model (``num_classes`` of a billion, an input of
    a million pixels a side) before anything is allocated: a spec is untrusted input, and building such a
    model would try to allocate terabytes. Raises :class:`RlalError` naming the argument and the limit."""
    limits = {"num_classes": MAX_CLASSES, "in_channels": MAX_INPUT_CHANNELS, "input_size": MAX_INPUT_SIDE}
    for name, limit in limits.items():
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise RlalError(f"{name}={value:,} is larger than any model rlal loads (at most {limit:,})")


def check_input_size(shape: Sequence[int]) -> None:
    """Refuse an input shape too large to trace (see :data:`MAX_INPUT_VALUES`), naming the limit."""
    channels, sides = (shape[0], shape[1:]) if len(shape) > 1 else (1, shape)
    too_large = (
        channels > MAX_INPUT_CHANNELS or max(sides) > MAX_INPUT_SIDE or math.prod(shape) > MAX_INPUT_VALUES
    )
    if too_large:
        raise RlalError(
            f"'input_shape' {list(shape)} is larger than any input rlal loads a model for (at most "
            f"{MAX_INPUT_CHANNELS} channels, {MAX_INPUT_SIDE:,} a side, {MAX_INPUT_VALUES:,} values)"
        )


def save_pruned(
    directory: str | Path,
    model: nn.Module,
    *,
    arch: ArchSpec | None,
    plan: Plan,
    input_shape: Sequence[int],
    policy: Policy = "internal",
    classes: Sequence[str] | None = None,
) -> Path:
    """Write ``model`` (cut from ``arch`` by ``plan`` under ``policy``) to ``directory``: ``spec.json`` and
    ``weights.safetensors``, each written atomically. Returns the directory. ``arch=None`` (a user's model
    instance with no importable factory) saves no way to rebuild the dense model: loading then needs it."""
    if policy not in POLICIES:
        raise RlalError(f"residual policy must be one of {POLICIES}, got {policy!r}")
    input_shape = check_input_shape(tuple(input_shape))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "format": FORMAT,
        "arch": arch.to_dict() if arch is not None else None,
        "policy": policy,
        "input_shape": [int(d) for d in input_shape],
        "keep": plan.to_dict(),
    }
    if classes is not None:
        spec["classes"] = [str(c) for c in classes]
    try:
        text = json.dumps(spec, indent=2) + "\n"
    except TypeError as exc:
        raise RlalError(f"architecture kwargs must be JSON-serialisable: {exc}") from None
    # clone(): safetensors refuses tensors sharing storage (tied weights); loading fills both names again.
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write(directory / SPEC_FILE, lambda path: path.write_text(text))
    return directory


def load_pruned(
    directory: str | Path, model: nn.Module | None = None, *, trust_factory: bool = False
) -> nn.Module:
    """Rebuild the pruned model saved in ``directory`` (see the module docstring), in eval mode, on the
    CPU. ``model`` is the dense architecture to cut (any weights; it is not modified), needed when the spec
    records none; given, it is used instead of the spec's architecture. A spec naming a factory is loaded
    only with ``model`` or ``trust_factory=True`` (otherwise :class:`~rlal.errors.UntrustedFactory`, and
    nothing is imported); a factory module inside ``directory`` is refused even then. A missing or corrupt
    spec or weights file, or weights whose shapes do not match the saved widths, raise :class:`RlalError`
    naming the file."""
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC_FILE, directory / WEIGHTS_FILE
    arch, policy, input_shape, keep = _read_spec(spec_path)
    if arch is None and model is None:
        raise RlalError(
            f"{spec_path} was saved from a model instance without a factory: pass the dense model, "
            f"load_pruned({str(directory)!r}, model=YourNet(...))"
        )
    try:
        if model is None:
            _check_factory_source(arch, directory, trust_factory)
        dense = copy.deepcopy(model).cpu() if model is not None else arch.build(trust_factory=trust_factory)
        structure = find_layers(dense, input_shape, policy=policy)
        missing = [name for name in structure.names if name not in keep]
        if missing:
            raise RlalError(f"no keep count for layer {missing[0]} of the rebuilt model")
        plan = Plan.from_keep_counts(structure, keep)
    except RlalError as exc:
        raise type(exc)(f"{spec_path}: {exc}") from None
    # Any channels will do for the shapes; the weights overwrite them.
    model = cut(structure, kept={name: range(k) for name, k in plan.items()})
    state = _read_weights(weights_path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        which = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise RlalError(f"{weights_path}: tensors do not match the architecture in {SPEC_FILE} ({which})")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise RlalError(
                f"{weights_path}: {key} has shape {list(state[key].shape)} but the widths in {SPEC_FILE} "
                f"give {list(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _check_factory_source(arch: ArchSpec, directory: Path, trust_factory: bool) -> None:
    """Refuse a trusted factory whose module would come from the pruned directory itself: code shipped
    with a model is never imported just because that directory is on ``sys.path`` (the working directory,
    say)."""
    if arch.factory is None or not trust_factory:
        return  # a zoo spec imports nothing; an untrusted factory is refused by ArchSpec.build
    origin = arch.factory_origin()
    if origin is not None and origin.resolve().is_relative_to(directory.resolve()):
        raise UntrustedFactory(
            f"the factory {arch.factory!r} would be imported from {origin}, inside the pruned model's own "
            "directory; install its module or put it on PYTHONPATH elsewhere"
        )


def _read_spec(path: Path) -> tuple[ArchSpec | None, Policy, tuple[int, ...], dict[str, int]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RlalError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RlalError(f"{path}: not a readable JSON spec ({exc})") from None
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RlalError(f"not a pruned-model spec (expected format {FORMAT!r})")
        if "arch" not in data:
            raise RlalError("no 'arch' entry (null for a model saved without a factory)")
        arch = None if data["arch"] is None else ArchSpec.from_dict(data["arch"])
        policy = data.get("policy")
        if policy not in POLICIES:
            raise RlalError(f"'policy' must be one of {POLICIES}")
        shape = data.get("input_shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise RlalError("'input_shape' must be a list of positive integers")
        check_input_size(shape)
        if arch is not None and arch.model is not None:
            check_zoo_sizes(arch.kwargs)  # before anything is built
        keep = data.get("keep")
        if not isinstance(keep, dict) or not all(isinstance(v, int) for v in keep.values()):
            raise RlalError("'keep' must map layer names to integer keep counts")
    except RlalError as exc:
        raise RlalError(f"{path}: {exc}") from None
    return arch, policy, tuple(shape), keep


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RlalError(f"{path}: no such file")
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers and data
        raise RlalError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None
