"""The machine description every benchmark and latency figure carries."""

from __future__ import annotations

import torch

from rlal.export import environment
from rlal.machine import cpu_name, describe


def test_the_description_names_the_cpu_and_follows_torchs_thread_count_now(one_thread):
    info = describe()
    assert info["cpu"] == cpu_name() and info["cpu"].strip()
    assert info["threads"] == torch.get_num_threads() == 1
    assert info["torch"] == torch.__version__ and info["cpu_count"] >= 1


def test_a_latency_figures_environment_is_the_machine_plus_onnx_runtime():
    env = environment()
    assert {k: env[k] for k in describe()} == describe() and "onnxruntime" in env
