"""Architectures defined only in the tests, shared helpers, and the structure found in them.

Two user models that no zoo code knows: an Inception-like net (branches joined by ``torch.cat``, a BN over
the concatenation, a flattened 2x2 map feeding a hidden linear layer) and a net of depthwise-separable blocks
(depthwise convs with biases, a residual addition, SiLU and Hardswish). Other test files import the builders
and helpers from here (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import nn

from rlal.models import create_model, model_entry
from rlal.structure import Structure, find_layers

IMAGENET_TEST_SIZE = 64  # small inputs keep the ImageNet-family models fast; the structure is what matters


def zoo_input_shape(name: str) -> tuple[int, int, int]:
    size = 32 if model_entry(name).family == "cifar" else IMAGENET_TEST_SIZE
    return (3, size, size)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU()
    )


class InceptionBlock(nn.Module):
    """Three branches concatenated along channels: 1x1 | 1x1 -> 3x3 | max-pool -> 1x1."""

    def __init__(self, cin: int, b1: int, b3_reduce: int, b3: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = conv_bn(cin, b1, 1, bias=True)
        self.branch3 = nn.Sequential(conv_bn(cin, b3_reduce, 1), conv_bn(b3_reduce, b3, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(cin, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch_pool(x)], dim=1)


class InceptionNet(nn.Module):
    """stem -> Inception -> pool -> Inception -> BN over the concatenation -> 2x2 pool -> flatten -> MLP."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3)
        self.block1 = InceptionBlock(16, 8, 8, 12, 4)  # 24 channels out
        self.pool = nn.MaxPool2d(2)
        self.block2 = InceptionBlock(24, 12, 8, 16, 8)  # 36 channels out
        self.mix = nn.BatchNorm2d(36)
        self.head_pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(36 * 4, 32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.pool(self.block1(self.stem(x))))
        x = self.head_pool(torch.relu(self.mix(x)))
        return self.fc(torch.relu(self.hidden(torch.flatten(x, 1))))


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (with bias) + BN + SiLU, then pointwise 1x1 + BN + Hardswish; residual when the
    shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=True)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.hardswish(
            self.bn2(self.pointwise(nn.functional.silu(self.bn1(self.depthwise(x)))))
        )
        return x + out if self.residual else out


class SeparableNet(nn.Module):
    """A small MobileNet-v1-like net of depthwise-separable blocks, the last one residual."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3)
        self.blocks = nn.Sequential(
            SeparableBlock(16, 32), SeparableBlock(32, 48, stride=2), SeparableBlock(48, 48)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def make_inception_net(num_classes: int = 10, seed: int = 0) -> InceptionNet:
    """Factory for the save/load test: ``"test_structure_nets:make_inception_net"``."""
    torch.manual_seed(seed)
    return InceptionNet(num_classes)


def make_separable_net(num_classes: int = 10, seed: int = 0) -> SeparableNet:
    torch.manual_seed(seed)
    return SeparableNet(num_classes)


TEST_NETS = {"inception": make_inception_net, "separable": make_separable_net}


def realistic(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Give BN layers random scales and (nonzero) shifts and calibrated running statistics, and linear
    layers unit-gain weights, so activations stay O(1) at any depth and BN biases make masks matter.
    Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.6 - 0.3)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(2):
            model(torch.randn(8, *input_shape, generator=g))
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
    return model.eval()


@cache
def zoo_structure(name: str, policy: str = "internal") -> Structure:
    """A realistic zoo model's structure, built once per test session (tests must not modify the model)."""
    shape = zoo_input_shape(name)
    model = realistic(create_model(name, input_size=shape[1]), shape)
    return find_layers(model, shape, policy=policy)


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(torch.equal(state[k], v) for k, v in snapshot.items())


# --- the structure found in the test-only architectures ------------------------------------------------


def test_inception_branches_are_separate_layers_coupled_through_the_concatenation() -> None:
    model = make_inception_net()
    structure = find_layers(model, (3, 16, 16))
    names = structure.names
    assert names[0] == "stem.0"
    for branch in ("block1.branch1.0", "block1.branch3.0.0", "block1.branch3.1.0", "block1.branch_pool.1.0"):
        assert branch in names
    # a branch's channels reach the next block's three input convs and the BN over the second concatenation
    layer = structure.layer("block2.branch1.0")
    assert {"block2.branch1.1", "mix", "hidden"} <= set(layer.modules)
    hidden_in = [m for m in layer.members if m.module == "hidden" and m.role == "in"]
    assert len(hidden_in[0].local) == 4 * layer.channels  # a 2x2 map per channel, flattened
    assert "hidden" in names  # a hidden linear layer is prunable like a conv
    assert [s.module for s in structure.skipped] == ["fc"]


def test_separable_net_couples_depthwise_convs_and_keeps_the_residual_whole() -> None:
    structure = find_layers(make_separable_net(), (3, 16, 16))
    assert structure.names == ("stem.0", "blocks.0.pointwise")
    assert structure.layer("stem.0").depthwise and structure.layer("blocks.0.pointwise").depthwise
    assert [s.module for s in structure.skipped] == ["blocks.1.pointwise", "fc"]
    assert "residual" in structure.skipped[0].reason
    everything = find_layers(make_separable_net(), (3, 16, 16), policy="all")
    assert everything.names == ("stem.0", "blocks.0.pointwise", "blocks.1.pointwise")
    assert everything.layer("blocks.1.pointwise").residual
