"""The machine a figure was measured on. Every benchmark table, latency figure and bench script names it,
so all of them describe it the same way, from here."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as Linux reports it (e.g. "AMD EPYC 7B13"), else what ``platform`` knows."""
    with contextlib.suppress(OSError), open(cpuinfo) as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """CPU, core count, torch's CPU threads now, torch's version and the GPU (None without CUDA)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": gpu}


def in_words(info: dict[str, Any]) -> str:
    """A machine as :func:`describe` records it, in words, as a table names it: "a 16-core Intel(R) Xeon(R)
    Processor with an NVIDIA H200" (the GPU only where CUDA saw one)."""
    gpu = f" with an {info['cuda']}" if info.get("cuda") else ""
    return f"a {info['cpu_count']}-core {info['cpu']}{gpu}"


def host() -> str:
    """This machine in words (:func:`in_words`)."""
    return in_words(describe())
