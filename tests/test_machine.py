"""The machine description every benchmark and latency figure carries."""

from __future__ import annotations

import platform

import torch

from rlal.export import environment
from rlal.machine import cpu_name, describe


def test_the_cpu_is_named_by_the_model_name_line_of_cpuinfo_else_by_platform(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_name(cpuinfo) == "AMD EPYC 7B13"
    fallback = platform.processor() or platform.machine()
    assert cpu_name(tmp_path / "absent") == fallback
    cpuinfo.write_text("processor\t: 0\n")  # e.g. an ARM kernel names no model
    assert cpu_name(cpuinfo) == fallback


def test_the_description_follows_torchs_thread_count_now(one_thread):
    info = describe()
    assert info["cpu"] == cpu_name() and info["threads"] == torch.get_num_threads() == 1
    assert info["torch"] == torch.__version__ and info["cpu_count"] >= 1


def test_a_latency_figures_environment_is_the_machine_plus_onnx_runtime():
    env = environment()
    assert {k: env[k] for k in describe()} == describe() and "onnxruntime" in env
