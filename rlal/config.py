"""Typed run configuration: one dataclass per concern, composed into :class:`RunConfig`.

Precedence (as in timm): dataclass defaults < YAML file (``--config``) < command-line overrides
(``--set section.key=value`` and the shorthand flags). The resolved config is written into the run
directory before the first step. Library code receives the sub-config it needs, never the whole run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from rlal.errors import RlalError


@dataclass
class DataConfig:
    """Which dataset, where it lives and how it is batched."""

    dataset: str = "fashion-mnist"
    """Dataset name: ``fashion-mnist``, ``cifar10`` or ``imagefolder`` (the ImageNet layout)."""
    data_dir: str | None = None
    """Where the files are; searched before ``$RLAL_DATA`` and the system locations."""
    cache_dir: str | None = None
    """Where decoded arrays are cached (default ``$RLAL_CACHE`` or ``~/.cache/rlal``)."""
    download: bool = True
    """Download Fashion-MNIST from its official address when it is found nowhere else."""
    batch_size: int = 128
    eval_batch_size: int = 512
    reward_size: int | None = None
    """Images held out of the training set on which the pruning agent scores sub-networks; None = sized from
    the data: 10% of the training images, at least 500 (at most a fifth of them) and at most 5,000 (so
    5,000 for CIFAR-10 and Fashion-MNIST). Dense and baseline runs hold out the same images, so that every
    method trains on the same ones, but do not require the split: a size that does not fit is dropped there
    with a warning."""
    train_subset: int | None = None
    """Train on only this many images (a seeded sample of the training split); None = all."""
    test_subset: int | None = None
    """Evaluate on only the first this many test images; None = all."""
    augment: bool = True
    """Training augmentation: pad-and-crop + flip for CIFAR, light crop for Fashion-MNIST; for image folders
    see ``augment_kind``."""
    input_size: int | None = None
    """Image folders only: the side of the square images the model sees. None = the images' own size when
    they all share one (their file headers are read: all of them up to 2,000, else an even sample), else 224
    (the ImageNet size). Fashion-MNIST (28) and CIFAR-10 (32) have fixed sizes."""
    in_channels: int | None = None
    """Recorded by the Python API (with ``input_size`` and ``classes``) for images given as tensors; when set,
    the data read must have this many channels."""
    classes: list[str] | None = None
    """Recorded by the Python API: the class names in label order; when set, the data read must have these
    classes."""
    augment_kind: Literal["auto", "pad-crop-flip", "resized-crop"] = "auto"
    """Image folders only: how training images are augmented (and evaluated). ``pad-crop-flip``: resized to
    ``input_size``, zero-padded by ``input_size / 8`` and randomly cropped back, flipped left-right half the
    time; evaluated resized to ``input_size`` (the CIFAR recipe). ``resized-crop``: a random-resized crop
    (scale 0.08-1) and a flip; evaluated resized to ``input_size / 0.875`` and centre-cropped (the ImageNet
    recipe). ``auto``: ``pad-crop-flip`` when ``input_size`` is 64 or less, else ``resized-crop``."""
    workers: int = 4
    """DataLoader worker processes for image-folder datasets (in-memory datasets need none)."""


@dataclass
class ModelConfig:
    """Which network: a zoo model (what the command line trains), or what a Python API run trained."""

    name: str = "resnet20"
    """A zoo model name (``rlal models``), or a user's ``package.module:function`` that builds the model
    (imported and run; called with whichever of ``num_classes``, ``in_channels``, ``input_size`` it takes).
    A Python API run records its own model here: its factory when it was given one, else
    ``<instance of package.module.Class>`` (recorded, not rebuildable: the command line cannot train it)."""


INSTANCE_MODEL = "<instance of {}>"
"""``model.name`` of a Python API run given a model instance without a factory."""


@dataclass
class OptimConfig:
    """SGD with momentum, weight decay and a per-step learning-rate schedule."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    """For ``multistep``: fractions of the total epochs at which the rate is multiplied by ``gamma``."""
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    """Linear warm-up of the learning rate over this many epochs, each counted in the steps it takes (an
    epoch before the cut with ``search.dense_epoch_fraction`` < 1 is a share of one)."""
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0
    """Clip the gradients' total L2 norm to this value before every step (0 = off, the default). On T2 with
    5 for every method it removed the align epoch's collapse and uniform's slow starts (docs/benchmarks.md);
    each epoch's ``grad_norm_median`` in metrics.jsonl shows the usual norm to size it from."""


@dataclass
class TrainConfig:
    """How the weights are trained: length, device and speed options."""

    epochs: int = 30
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: Literal["auto", "bf16", "off"] = "auto"
    """Mixed precision: ``auto`` = bf16 autocast on CUDA, off on CPU."""
    channels_last: Literal["auto", "on", "off"] = "auto"
    """Memory format: ``auto`` = ``on`` = channels-last (NHWC), on CUDA and on the CPU alike; ``off`` =
    contiguous (NCHW), which every CPU benchmark table up to 2026-12-01 ran with (the tracks pin it)."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (GPU runs; the first epoch pays the compile time)."""
    eval_every: int = 1
    """Evaluate on the test set every this many epochs (0 = only at the end); reporting only."""
    progress: bool = True
    """Show a progress bar per epoch."""
    threads: int | None = None
    """CPU threads for torch (None = torch's default)."""
    sync_bn: bool = False
    """Under ``torchrun`` with several processes: BatchNorm statistics computed over every rank's batch in
    training steps (torch's SyncBatchNorm, CUDA only); off = each rank normalises by its own batch, as DDP
    does by default. No effect in a single process. See docs/distributed.md."""
    dist_timeout: float = 1800.0
    """Under ``torchrun``: seconds a rank waits for the others in a collective before the job fails (a rank
    that died without torchrun noticing)."""


@dataclass
class EnvConfig:
    """The pruning environment: the MACs budget, how an action becomes a keep count, how sub-networks are
    scored (see :mod:`rlal.env`)."""

    target_macs: float | None = 0.5
    """MACs budget of every sub-network: a fraction of the dense model's MACs if <= 1, else absolute MACs
    (one example at the dataset's input size). Must lie strictly between the smallest sub-network's MACs
    and the dense MACs; the environment says the feasible range when it does not. null = no MACs budget
    (then a latency budget is required)."""
    target_latency: float | None = None
    """Latency budget beside (or instead of) the MACs one: a fraction in (0, 1) of the dense model's latency,
    measured on ``latency_backend`` at ``latency_batch`` (see :mod:`rlal.structure.latency`). Every plan of
    the agent and of the baselines meets both budgets by the latency table's prediction."""
    target_latency_ms: float | None = None
    """The latency budget as an absolute time: milliseconds per batch of ``latency_batch`` (instead of
    ``target_latency``)."""
    latency_backend: Literal["auto", "torch-cpu", "onnxruntime-cpu", "torch-cuda"] = "auto"
    """Where the latency budget is timed: ``auto`` = PyTorch on the run's device (``torch-cuda`` on a GPU,
    else ``torch-cpu``); ``onnxruntime-cpu`` for a model deployed with ONNX Runtime."""
    latency_batch: int = 64
    """The batch size the model will be deployed at (latency is timed per batch of this many)."""
    latency_threads: int | None = None
    """CPU threads for the timings; None = ``train.threads`` (or torch's default). Time with the number the
    model will be deployed with."""
    latency_grid: int = 16
    """Widths timed per conv axis: every width the layer can take when there are at most this many, else
    this many evenly spaced (interpolated in between)."""
    latency_runs: int = 15
    """Timed calls per width (the median is kept)."""
    latency_cache: str | None = None
    """Directory of cached latency tables; None = ``$XDG_CACHE_HOME/rlal/latency`` (else
    ``~/.cache/rlal/latency``); "" = no cache."""
    min_keep_ratio: float = 0.2
    """Smallest keep ratio of any layer: no plan can starve a layer below it."""
    residual_floor: Literal["min", "uniform"] = "min"
    """Smallest keep count of the layers tied by residual additions (``policy: all``): ``min`` = the
    ``min_keep_ratio`` count, as every layer; ``uniform`` = the uniform plan's count, so a plan may widen a
    residual stream but never narrow it below the uniform baseline's (the internal widths stay free)."""
    action_mode: Literal["relative", "wall"] = "relative"
    """How an episode's actions become a plan (see :mod:`rlal.env.budget`). ``relative``: each action tilts
    its layer away from the uniform allocation (by up to ``action_range`` either way) and one common scale,
    found after the last layer, puts the plan exactly on the budget. ``wall`` (the paper's and AMC's
    formulation): action a keeps ``min + a * (1 - min)`` of the layer, clipped by the action wall."""
    action_range: float = 2.0
    """``relative``: action 0 keeps ``1 / action_range`` times the uniform share of a layer, action 1
    ``action_range`` times it, action 0.5 exactly the uniform share (before the common scale)."""
    round_to: int = 1
    """Keep counts are multiples of this (or all the channels), e.g. 8 for tensor cores."""
    fill_budget: bool = True
    """Plans spend the budget their rounding leaves: the uniform plan (after its largest common keep ratio)
    and, under ``action_mode: relative``, every episode's plan (after its common scale) grow their thinnest
    layers one allowed step at a time while the target holds. Without it, ``round_to: 8`` can leave a plan
    several points of MACs under the target (the uniform plan of ResNet-56 at 50%: 46.2%), a handicap to the
    ``uniform`` baseline and to the plan the joint method's reward and final choice compare against.
    false = no fill (every table before the nineteenth session)."""
    policy: Literal["internal", "all"] = "internal"
    """Residual policy of the prunable layers: ``internal`` leaves channels tied by residual additions whole;
    ``all`` prunes them too, one keep count per tied group."""
    criterion: Literal["l2", "l1", "bn_scale", "random"] = "l2"
    """Which channels a layer keeps: its top-k by this importance, scored once per epoch."""
    reward_batches: int | None = 4
    """Score each sub-network on the first this many batches of the reward split (held out in a fixed
    shuffled order, so a fair sample of every class), the same every episode; None = the whole split.
    4 batches of ``data.eval_batch_size`` 512 = 2,048 images."""
    bn_recalibration_batches: int = 0
    """Training batches on which a sub-network's BN statistics are re-estimated before scoring (on a copy:
    the training model's statistics are restored); 0 = score with the dense model's statistics."""
    reward: Literal["vs-uniform", "accuracy"] = "vs-uniform"
    """``vs-uniform``: an episode's reward is its accuracy minus the uniform plan's, scored on the same
    weights and batches (a baseline that removes most of the epoch-to-epoch drift from the reward's scale);
    ``accuracy``: the accuracy itself (the paper's reward)."""

    @property
    def latency_budget(self) -> bool:
        """Whether a latency budget is set."""
        return self.target_latency is not None or self.target_latency_ms is not None

    def describe_budget(self) -> str:
        """The budgets in words, e.g. ``0.5 of the dense MACs and 0.5 of the dense latency (torch-cpu, batch
        64)``: how the demo and the quality tables state them."""
        parts = [f"{self.target_macs:g} of the dense MACs"] if self.target_macs is not None else []
        if self.target_latency is not None:
            parts.append(f"{self.target_latency:g} of the dense latency")
        elif self.target_latency_ms is not None:
            parts.append(f"{self.target_latency_ms:g} ms per batch")
        if self.latency_budget:
            parts[-1] += f" ({self.latency_backend}, batch {self.latency_batch})"
        return " and ".join(parts)

    def validate(self, prefix: str = "env") -> EnvConfig:
        """Check ranges the type system cannot express; raise :class:`RlalError` naming the key."""
        checks: list[tuple[bool, str]] = [
            (self.target_macs is None or self.target_macs > 0,
             "target_macs must be > 0 (a fraction of the dense MACs, or MACs if > 1)"),
            (self.target_macs is not None or self.latency_budget,
             "target_macs is null, so env.target_latency or env.target_latency_ms must be set"),
            (self.target_latency is None or self.target_latency_ms is None,
             "target_latency and target_latency_ms are two ways to give one budget: set only one"),
            (self.target_latency is None or 0 < self.target_latency < 1,
             "target_latency must be a fraction of the dense latency in (0, 1)"),
            (self.target_latency_ms is None or self.target_latency_ms > 0,
             "target_latency_ms must be > 0 (milliseconds per batch)"),
            (self.latency_backend in ("auto", "torch-cpu", "onnxruntime-cpu", "torch-cuda"),
             "latency_backend must be one of auto, torch-cpu, onnxruntime-cpu, torch-cuda"),
            (self.latency_batch >= 1, "latency_batch must be >= 1"),
            (self.latency_threads is None or self.latency_threads >= 1, "latency_threads must be >= 1"),
            (self.latency_grid >= 2, "latency_grid must be >= 2"),
            (self.latency_runs >= 1, "latency_runs must be >= 1"),
            (0 < self.min_keep_ratio <= 1, "min_keep_ratio must be in (0, 1]"),
            (self.residual_floor in ("min", "uniform"), "residual_floor must be one of min, uniform"),
            (self.residual_floor == "min" or self.policy == "all",
             "residual_floor=uniform needs env.policy=all (under internal no residual layer is pruned)"),
            (self.action_mode in ("relative", "wall"), "action_mode must be one of relative, wall"),
            (self.action_range >= 1, "action_range must be >= 1"),
            (self.reward in ("vs-uniform", "accuracy"), "reward must be one of vs-uniform, accuracy"),
            (not isinstance(self.round_to, bool) and self.round_to >= 1, "round_to must be an integer >= 1"),
            (self.policy in ("internal", "all"), "policy must be one of internal, all"),
            (self.criterion in ("l2", "l1", "bn_scale", "random"),
             "criterion must be one of l2, l1, bn_scale, random"),
            (self.reward_batches is None or self.reward_batches >= 1,
             "reward_batches must be >= 1 (or null for the whole split)"),
            (self.bn_recalibration_batches >= 0, "bn_recalibration_batches must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise RlalError(f"{prefix}.{message}")
        return self


AgentKind = Literal["sac", "sac-no-dynamics", "random", "uniform"]
LEARNING_KINDS: tuple[AgentKind, ...] = ("sac", "sac-no-dynamics")
"""The agent kinds that learn a policy (SAC, with or without the epoch context); the others draw or fix."""


@dataclass
class ContextConfig:
    """The environment-dynamics model: epoch embeddings -> recurrent net -> z_t; (keep, z_t) -> reward, and
    (keep, prior of epoch t) -> reward, the prior being the context the agent acts on (rlal.agent.context)."""

    z_dim: int = 8
    """Width of the epoch context (the recurrent net's hidden size) that conditions actor and critics."""
    embed_dim: int = 16
    """Width of the learnable embedding of each training epoch (the recurrent net's input)."""
    rnn: Literal["gru", "lstm"] = "gru"
    """Recurrent net run over the embeddings of epochs 0..t; its output at step t is z_t."""
    decoder_hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the decoder MLP that predicts an episode's reward from (keep vector, z_t)."""
    lr: float = 1e-3
    """Adam learning rate shared by the embeddings, the recurrent net and the decoder."""
    updates_per_epoch: int = 100
    """Full-batch gradient steps on all episodes observed so far, once per training epoch."""
    max_epochs: int = 512
    """Rows of the embedding table: every epoch index given to the model must be below this."""


@dataclass
class AgentConfig:
    """The pruning agent: which kind, and the settings of SAC (used by the ``sac*`` kinds only)."""

    kind: AgentKind = "sac"
    """``sac`` (the method: SAC conditioned on the epoch context z), ``sac-no-dynamics`` (SAC without z),
    ``random`` (a uniform random keep ratio per layer) or ``uniform`` (one keep ratio for every layer)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """Hidden widths of the actor and of each critic."""
    actor_lr: float = 1e-3
    """Adam learning rate of the actor (CleanRL uses 3e-4; with ~100 updates per epoch the faster rate
    tracked the synthetic drift better)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the twin critics (as CleanRL)."""
    alpha_lr: float = 1e-3
    """Adam learning rate of log(alpha), the entropy temperature."""
    tau: float = 0.01
    """Polyak rate of the target critics: target <- tau * online + (1 - tau) * target, every update."""
    gamma: float = 0.0
    """Discount of the critics' bootstrap from the next layer. 0 (with ``credit: every-step``): every
    layer's Q regresses on the episode's final reward itself, a Monte-Carlo return; AMC uses 1."""
    credit: Literal["every-step", "terminal"] = "every-step"
    """``every-step``: every layer is paid the episode's final reward; with ``gamma`` 1 (AMC's literal
    form) a layer's Q then also counts the layers after it and grows with the layers left. ``terminal``:
    the reward arrives once, at the last layer, and reaches the earlier layers only through the bootstrap
    (``gamma`` > 0). Measured on the synthetic drifting-reward benchmark (:mod:`rlal.agent.synthetic`,
    seeds 0-2, mean regret over the last 6 of 24 epochs): every-step with gamma 0 0.088, with gamma 1
    0.100, terminal with gamma 1 0.174: bootstrapping through 4-9 layers is slow with ~100 updates."""
    batch_size: int = 128
    """Transitions per SAC update (sampled with replacement from the replay buffer; while the buffer holds
    fewer, the whole buffer's size)."""
    replay_capacity: int = 100_000
    """Transitions the replay buffer holds; the oldest are overwritten first."""
    updates_per_epoch: int = 100
    """SAC gradient steps after each epoch's episodes (the default of :meth:`Agent.update`)."""
    warmup_episodes: int = 20
    """Episodes of uniform random actions before the policy acts (exploration, as AMC's warm-up). Updates
    start with the first stored episode, warm-up or not. The joint loop caps it at half the search's
    episodes (``search_epochs * episodes_per_epoch // 2``), so the policy always acts."""
    init_alpha: float = 0.1
    """Initial entropy temperature."""
    autotune_alpha: bool = True
    """Tune alpha so the policy's entropy tracks ``target_entropy`` (SAC, Haarnoja et al. 2018b)."""
    target_entropy: float | None = None
    """Entropy the temperature tuning aims at; None = -action_dim = -1 (the SAC paper's heuristic)."""
    reward_baseline: Literal["none", "moving-average"] = "none"
    """``moving-average``: store each episode's reward minus a running mean of past rewards (as AMC does,
    to reduce variance and to make epochs whose accuracy level differs comparable); ``none``: the raw
    reward."""
    baseline_rate: float = 0.1
    """Rate of the running mean: b <- b + rate * (reward - b) after every observed episode."""
    reward_scale: Literal["none", "std"] = "none"
    """``std``: the critics learn from every reward divided by the standard deviation of the episode rewards
    stored so far (recomputed at each update), so the soft Q values are in units of the rewards' spread
    and the entropy temperature weighs the same against them whatever the reward's units. ``none``: the
    rewards as they are. Accuracy differences between plans are a few hundredths, so with ``none`` the
    entropy term (alpha 0.1) outweighs them in the actor's loss."""
    uniform_keep: float | None = None
    """For ``uniform``: a fixed keep ratio for every layer, or None to draw one ratio per episode and act
    deterministically with the best ratio of the latest epoch (a one-scalar search)."""
    seed: int = 0
    """Added to the run's ``seed`` to seed the agent's initial weights (the context model's too), its action
    noise and its replay sampling, so runs of different seeds search differently. (Before 2026-12-02 the agent
    took this value alone, 0 by default: every seed of a table searched with the same agent randomness.)"""
    context: ContextConfig = field(default_factory=ContextConfig)

    @property
    def uses_context(self) -> bool:
        """True for the kind that conditions on the epoch context z (the full method)."""
        return self.kind == "sac"

    def validate(self, prefix: str = "agent") -> AgentConfig:
        """Check ranges the type system cannot express; raise :class:`RlalError` naming the key."""
        c = self.context
        checks: list[tuple[bool, str]] = [
            (self.kind in ("sac", "sac-no-dynamics", "random", "uniform"),
             "kind must be one of sac, sac-no-dynamics, random, uniform"),
            (len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
             "hidden_sizes must be a non-empty list of widths >= 1"),
            (self.actor_lr > 0, "actor_lr must be > 0"),
            (self.critic_lr > 0, "critic_lr must be > 0"),
            (self.alpha_lr > 0, "alpha_lr must be > 0"),
            (0 < self.tau <= 1, "tau must be in (0, 1]"),
            (0 <= self.gamma <= 1, "gamma must be in [0, 1]"),
            (self.credit in ("terminal", "every-step"), "credit must be one of terminal, every-step"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.replay_capacity >= self.batch_size, "replay_capacity must be >= batch_size"),
            (self.updates_per_epoch >= 0, "updates_per_epoch must be >= 0"),
            (self.warmup_episodes >= 0, "warmup_episodes must be >= 0"),
            (self.init_alpha > 0, "init_alpha must be > 0"),
            (0 < self.baseline_rate <= 1, "baseline_rate must be in (0, 1]"),
            (self.uniform_keep is None or 0 <= self.uniform_keep <= 1, "uniform_keep must be in [0, 1]"),
            (c.z_dim >= 1, "context.z_dim must be >= 1"),
            (c.embed_dim >= 1, "context.embed_dim must be >= 1"),
            (c.rnn in ("gru", "lstm"), "context.rnn must be one of gru, lstm"),
            (all(h >= 1 for h in c.decoder_hidden), "context.decoder_hidden widths must be >= 1"),
            (c.lr > 0, "context.lr must be > 0"),
            (c.updates_per_epoch >= 0, "context.updates_per_epoch must be >= 0"),
            (c.max_epochs >= 1, "context.max_epochs must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise RlalError(f"{prefix}.{message}")
        return self


@dataclass
class AlignConfig:
    """Strength and schedule of the alignment regulariser.

    ``lam`` defaults to ``1e-4``, a fifth of the usual CIFAR weight decay (5e-4). The two are on different
    scales: weight decay adds ``wd * ||theta||^2 / 2`` over *all* weights (gradient ``wd * theta``, which
    fades as weights shrink), while the group lasso adds ``lam * ||theta_c||`` per removed channel
    (gradient of constant norm ``lam`` per group, which does not fade). With SGD at learning rate ``lr``
    and momentum 0.9 (steady-state gain 1 / (1 - 0.9) = 10) a removed group's norm then falls by about
    ``10 * lr * lam`` per step from the penalty alone: at lr 0.1 and lam 1e-4 that is 1e-4 per step, about
    0.04 per epoch of 390 CIFAR steps (0.2 at lam 5e-4, 0.4 at lam 1e-3), small next to the cross-entropy
    gradient, so the agent can still change its mind and let a channel recover. Pick ``lam`` so that the
    search epochs add up to about the norm of a channel group (~1), as the shipped CIFAR-10 and ImageNet
    configs do.
    """

    lam: float = 1e-4
    """Penalty weight at full strength."""
    schedule: Literal["constant", "linear"] = "linear"
    """``"constant"``: ``lam`` from the first epoch; ``"linear"``: ramp from 0 to ``lam`` over
    ``ramp_epochs`` (early plans come from an untrained agent, so they are pulled on gently)."""
    ramp_epochs: int = 10
    """Epochs (counted from the first search epoch) over which the linear ramp rises; typically the
    number of search epochs."""
    target_ratio: float = 0.03
    """Norm ratio (removed / kept channels) that the frozen-plan alignment epochs (``search.align_epochs``)
    must reach: there the weight starts at ``lam`` and is steered every step, up or down, so the ratio
    follows a path (``path``) to this target; 0 = keep ``lam`` fixed there too."""
    path: Literal["geometric", "linear"] = "linear"
    """Shape of the steered ratio's path from its start to ``target_ratio``: ``"linear"`` takes the removed
    channels' norm away at an even pace; ``"geometric"`` halves it at a steady pace, so most of it goes in
    the first steps, and the controller, lagging behind that path, overshoots (ratio 0.003 for a 0.03
    target). On T2's tuning seeds linear trained the align epoch to a lower loss and ended higher on the
    reward split (docs/benchmarks.md)."""
    step: Literal["subgradient", "proximal"] = "proximal"
    """How the penalty acts. ``"proximal"``: after every optimiser step the removed groups are
    soft-thresholded by ``lr * lam / (1 - momentum)``, so they land on exactly zero instead of circling it.
    ``"subgradient"`` (the paper's): its gradient is added to the loss's; with three quarters of the channels
    removed (6% MACs) it stalled above its target. Proximal is the default by a rule fixed before the runs:
    every cut check passed on T1 and T2 and proximal − subgradient was −0.07 ± 0.09 (T1) and +0.10 ± 0.02
    (T2) points, not below 0 by 2 standard errors (docs/benchmarks.md)."""

    def validate(self, prefix: str = "search.align") -> AlignConfig:
        """Check ranges the type system cannot express; raise :class:`RlalError` naming the key."""
        if not self.lam >= 0:
            raise RlalError(f"{prefix}.lam must be >= 0, got {self.lam}")
        if self.ramp_epochs < 1:
            raise RlalError(f"{prefix}.ramp_epochs must be >= 1, got {self.ramp_epochs}")
        if not 0 <= self.target_ratio < 1:
            raise RlalError(f"{prefix}.target_ratio must be in [0, 1), got {self.target_ratio}")
        if self.path not in ("geometric", "linear"):
            raise RlalError(f"{prefix}.path must be 'geometric' or 'linear', got {self.path!r}")
        if self.step not in ("subgradient", "proximal"):
            raise RlalError(f"{prefix}.step must be 'subgradient' or 'proximal', got {self.step!r}")
        return self


@dataclass
class SearchConfig:
    """The joint method's epochs: dense warm-up, then search (agent episodes + training aligned to the
    agent's plan), the final choice, alignment to the frozen final plan, the cut, and the cut model trains
    for the rest of ``train.epochs`` (the same total as the dense baseline)."""

    warmup_epochs: int = 2
    """Dense epochs before the agent starts (the reward is meaningless on untrained weights)."""
    search_epochs: int = 10
    """Epochs of weights-then-agent alternation before the architecture is frozen and cut."""
    episodes_per_epoch: int = 10
    """Agent episodes (P) per search epoch, each scored on the reward split."""
    align_to: Literal["best-episode", "deterministic"] = "best-episode"
    """Plan the weights are aligned to next epoch: the best-rewarded episode of this epoch, or the agent's
    deterministic (mean) action on the current context."""
    final: Literal["rescored", "best-recent", "deterministic"] = "rescored"
    """Frozen architecture. ``rescored``: the best ``final_candidates`` plans of the last ``final_window``
    search epochs, the agent's deterministic plan and the uniform plan are scored again, on the same
    (latest) weights, on the whole reward split with ``final_bn_sets`` BN re-estimates each; a non-uniform
    plan is kept only if it beats the uniform plan by more than ``final_margin`` standard errors.
    ``best-recent`` (the paper's): the best-rewarded episode of the last ``final_window`` search epochs;
    ``deterministic``: the agent's deterministic action after the last search epoch."""
    final_window: int = 3
    final_candidates: int = 4
    """``rescored``: distinct top-rewarded plans of the recent episodes that are scored again."""
    final_bn_sets: int = 3
    """``rescored``: disjoint sets of ``env.bn_recalibration_batches`` training batches (at least 1 batch
    each) on which each candidate's BN statistics are re-estimated before scoring."""
    final_margin: float = 2.0
    """``rescored``: standard errors of the paired difference by which a plan must beat the uniform plan."""
    align_epochs: int = 1
    """Epochs after the final choice in which the weights are aligned to the frozen final plan (the
    regulariser steered to ``align.target_ratio``) before exactly those channels are cut; 0 = cut at once."""
    align: AlignConfig = field(default_factory=AlignConfig)
    dense_epoch_fraction: float = 1.0
    """Beyond the paper (1 = the paper's whole epochs): the share of an epoch's training steps that each
    epoch before the cut (warm-up, search, alignment) takes, on a fresh random part of the training split
    each time. The dense network costs about twice the small one per step at 50% MACs, so its epochs are
    the method's training overhead over a uniform network (:mod:`rlal.train.compute`); 0.5 halves it while
    the agent still acts, and alignment still steers, once per epoch. The learning-rate schedule runs over
    the steps actually taken."""
    subnet_weight: float = 0.0
    """Beyond the paper (0 = off, the paper's method): each training step of the warm-up and search epochs
    also trains one on-budget sub-network drawn at random around the uniform allocation, on the same batch,
    its loss weighted by this (see :mod:`rlal.train.subnet`). At aggressive budgets it keeps the masked
    sub-networks the agent scores above chance; it costs about one more forward and backward pass per step
    of those epochs. Single-process only."""

    def dense_steps(self, steps_per_epoch: int) -> int:
        """Training steps of each epoch before the cut: ``dense_epoch_fraction`` of an epoch's (rounded half
        up), at least one. The joint loop takes them and training compute counts them."""
        return max(1, math.floor(self.dense_epoch_fraction * steps_per_epoch + 0.5))

    @property
    def cut_epoch(self) -> int:
        """The epoch (1-based) at whose end the final plan is cut out."""
        return self.warmup_epochs + self.search_epochs + self.align_epochs

    def validate(self, total_epochs: int | None = None) -> SearchConfig:
        """Check ranges; given ``total_epochs``, warm-up, search and alignment must leave a fine-tuning
        epoch."""
        checks = [
            (self.warmup_epochs >= 0, "search.warmup_epochs must be >= 0"),
            (self.search_epochs >= 1, "search.search_epochs must be >= 1"),
            (self.episodes_per_epoch >= 1, "search.episodes_per_epoch must be >= 1"),
            (self.final_window >= 1, "search.final_window must be >= 1"),
            (self.final_candidates >= 1, "search.final_candidates must be >= 1"),
            (self.final_bn_sets >= 1, "search.final_bn_sets must be >= 1"),
            (self.final_margin >= 0, "search.final_margin must be >= 0"),
            (self.align_epochs >= 0, "search.align_epochs must be >= 0"),
            (0 < self.dense_epoch_fraction <= 1,
             f"search.dense_epoch_fraction must be in (0, 1] (got {self.dense_epoch_fraction})"),
            (math.isfinite(self.subnet_weight) and self.subnet_weight >= 0,
             f"search.subnet_weight must be a number >= 0 (got {self.subnet_weight})"),
            (total_epochs is None or self.cut_epoch < total_epochs,
             "search.warmup_epochs + search.search_epochs + search.align_epochs must be < train.epochs "
             f"({total_epochs}) to leave epochs for the cut model"),
        ]
        for ok, message in checks:
            if not ok:
                raise RlalError(message)
        self.align.validate()
        return self


Method = Literal["dense", "rlal", "uniform", "magnitude", "depgraph"]
BASELINE_METHODS: tuple[str, ...] = ("uniform", "magnitude", "depgraph")
"""The same-budget baselines of :mod:`rlal.train.baselines`."""


@dataclass
class BaselineConfig:
    """The same-budget baselines (``method`` ``uniform``, ``magnitude`` or ``depgraph``, see
    :mod:`rlal.train.baselines`). They share ``data``, ``model``, ``optim``, ``train`` and the MACs budget
    ``env.target_macs`` (with ``env.min_keep_ratio``, ``env.round_to`` and the residual ``env.policy``) with
    the joint method. ``uniform`` trains its small model for ``train.epochs`` and reads nothing here."""

    pretrain_epochs: int | None = None
    """``magnitude``/``depgraph``: epochs of dense training before pruning (a full schedule of their own);
    None = ``train.epochs``, the dense baseline's budget. Ignored when ``dense_run`` is given."""
    finetune_epochs: int | None = None
    """``magnitude``/``depgraph``: epochs of fine-tuning the cut model (a fresh schedule of
    ``optim.schedule`` from ``finetune_lr``, no warm-up); None = half the pre-training epochs (at least 1).
    The run's recorded ``epochs`` are pre-training + fine-tuning."""
    finetune_lr: float | None = None
    """Peak learning rate of the fine-tuning schedule; None = ``optim.lr / 10``."""
    criterion: Literal["l2", "l1", "bn_scale", "random"] = "l1"
    """``magnitude``: which channels a layer keeps, its top-k by this importance (see
    :mod:`rlal.structure.importance`); ``l1`` is the classic filter-norm criterion (Li et al. 2017), summed
    over the layer's coupled weights."""
    dense_run: str | None = None
    """``magnitude``/``depgraph``: a finished dense run directory (``rlal train --method dense``) whose
    ``model.safetensors`` is pruned instead of pre-training here; it must hold the same model on the same
    data. Its ``epochs`` count towards the recorded total."""

    def resolved_epochs(self, train_epochs: int, dense_epochs: int | None = None) -> tuple[int, int]:
        """``(pre-training, fine-tuning)`` epochs with the defaults filled in; ``dense_epochs`` are the
        epochs of a ``dense_run`` (which replace pre-training)."""
        pretrain = dense_epochs if dense_epochs is not None else self.pretrain_epochs or train_epochs
        finetune = self.finetune_epochs or max(1, pretrain // 2)
        return pretrain, finetune

    def validate(self, prefix: str = "baseline") -> BaselineConfig:
        """Check ranges the type system cannot express; raise :class:`RlalError` naming the key."""
        checks: list[tuple[bool, str]] = [
            (self.pretrain_epochs is None or self.pretrain_epochs >= 1,
             "pretrain_epochs must be >= 1 (or null for train.epochs)"),
            (self.finetune_epochs is None or self.finetune_epochs >= 1,
             "finetune_epochs must be >= 1 (or null for half the pre-training epochs)"),
            (self.finetune_lr is None or self.finetune_lr > 0,
             "finetune_lr must be > 0 (or null for optim.lr / 10)"),
            (self.criterion in ("l2", "l1", "bn_scale", "random"),
             "criterion must be one of l2, l1, bn_scale, random"),
            (self.dense_run is None or self.dense_run.strip() != "",
             "dense_run must be a run directory (or null to pre-train in this run)"),
        ]
        for ok, message in checks:
            if not ok:
                raise RlalError(f"{prefix}.{message}")
        return self


@dataclass
class RunConfig:
    """Everything a run needs; written to ``config.yaml`` in the run directory."""

    method: Method = "dense"
    """``dense``: train the unpruned model; ``rlal``: train and prune jointly (the method); ``uniform``,
    ``magnitude``, ``depgraph``: the same-budget baselines (see :class:`BaselineConfig`). The method's
    ablations are settings of ``rlal``: ``agent.kind=random`` (random search), ``agent.kind=sac-no-dynamics``
    (no epoch context), ``search.align.lam=0`` (no alignment)."""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def validate(self) -> RunConfig:
        """Check ranges the type system cannot express; raise :class:`RlalError` naming the key."""
        checks: list[tuple[bool, str]] = [
            (self.data.batch_size >= 1, "data.batch_size must be >= 1"),
            (self.data.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
            (self.data.reward_size is None or self.data.reward_size >= 0,
             "data.reward_size must be >= 0 (or null to size it from the data)"),
            (self.data.input_size is None or 1 <= self.data.input_size <= 4096,
             "data.input_size must be between 1 and 4096 (or null: the images' own size)"),
            (self.data.train_subset is None or self.data.train_subset >= 1, "data.train_subset must be >= 1"),
            (self.data.test_subset is None or self.data.test_subset >= 1, "data.test_subset must be >= 1"),
            (self.data.workers >= 0, "data.workers must be >= 0"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (0 <= self.optim.momentum < 1, "optim.momentum must be in [0, 1)"),
            (self.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
            (0 < self.optim.gamma <= 1, "optim.gamma must be in (0, 1]"),
            (all(0 < m < 1 for m in self.optim.milestones), "optim.milestones must be fractions in (0, 1)"),
            (self.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0"),
            (self.optim.clip_grad_norm >= 0, "optim.clip_grad_norm must be >= 0 (0 = off)"),
            (0 <= self.optim.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
            (self.train.epochs >= 1, "train.epochs must be >= 1"),
            (self.train.eval_every >= 0, "train.eval_every must be >= 0"),
            (self.train.threads is None or self.train.threads >= 1, "train.threads must be >= 1"),
            (self.train.dist_timeout > 0, "train.dist_timeout must be > 0 seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise RlalError(message)
        self.env.validate()
        self.agent.validate()
        self.search.validate(self.train.epochs if self.method == "rlal" else None)
        self.baseline.validate()
        self._validate_across_sections()
        return self

    def _validate_across_sections(self) -> None:
        """Checks that tie keys of different sections together, so that a run fails here, before any data
        is read or any file written, not epochs later."""
        context, search = self.agent.context, self.search
        if self.method == "rlal" and self.agent.uses_context and context.max_epochs < search.search_epochs:
            raise RlalError(
                f"agent.context.max_epochs ({context.max_epochs}) must be >= search.search_epochs "
                f"({search.search_epochs}): the epoch-context model has one embedding per search epoch"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_config_path(name: str) -> Path:
    """A config path, or the name of a config shipped with rlal (``rlal/configs/NAME.yaml``)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = resources.files("rlal") / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    available = ", ".join(shipped_configs())
    raise RlalError(f"config {name!r} is neither a file nor a shipped config (shipped: {available})")


def shipped_configs() -> list[str]:
    """Names of the configs shipped with rlal."""
    folder = resources.files("rlal") / "configs"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Build a validated :class:`RunConfig` from an optional YAML file and ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    config = _build(RunConfig, raw, prefix="")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RlalError(f"override {item!r} is not of the form key=value (e.g. train.epochs=5)")
        set_value(config, key.strip(), value)
    return config.validate()


def set_value(config: RunConfig, dotted_key: str, text: str) -> None:
    """Set ``section.key`` from its text form (parsed as YAML, then checked against the field's type)."""
    *path, leaf = dotted_key.split(".")
    target: Any = config
    for part in path:
        if not dataclasses.is_dataclass(target) or part not in _field_types(type(target)):
            raise RlalError(f"unknown config key {dotted_key!r}")
        target = getattr(target, part)
    fields = _field_types(type(target)) if dataclasses.is_dataclass(target) else {}
    if leaf not in fields or dataclasses.is_dataclass(getattr(target, leaf)):
        valid = ", ".join(sorted(fields)) if fields else "none"
        raise RlalError(f"unknown config key {dotted_key!r} (valid keys here: {valid})")
    try:
        parsed = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        parsed = text
    setattr(target, leaf, _coerce(fields[leaf], parsed, dotted_key))


def save_config(config: RunConfig, path: Path) -> None:
    """Write ``config`` as YAML to ``path`` (the run directory writes it atomically instead)."""
    path.write_text(dump_config(config))


def dump_config(config: RunConfig) -> str:
    """The YAML text of ``config``, as ``config.yaml`` holds it."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RlalError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise RlalError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RlalError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    types_ = _field_types(cls)
    unknown = sorted(set(raw) - set(types_))
    if unknown:
        raise RlalError(
            f"unknown config key {prefix + unknown[0]!r} (valid keys here: {', '.join(sorted(types_))})"
        )
    kwargs = {}
    for name, tp in types_.items():
        if name not in raw:
            continue
        if dataclasses.is_dataclass(tp):
            value = raw[name] or {}
            if not isinstance(value, dict):
                raise RlalError(f"config section {prefix + name!r} must be a mapping")
            kwargs[name] = _build(tp, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(tp, raw[name], prefix + name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow int -> float; raise naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        if value not in args:
            raise RlalError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except RlalError as exc:
                errors.append(str(exc))
        raise RlalError(errors[0] if errors else f"{key} has an invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise RlalError(f"{key} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise RlalError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RlalError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RlalError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool) or value is None:
            raise RlalError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this file, not user input
