"""A fixed-capacity replay buffer of per-layer transitions, each tagged with its training epoch.

The tag is the point: the reward of a transition was earned on the weights of its epoch, so the agent
looks up that epoch's context z in the *current* context model whenever it samples a batch, rather than
storing a z that the model has since revised.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor


class Batch(NamedTuple):
    """A sample of transitions (as Stable-Baselines3's ``ReplayBufferSamples``)."""

    states: Tensor
    """(B, state_dim) float32."""
    actions: Tensor
    """(B,) float32: keep ratios as applied, in [0, 1]."""
    rewards: Tensor
    """(B,) float32."""
    next_states: Tensor
    """(B, state_dim) float32; zeros where ``dones`` is 1."""
    dones: Tensor
    """(B,) float32: 1 for the last layer of an episode."""
    epochs: Tensor
    """(B,) int64: the training epoch each transition was observed in."""


class ReplayBuffer:
    """Ring buffer of ``capacity`` transitions in torch tensors; sampling is uniform, with replacement,
    from its own seeded generator (so adding evaluation episodes elsewhere never changes the batches)."""

    def __init__(self, capacity: int, state_dim: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.state_dim = state_dim
        self.states = torch.zeros(capacity, state_dim)
        self.actions = torch.zeros(capacity)
        self.rewards = torch.zeros(capacity)
        self.next_states = torch.zeros(capacity, state_dim)
        self.dones = torch.zeros(capacity)
        self.epochs = torch.zeros(capacity, dtype=torch.int64)
        self.pos = 0
        """Slot the next transition goes into."""
        self.size = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(
        self, state: np.ndarray, action: float, reward: float, next_state: np.ndarray, done: bool, epoch: int
    ) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.pos
        self.states[i] = torch.as_tensor(state, dtype=torch.float32)
        self.actions[i] = float(action)
        self.rewards[i] = float(reward)
        self.next_states[i] = torch.as_tensor(next_state, dtype=torch.float32)
        self.dones[i] = float(done)
        self.epochs[i] = int(epoch)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        return Batch(
            self.states[idx], self.actions[idx], self.rewards[idx],
            self.next_states[idx], self.dones[idx], self.epochs[idx],
        )

    def max_epoch(self) -> int:
        """The latest epoch any stored transition comes from (how far the context model must be unrolled)."""
        return int(self.epochs[: self.size].max()) if self.size else 0

    def state_dict(self) -> dict[str, Any]:
        """Only the filled slots, plus the write position and the sampling generator."""
        n = self.size
        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "size": n,
            "states": self.states[:n].clone(),
            "actions": self.actions[:n].clone(),
            "rewards": self.rewards[:n].clone(),
            "next_states": self.next_states[:n].clone(),
            "dones": self.dones[:n].clone(),
            "epochs": self.epochs[:n].clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} in the state, {self.capacity} configured")
        n = state["size"]
        for name in ("states", "actions", "rewards", "next_states", "dones", "epochs"):
            getattr(self, name)[:n] = state[name]
        self.pos, self.size = state["pos"], n
        self.generator.set_state(state["generator"])
