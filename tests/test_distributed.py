"""Several processes under torchrun (gloo on the CPU): sharded data, the agent's episodes split across ranks,
ranks that stay identical, one run directory, a rank that dies, and launch mistakes as one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from test_data_imagefolder import write_folder
from test_resume import joint_overrides, untimed, wait_past_checkpoint
from test_train import fmnist_dir  # noqa: F401  (fixture re-used)

from rlal.agent import make_agent, make_context
from rlal.checkpoint import load_checkpoint
from rlal.config import TrainConfig, load_config
from rlal.data import data_from_tensors
from rlal.data.imagefolder import EpochSampler, ImageFolderDataset, ImageFolderLoader
from rlal.data.loader import DeviceLoader
from rlal.data.splits import seeded_generator
from rlal.data.transforms import TrainTransform
from rlal.env import make_env
from rlal.errors import RlalError
from rlal.models import create_model
from rlal.report.metrics import read_metrics
from rlal.structure import find_layers
from rlal.train.distributed import Dist, _sync_bn_view, from_env
from rlal.train.joint import run_agent_episodes
from rlal.train.runtime import Runtime, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMEOUT = 120


# --- data shards ----------------------------------------------------------------------------------------


def test_rank_shards_of_an_epoch_are_disjoint_equally_long_and_deal_out_the_single_process_order():
    images = torch.zeros(23, 1, 4, 4, dtype=torch.uint8)
    whole = DeviceLoader(images, torch.arange(23), batch_size=4, mean=(0.0,), std=(1.0,), shuffle=True,
                         drop_last=True, seed=3)
    whole.set_epoch(2)
    # Labels are the image indices. A shard of one rank is the loader itself.
    assert [int(i) for _, y in whole.shard(0, 1) for i in y] == [int(i) for _, y in whole for i in y]
    seen = []
    for rank in range(3):
        part = whole.shard(rank, 3)
        part.set_epoch(2)
        assert len(part) == 1 and part.num_samples == 7  # 23 // 3 images, one full batch of 4
        seen.append([int(i) for _, y in part for i in y])
    full_order = torch.randperm(23, generator=seeded_generator(3, 2)).tolist()
    for rank, got in enumerate(seen):
        assert got == full_order[:21][rank::3][:4]
    assert not set(seen[0]) & set(seen[1]) and not set(seen[1]) & set(seen[2])

    sampler = [EpochSampler(10, shuffle=True, seed=1, rank=r, world_size=2) for r in range(2)]
    dealt = [[i for i, _ in s] for s in sampler]
    assert len(dealt[0]) == len(dealt[1]) == 5 and sorted(dealt[0] + dealt[1]) == list(range(10))


def test_image_folder_shards_deal_out_the_epoch_with_each_image_augmented_as_in_one_process(tmp_path):
    dataset = ImageFolderDataset.from_folder(write_folder(tmp_path / "d") / "train", TrainTransform(32))
    whole = ImageFolderLoader(dataset, batch_size=2, device=torch.device("cpu"), mean=(0.5,) * 3,
                              std=(0.25,) * 3, shuffle=True, drop_last=True, seed=1)
    whole.set_epoch(3)
    images = torch.cat([x for x, _ in whole])
    for rank in range(2):
        part = whole.shard(rank, 2)
        part.set_epoch(3)
        assert len(part) == 2 and part.num_samples == 4
        assert torch.equal(torch.cat([x for x, _ in part]), images[rank::2])


# --- the agent's episodes split across ranks --------------------------------------------------------------


def _episodes(rank: int, world: int, store: str, out: str) -> None:
    """Two search epochs of 5 episodes (the agent's random warm-up ends inside the first) on a tiny
    ResNet-20, scored with BN re-estimation; writes the episodes and the agent's final state."""
    torch.set_num_threads(1)
    if world > 1:
        tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    config = load_config(None, [
        "data.reward_size=60", "data.batch_size=20", "data.eval_batch_size=30", "env.reward_batches=2",
        "env.bn_recalibration_batches=1", "agent.warmup_episodes=3", "agent.updates_per_epoch=3",
        "agent.batch_size=16", "agent.context.updates_per_epoch=3",
    ])
    seed_everything(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 1, 12, 12), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 4, (200,), generator=gen)
    data = data_from_tensors((images, labels), (images[:40], labels[:40]), cfg=config.data)
    model = create_model("resnet20", num_classes=4, in_channels=1, input_size=12)
    runtime = Runtime(torch.device("cpu"), None, False, Dist(rank, world, rank))
    structure = find_layers(model, (1, 12, 12), policy=config.env.policy)
    env = make_env(structure, config.env, data, runtime, seed=0)
    agent = make_agent(config.agent, env.state_dim, env.num_layers)
    context = make_context(config.agent, env.num_layers)
    episodes = []
    for t in range(2):
        episodes += run_agent_episodes(env, agent, context, t, 5, dist=runtime.dist)
        context.fit(env.history)
        agent.update(context)
    state = agent.state_dict()
    torch.save({"rewards": [e.reward for e in episodes], "actions": [e.actions.tolist() for e in episodes],
                "actor": state["actor"], "replay": state["replay"], "generator": state["generator"]},
               out)
    if world > 1:
        tdist.destroy_process_group()


def test_episodes_split_across_two_ranks_give_what_one_process_scoring_them_all_gives(tmp_path):
    _episodes(0, 1, "", str(tmp_path / "single.pt"))
    context = mp.get_context("spawn")
    store = str(tmp_path / "store")
    procs = [context.Process(target=_episodes, args=(r, 2, store, str(tmp_path / f"{r}.pt")))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    assert len(set(single["rewards"])) > 2, "the rewards must tell sub-networks apart for this test to bite"
    for r in range(2):
        ranked = torch.load(tmp_path / f"{r}.pt", weights_only=False)
        assert ranked["rewards"] == single["rewards"] and ranked["actions"] == single["actions"]
        assert torch.equal(ranked["generator"], single["generator"])
        assert all(torch.equal(ranked["actor"][k], v) for k, v in single["actor"].items())
        assert all(np.array_equal(np.asarray(ranked["replay"][k]), np.asarray(v))
                   for k, v in single["replay"].items())


# --- launch mistakes --------------------------------------------------------------------------------------


def test_more_processes_on_a_node_than_gpus_is_a_one_line_error(monkeypatch):
    for name, value in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RlalError, match=r"^4 processes on this node but 2 GPUs: start at most 2 "
                                        r"\(torchrun --nproc_per_node=2\)$"):
        from_env(TrainConfig())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RlalError, match=r"train\.sync_bn needs CUDA"):
        from_env(TrainConfig(sync_bn=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_started_with_different_configs_exit_2_with_one_line_and_no_traceback(fmnist_dir, tmp_path):  # noqa: F811
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**ENV, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        command = [sys.executable, "-m", "rlal", "train", "--out", str(tmp_path / "run")]
        for override in [*joint_overrides(fmnist_dir), f"optim.lr={0.05 + rank}"]:
            command += ["--set", override]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 2, err
        assert err.strip().splitlines() == [
            "error: rank 1 was started with another config than rank 0 (optim.lr differs): give every rank "
            "the same --config and --set"
        ]
    assert not (tmp_path / "run").exists()


# --- a two-rank joint run, killed and resumed -------------------------------------------------------------


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "rlal", "train", *args]


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` (a child of ``parent``)."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


@pytest.fixture(scope="module")
def killed_and_resumed(fmnist_dir, tmp_path_factory):  # noqa: F811
    """A 2-rank joint run (warm-up, search, choice, align + cut, fine-tune) whose rank 1 is killed in the
    epoch after the second checkpoint, then resumed under torchrun; and an uninterrupted 2-rank run."""
    root = tmp_path_factory.mktemp("ddp")
    sets = [a for o in joint_overrides(fmnist_dir) for a in ("--set", o)]
    out = root / "runs" / "run"
    job = subprocess.Popen(_torchrun("--out", str(out), *sets), env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        wait_past_checkpoint(job, out, 2, timeout=TIMEOUT)
        victim = _rank_pid(job.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        job.wait(TIMEOUT)
        stopped_after = time.monotonic() - killed
    finally:
        job.kill()
        job.wait()
    killed_info = {"returncode": job.returncode, "seconds": stopped_after,
                   "result": (out / "result.json").exists(), "epoch": load_checkpoint(out).epoch}
    resumed = subprocess.run(_torchrun("--resume", str(out)), env=ENV, capture_output=True, text=True,
                             timeout=TIMEOUT)
    reference = root / "reference"
    whole = subprocess.run(_torchrun("--out", str(reference), *sets), env=ENV, capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return {"out": out, "killed": killed_info, "resumed": resumed, "reference": reference}


def test_a_rank_killed_mid_epoch_stops_the_job_and_leaves_a_checkpoint_torchrun_resumes(killed_and_resumed):
    killed = killed_and_resumed["killed"]
    assert killed["returncode"] != 0 and killed["seconds"] < 60
    assert killed["epoch"] >= 2 and not killed["result"]
    resumed = killed_and_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    out, reference = killed_and_resumed["out"], killed_and_resumed["reference"]
    result, whole = (json.loads((d / "result.json").read_text()) for d in (out, reference))
    assert result["resumed"] is True and result["plan"] == whole["plan"]
    assert result["test_acc"] == whole["test_acc"]
    assert untimed(read_metrics(out / "metrics.jsonl")) == untimed(read_metrics(reference / "metrics.jsonl"))


def test_both_ranks_end_every_epoch_of_every_phase_with_identical_weights(killed_and_resumed):
    records = read_metrics(killed_and_resumed["out"] / "metrics.jsonl")
    epochs = [r for r in records if "train_loss" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, 8))
    assert {r["phase"] for r in epochs} == {"warm-up", "search", "align", "fine-tune"}
    for r in epochs:  # after the cut the digests also cover the small model's shapes: the same cut
        assert len(r["rank_state_sha256"]) == 2 and len(set(r["rank_state_sha256"])) == 1, r["epoch"]
        assert r["train_images"] == 256  # both shards: 2 x 128 images


def test_only_rank_0_writes_one_run_directory_whose_plan_meets_the_target(killed_and_resumed):
    out = killed_and_resumed["out"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]
    assert len(list(out.glob("checkpoint-*"))) == 1
    records = read_metrics(out / "metrics.jsonl")
    phases = [(r["epoch"], r["phase"]) for r in records]
    assert len(phases) == len(set(phases)), "a record written twice: a second rank wrote"
    assert ("4", "final-choice") not in phases and (4, "final-choice") in phases and (5, "cut") in phases
    result = json.loads((out / "result.json").read_text())
    assert result["macs"] <= 0.5 * result["dense_macs"]
    reference = killed_and_resumed["reference"]
    assert (out / "episodes.json").read_text() == (reference / "episodes.json").read_text()


def test_the_sync_bn_view_shares_every_parameter_and_buffer_and_leaves_the_model_unchanged():
    model = create_model("resnet20", num_classes=4, in_channels=1, input_size=12)
    view = _sync_bn_view(model)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    norms = [m for m in view.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    ours, theirs = dict(model.named_parameters()), dict(view.named_parameters())
    assert ours.keys() == theirs.keys() and all(ours[k] is theirs[k] for k in ours)
    ours, theirs = dict(model.named_buffers()), dict(view.named_buffers())
    assert ours.keys() == theirs.keys() and all(ours[k] is theirs[k] for k in ours)


def test_a_collective_timeout_of_zero_is_refused_naming_the_key():
    with pytest.raises(RlalError, match=r"^train\.dist_timeout must be > 0 seconds$"):
        load_config(None, ["train.dist_timeout=0"])
