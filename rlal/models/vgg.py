"""VGG-16 with batch normalisation, CIFAR variant (Simonyan & Zisserman 2015, configuration D).

Thirteen 3x3 conv + BN + ReLU layers in five stages of 64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3
channels, each stage closed by a 2x2 stride-2 max-pool; then the common CIFAR head: adaptive average
pooling to 1x1 and one ``Linear(512, num_classes)`` (instead of the ImageNet 4096-4096 classifier).

Two small departures from the usual CIFAR code, neither changing anything at 32x32:

* the convs have no bias (the BN after each supplies one), saving 4,224 redundant parameters;
* the max-pools use ``ceil_mode=True``, so 28x28 inputs (Fashion-MNIST) go 28-14-7-4-2-1 instead of
  shrinking to 0x0 at the fifth pool; at 32x32 ceil and floor give the same 32-16-8-4-2-1.

At 3x32x32 with 10 classes: 14.72 M parameters, 313.2 M MACs. Module names read ``features.conv4_2``,
``features.bn4_2``, ``features.pool4``..., with the classifier at ``fc``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from rlal.models.common import check_input_size, init_weights
from rlal.models.registry import register_model

VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)
)
"""Output channels of each conv, stage by stage; a max-pool follows every stage."""


class VGG(nn.Module):
    """Plain conv stack (``features``) + global average pooling + linear classifier (``fc``)."""

    def __init__(
        self, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for s, widths in enumerate(stages, start=1):
            for i, width in enumerate(widths, start=1):
                layers[f"conv{s}_{i}"] = nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False)
                layers[f"bn{s}_{i}"] = nn.BatchNorm2d(width)
                layers[f"relu{s}_{i}"] = nn.ReLU(inplace=True)
                channels = width
            layers[f"pool{s}"] = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model(
    "vgg16-bn", family="cifar", description="VGG-16 with BN, CIFAR head (avg-pool + 1 FC), 14.7 M params"
)
def vgg16_bn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> VGG:
    check_input_size("vgg16-bn", input_size, downsamplings=len(VGG16_STAGES))
    return VGG(VGG16_STAGES, num_classes, in_channels)
