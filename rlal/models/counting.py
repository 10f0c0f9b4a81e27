"""MACs and parameter counts of a model.

What is counted, for one forward pass of a single image:

* **MACs**: multiply-accumulates of ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` and ``nn.Linear`` layers (and
  their subclasses), only. A conv contributes ``output elements * (in_channels / groups) * kernel volume``
  (so a depthwise 3x3 conv costs 9 per output element), a linear layer ``output elements * in_features``.
  Biases, BN, activations, pooling, dropout, residual additions and any functional op are **not** counted.
  A layer run twice in one forward pass is counted twice. This is the convention of the pruning
  literature's "FLOPs" tables (ResNet-56: 125 M, ResNet-50: 4.1 G) and what this project calls MACs.
* **params**: elements of every parameter of the model (trainable or frozen, each shared tensor once);
  buffers such as BN running statistics are not parameters.

Why not ``torch_pruning.utils.count_ops_and_params``: it is a ptflops port that also counts two ops per BN
element, one per ReLU/ReLU6 element, one per pooled input element and every bias addition, so its total
mixes MACs with element-wise ops (ResNet-56: 127.4 M rather than 125.7 M conv+linear MACs; and a ReLU
written as ``F.relu`` would count nothing while an ``nn.ReLU`` counts). It also matches layer types
exactly (a subclass of ``nn.Conv2d`` counts zero), deep-copies the whole model on every call (twice the
memory of a large model on a GPU) and returns a float. Forward hooks give an exact, documented figure.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlal.errors import RlalError

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_macs_params(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """``(MACs, params)`` of ``model`` on one ``C, H, W`` image (see the module docstring for what counts).

    The model runs once on a zero tensor on its own device and floating dtype, in eval mode (so BN running
    statistics are not updated) under ``torch.no_grad``; every module's train/eval flag is restored after,
    and nothing else about the model changes.
    """
    if len(input_shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in input_shape):
        raise RlalError(f"input shape must be three positive integers C, H, W, got {tuple(input_shape)!r}")
    params = sum(p.numel() for p in model.parameters())

    macs = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(module, _CONV_TYPES)
        macs += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    def linear_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        assert isinstance(module, nn.Linear)
        macs += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, _CONV_TYPES):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))

    device, dtype = _device_and_dtype(model)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes:
            m.training = training
    return macs, params


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the model's first parameter (or buffer) and its first floating-point dtype."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    return device, dtype
