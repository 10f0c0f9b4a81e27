"""The honest final choice: which plan is cut, decided on one set of weights with its noise known.

The best of a few noisy episodes is inflated by about as much as the real spread between sensible plans
(the winner's curse), and rewards from different epochs were earned on different weights. So the final
candidates (the best recent plans, the agent's deterministic plan, and the uniform plan) are scored again,
all on the same latest weights and the same images: the whole reward split, each candidate with its BN
statistics re-estimated on ``bn_sets`` disjoint sets of training batches. Each candidate is compared with
the uniform plan image by image (a paired difference), and a non-uniform plan is kept only when its mean
difference exceeds ``margin`` standard errors. Otherwise the uniform plan is cut: the search then found
nothing it can show to be better, and says so in the run's metrics.

The comparison is fair on noise but not neutral between the candidates: the latest weights were trained
in the last search epoch with alignment toward that epoch's selected plan, whose removed channels were
pushed toward zero, so that plan (and any candidate sharing its removed channels) loses less to masking
than the others. The uniform plan carries no such advantage unless it was the plan aligned to.

Standard error of a paired difference ``d`` (candidate minus uniform correctness): per image, ``d_i`` is
averaged over the BN sets; ``se^2 = var(d_i) / n_images + var(per-set means) / bn_sets``, the image
sampling noise plus the BN re-estimation noise that all images share.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlal.data import Loader
from rlal.env.reward import preserved_modes, recalibrated_bn
from rlal.structure import ChannelMasks, Criterion, Plan, Structure
from rlal.train.runtime import Runtime


@dataclass(frozen=True)
class Candidate:
    """One plan in the final choice, where it came from, and how it scored against the uniform plan."""

    plan: Plan
    source: str
    """``uniform``, ``greedy`` (the agent's deterministic plan) or ``episode <i> (e<epoch> r<search
    reward>)``, ``i`` its index in the run's ``episodes.json`` (unique: two episodes can tie on epoch and
    reward)."""
    accuracy: float
    """Mean accuracy (%) on the reward split over the BN sets."""
    diff: float
    """Mean paired difference with the uniform plan, in accuracy points."""
    se: float
    """Standard error of ``diff``, in accuracy points."""


@dataclass(frozen=True)
class FinalChoice:
    """The candidates as scored, and the one chosen."""

    candidates: tuple[Candidate, ...]
    chosen: int
    margin: float

    @property
    def plan(self) -> Plan:
        return self.candidates[self.chosen].plan

    def record(self) -> dict[str, Any]:
        """Plain data for ``metrics.jsonl``."""
        chosen = self.candidates[self.chosen]
        return {
            "chosen": chosen.source,
            "kept_uniform": chosen.source == "uniform",
            "margin_se": self.margin,
            "candidates": [
                {"source": c.source, "accuracy": c.accuracy, "diff_vs_uniform": c.diff, "se": c.se,
                 "plan": c.plan.to_dict()}
                for c in self.candidates
            ],
        }  # fmt: skip


@torch.no_grad()
def correctness(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                runtime: Runtime) -> torch.Tensor:  # fmt: skip
    """Per image, whether ``model`` (in eval mode) classifies it right: a bool CPU vector."""
    model.eval()
    hits = []
    for x, y in batches:
        with runtime.autocast():
            hits.append((model(x).argmax(1) == y).cpu())
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def score_plans(
    structure: Structure, plans: Sequence[Plan], reward: Loader, train: Loader, runtime: Runtime, *,
    criterion: Criterion, scores: dict[str, torch.Tensor], bn_batches: int, bn_sets: int,
) -> np.ndarray:  # fmt: skip
    """(plans, bn_sets, images) correctness of each plan's masked sub-network on the whole reward split,
    its BN statistics re-estimated on ``bn_batches`` training batches of each of ``bn_sets`` disjoint sets
    (the training loader's current order); the model comes out exactly as it went in."""
    model = structure.model
    masks = ChannelMasks(structure)
    batches = list(itertools.islice(iter(train), bn_batches * bn_sets))
    sets = [batches[k * bn_batches : (k + 1) * bn_batches] for k in range(bn_sets)]
    sets = [s for s in sets if s] or [[]]
    out = []
    for plan in plans:
        rows = []
        for bn in sets:
            recalibrate = recalibrated_bn(model, bn, runtime) if bn else contextlib.nullcontext()
            with preserved_modes(model), masks.applied(plan, criterion, scores=scores), recalibrate:
                rows.append(correctness(model, reward, runtime).numpy())
        out.append(np.stack(rows))
    return np.stack(out).astype(np.float64)


def decide(correct: np.ndarray, plans: Sequence[Plan], sources: Sequence[str], margin: float) -> FinalChoice:
    """Compare every candidate with the one whose source is ``uniform`` (see the module docstring) and
    choose the best non-uniform candidate only if it beats uniform by more than ``margin`` standard
    errors; otherwise the uniform plan."""
    u = list(sources).index("uniform")
    candidates = []
    for i, (plan, source) in enumerate(zip(plans, sources, strict=True)):
        d = correct[i] - correct[u]  # (sets, images)
        per_image = d.mean(0)
        n, k = per_image.size, d.shape[0]
        var = per_image.var(ddof=1) / n if n > 1 else 0.0
        if k > 1:
            var += d.mean(1).var(ddof=1) / k
        candidates.append(Candidate(plan, source, 100 * float(correct[i].mean()), 100 * float(d.mean()),
                                    100 * math.sqrt(var)))  # fmt: skip
    others = [i for i in range(len(candidates)) if i != u]
    chosen = u
    if others:
        best = max(others, key=lambda i: candidates[i].diff)
        if candidates[best].diff > 0 and candidates[best].diff > margin * candidates[best].se:
            chosen = best
    return FinalChoice(tuple(candidates), chosen, margin)
