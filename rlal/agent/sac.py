"""Soft Actor-Critic conditioned on the epoch context z: the method's pruning agent.

Networks and update follow CleanRL's ``sac_continuous_action.py``: a tanh-squashed Gaussian actor,
twin soft Q critics with Polyak-averaged targets, and automatic tuning of the entropy temperature alpha.
What the paper adds: actor and critics read [state, z], and z is looked up for each sampled
transition's own epoch from the *current* context model (the buffer stores epoch indices, not z): the
prior of that epoch, the context the agent acted on (:meth:`EpochContext.priors`).

Credit assignment (``agent.credit``, ``agent.gamma``): by default every layer is paid the episode's final
reward and nothing is bootstrapped (discount 0), so every layer's critic estimates the same thing, the
expected final reward given its state and action, and the entropy term weighs the same at every layer.
AMC's literal form (``every-step`` with discount 1) also adds the value of the later layers, so a layer's
Q grows with the number of layers left; ``terminal`` pays only the last layer.
``sac-no-dynamics`` is the same agent with z absent (zero width).
All networks live on the CPU: they are tiny, and moving a batch to an accelerator costs more than it saves.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlal.agent.config import LEARNING_KINDS, AgentConfig
from rlal.agent.context import EpochContext
from rlal.agent.episode import Episode
from rlal.agent.nets import mlp, seeded
from rlal.agent.replay import Batch, ReplayBuffer

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
ACTION_SCALE, ACTION_BIAS = 0.5, 0.5
"""tanh output in (-1, 1) mapped affinely onto keep ratios in (0, 1)."""


class SoftQNetwork(nn.Module):
    """Q(obs, a) with obs = [state, z]."""

    def __init__(self, obs_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp([obs_dim + 1, *hidden, 1])

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        return self.net(torch.cat([obs, action.unsqueeze(1)], dim=1)).squeeze(1)


class Actor(nn.Module):
    """Gaussian policy over a pre-squash value; tanh then the affine map give a keep ratio in (0, 1)."""

    def __init__(self, obs_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.trunk = nn.Sequential(mlp([obs_dim, *hidden]), nn.ReLU())
        self.fc_mean = nn.Linear(hidden[-1], 1)
        self.fc_logstd = nn.Linear(hidden[-1], 1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(obs)
        log_std = torch.tanh(self.fc_logstd(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)  # soft clamp, as CleanRL
        return self.fc_mean(h).squeeze(1), log_std.squeeze(1)

    def greedy(self, obs: Tensor) -> Tensor:
        """The squashed mean: the deterministic action."""
        mean, _ = self(obs)
        return torch.tanh(mean) * ACTION_SCALE + ACTION_BIAS

    def sample(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A reparameterised action in (0, 1) and its log-probability (with the tanh change of variables).

        The noise is drawn from ``generator`` (not the global RNG), so the agent's randomness is part of
        its state and a restored agent continues exactly.
        """
        mean, log_std = self(obs)
        eps = torch.randn(mean.shape, generator=generator)
        x_t = mean + log_std.exp() * eps
        y_t = torch.tanh(x_t)
        action = y_t * ACTION_SCALE + ACTION_BIAS
        log_prob = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)  # Normal(mean, std) at x_t
        log_prob = log_prob - torch.log(ACTION_SCALE * (1 - y_t.pow(2)) + 1e-6)
        return action, log_prob


class SACAgent:
    """SAC on per-layer keep ratios; with ``kind="sac"`` actor and critics also read the epoch context z."""

    def __init__(self, cfg: AgentConfig, state_dim: int, num_layers: int) -> None:
        if cfg.kind not in LEARNING_KINDS:
            raise ValueError(f"SACAgent needs kind sac or sac-no-dynamics, got {cfg.kind!r}")
        self.cfg = cfg
        self.num_layers = num_layers
        self.uses_context = cfg.uses_context
        self.z_dim = cfg.context.z_dim if self.uses_context else 0
        obs_dim = state_dim + self.z_dim
        with seeded(cfg.seed):
            self.actor = Actor(obs_dim, cfg.hidden_sizes)
            self.qf1 = SoftQNetwork(obs_dim, cfg.hidden_sizes)
            self.qf2 = SoftQNetwork(obs_dim, cfg.hidden_sizes)
            self.qf1_target = SoftQNetwork(obs_dim, cfg.hidden_sizes)
            self.qf2_target = SoftQNetwork(obs_dim, cfg.hidden_sizes)
        self.qf1_target.load_state_dict(self.qf1.state_dict())
        self.qf2_target.load_state_dict(self.qf2.state_dict())
        q_params = [*self.qf1.parameters(), *self.qf2.parameters()]
        self.q_optimizer = torch.optim.Adam(q_params, lr=cfg.critic_lr, fused=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.target_entropy = -1.0 if cfg.target_entropy is None else cfg.target_entropy  # -action_dim
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), requires_grad=True)
        self.a_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.replay = ReplayBuffer(cfg.replay_capacity, state_dim, seed=cfg.seed + 1)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.episodes_seen = 0
        self.baseline: float | None = None
        """Running mean of episode rewards (``reward_baseline="moving-average"``)."""

    @property
    def alpha(self) -> float:
        return self.log_alpha.exp().item()

    # --- acting -------------------------------------------------------------------------------------

    def start_episode(self) -> None:
        pass

    def act(self, state: np.ndarray, z: Tensor | None, deterministic: bool = False) -> float:
        """A keep ratio in [0, 1]: uniform random during warm-up, else sampled from pi; ``deterministic``
        (evaluation) gives the squashed mean of pi, warm-up or not."""
        if not deterministic and self.episodes_seen < self.cfg.warmup_episodes:
            return float(torch.rand((), generator=self.generator))
        obs = self._obs(torch.as_tensor(state, dtype=torch.float32).unsqueeze(0), self._z_rows(z, 1))
        with torch.no_grad():
            if deterministic:  # draws no noise, so evaluation episodes leave the training RNG stream alone
                return float(self.actor.greedy(obs))
            action, _ = self.actor.sample(obs, self.generator)
        return float(action)

    # --- learning -----------------------------------------------------------------------------------

    def observe(self, episode: Episode) -> None:
        """Push the episode's L transitions; the (baselined) final reward is paid at the last layer, or at
        every layer with ``credit="every-step"``."""
        reward = episode.reward
        if self.cfg.reward_baseline == "moving-average":
            if self.baseline is None:
                self.baseline = reward
            advantage = reward - self.baseline  # against the level before this episode, as AMC
            self.baseline += self.cfg.baseline_rate * (reward - self.baseline)
            reward = advantage
        states, actions = episode.states, episode.actions
        last = len(actions) - 1
        for layer in range(len(actions)):
            done = layer == last
            next_state = np.zeros_like(states[layer]) if done else states[layer + 1]
            paid = reward if done or self.cfg.credit == "every-step" else 0.0
            self.replay.add(states[layer], actions[layer], paid, next_state, done, episode.epoch)
        self.episodes_seen += 1

    def update(self, context: EpochContext | None, n_updates: int | None = None) -> dict[str, float]:
        """``n_updates`` SAC steps; returns the mean of each logged quantity ({} when nothing to learn from).

        z for every stored epoch comes from one pass of the current context model. The context model
        is not trained here (its fit comes before, on the episodes), so this equals recomputing z at
        every sampled batch; it is detached: the SAC losses never move the context model.
        """
        n_updates = self.cfg.updates_per_epoch if n_updates is None else n_updates
        if n_updates == 0 or len(self.replay) == 0:
            return {}
        # A few episodes of a small net hold fewer transitions than a batch: learn from them anyway.
        batch_size = min(self.cfg.batch_size, len(self.replay))
        z_table = self._z_table(context)
        scale = self.reward_scale()
        totals: dict[str, float] = {}
        for _ in range(n_updates):
            batch = self.replay.sample(batch_size)
            if scale != 1.0:
                batch = batch._replace(rewards=batch.rewards * scale)
            stats = self.sac_step(batch, z_table[batch.epochs])
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
        return {key: value / n_updates for key, value in totals.items()}

    def reward_scale(self) -> float:
        """What the critics' rewards are multiplied by (``agent.reward_scale``): 1, or one over the standard
        deviation of the episode rewards in the buffer (each episode's last transition holds its reward,
        whatever the credit), 1 while fewer than two are stored or they do not vary."""
        if self.cfg.reward_scale == "none":
            return 1.0
        n = len(self.replay)
        final = self.replay.rewards[:n][self.replay.dones[:n] > 0]
        if len(final) < 2:
            return 1.0
        spread = float(final.double().std())
        return 1.0 / spread if spread > 1e-8 else 1.0

    def sac_step(self, batch: Batch, z: Tensor) -> dict[str, float]:
        """One SAC update on ``batch`` whose transitions have contexts ``z`` (B, z_dim), read as CleanRL's."""
        cfg = self.cfg
        obs = self._obs(batch.states, z)
        next_obs = self._obs(batch.next_states, z)  # an episode never crosses epochs: same z
        alpha = self.log_alpha.exp().detach()

        # Critics: soft Bellman target from the target critics and a fresh action at the next state.
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.sample(next_obs, self.generator)
            qf1_next_target = self.qf1_target(next_obs, next_actions)
            qf2_next_target = self.qf2_target(next_obs, next_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_log_pi
            next_q_value = batch.rewards + (1 - batch.dones) * cfg.gamma * min_qf_next_target
        qf1_a_values = self.qf1(obs, batch.actions)
        qf2_a_values = self.qf2(obs, batch.actions)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss
        self.q_optimizer.zero_grad()
        qf_loss.backward()
        self.q_optimizer.step()

        # Actor: maximise the smaller soft Q of a reparameterised action.
        pi, log_pi = self.actor.sample(obs, self.generator)
        min_qf_pi = torch.min(self.qf1(obs, pi), self.qf2(obs, pi))
        actor_loss = (alpha * log_pi - min_qf_pi).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        # Temperature: raise alpha when the entropy -log_pi is below its target, lower it when above.
        alpha_loss = torch.zeros(())
        if cfg.autotune_alpha:
            alpha_loss = (-self.log_alpha.exp() * (log_pi.detach() + self.target_entropy)).mean()
            self.a_optimizer.zero_grad()
            alpha_loss.backward()
            self.a_optimizer.step()

        # Targets: Polyak averaging.
        with torch.no_grad():
            for net, target in ((self.qf1, self.qf1_target), (self.qf2, self.qf2_target)):
                for param, target_param in zip(net.parameters(), target.parameters(), strict=True):
                    target_param.lerp_(param, cfg.tau)

        return {
            "qf1_loss": qf1_loss.item(),
            "qf2_loss": qf2_loss.item(),
            "qf1_values": qf1_a_values.mean().item(),
            "actor_loss": actor_loss.item(),
            "alpha": alpha.item(),
            "alpha_loss": alpha_loss.item(),
            "entropy": -log_pi.mean().item(),
        }

    # --- state --------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything that shapes later actions and updates: nets, targets, optimisers, alpha, RNG, buffer.

        A snapshot: copies, since torch's state dicts alias the live tensors that later updates mutate.
        """
        return copy.deepcopy({
            "kind": self.cfg.kind,
            "actor": self.actor.state_dict(),
            "qf1": self.qf1.state_dict(),
            "qf2": self.qf2.state_dict(),
            "qf1_target": self.qf1_target.state_dict(),
            "qf2_target": self.qf2_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "episodes_seen": self.episodes_seen,
            "baseline": self.baseline,
            "replay": self.replay.state_dict(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["kind"] != self.cfg.kind:
            raise ValueError(f"state of a {state['kind']!r} agent cannot load into a {self.cfg.kind!r} agent")
        for name in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("actor_optimizer", "q_optimizer", "a_optimizer"):
            getattr(self, name).load_state_dict(copy.deepcopy(state[name]))  # own its moments, not alias them
        self.generator.set_state(state["generator"])
        self.episodes_seen = state["episodes_seen"]
        self.baseline = state["baseline"]
        self.replay.load_state_dict(state["replay"])

    # --- helpers ------------------------------------------------------------------------------------

    def _obs(self, states: Tensor, z: Tensor) -> Tensor:
        return torch.cat([states, z], dim=1)

    def _z_rows(self, z: Tensor | None, rows: int) -> Tensor:
        """z repeated for ``rows`` observations; an empty (rows, 0) tensor for the agent without dynamics."""
        if not self.uses_context:
            return torch.zeros(rows, 0)
        if z is None:
            raise ValueError("the sac agent conditions on the epoch context: pass z = context.prior(epoch)")
        return z.detach().reshape(1, self.z_dim).expand(rows, -1)

    def _z_table(self, context: EpochContext | None) -> Tensor:
        """(max stored epoch + 1, z_dim) the prior context of every stored epoch (what the agent acted on),
        from the current model, detached."""
        if not self.uses_context:
            return torch.zeros(self.replay.max_epoch() + 1, 0)
        if context is None:
            raise ValueError("the sac agent needs the context model in update() to look up z")
        with torch.no_grad():
            return context.priors(self.replay.max_epoch())
