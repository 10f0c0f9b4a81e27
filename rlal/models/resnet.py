"""Residual networks (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Two variants share the blocks below:

* :class:`CifarResNet` (paper §4.2), depth 6n+2: a 3x3 conv stem with 16 channels, three stages of n
  :class:`BasicBlock` with 16/32/64 channels (stride 2 at the first block of stages 2 and 3), global average
  pooling and a linear classifier. Registered as ``resnet20``/``resnet32``/``resnet56``/``resnet110``.
* :class:`ImageNetResNet` (paper Table 1): a 7x7 stride-2 stem with 64 channels and a 3x3 stride-2 max-pool,
  four stages with 64/128/256/512 base channels, global average pooling and a linear classifier; ResNet-50
  uses :class:`Bottleneck` blocks in the "v1.5" form (the stride sits on the 3x3 conv, not the first 1x1).
  Registered as ``resnet18``/``resnet34``/``resnet50``.

Shortcuts: where a block changes resolution or width, the shortcut is a 1x1 stride-s conv + BN projection
("option B" in the paper), everywhere else the identity. The paper's CIFAR networks use option A
(zero-padded strided identity), but a projection is what Torch-Pruning's dependency graph handles cleanly
(the block's output channels stay coupled to a real layer) and is the common choice in pruning papers' code.
For the CIFAR networks it adds two 1x1 convs (2,752 parameters, 0.26 M MACs at 32x32), which keeps every
published figure within 1% (ResNet-56: 0.856 M parameters, 125.7 M MACs at 3x32x32 with 10 classes).

Module names follow torchvision (``conv1``, ``layer2.0.conv1``, ``layer2.0.downsample.0``, ``fc``), except
that each ReLU is its own module (``relu1``, ``relu2``...) so that hooks fire once per activation.
"""

from __future__ import annotations

import torch
from torch import nn

from rlal.models.common import check_input_size, init_weights
from rlal.models.registry import register_model


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Option-B shortcut (1x1 conv + BN) when the block changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_channels, planes, stride)
        self.relu2 = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride, "v1.5") -> 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _projection(in_channels, out_channels, stride)
        self.relu3 = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def _stage(block: Block, in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` residual blocks; only the first one may change stride and width."""
    layers = [block(in_channels, planes, stride)]
    layers += [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init(model: nn.Module, zero_init_residual: bool) -> None:
    init_weights(model)
    if zero_init_residual:  # each block starts as the identity (Goyal et al. 2017)
        for m in model.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                nn.init.zeros_(m.last_bn.weight)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (paper §4.2): depth 6n+2 with n basic blocks per stage."""

    def __init__(
        self, depth: int, num_classes: int = 10, in_channels: int = 3, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 56, 110...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(BasicBlock, 16, 16, n, stride=1)
        self.layer2 = _stage(BasicBlock, 16, 32, n, stride=2)
        self.layer3 = _stage(BasicBlock, 32, 64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _init(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ImageNetResNet(nn.Module):
    """ResNet for 224x224 inputs (paper Table 1) with ``layers`` blocks in each of the four stages."""

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        e = block.expansion
        self.layer1 = _stage(block, 64, 64, layers[0], stride=1)
        self.layer2 = _stage(block, 64 * e, 128, layers[1], stride=2)
        self.layer3 = _stage(block, 128 * e, 256, layers[2], stride=2)
        self.layer4 = _stage(block, 256 * e, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * e, num_classes)
        _init(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cifar(
    name: str, depth: int, num_classes: int, in_channels: int, input_size: int, zero: bool
) -> CifarResNet:
    check_input_size(name, input_size, downsamplings=2)
    return CifarResNet(depth, num_classes, in_channels, zero_init_residual=zero)


def _imagenet(
    name: str, block: Block, layers: tuple[int, int, int, int],
    num_classes: int, in_channels: int, input_size: int, zero: bool,
) -> ImageNetResNet:
    check_input_size(name, input_size, downsamplings=5)  # stem conv, max-pool, stages 2-4
    return ImageNetResNet(block, layers, num_classes, in_channels, zero_init_residual=zero)


@register_model(
    "resnet20", family="cifar", description="CIFAR ResNet-20 (He et al. 2016 §4.2), 0.27 M params"
)
def resnet20(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *, zero_init_residual: bool = False
) -> CifarResNet:
    return _cifar("resnet20", 20, num_classes, in_channels, input_size, zero_init_residual)


@register_model(
    "resnet32", family="cifar", description="CIFAR ResNet-32 (He et al. 2016 §4.2), 0.47 M params"
)
def resnet32(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *, zero_init_residual: bool = False
) -> CifarResNet:
    return _cifar("resnet32", 32, num_classes, in_channels, input_size, zero_init_residual)


@register_model(
    "resnet56", family="cifar", description="CIFAR ResNet-56 (He et al. 2016 §4.2), 0.86 M params"
)
def resnet56(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *, zero_init_residual: bool = False
) -> CifarResNet:
    return _cifar("resnet56", 56, num_classes, in_channels, input_size, zero_init_residual)


@register_model(
    "resnet110", family="cifar", description="CIFAR ResNet-110 (He et al. 2016 §4.2), 1.73 M params"
)
def resnet110(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *, zero_init_residual: bool = False
) -> CifarResNet:
    return _cifar("resnet110", 110, num_classes, in_channels, input_size, zero_init_residual)


@register_model("resnet18", family="imagenet", description="ImageNet ResNet-18, basic blocks, 11.7 M params")
def resnet18(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 224, *, zero_init_residual: bool = False
) -> ImageNetResNet:
    return _imagenet(
        "resnet18", BasicBlock, (2, 2, 2, 2), num_classes, in_channels, input_size, zero_init_residual
    )


@register_model("resnet34", family="imagenet", description="ImageNet ResNet-34, basic blocks, 21.8 M params")
def resnet34(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 224, *, zero_init_residual: bool = False
) -> ImageNetResNet:
    return _imagenet(
        "resnet34", BasicBlock, (3, 4, 6, 3), num_classes, in_channels, input_size, zero_init_residual
    )


@register_model(
    "resnet50", family="imagenet", description="ImageNet ResNet-50, bottleneck blocks (v1.5), 25.6 M params"
)
def resnet50(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 224, *, zero_init_residual: bool = False
) -> ImageNetResNet:
    return _imagenet(
        "resnet50", Bottleneck, (3, 4, 6, 3), num_classes, in_channels, input_size, zero_init_residual
    )
