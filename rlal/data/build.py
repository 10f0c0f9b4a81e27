"""From a :class:`~rlal.config.DataConfig` to the three loaders a run needs: train, reward and test."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from rlal.config import DataConfig
from rlal.data.arrays import ArrayDataset
from rlal.data.augment import CIFAR_AUGMENT, FASHION_MNIST_AUGMENT, CropFlip
from rlal.data.cifar import load_cifar10
from rlal.data.fashion_mnist import load_fashion_mnist
from rlal.data.imagefolder import ImageFolderLoader, load_image_folder
from rlal.data.loader import DeviceLoader
from rlal.data.specs import DatasetSpec, Loader, dataset_spec
from rlal.data.splits import derive_seed, reward_split, seeded_subset
from rlal.data.transforms import EvalTransform, TrainTransform

EVAL_RESIZE_RATIO = 0.875
"""Eval images are resized to ``input_size / 0.875`` (256 for 224) before the centre crop."""

log = logging.getLogger(__name__)


@dataclass
class Data:
    """A dataset ready for a run: its spec, class names, where it came from, and its three loaders."""

    spec: DatasetSpec
    """``num_classes`` is the number of classes actually found in the data."""
    classes: tuple[str, ...]
    source: str
    """Where the files were found, for logs and the run header."""
    train: Loader
    """Shuffled and augmented (if ``augment``); drops an incomplete last batch when there is a full one."""
    reward: Loader
    """Held-out part of the training set (``reward_size`` images), eval transform, fixed order."""
    test: Loader
    """The test set (or a fixed ``test_subset`` of it), eval transform, fixed order."""


def build_data(cfg: DataConfig, device: torch.device, seed: int, channels_last: bool = False) -> Data:
    """Find and read ``cfg.dataset`` and build its train, reward and test loaders for ``device``.

    The reward split (``cfg.reward_size`` training images) and the ``cfg.train_subset`` sample are
    drawn with ``seed``; ``cfg.test_subset`` takes the first images of a fixed, seed-independent
    shuffle of the test set, so every run and seed is scored on the same images and a class-sorted
    test set (an image-folder tree) still gives a subset with all classes. Raises
    :class:`~rlal.errors.DataError` for anything missing or invalid.
    """
    spec = dataset_spec(cfg.dataset)
    if spec.name == "imagefolder":
        return _build_image_folder(cfg, spec, device, seed, channels_last)
    loader = load_fashion_mnist if spec.name == "fashion-mnist" else load_cifar10
    train_set, test_set, source = loader(cfg)
    warn_if_one_class(train_set.labels.numpy(), train_set.classes, source)
    augment = (CIFAR_AUGMENT if spec.name == "cifar10" else FASHION_MNIST_AUGMENT) if cfg.augment else None
    spec = dataclasses.replace(spec, num_classes=len(train_set.classes))
    return in_memory_data(spec, train_set, test_set, source, cfg, device, seed, augment, channels_last)


def in_memory_data(
    spec: DatasetSpec, train_set: ArrayDataset, test_set: ArrayDataset, source: str, cfg: DataConfig,
    device: torch.device, seed: int, augment: CropFlip | None, channels_last: bool = False,
) -> Data:
    """Split and batch images held in memory: the reward split and ``train_subset`` drawn with ``seed``,
    ``test_subset`` from the fixed shuffle, all of it copied once to ``device``."""
    train_idx, reward_idx = reward_split(len(train_set), cfg.reward_size, seed)
    train_idx = seeded_subset(train_idx, cfg.train_subset, seed, "train_subset")
    test_set = _test_part(test_set, cfg.test_subset)
    # One device copy of the training images, shared by the train and reward loaders.
    images, labels = train_set.images.to(device), train_set.labels.to(device)
    common = {"mean": spec.mean, "std": spec.std, "channels_last": channels_last}
    train = DeviceLoader(
        images, labels, indices=train_idx, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
        augment=augment, seed=derive_seed(seed, "train"), **common,
    )
    reward = DeviceLoader(images, labels, indices=reward_idx, batch_size=cfg.eval_batch_size, **common)
    test = DeviceLoader(
        test_set.images.to(device), test_set.labels.to(device), batch_size=cfg.eval_batch_size, **common
    )
    return Data(spec, train_set.classes, source, train, reward, test)


def _build_image_folder(
    cfg: DataConfig, spec: DatasetSpec, device: torch.device, seed: int, channels_last: bool
) -> Data:
    train_set, test_set, source = load_image_folder(cfg.data_dir)
    warn_if_one_class(train_set.labels, train_set.classes, source)
    size = spec.input_size
    eval_transform = EvalTransform(size, round(size / EVAL_RESIZE_RATIO))
    train_transform = TrainTransform(size) if cfg.augment else eval_transform
    train_idx, reward_idx = reward_split(len(train_set), cfg.reward_size, seed)
    train_idx = seeded_subset(train_idx, cfg.train_subset, seed, "train_subset")
    test_idx = _test_indices(len(test_set), cfg.test_subset)
    common = {
        "device": device, "mean": spec.mean, "std": spec.std, "workers": cfg.workers,
        "channels_last": channels_last,
    }
    train = ImageFolderLoader(
        train_set.subset(train_idx, train_transform), batch_size=cfg.batch_size, shuffle=True,
        drop_last=True, seed=derive_seed(seed, "train"), **common,
    )
    reward = ImageFolderLoader(
        train_set.subset(reward_idx, eval_transform), batch_size=cfg.eval_batch_size, **common
    )
    test = ImageFolderLoader(
        test_set.subset(test_idx, eval_transform), batch_size=cfg.eval_batch_size, **common
    )
    classes = train_set.classes
    return Data(dataclasses.replace(spec, num_classes=len(classes)), classes, source, train, reward, test)


def warn_if_one_class(labels: np.ndarray, classes: tuple[str, ...], source: str) -> None:
    """Log a warning when the training images all have one label: the run would learn nothing (every
    prediction of that class is right), yet finish with a perfect-looking accuracy."""
    present = np.unique(labels)
    if len(labels) and len(present) < 2:
        name = classes[int(present[0])] if int(present[0]) < len(classes) else str(int(present[0]))
        log.warning(
            "every one of the %d training images in %s has the same class (%s): there is nothing to learn, "
            "and the accuracy will be meaningless", len(labels), source, name,
        )


def _test_indices(n_test: int, test_subset: int | None) -> torch.Tensor:
    # Seed-independent on purpose: all runs are compared on the same test images.
    return seeded_subset(torch.arange(n_test), test_subset, "fixed", "test_subset")


def _test_part(dataset: ArrayDataset, test_subset: int | None) -> ArrayDataset:
    if test_subset is None or test_subset >= len(dataset):
        return dataset
    index = _test_indices(len(dataset), test_subset)
    return ArrayDataset(dataset.images[index], dataset.labels[index], dataset.classes)
