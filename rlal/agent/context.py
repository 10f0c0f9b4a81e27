"""The epoch-context (environment-dynamics) model.

Weights and agent train in alternation, so the reward of an architecture drifts from epoch to epoch.
The paper models that drift: each training epoch t has a learnable embedding e_t; a recurrent net run
over e_0..e_t yields the context z_t ("the weights as of epoch t"); a decoder maps (an episode's keep
vector, z_t) to the episode's reward. Embeddings, recurrent net and decoder are trained together, with
MSE, on every episode observed so far, each paired with the z of its own epoch. The agent's actor and
critics take a context as an input, so one policy can act differently on different epochs' weights.

The agent acts in epoch t before any of that epoch's rewards exist, so e_t is still blank (zero) when it
does: the context it can act on is the *prior* of epoch t, the recurrent net over e_0..e_{t-1} and a blank
e_t (:meth:`EpochContext.prior`). Beyond the paper, which leaves this unstated, the model is fitted to
predict each episode's reward from its epoch's prior as well as from z_t, so the prior is a forecast of
the epoch's rewards from the epochs before it, and the agent acts on that prior and learns from it
(recomputed from the current model for every stored epoch, :meth:`EpochContext.priors`). A policy trained
on z_t refitted to the epoch's own rewards would act on inputs it was never trained on; on the synthetic
drifting problem the forecast prior lowered the regret of the agent's greedy plan when it acts, before the
epoch's rewards are learnt, by 0.028 ± 0.019 over 9 seeds (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlal.agent.config import ContextConfig
from rlal.agent.episode import Episode
from rlal.agent.nets import mlp, seeded
from rlal.errors import RlalError


class ContextNet(nn.Module):
    """Parameters of the context model: embedding table, recurrent net, reward decoder."""

    def __init__(self, cfg: ContextConfig, num_layers: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(cfg.max_epochs, cfg.embed_dim)
        # Zero, not random: an epoch not yet fitted then feeds the recurrent net a neutral input (its z_t,
        # used while that epoch's episodes run, is the net's extrapolation from the epochs before it), and
        # epochs whose rewards look alike are moved by alike gradients rather than kept apart by random
        # starts that no loss ever removes (they would reach the agent as noise in z).
        nn.init.zeros_(self.embeddings.weight)
        rnn = nn.GRU if cfg.rnn == "gru" else nn.LSTM
        self.rnn = rnn(cfg.embed_dim, cfg.z_dim, batch_first=True)
        self.decoder = mlp([num_layers + cfg.z_dim, *cfg.decoder_hidden, 1])


class EpochContext:
    """z_t for every training epoch t, learned by predicting the rewards of the episodes observed so far."""

    def __init__(self, cfg: ContextConfig, num_layers: int, seed: int = 0) -> None:
        self.cfg = cfg
        self.num_layers = num_layers
        with seeded(seed):
            self.net = ContextNet(cfg, num_layers)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, fused=True)

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    def z_all(self, up_to_epoch: int) -> Tensor:
        """(up_to_epoch + 1, z_dim): z_0..z_t from one pass of the recurrent net over e_0..e_t.

        Differentiable (the fit trains through it); callers that only read z should detach it.
        """
        self._check_epoch(up_to_epoch)
        embeddings = self.net.embeddings.weight[: up_to_epoch + 1]
        outputs, _ = self.net.rnn(embeddings.unsqueeze(0))  # z_t = output at step t
        return outputs.squeeze(0)

    def z(self, epoch: int) -> Tensor:
        """(z_dim,) the context of ``epoch`` under the current model, detached."""
        with torch.no_grad():
            return self.z_all(epoch)[epoch].clone()

    def priors(self, up_to_epoch: int) -> Tensor:
        """(up_to_epoch + 1, z_dim) the agent's context of every epoch t <= ``up_to_epoch``: the recurrent
        net over e_0..e_{t-1} and a blank e_t, as it stood when the agent acted in epoch t (see the module
        docstring), under the current model; detached."""
        with torch.no_grad():
            return self._priors(up_to_epoch).clone()

    def prior(self, epoch: int) -> Tensor:
        """(z_dim,) the agent's context of ``epoch``: :meth:`priors` of that epoch alone."""
        return self.priors(epoch)[epoch]

    def _priors(self, up_to_epoch: int) -> Tensor:
        """:meth:`priors`, differentiable: one batched pass, row t reading e_j for j < t and zeros after
        (the recurrent net's output at step t reads rows 0..t only)."""
        self._check_epoch(up_to_epoch)
        n = up_to_epoch + 1
        seen = torch.ones(n, n).tril(-1).unsqueeze(2)
        outputs, _ = self.net.rnn(seen * self.net.embeddings.weight[:n].unsqueeze(0))
        return outputs[torch.arange(n), torch.arange(n)]

    def predict(
        self, keep_vectors: Tensor | np.ndarray, epochs: Tensor | np.ndarray | Sequence[int],
        *, prior: bool = False,
    ) -> Tensor:
        """(N,) predicted reward of each architecture (N, L) on the weights of its epoch (N,), read from
        z_t, or with ``prior`` from the epoch's prior (the forecast made before its rewards)."""
        keep = torch.as_tensor(np.asarray(keep_vectors), dtype=torch.float32)
        idx = torch.as_tensor(np.asarray(epochs), dtype=torch.int64)
        z = (self._priors if prior else self.z_all)(int(idx.max()))[idx]
        return self.net.decoder(torch.cat([keep, z], dim=1)).squeeze(1)

    def mse(self, episodes: Sequence[Episode]) -> float:
        """The prior's reward-prediction MSE on ``episodes`` without fitting them: called on a new epoch's
        episodes before :meth:`fit`, it is a held-out check of the forecast the agent acted on (the fit's own
        loss can be memorisation). NaN if none."""
        if not episodes:
            return float("nan")
        keep = torch.as_tensor(np.stack([e.keep for e in episodes]), dtype=torch.float32)
        epochs = torch.as_tensor([e.epoch for e in episodes], dtype=torch.int64)
        rewards = torch.as_tensor([e.reward for e in episodes], dtype=torch.float32)
        with torch.no_grad():
            return F.mse_loss(self.predict(keep, epochs, prior=True), rewards).item()

    def fit(self, episodes: Sequence[Episode], n_updates: int | None = None) -> float:
        """Full-batch Adam steps on ``episodes`` (all those observed so far) of the reward-prediction MSE
        from z_t plus that from the epoch's prior (the forecast, see the module docstring).

        Returns the mean of the two MSEs at the last step (before it was taken); NaN when there is nothing
        to fit.
        """
        n_updates = self.cfg.updates_per_epoch if n_updates is None else n_updates
        if not episodes or n_updates == 0:
            return float("nan")
        keep = torch.as_tensor(np.stack([e.keep for e in episodes]), dtype=torch.float32)
        epochs = torch.as_tensor([e.epoch for e in episodes], dtype=torch.int64)
        rewards = torch.as_tensor([e.reward for e in episodes], dtype=torch.float32)
        loss = torch.zeros(())
        for _ in range(n_updates):
            loss = F.mse_loss(self.predict(keep, epochs), rewards) \
                + F.mse_loss(self.predict(keep, epochs, prior=True), rewards)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.item() / 2

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies: torch's state dicts alias the live tensors, which later steps mutate)."""
        return copy.deepcopy({"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # own its moments, not alias them

    def _check_epoch(self, epoch: int) -> None:
        if not 0 <= epoch < self.cfg.max_epochs:
            raise RlalError(
                f"epoch {epoch} is outside the context model's table: "
                f"agent.context.max_epochs={self.cfg.max_epochs} must exceed every epoch index"
            )
