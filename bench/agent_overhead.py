"""Seconds per epoch the pruning agent adds to training, next to one training epoch. JSON lines.

ResNet-56 on CIFAR-10-shaped data (3x32x32; the real CIFAR-10 from ../shared/data when present, else random
images, and the output says which). Per agent epoch: importance rescoring (``env.set_epoch``), P episodes
(acting, the action wall, and the reward: the masked sub-network's accuracy on ``reward_batches`` batches
of the reward split), the context model's fit on every episode so far, and the SAC update. The training
epoch is timed whole on a GPU; on the CPU a fixed number of batches is timed and extrapolated to the
45,000-image epoch (labelled ``extrapolated``).

    python bench/agent_overhead.py [--data-dir DIR] [--episodes 10] [--epochs 2] [--train-batches 10] \
        [--threads N]

There is no default number of episodes per epoch in the code yet; P = 10 is this script's assumption.
On a shared 2-core machine use ``--threads 1``: with two threads and another process busy, the agent's tiny
networks ran ~20x slower (OpenMP threads waiting on each other), which swamps the figures.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from rlal.agent import AgentConfig, make_agent, make_context, run_episode
from rlal.config import DataConfig, EnvConfig, OptimConfig, TrainConfig
from rlal.data import Data, DeviceLoader, build_data, dataset_spec
from rlal.env import Scorer, make_env
from rlal.errors import DataError
from rlal.machine import describe
from rlal.models import create_model
from rlal.structure import Plan, find_layers
from rlal.train.epoch import train_one_epoch
from rlal.train.optim import build_optimizer
from rlal.train.runtime import Runtime, resolve_runtime, seed_everything

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "resnet56"
SHAPE = (3, 32, 32)


class TimedScorer:
    """Wraps the environment's scorer to add up the seconds spent scoring (the reward's share)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer, self.seconds = scorer, 0.0

    def set_epoch(self, epoch: int) -> None:
        self.scorer.set_epoch(epoch)

    def score(self, plan: Plan) -> float:
        start = time.perf_counter()
        reward = self.scorer.score(plan)  # .item() inside evaluate() has synchronised already
        self.seconds += time.perf_counter() - start
        return reward


def load_data(data_dir: str | None, runtime: Runtime) -> tuple[Data, str]:
    """Real CIFAR-10 (45,000 train / 5,000 reward) if found, else random images of the same shapes."""
    cfg = DataConfig(dataset="cifar10", data_dir=data_dir, batch_size=128, eval_batch_size=512)
    try:
        return build_data(cfg, runtime.device, seed=0, channels_last=runtime.channels_last), "cifar10"
    except DataError:
        pass
    spec = dataset_spec("cifar10")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, *SHAPE), dtype=torch.uint8, generator=g).to(runtime.device)
    labels = torch.randint(0, 10, (50_000,), generator=g).to(runtime.device)
    common = {"mean": spec.mean, "std": spec.std, "channels_last": runtime.channels_last}
    order = torch.randperm(50_000, generator=g)
    train = DeviceLoader(
        images, labels, indices=order[5_000:], batch_size=128, shuffle=True, drop_last=True, **common
    )
    reward = DeviceLoader(images, labels, indices=order[:5_000], batch_size=512, **common)
    data = Data(spec, tuple(str(i) for i in range(10)), "random", train, reward, reward)
    return data, "random (CIFAR-10 not found)"


class Clock:
    """Adds up the seconds of named steps, synchronising a GPU around each."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.parts: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def train_epoch_seconds(model, data: Data, runtime: Runtime, batches: int | None) -> tuple[float, bool]:
    """Seconds of one training epoch: timed whole (``batches`` None) or over ``batches`` batches after a
    warm-up and scaled to the full epoch. Returns (seconds, extrapolated)."""
    optimizer = build_optimizer(model, OptimConfig())
    warmup = list(itertools.islice(iter(data.train), 3))
    train_one_epoch(model, warmup, optimizer, None, runtime)
    if batches is None:
        return train_one_epoch(model, data.train, optimizer, None, runtime).seconds, False
    timed = list(itertools.islice(iter(data.train), batches))  # gathered first: only the steps are timed
    stats = train_one_epoch(model, timed, optimizer, None, runtime)
    return stats.seconds * len(data.train) / batches, True


def bench(device: str, args: argparse.Namespace, data_dir: str | None) -> list[dict[str, object]]:
    """The agent's epochs against one training epoch on ``device``: ResNet-56 on CIFAR-10 (or random
    images of its shape), the default environment and agent settings."""
    runtime = resolve_runtime(TrainConfig(device=device, progress=False))
    seed_everything(0)
    data, source = load_data(data_dir, runtime)
    return measure(runtime, data, source, episodes=args.episodes, epochs=args.epochs,
                   train_batches=None if runtime.device.type == "cuda" else args.train_batches)


def measure(
    runtime: Runtime, data: Data, source: str, *, episodes: int, epochs: int, train_batches: int | None,
    env_cfg: EnvConfig | None = None, agent_cfg: AgentConfig | None = None, model_name: str = MODEL,
) -> list[dict[str, object]]:
    """Time ``epochs`` agent epochs of ``episodes`` episodes each on ``data`` (one JSON-ready dict per epoch)
    and one training epoch (timed whole when ``train_batches`` is None, else over that many batches and
    scaled to the epoch), then a summary dict with their ratio. ``env_cfg``/``agent_cfg`` default to the
    shipped defaults; the GPU evidence run (``bench/gpu_evidence.py``) passes its track's."""
    seed_everything(0)
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    spec = data.spec
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    model = create_model(model_name, num_classes=spec.num_classes, in_channels=spec.in_channels,
                         input_size=spec.input_size).to(runtime.device, memory_format=fmt)
    env_cfg = env_cfg or EnvConfig()
    structure = find_layers(model, shape, policy=env_cfg.policy)
    env = make_env(structure, env_cfg, data, runtime)
    timed_scorer = TimedScorer(env.scorer)
    env.scorer = timed_scorer
    agent_cfg = agent_cfg or AgentConfig()
    agent = make_agent(agent_cfg, env.state_dim, env.num_layers)
    context = make_context(agent_cfg, env.num_layers)

    epoch_seconds, extrapolated = train_epoch_seconds(model, data, runtime, train_batches)
    reward_images = min(
        data.reward.num_samples, (env_cfg.reward_batches or len(data.reward)) * data.reward.batch_size
    )
    common = {
        "bench": "agent_overhead", "model": model_name, "data": source, "device": runtime.describe(),
        "agent": agent_cfg.kind, "episodes": episodes, "episodes_note": "P assumed (no default in code)",
        "reward_batches": env_cfg.reward_batches, "reward_images": reward_images,
        "bn_recalibration_batches": env_cfg.bn_recalibration_batches, "target_macs": env_cfg.target_macs,
    }  # fmt: skip
    dense_macs = env.budget.dense_macs
    lines, totals = [], []
    for epoch in range(epochs):
        clock = Clock(runtime.device)
        timed_scorer.seconds = 0.0
        with clock("importance_s"):
            env.set_epoch(epoch)
        z = context.prior(epoch) if context is not None else None
        with clock("episodes_s"):
            run = [run_episode(env, agent, epoch, z) for _ in range(episodes)]
        with clock("observe_s"):
            for episode in run:
                agent.observe(episode)
        if context is not None:
            with clock("context_fit_s"):
                context.fit(env.history)
        with clock("sac_update_s"):
            agent.update(context)
        total = sum(clock.parts.values())
        totals.append(total)
        lines.append({
            **common, "epoch": epoch, "agent_epoch_s": round(total, 3),
            **{k: round(v, 4) for k, v in clock.parts.items()},
            "of_which_reward_s": round(timed_scorer.seconds, 3),
            "reward_s_per_episode": round(timed_scorer.seconds / episodes, 4),
            "mean_reward": round(sum(e.reward for e in run) / len(run), 4),
            "mean_macs_ratio": round(sum(e.macs for e in run) / len(run) / dense_macs, 4),
        })  # fmt: skip
    train_key = "train_epoch_s_extrapolated" if extrapolated else "train_epoch_s"
    lines.append({
        **common, "summary": True, "agent_epoch_s_mean": round(sum(totals) / len(totals), 3),
        train_key: round(epoch_seconds, 3),
        "train_batches_timed": train_batches if extrapolated else len(data.train),
        "train_images_per_epoch": len(data.train) * data.train.batch_size,
        "agent_over_train": round(sum(totals) / len(totals) / epoch_seconds, 4), **machine(),
    })  # fmt: skip
    return lines


def machine() -> dict[str, object]:
    """The machine, and its load: the agent's small steps are the first to suffer from a busy core."""
    return {**describe(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset directory (default: ../shared/data when present)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per epoch (P)")
    parser.add_argument("--epochs", type=int, default=2, help="agent epochs timed")
    parser.add_argument("--train-batches", type=int, default=10, help="timed CPU training batches")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's); 1 on a busy machine"
    )
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or (str(SHARED_DATA) if SHARED_DATA.is_dir() else None)
    devices = ([] if args.skip_cpu else ["cpu"]) + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for line in bench(device, args, data_dir):
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
