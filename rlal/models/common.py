"""Pieces shared by the model files: conv-BN-activation blocks, weight initialisation, input-size checks."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from rlal.errors import RlalError


class ConvBNAct(nn.Sequential):
    """``conv`` -> ``bn`` -> ``act`` (no ``act`` child when ``activation`` is None); the conv has no bias,
    since the BN that follows supplies one. Children are named so pruning reads ``<block>.conv``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                groups=groups, bias=False,
            ),
            bn=nn.BatchNorm2d(out_channels),
        )
        if activation is not None:
            layers["act"] = activation(inplace=True)
        super().__init__(layers)


def init_weights(model: nn.Module) -> None:
    """The standard initialisation (as in torchvision): Kaiming-normal (fan_out, ReLU gain) conv weights,
    BN weight 1 and bias 0, linear weights N(0, 0.01) and zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def check_input_size(model: str, input_size: int, downsamplings: int) -> None:
    """Reject an ``input_size`` too small for a network with ``downsamplings`` stride-2 layers.

    The rule: every stride-2 layer must receive a feature map of at least 2x2, i.e. ``input_size`` must
    exceed half the total stride (``2 ** downsamplings // 2``). Smaller inputs would still run through the
    padded convolutions, but the last stages would see pure padding. Fashion-MNIST's 28 passes every model.
    """
    minimum = 2 ** (downsamplings - 1) + 1
    if input_size < minimum:
        raise RlalError(
            f"input_size {input_size} is too small for {model}: its {downsamplings} stride-2 layers "
            f"need an input of at least {minimum}x{minimum}"
        )
