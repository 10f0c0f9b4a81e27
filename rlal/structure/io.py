"""Save and load pruned models: an architecture spec (JSON) plus the weights (safetensors), in one directory.

    <directory>/spec.json              how to rebuild the dense model, residual policy, input shape,
                                        keep count per layer, optional class names
    <directory>/weights.safetensors    the pruned model's state dict

:func:`load_pruned` rebuilds the dense model (a zoo name with its ``num_classes``/``in_channels``/
``input_size``, or for a user model an importable factory ``"package.module:function"`` called with the
JSON ``kwargs``; or, for a spec saved without an architecture, the dense model instance the caller passes),
finds its layers under the saved policy, cuts every layer to its saved width (which channel
indices does not matter: the weights overwrite them) and loads the weights. Nothing is unpickled: no
``torch.load`` at all. Note that a factory spec imports and calls that function, so load specs you trust.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlal.checkpoint import atomic_write
from rlal.errors import RlalError
from rlal.structure.layers import POLICIES, Policy, find_layers
from rlal.structure.plan import Plan
from rlal.structure.surgery import cut
from rlal.structure.trace import check_input_shape

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "rlal-pruned-model/1"


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

    def build(self) -> nn.Module:
        """A freshly built dense model."""
        if self.model is not None:
            from rlal.models import create_model  # the zoo is only needed for zoo specs

            try:
                return create_model(self.model, **dict(self.kwargs))
            except TypeError as exc:
                raise RlalError(f"bad arguments for zoo model {self.model}: {exc}") from None
        module_name, _, function = (self.factory or "").partition(":")
        if not module_name or not function:
            raise RlalError(f"factory must look like 'package.module:function', got {self.factory!r}")
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


def load_pruned(directory: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the pruned model saved in ``directory`` (see the module docstring), in eval mode, on the
    CPU. ``model`` is the dense architecture to cut (any weights; it is not modified), needed only when
    the spec records none. A missing or corrupt spec or weights file, or weights whose shapes do not match
    the saved widths, raise :class:`RlalError` naming the file."""
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC_FILE, directory / WEIGHTS_FILE
    arch, policy, input_shape, keep = _read_spec(spec_path)
    if arch is None and model is None:
        raise RlalError(
            f"{spec_path} was saved from a model instance without a factory: pass the dense model, "
            f"load_pruned({str(directory)!r}, model=YourNet(...))"
        )
    try:
        dense = copy.deepcopy(model).cpu() if model is not None else arch.build()
        structure = find_layers(dense, input_shape, policy=policy)
        missing = [name for name in structure.names if name not in keep]
        if missing:
            raise RlalError(f"no keep count for layer {missing[0]} of the rebuilt model")
        plan = Plan.from_keep_counts(structure, keep)
    except RlalError as exc:
        raise RlalError(f"{spec_path}: {exc}") from None
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
