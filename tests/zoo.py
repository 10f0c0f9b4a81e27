"""A test-only zoo of small CNNs that are not in ``rlal.models`` (issue 13): what a user might bring.

Each entry says what pruning must do with the net: the layers that must be skipped, with a fragment of the
reason (every other layer is pruned, and masked and cut must agree), or the message of the up-front refusal
when nothing is left to prune. The nets are tiny (a few thousand parameters, 16 x 16 inputs) so that the
tests over the whole zoo stay fast. ``tests/test_any_cnn.py`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SHAPE = (3, 16, 16)
CLASSES = 10


def conv_bn(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act()
    )


class Head(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


# --- grouped convolutions ------------------------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    """1x1 reduce -> grouped 3x3 -> 1x1 expand, added to the input."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.reduce = conv_bn(channels, width, 1)
        self.grouped = conv_bn(width, width, 3, groups=groups)
        self.expand = nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.expand(self.grouped(self.reduce(x))))


class ResNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.Sequential(ResNeXtBlock(16, 16, groups=4), ResNeXtBlock(16, 24, groups=8))
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# --- channel split, chunk, slice, shuffle ---------------------------------------------------------------


class SplitNet(nn.Module):
    """``torch.split`` of the stem's channels into two branches of fixed sizes, concatenated again."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.left = conv_bn(16, 16)
        self.right = conv_bn(16, 24)
        self.head = Head(40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.stem(x), 16, dim=1)
        return self.head(torch.cat([self.left(a), self.right(b)], 1))


class ChunkNet(nn.Module):
    """A ShuffleNetV2-style unit without the shuffle: half the channels pass, half go through a branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.branch = nn.Sequential(conv_bn(16, 16, 1), conv_bn(16, 16, 3, groups=16), conv_bn(16, 16, 1))
        self.mix = conv_bn(32, 24)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, rest = self.stem(x).chunk(2, dim=1)
        return self.head(self.mix(torch.cat([kept, self.branch(rest)], 1)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNet(nn.Module):
    """ShuffleNet v1 style: grouped 1x1 conv, channel shuffle, depthwise 3x3, grouped 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24)
        self.gconv1 = conv_bn(24, 24, 1, groups=3)
        self.depthwise = conv_bn(24, 24, 3, groups=24)
        self.gconv2 = conv_bn(24, 24, 1, groups=3)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channel_shuffle(self.gconv1(self.stem(x)), 3)
        return self.head(self.gconv2(self.depthwise(x)))


class SliceNet(nn.Module):
    """Slices the channels by index: the first 8 go on, the rest are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = conv_bn(8, 16)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)[:, :8]))


class PixelShuffleNet(nn.Module):
    """Sub-pixel upsampling: ``pixel_shuffle`` turns 4 channels into one at twice the resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2)
        self.to_pixels = nn.Conv2d(16, 32, 3, padding=1)
        self.body = conv_bn(8, 16)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(F.pixel_shuffle(self.to_pixels(self.stem(x)), 2)))


class GatherNet(nn.Module):
    """Reverses the channel order with ``torch.gather``, an operation rlal does not recognise: only the
    masked-vs-cut check can catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = conv_bn(16, 16)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        order = torch.arange(x.shape[1] - 1, -1, -1, device=x.device).view(1, -1, 1, 1).expand_as(x)
        return self.head(self.body(torch.gather(x, 1, order)))


class AllShuffled(nn.Module):
    """Every conv's channels go through a channel shuffle: nothing is left to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 16)
        self.conv2 = conv_bn(16, 16)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channel_shuffle(self.conv2(channel_shuffle(self.conv1(x), 4)), 4)
        return self.head(x)


class OptionABlock(nn.Module):
    """A CIFAR ResNet block with the "option A" shortcut: the input is subsampled and zero-padded with
    extra channels (``F.pad`` on the channel dimension) instead of going through a 1x1 conv."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.pad = (cout - cin) // 2
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(self.conv2(self.conv1(x)) + shortcut)


class OptionAResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.blocks = nn.Sequential(OptionABlock(8, 8, 1), OptionABlock(8, 16, 2))
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# --- concatenation, branches, skips ---------------------------------------------------------------------


class DenseNet(nn.Module):
    """A DenseNet block: every layer reads the concatenation of all earlier outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.layers = nn.ModuleList([conv_bn(16 + 8 * i, 8) for i in range(3)])
        self.transition = conv_bn(40, 24, 1)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(self.transition(torch.cat(features, 1)))


class ParallelBranches(nn.Module):
    """Two parallel branches (3x3 and dilated 3x3) summed, then a third in parallel with the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.narrow = conv_bn(16, 24)
        self.wide = nn.Sequential(
            nn.Conv2d(16, 24, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(24), nn.ReLU()
        )
        self.pool_branch = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_bn(24, 8, 1))
        self.conv_branch = conv_bn(24, 8, 3)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.narrow(x) + self.wide(x)
        return self.head(torch.cat([self.pool_branch(x), self.conv_branch(x)], 1))


class UNet(nn.Module):
    """Two-level U-Net: the decoder concatenates the upsampled bottleneck with the encoder's skip; the
    second decoder upsamples with a transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = conv_bn(3, 8)
        self.enc2 = conv_bn(8, 16, stride=2)
        self.bottleneck = conv_bn(16, 16, stride=2)
        self.dec2 = conv_bn(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = conv_bn(16, 8)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        b = self.bottleneck(e2)
        d2 = self.dec2(torch.cat([e2, F.interpolate(b, scale_factor=2.0, mode="nearest")], 1))
        return self.head(self.dec1(torch.cat([e1, self.up1(d2)], 1)))


# --- gating, separable convs, heads, activations --------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        s = self.gate(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * s.view(n, c, 1, 1)


class SENet(nn.Module):
    """Conv blocks with squeeze-excitation: the block's channels are multiplied by a learned gate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.conv = conv_bn(16, 32)
        self.se = SqueezeExcite(32, 8)
        self.out = conv_bn(32, 24)
        self.head = Head(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.out(self.se(self.conv(self.stem(x)))))


class SeparableNet(nn.Module):
    """MobileNet v1: depthwise 3x3 + pointwise 1x1 pairs, with a depthwise multiplier of 2 in one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.dw1 = conv_bn(16, 16, 3, groups=16)
        self.pw1 = conv_bn(16, 24, 1)
        self.dw2 = conv_bn(24, 48, 3, stride=2, groups=24)  # two filters per input channel
        self.pw2 = conv_bn(48, 32, 1)
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw2(self.dw2(self.pw1(self.dw1(self.stem(x))))))


class FlattenHead(nn.Module):
    """A VGG-like conv stack, then a flattened 4 x 4 map into two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16), nn.MaxPool2d(2), conv_bn(16, 24), nn.MaxPool2d(2), conv_bn(24, 16)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expansion with hardswish, depthwise 3x3 with SiLU, a hardsigmoid SE gate,
    1x1 projection, added to the input."""

    def __init__(self, channels: int, expanded: int) -> None:
        super().__init__()
        self.expand = conv_bn(channels, expanded, 1, act=nn.Hardswish)
        self.depthwise = conv_bn(expanded, expanded, 3, groups=expanded, act=nn.SiLU)
        self.se = SqueezeExcite(expanded, 8, gate=nn.Hardsigmoid)
        self.project = nn.Sequential(nn.Conv2d(expanded, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class MobileV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, act=nn.Hardswish)
        self.blocks = nn.Sequential(InvertedResidual(16, 48), InvertedResidual(16, 32))
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self.blocks(self.stem(x))))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: a map from the channel-wise mean and max, multiplied into every channel."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = conv_bn(16, 16)
        self.attend = nn.Conv2d(2, 1, 7, padding=3)
        self.out = conv_bn(16, 16)
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return self.head(self.out(x * torch.sigmoid(self.attend(pooled))))


# --- the zoo --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A zoo net and what pruning it must do: ``skipped`` maps a layer to a fragment of its skip reason
    (under every policy); ``refused`` is a fragment of the error when no layer is left to prune."""

    build: Callable[[], nn.Module]
    skipped: dict[str, str] = field(default_factory=dict)
    refused: str | None = None
    prunable: tuple[str, ...] = ()
    """Layers that must be prunable under the policy ``"all"`` (at least these)."""


def build(name: str, seed: int = 0) -> nn.Module:
    """Factory for saved specs: ``"zoo:build"`` with ``{"name": ...}``."""
    torch.manual_seed(seed)
    return ZOO[name].build()


ZOO: dict[str, Entry] = {
    "resnext": Entry(ResNeXt, prunable=("blocks.0.reduce.0", "blocks.0.grouped.0", "blocks.1.grouped.0")),
    "split": Entry(SplitNet, skipped={"stem.0": "split of the channels"}, prunable=("left.0", "right.0")),
    "chunk": Entry(ChunkNet, skipped={"stem.0": "chunk of the channels"}, prunable=("mix.0",)),
    "shuffle": Entry(
        ShuffleNet, skipped={"gconv1.0": "view (1, 24, 16, 16) -> (1, 3, 8, 16, 16)"}, prunable=("stem.0",)
    ),
    "resnet-option-a": Entry(
        OptionAResNet, skipped={"stem.0": "pad of the channel dimension"},
        prunable=("blocks.0.conv1.0", "blocks.1.conv1.0"),
    ),
    "slice": Entry(SliceNet, skipped={"stem.0": "__getitem__ of the channels"}, prunable=("body.0",)),
    "pixel-shuffle": Entry(PixelShuffleNet, skipped={"to_pixels": "pixel_shuffle"}, prunable=("stem.0",)),
    "gather": Entry(GatherNet, skipped={"stem.0": "its cut computes something else"}, prunable=("body.0",)),
    "all-shuffled": Entry(AllShuffled, refused="conv1.0: its channels pass through view"),
    "densenet": Entry(DenseNet, prunable=("stem.0", "layers.0.0", "layers.2.0", "transition.0")),
    "branches": Entry(ParallelBranches, prunable=("stem.0", "narrow.0", "pool_branch.1.0", "conv_branch.0")),
    "unet": Entry(
        UNet,
        skipped={"dec2.0": "transposed conv up1 not supported", "up1": "transposed conv up1 not supported"},
        prunable=("enc1.0", "enc2.0", "bottleneck.0"),
    ),
    "squeeze-excite": Entry(SENet, prunable=("stem.0", "conv.0", "se.fc1", "out.0")),
    "separable": Entry(
        SeparableNet, skipped={"pw1.0": "grouped conv dw2.0 ties all 24 channels together"},
        prunable=("stem.0", "dw2.0", "pw2.0"),
    ),
    "flatten-head": Entry(FlattenHead, prunable=("features.0.0", "features.4.0", "classifier.1")),
    "mobilev3": Entry(MobileV3, prunable=("stem.0", "blocks.0.expand.0", "blocks.0.se.fc1")),
    "spatial-attention": Entry(
        SpatialAttention, skipped={"body.0": "mean across the channels"}, prunable=("stem.0", "out.0")
    ),
}
