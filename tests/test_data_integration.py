"""The real datasets (skipped when absent): Fashion-MNIST IDX files and the CIFAR-10 JPEG tarball."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from rlal.config import DataConfig
from rlal.data import build_data, load_cifar10, load_fashion_mnist

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION_DIRS = [Path("/usr/share/datasets/fashion-mnist"), SHARED / "fashion-mnist"]
FASHION = next((d for d in FASHION_DIRS if (d / "train-images-idx3-ubyte.gz").is_file()), None)
CIFAR_TARBALL = SHARED / "cifar10-jpg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("RLAL_DATA", raising=False)
    monkeypatch.setenv("RLAL_CACHE", str(tmp_path / "cache"))


@pytest.mark.skipif(FASHION is None, reason="no Fashion-MNIST (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_loads_60000_and_10000_images():
    train, test, source = load_fashion_mnist(DataConfig(data_dir=str(FASHION), download=False))
    assert source == str(FASHION)
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and tuple(test.images.shape) == (10000, 1, 28, 28)
    assert train.labels.min() == 0 and train.labels.max() == 9 and test.labels.max() == 9
    assert train.labels[0] == 9 and train.classes[9] == "Ankle boot"
    assert torch.equal(train.labels.bincount(), torch.full((10,), 6000))


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory):
    """One decoded copy for the whole session: decoding 60,000 JPEGs takes seconds."""
    return tmp_path_factory.mktemp("cifar-cache")


@pytest.mark.skipif(not CIFAR_TARBALL.is_file(), reason=f"{CIFAR_TARBALL} absent")
def test_real_cifar10_tarball_loads_and_is_cached(cifar_cache):
    cfg = DataConfig(dataset="cifar10", data_dir=str(SHARED), cache_dir=str(cifar_cache))
    start = time.perf_counter()
    train, test, source = load_cifar10(cfg)
    first = time.perf_counter() - start
    assert tuple(train.images.shape) == (50000, 3, 32, 32) and tuple(test.images.shape) == (10000, 3, 32, 32)
    assert train.classes == test.classes == CIFAR_CLASSES
    assert torch.equal(train.labels.bincount(), torch.full((10,), 5000))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 1000))
    assert str(CIFAR_TARBALL) in source
    start = time.perf_counter()
    cached_train, _, cached_source = load_cifar10(cfg)
    second = time.perf_counter() - start
    assert "cached in" in cached_source and torch.equal(cached_train.images, train.images)
    assert second < max(5.0, first / 2)
    print(f"\nCIFAR-10 tarball: decoded in {first:.1f} s, loaded from the cache in {second:.2f} s")


@pytest.mark.skipif(not CIFAR_TARBALL.is_file(), reason=f"{CIFAR_TARBALL} absent")
def test_real_cifar10_builds_loaders_with_a_reward_split(cifar_cache):
    cfg = DataConfig(dataset="cifar10", data_dir=str(SHARED), cache_dir=str(cifar_cache), test_subset=1000)
    data = build_data(cfg, torch.device("cpu"), seed=0)
    assert (data.train.num_samples, data.reward.num_samples, data.test.num_samples) == (45000, 5000, 1000)
    assert data.spec.num_classes == 10 and data.classes == CIFAR_CLASSES
    labels = torch.cat([y for _, y in data.test])
    # The tree is sorted by class; the fixed test subset still spans all classes evenly.
    assert labels.bincount().min() > 50
