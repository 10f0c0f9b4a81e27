"""Typed settings of the pruning agent (:class:`AgentConfig`) and its epoch-context model
(:class:`ContextConfig`).

The context model's settings are nested in the agent's (``agent.context.z_dim``) because the agent's
networks take ``z`` as input and so need its width; the run config composes :class:`AgentConfig` as its
``agent`` section, which is the prefix the validation messages use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlal.errors import RlalError

AgentKind = Literal["sac", "sac-no-dynamics", "random", "uniform"]


@dataclass
class ContextConfig:
    """The environment-dynamics model: epoch embeddings -> recurrent net -> z_t; (keep, z_t) -> reward."""

    z_dim: int = 8
    """Width of the epoch context z_t (the recurrent net's hidden size) that conditions actor and critics."""
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
    gamma: float = 1.0
    """Discount. 1 as in AMC: every step of an episode is credited with the episode's final reward."""
    batch_size: int = 128
    """Transitions per SAC update (sampled with replacement from the replay buffer)."""
    replay_capacity: int = 100_000
    """Transitions the replay buffer holds; the oldest are overwritten first."""
    updates_per_epoch: int = 100
    """SAC gradient steps after each epoch's episodes (the default of :meth:`Agent.update`)."""
    warmup_episodes: int = 20
    """Episodes of uniform random actions before the policy acts (exploration, as AMC's warm-up). Updates
    start as soon as the buffer holds a batch, warm-up or not."""
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
    uniform_keep: float | None = None
    """For ``uniform``: a fixed keep ratio for every layer, or None to draw one ratio per episode and act
    deterministically with the best ratio of the latest epoch (a one-scalar search)."""
    seed: int = 0
    """Seed of the initial weights (the context model's too), of the action noise and of replay sampling."""
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
