"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread, restoring the count after. Small models run fastest single-threaded, and
    on a busy 2-core machine OpenMP's spin-waiting threads slowed tiny networks 30-100x (issue 2 note)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency tables (and anything else cached under ``$XDG_CACHE_HOME``) go to a temporary directory, never
    the user's ``~/.cache``: a test must neither read a table timed elsewhere nor leave one behind."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
