"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

Width multiplier 1.0: a 3x3 conv stem with 32 channels, 17 inverted-residual blocks (paper Table 2), a
1x1 conv to 1280 channels, global average pooling, dropout 0.2 and a linear classifier. Every conv is
followed by BN; activations are ReLU6 except after each block's projection (the linear bottleneck).

* ``mobilenetv2``: the ImageNet network (stem stride 2; total stride 32). At 3x224x224 with 1000 classes:
  3.50 M parameters, 300.8 M MACs.
* ``mobilenetv2-cifar``: the common CIFAR variant (as in kuangliu/pytorch-cifar): stride-1 stem and the
  first stride-2 stage (24 channels) at stride 1, so a 32x32 input reaches the last conv at 4x4 (total
  stride 8). At 3x32x32 with 10 classes: 2.24 M parameters, 88.0 M MACs.

Module names: ``stem.conv``, ``blocks.3.expand.conv``, ``blocks.3.depthwise.conv``,
``blocks.3.project.conv`` (``blocks.0`` has no ``expand``: its expansion factor is 1), ``head.conv``, ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from rlal.models.common import ConvBNAct, check_input_size, init_weights
from rlal.models.registry import register_model

# (expansion t, output channels c, repeats n, stride s of the first block), paper Table 2.
IMAGENET_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    IMAGENET_SETTINGS[0],
    (6, 24, 2, 1),  # stride 2 -> 1 for 32x32 inputs
    *IMAGENET_SETTINGS[2:],
)


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6, carries the stride) -> 1x1 linear projection, with an
    identity shortcut when the block keeps resolution and width."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6) if expansion != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0; ``stem_stride`` and ``settings`` select the ImageNet or CIFAR layout."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem_stride: int = 2,
        settings: tuple[tuple[int, int, int, int], ...] = IMAGENET_SETTINGS,
        last_channels: int = 1280,
        dropout: float = 0.2,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        channels = 32
        self.stem = ConvBNAct(in_channels, channels, 3, stride=stem_stride, activation=nn.ReLU6)
        blocks: list[InvertedResidual] = []
        for t, c, n, s in settings:
            for i in range(n):
                blocks.append(InvertedResidual(channels, c, stride=s if i == 0 else 1, expansion=t))
                channels = c
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(channels, last_channels, 1, activation=nn.ReLU6)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last_channels, num_classes)
        init_weights(self)
        if zero_init_residual:  # residual blocks start as the identity
            for block in self.blocks:
                if block.use_residual:
                    nn.init.zeros_(block.project.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@register_model(
    "mobilenetv2", family="imagenet", description="MobileNetV2 1.0 (Sandler et al. 2018), 3.5 M params"
)
def mobilenetv2(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 224, *, zero_init_residual: bool = False
) -> MobileNetV2:
    check_input_size("mobilenetv2", input_size, downsamplings=5)
    return MobileNetV2(num_classes, in_channels, zero_init_residual=zero_init_residual)


@register_model(
    "mobilenetv2-cifar",
    family="cifar",
    description="MobileNetV2 1.0 for 32x32 inputs (stride-1 stem, total stride 8), 2.2 M params",
)
def mobilenetv2_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *, zero_init_residual: bool = False
) -> MobileNetV2:
    check_input_size("mobilenetv2-cifar", input_size, downsamplings=3)
    return MobileNetV2(
        num_classes, in_channels, stem_stride=1, settings=CIFAR_SETTINGS,
        zero_init_residual=zero_init_residual,
    )
