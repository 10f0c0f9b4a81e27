"""The alignment regulariser: a group lasso on the channels the plan removes, over all coupled parameters."""

from __future__ import annotations

import pytest
import torch
from test_structure_nets import make_separable_net, realistic
from torch import nn

from rlal.config import load_config
from rlal.errors import RlalError
from rlal.models import create_model
from rlal.structure import Plan, Structure, cut, find_layers, select_channels
from rlal.train.align import AlignConfig, AlignmentRegularizer, lambda_at
from rlal.train.epoch import train_one_epoch
from rlal.train.runtime import Runtime

SHAPE = (1, 28, 28)


pytestmark = pytest.mark.usefixtures("one_thread")


def zoo(name: str, policy: str = "internal", seed: int = 0) -> Structure:
    torch.manual_seed(seed)
    model = realistic(create_model(name, in_channels=1, input_size=28), SHAPE, seed=seed)
    return find_layers(model, SHAPE, policy=policy)


def half_plan(structure: Structure) -> tuple[Plan, dict[str, torch.Tensor]]:
    plan = Plan.from_keep_ratios(structure, 0.5)
    return plan, select_channels(structure, plan)


def scale_free(layer, member) -> bool:
    """A conv/linear/depthwise output read only by per-channel members of a layer that has a norm layer:
    the norm undoes its scale, so the penalty leaves it out."""
    has_norm = any(m.kind in ("batchnorm", "instancenorm") for m in layer.members)
    writer = member.role == "out" and member.kind in ("conv", "linear", "depthwise")
    return has_norm and writer and not member.mask_output


def loop_penalty(structure: Structure, kept: dict[str, torch.Tensor]) -> float:
    """The penalty by an explicit loop over layers, removed channels and coupled parameters."""
    modules = dict(structure.model.named_modules())
    total = 0.0
    for layer in structure.layers:
        for c in range(layer.channels):
            if c in kept[layer.name].tolist():
                continue
            sq = 0.0
            for member in layer.members:
                if scale_free(layer, member):
                    continue
                module = modules[member.module]
                for local, root in zip(member.local, member.root, strict=True):
                    if root != c:
                        continue
                    if member.role == "in":
                        sq += module.weight[:, local].double().square().sum().item()
                    else:
                        sq += module.weight[local].double().square().sum().item()
                        if getattr(module, "bias", None) is not None:
                            sq += module.bias[local].double().square().sum().item()
            total += sq**0.5
    return total


CASES = [("resnet20", "internal"), ("resnet20", "all"), ("mobilenetv2-cifar", "internal"),
         ("mobilenetv2-cifar", "all")]


@pytest.mark.parametrize(("name", "policy"), CASES)
def test_penalty_equals_hand_computed_group_norm(name: str, policy: str) -> None:
    structure = zoo(name, policy)
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=0.5)
    align.set_plan(None, kept)
    expected = loop_penalty(structure, kept)
    value = align.penalty(structure.model)
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert align(structure.model).item() == pytest.approx(0.5 * expected, rel=1e-5)


def test_penalty_equals_hand_computed_group_norm_with_concat_and_depthwise_biases() -> None:
    model = realistic(make_separable_net(), (3, 16, 16))
    structure = find_layers(model, (3, 16, 16))
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure)
    align.set_plan(None, kept)
    assert align.penalty(model).item() == pytest.approx(loop_penalty(structure, kept), rel=1e-5)


def test_without_a_plan_the_penalty_is_zero() -> None:
    structure = zoo("resnet20")
    align = AlignmentRegularizer(structure, lam=1.0)
    assert align(structure.model).item() == 0.0
    assert align.removed is None
    _, kept = half_plan(structure)
    align.set_plan(None, kept)
    assert align(structure.model).item() > 0
    align.set_plan(None)
    assert align.penalty(structure.model).item() == 0.0


def removed_positions(structure: Structure, kept: dict) -> dict[str, torch.Tensor]:
    """Per parameter, a bool mask of the entries that belong to a removed channel, written out from the
    layers' members independently of the regulariser (the weight, and the bias of an output member)."""
    model = structure.model
    modules = dict(model.named_modules())
    removed = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in model.named_parameters()}
    for layer in structure.layers:
        gone = torch.ones(layer.channels, dtype=torch.bool)
        gone[kept[layer.name]] = False
        for member in layer.members:
            if scale_free(layer, member):
                continue
            local = torch.tensor(member.local)[gone[torch.tensor(member.root)]]
            if member.role == "in":
                removed[f"{member.module}.weight"][:, local] = True
            else:
                removed[f"{member.module}.weight"][local] = True
                if getattr(modules[member.module], "bias", None) is not None:
                    removed[f"{member.module}.bias"][local] = True
    return removed


@pytest.mark.parametrize(("name", "policy"), CASES)
def test_gradient_flows_only_to_removed_channels(name: str, policy: str) -> None:
    structure = zoo(name, policy)
    model = structure.model
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure)
    align.set_plan(None, kept)
    model.zero_grad()
    align.penalty(model).backward()
    removed_pos = removed_positions(structure, kept)
    touched = 0
    for pname, p in model.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.all(grad[~removed_pos[pname]] == 0), pname  # exactly zero for kept channels
        touched += int((grad[removed_pos[pname]] != 0).sum())
    assert touched > 0


def test_penalty_and_its_gradient_are_zero_when_removed_channels_are_zero() -> None:
    structure = zoo("mobilenetv2-cifar")
    model = structure.model
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure)
    align.set_plan(None, kept)
    removed = removed_positions(structure, kept)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p[removed[name]] = 0
    model.zero_grad()
    value = align.penalty(model)
    value.backward()
    assert value.item() == 0.0
    assert all(
        p.grad is None or (torch.isfinite(p.grad).all() and not p.grad.any()) for p in model.parameters()
    )
    assert align.removed_kept_norm_ratio(model) == 0.0


def align_by_sgd(align: AlignmentRegularizer, model: nn.Module, steps: int = 150) -> None:
    """SGD on the penalty alone, with a decaying step so the group lasso settles at zero (a constant step
    leaves each group oscillating with norm up to ``lr * lam``)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        align(model).backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize(("name", "policy"), CASES)
def test_sgd_on_the_penalty_drives_removed_channels_to_zero_and_cutting_them_is_free(
    name: str, policy: str
) -> None:
    structure = zoo(name, policy)
    model = structure.model.eval()
    plan, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1.0, proximal=False)  # the penalty in the loss (the paper's)
    align.set_plan(plan, kept)
    before = align.removed_kept_norm_ratio(model)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        naive = (model(x) - cut(structure, kept=kept).eval()(x)).abs().max().item()
    align_by_sgd(align, model)
    after = align.removed_kept_norm_ratio(model)
    assert before > 0.5
    assert after < 0.01
    with torch.no_grad():
        dense = model(x)
        small = cut(structure, plan, kept=kept).eval()
        diff = (dense - small(x)).abs().max().item()
    scale = dense.abs().max().item()
    assert diff < 1e-3 * max(scale, 1.0), (diff, naive, scale)
    assert naive > 10 * diff  # cutting the unaligned model does change its outputs


def test_set_plan_without_kept_selects_by_l2_and_validates() -> None:
    structure = zoo("resnet20")
    plan, kept = half_plan(structure)
    align = AlignmentRegularizer(structure)
    align.set_plan(plan)
    removed = align.removed
    assert removed is not None
    for layer in structure.layers:
        assert len(removed[layer.name]) + len(kept[layer.name]) == layer.channels
        assert not set(removed[layer.name].tolist()) & set(kept[layer.name].tolist())
    with pytest.raises(RlalError, match="keeps"):
        align.set_plan(Plan.dense(structure), kept)
    with pytest.raises(RlalError):
        align.set_plan(None, {"nope": [0]})


def test_lambda_schedule() -> None:
    linear = AlignConfig(lam=1e-4, schedule="linear", ramp_epochs=4)
    assert [lambda_at(e, linear) for e in range(6)] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4])
    constant = AlignConfig(lam=3e-4, schedule="constant", ramp_epochs=4)
    assert [lambda_at(e, constant) for e in range(3)] == [3e-4] * 3
    assert AlignConfig().lam == 1e-4 and AlignConfig().schedule == "linear"
    assert AlignConfig().target_ratio == 0.03 and AlignConfig().path == "linear"
    for bad, key in (("lam=-1.0", "lam"), ("schedule=cosine", "schedule"), ("ramp_epochs=0", "ramp_epochs")):
        with pytest.raises(RlalError, match=f"search.align.{key}"):
            load_config(None, [f"search.align.{bad}"])
    with pytest.raises(RlalError):
        lambda_at(-1, linear)


def test_an_unknown_steering_path_in_the_config_is_refused_by_name() -> None:
    with pytest.raises(RlalError, match=r"search\.align\.path"):
        load_config(None, ["search.align.path=cosine"])
    assert load_config(None, ["search.align.path=geometric"]).search.align.path == "geometric"


def _noise_batches(n: int = 80, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, *SHAPE, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)
    ]


def _half_plan_alignment(
    proximal: bool = False,
) -> tuple[nn.Module, AlignmentRegularizer, torch.optim.Optimizer]:
    """A fresh ResNet-20 with the half plan set on a small fixed lambda, and its SGD optimiser; the
    subgradient form (the steering tests were written for it) unless ``proximal``."""
    structure = zoo("resnet20")
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1e-4, proximal=proximal, momentum=0.9 if proximal else 0.0)
    align.set_plan(None, kept)
    return structure.model, align, torch.optim.SGD(structure.model.parameters(), lr=0.05, momentum=0.9)


_CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def test_plugs_into_train_one_epoch_as_the_regularizer() -> None:
    structure = zoo("resnet20")
    model = structure.model
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1e-2)
    align.set_plan(None, kept)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = align.penalty(model).item()
    stats = train_one_epoch(model, _noise_batches(3, size=8), opt, None, _CPU, regularizer=align)
    assert stats.reg_loss > 0
    assert stats.reg_loss == pytest.approx(1e-2 * before, rel=0.2)
    assert stats.images == 24


@pytest.mark.parametrize(("path", "proximal"), [("linear", False), ("geometric", False), ("linear", True)])
def test_steering_reaches_the_target_ratio_that_a_fixed_small_lambda_misses(
    path: str, proximal: bool
) -> None:
    """Cross-entropy pulls every channel back; a fixed lambda sized for another run length barely moves the
    removed channels, while steering sizes lambda to the steps and the norms and follows the path."""
    batches = _noise_batches()
    ratios = {}
    for steered in (False, True):
        model, align, opt = _half_plan_alignment(proximal)
        if steered:
            align.steer(model, 0.03, steps=len(batches), lr=0.05, momentum=0.9, path=path)
            assert align.lam > 1e-4  # sized to the steps and the norms
        train_one_epoch(model, batches, opt, None, _CPU, regularizer=align)
        ratios[steered] = align.removed_kept_norm_ratio(model)
    assert ratios[False] > 0.5
    assert ratios[True] <= 0.05, ratios


def test_a_linear_steering_path_takes_the_channels_away_more_gently_at_first() -> None:
    """Both paths bring the ratio down by the end; 24 steps into 80 (both paths reach the target at step
    64), the geometric path has already taken more of the removed channels' norm than the linear one."""
    batches = _noise_batches()
    early, end = {}, {}
    for path in ("geometric", "linear"):
        torch.manual_seed(0)
        model, align, opt = _half_plan_alignment()
        align.steer(model, 0.03, steps=len(batches), lr=0.05, momentum=0.9, path=path)
        train_one_epoch(model, batches[:24], opt, None, _CPU, regularizer=align)
        early[path] = align.removed_kept_norm_ratio(model)
        train_one_epoch(model, batches[24:], opt, None, _CPU, regularizer=align)
        end[path] = align.removed_kept_norm_ratio(model)
    assert early["linear"] > early["geometric"] + 0.04, early
    assert end["linear"] < 0.1 and end["geometric"] < 0.1, end


def test_an_unknown_steering_path_is_refused() -> None:
    structure = zoo("resnet20")
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure)
    align.set_plan(None, kept)
    with pytest.raises(RlalError, match="steering path must be"):
        align.steer(structure.model, 0.03, steps=10, path="cosine")


def test_steering_state_round_trips() -> None:
    structure = zoo("resnet20")
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1e-3)
    align.set_plan(None, kept)
    align.steer(structure.model, 0.03, steps=10, lr=0.1, momentum=0.9)
    align(structure.model)
    state = align.state_dict()
    other = AlignmentRegularizer(structure)
    other.load_state_dict(state)
    assert other.lam == align.lam and other.state_dict()["steer"] == state["steer"]
    assert all(torch.equal(a, b) for a, b in zip(other.removed_masks, align.removed_masks, strict=True))
    assert {k: v.tolist() for k, v in other.kept.items()} == {k: v.tolist() for k, v in kept.items()}


@pytest.mark.parametrize("criterion", ["l1", "bn_scale", "random"])
def test_set_plan_pushes_down_the_channels_the_configured_criterion_would_cut(criterion: str) -> None:
    structure = zoo("resnet20")
    with torch.no_grad():  # BN scales that disagree with the filter norms, so the criteria differ
        for m in structure.model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(5)))
    plan = Plan.from_keep_ratios(structure, 0.5)
    align = AlignmentRegularizer(structure)
    align.set_plan(plan, criterion=criterion)
    expected = select_channels(structure, plan, criterion)
    assert {k: v.tolist() for k, v in align.kept.items()} == {k: v.tolist() for k, v in expected.items()}
    if criterion == "bn_scale":
        l2 = select_channels(structure, plan, "l2")
        assert any(l2[k].tolist() != expected[k].tolist() for k in expected)  # the test can tell them apart


def test_steering_never_reads_a_tensor_back_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A steered step keeps the ratio and lam on the model's device (on a GPU a read-back would synchronise
    every training step); lam is read back only when asked for, and it moved."""
    structure = zoo("resnet20")
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1e-3)
    align.set_plan(None, kept)
    align.steer(structure.model, 0.03, steps=10, lr=0.1, momentum=0.9)
    before = align.lam

    def refuse(*_: object) -> None:
        raise AssertionError("a tensor was read back to the host during a steered step")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__", "nonzero"):
            m.setattr(torch.Tensor, name, refuse)
        for _ in range(3):
            loss = align(structure.model)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert align.lam != before and align.state_dict()["steer"]["done"] == 3


def test_a_proximal_step_zeroes_the_groups_under_the_threshold_and_shortens_the_others_by_it() -> None:
    """Group soft-thresholding: tau = lr * lam / (1 - momentum); a removed group with norm <= tau becomes
    exactly zero, a larger one keeps its direction and loses tau of its norm; kept channels are untouched."""
    structure = zoo("resnet20")
    model = structure.model
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1.0, proximal=True, momentum=0.5)
    align.set_plan(None, kept)
    before = align.channel_norms(model)
    removed = torch.cat([before[name][idx] for name, idx in align.removed.items()])
    tau = float(removed.median())
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    align.prox_step(model, lr=tau * 0.5)  # lr * lam / (1 - momentum) = (tau / 2) * 1.0 / 0.5 = tau
    after = align.channel_norms(model)
    for layer in structure.layers:
        gone = align.removed[layer.name]
        expected = (before[layer.name][gone] - tau).clamp_min(0)
        assert torch.allclose(after[layer.name][gone], expected, atol=1e-5)
        stay = kept[layer.name]
        assert torch.equal(after[layer.name][stay], before[layer.name][stay])
    zeroed = sum(int((after[n][i] == 0).sum()) for n, i in align.removed.items())
    assert 0 < zeroed < sum(len(i) for i in align.removed.values())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, params[n])]
    assert changed and all(("bn" in n or "conv" in n) for n in changed)


def test_a_proximal_step_does_nothing_unless_the_regulariser_is_proximal() -> None:
    structure = zoo("resnet20")
    _, kept = half_plan(structure)
    align = AlignmentRegularizer(structure, lam=1.0, proximal=False)
    align.set_plan(None, kept)
    params = [p.detach().clone() for p in structure.model.parameters()]
    align.prox_step(structure.model, lr=10.0)
    assert all(torch.equal(a, b) for a, b in zip(params, structure.model.parameters(), strict=True))


def test_the_regulariser_takes_the_configured_step_and_train_one_epoch_runs_its_proximal_step() -> None:
    """Built without ``proximal``, the regulariser follows ``AlignConfig.step`` (proximal); passed to
    ``train_one_epoch`` as the regulariser alone, its proximal step runs after every optimiser step, so
    removed groups land on exactly zero. The subgradient form, added to the loss, leaves none there."""
    assert AlignConfig.step == "proximal"
    zeroed = {}
    for proximal in (None, False):
        torch.manual_seed(0)
        structure = zoo("resnet20")
        _, kept = half_plan(structure)
        align = (AlignmentRegularizer(structure, lam=20.0) if proximal is None
                 else AlignmentRegularizer(structure, lam=20.0, proximal=False))
        align.set_plan(None, kept)
        opt = torch.optim.SGD(structure.model.parameters(), lr=0.1)
        train_one_epoch(structure.model, _noise_batches(6, size=8), opt, None, _CPU, regularizer=align)
        norms = align.channel_norms(structure.model)
        zeroed[proximal] = sum(int((norms[n][i] == 0).sum()) for n, i in align.removed.items())
    assert zeroed[None] > 0 and zeroed[False] == 0, zeroed


def test_train_one_epoch_calls_after_step_with_each_steps_learning_rate() -> None:
    structure = zoo("resnet20")
    model = structure.model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    seen: list[float] = []
    batches = _noise_batches(3, size=4)
    train_one_epoch(model, batches, opt, sched, _CPU, after_step=lambda _, lr: seen.append(lr))
    assert seen == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_proximal_steering_takes_three_quarters_of_the_residual_stream_to_exactly_zero() -> None:
    """The 6% MACs case: a keep ratio of 0.25 in every layer, residual widths included. The subgradient,
    steered the same way, circles zero and leaves no group there; steered proximal steps reach the target
    with most removed groups at exactly zero."""
    batches = _noise_batches()
    zero, ratio = {}, {}
    for proximal in (False, True):
        structure = zoo("resnet20", "all")
        model = structure.model
        kept = select_channels(structure, Plan.from_keep_ratios(structure, 0.25))
        align = AlignmentRegularizer(structure, lam=1e-3, proximal=proximal, momentum=0.9)
        align.set_plan(None, kept)
        opt = torch.optim.SGD(model.parameters(), lr=0.07, momentum=0.9)
        align.steer(model, 0.03, steps=len(batches), lr=0.07, momentum=0.9)
        train_one_epoch(model, batches, opt, None, _CPU, regularizer=align)
        norms = align.channel_norms(model)
        removed = torch.cat([norms[n][i] for n, i in align.removed.items()])
        zero[proximal] = float((removed == 0).float().mean())
        ratio[proximal] = align.removed_kept_norm_ratio(model)
    assert zero[False] == 0 and zero[True] > 0.9, zero
    assert ratio[True] <= 0.03, ratio


def test_an_unknown_alignment_step_is_refused_by_name_and_the_paper_step_can_be_chosen() -> None:
    with pytest.raises(RlalError, match=r"search\.align\.step"):
        load_config(None, ["search.align.step=adam"])
    assert load_config(None, ["search.align.step=subgradient"]).search.align.step == "subgradient"
    assert AlignConfig().step == "proximal"


def test_steering_sizes_lambda_with_the_momentum_the_regulariser_was_built_with() -> None:
    structure = zoo("resnet20")
    _, kept = half_plan(structure)
    lams = []
    for built, given in ((0.9, None), (0.0, 0.9), (0.0, None)):
        align = AlignmentRegularizer(structure, lam=0.0, momentum=built)
        align.set_plan(None, kept)
        align.steer(structure.model, 0.03, steps=10, lr=0.1, momentum=given)
        lams.append(align.lam)
    assert lams[0] == lams[1] < lams[2]  # (1 - 0.9) sizes lambda ten times smaller than no momentum
