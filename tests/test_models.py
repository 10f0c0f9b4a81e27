"""The model zoo: published sizes, registry behaviour, shapes, MAC counting and Torch-Pruning tracing."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from rlal.errors import RlalError
from rlal.models import (
    ModelEntry,
    count_macs_params,
    create_model,
    list_models,
    model_entry,
    register_model,
)
from rlal.models.resnet import BasicBlock, Bottleneck
from rlal.models.vgg import VGG

ALL_MODELS = [
    "mobilenetv2",
    "mobilenetv2-cifar",
    "resnet110",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet50",
    "resnet56",
    "vgg16-bn",
]
CIFAR_MODELS = [n for n in ALL_MODELS if model_entry(n).family == "cifar"]
RESIDUAL_MODELS = [n for n in ALL_MODELS if n != "vgg16-bn"]


def natural_size(name: str) -> int:
    return 32 if model_entry(name).family == "cifar" else 224


# (name, input size, classes, published params, published MACs)
PUBLISHED = [
    ("resnet20", 32, 10, 0.27e6, 41e6),
    ("resnet56", 32, 10, 0.85e6, 125e6),
    ("resnet110", 32, 10, 1.73e6, 253e6),
    ("resnet18", 224, 1000, 11.7e6, 1.8e9),
    ("resnet50", 224, 1000, 25.6e6, 4.1e9),
    ("mobilenetv2", 224, 1000, 3.5e6, 300e6),
]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- published figures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size", "classes", "params", "macs"), PUBLISHED)
def test_params_and_macs_match_published_figures_within_2_percent(name, size, classes, params, macs):
    model = create_model(name, num_classes=classes, input_size=size)
    got_macs, got_params = count_macs_params(model, (3, size, size))
    assert got_params == pytest.approx(params, rel=0.02)
    assert got_macs == pytest.approx(macs, rel=0.02)


# --- registry -------------------------------------------------------------------------------------------


def test_list_models_is_the_sorted_zoo():
    assert list_models() == ALL_MODELS


def test_model_entry_describes_the_family_and_builder():
    entry = model_entry("resnet56")
    assert isinstance(entry, ModelEntry)
    assert (entry.name, entry.family) == ("resnet56", "cifar")
    assert entry.description
    assert model_entry("resnet50").family == "imagenet"
    with pytest.raises(AttributeError):
        entry.name = "other"  # frozen


def test_unknown_model_error_lists_every_valid_name():
    with pytest.raises(RlalError, match=r"unknown model 'resnet99' \(valid: mobilenetv2, mobilenetv2-cifar, "
                       r"resnet110, resnet18, .*vgg16-bn\)") as info:
        create_model("resnet99")
    assert "\n" not in str(info.value)
    with pytest.raises(RlalError, match="unknown model"):
        model_entry("nope")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"input_size": 0}, "input_size"),
    ],
)
def test_bad_arguments_raise_an_error_naming_the_argument(kwargs, argument):
    with pytest.raises(RlalError, match=argument):
        create_model("resnet20", **kwargs)


@pytest.mark.parametrize(("name", "size"), [("resnet20", 2), ("mobilenetv2-cifar", 4), ("vgg16-bn", 16),
                                            ("resnet18", 16), ("mobilenetv2", 8)])
def test_input_size_too_small_for_the_model_raises(name, size):
    with pytest.raises(RlalError, match=rf"input_size {size} is too small for {name}"):
        create_model(name, input_size=size)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_runs_at_the_smallest_input_size_it_accepts(name):
    for size in range(1, 65):
        try:
            model = create_model(name, num_classes=3, input_size=size)
        except RlalError:
            continue
        break
    assert size <= 28  # Fashion-MNIST fits every model
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20", family="cifar", description="again")(lambda **_: nn.Identity())
    with pytest.raises(ValueError, match="family"):
        register_model("new-model", family="mnist", description="bad family")  # type: ignore[arg-type]
    assert "new-model" not in list_models()


# --- every model: shapes and modes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_gives_one_logit_row_per_image_at_the_natural_size(name):
    size = natural_size(name)
    model = create_model(name, num_classes=7, in_channels=3, input_size=size)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_models_take_one_channel_28x28_images(name):
    model = create_model(name, num_classes=7, in_channels=1, input_size=28)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 7)
    macs, _ = count_macs_params(model, (1, 28, 28))
    assert macs > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_ends_in_a_single_linear_classifier_named_fc(name):
    model = create_model(name, num_classes=5, input_size=natural_size(name))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linears == ["fc"]
    assert model.fc.out_features == 5


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2-cifar", "vgg16-bn"])
@pytest.mark.parametrize("training", [True, False])
def test_count_macs_params_leaves_mode_and_bn_statistics_unchanged(name, training):
    model = create_model(name, input_size=32)
    model.train(training)
    model.fc.train(not training)  # a mixed-mode model keeps its per-module flags
    before = {n: m.training for n, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs_params(model, (3, 32, 32))
    assert {n: m.training for n, m in model.named_modules()} == before
    for k, v in model.state_dict().items():
        assert torch.equal(v, stats[k]), k


def test_models_use_standard_initialisation():
    model = create_model("resnet20")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(bn.weight == 1) and torch.all(bn.bias == 0) for bn in bns)
    conv = model.layer3[1].conv2  # Kaiming normal, fan_out: std = sqrt(2 / (64 * 9))
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)


@pytest.mark.parametrize("name", RESIDUAL_MODELS)
def test_zero_init_residual_zeroes_the_last_bn_of_each_residual_branch(name):
    builder = model_entry(name).builder
    plain = builder(num_classes=10, in_channels=3, input_size=natural_size(name))
    zeroed = builder(num_classes=10, in_channels=3, input_size=natural_size(name), zero_init_residual=True)
    last_bns = [
        m.last_bn if isinstance(m, BasicBlock | Bottleneck) else m.project.bn
        for m in zeroed.modules()
        if isinstance(m, BasicBlock | Bottleneck) or getattr(m, "use_residual", False)
    ]
    assert last_bns and all(torch.all(bn.weight == 0) for bn in last_bns)
    assert all(torch.all(m.weight == 1) for m in plain.modules() if isinstance(m, nn.BatchNorm2d))


def test_module_names_read_well_for_pruning():
    names = {n for n, _ in create_model("resnet56").named_modules()}
    assert {"conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer3.8.bn2", "fc"} <= names
    names = {n for n, _ in create_model("mobilenetv2-cifar").named_modules()}
    assert {"stem.conv", "blocks.0.depthwise.conv", "blocks.3.expand.conv", "blocks.3.project.bn",
            "head.conv", "fc"} <= names
    assert isinstance(create_model("vgg16-bn"), VGG)
    assert "features.conv4_3" in {n for n, _ in create_model("vgg16-bn").named_modules()}


# --- counting ---------------------------------------------------------------------------------------------


def test_counting_a_single_conv_equals_hand_arithmetic():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1, bias=True)  # 10x10 -> 5x5
    macs, params = count_macs_params(conv, (3, 10, 10))
    assert macs == 8 * 5 * 5 * 3 * 3 * 3  # output elements x in_channels x kernel area; bias not counted
    assert params == 8 * 3 * 3 * 3 + 8


def test_counting_a_grouped_conv_divides_by_groups():
    depthwise = nn.Conv2d(16, 16, kernel_size=3, padding=1, groups=16, bias=False)
    macs, params = count_macs_params(depthwise, (16, 6, 6))
    assert macs == 16 * 6 * 6 * 9
    assert params == 16 * 9


def test_counting_a_single_linear_equals_hand_arithmetic():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 10))
    assert count_macs_params(model, (2, 4, 4)) == (32 * 10, 32 * 10 + 10)


def test_counting_excludes_bn_activations_and_pooling():
    model = nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2, bias=False),
    )
    macs, params = count_macs_params(model, (1, 8, 8))
    assert macs == 4 * 8 * 8 * 1 + 4 * 2
    assert params == 4 + 8 + 8


def test_counting_rejects_a_bad_input_shape():
    with pytest.raises(RlalError, match="input shape"):
        count_macs_params(create_model("resnet20"), (3, 32))


# --- Torch-Pruning ----------------------------------------------------------------------------------------


DG_CASES = [(n, (3, 32, 32)) for n in CIFAR_MODELS] + [(n, (1, 28, 28)) for n in CIFAR_MODELS] + [
    (n, (3, 64, 64)) for n in ALL_MODELS if model_entry(n).family == "imagenet"
]


DG_IDS = [f"{n}-{'x'.join(map(str, s))}" for n, s in DG_CASES]


@pytest.mark.parametrize(("name", "shape"), DG_CASES, ids=DG_IDS)
def test_dependency_graph_builds_and_a_group_prunes(name, shape):
    c, h, w = shape
    model = create_model(name, num_classes=7, in_channels=c, input_size=h).eval()
    example = torch.randn(1, c, h, w)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    groups = list(graph.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv2d]))
    assert groups

    macs_before, params_before = count_macs_params(model, shape)
    groups[-1].prune(idxs=[0, 1])  # drop two channels of the last group; the model must stay consistent
    macs_after, params_after = count_macs_params(model, shape)
    assert macs_after < macs_before and params_after < params_before
    with torch.no_grad():
        assert model(example).shape == (1, 7)
