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
from rlal.data.imagefolder import ImageFolderLoader, common_size, load_image_folder
from rlal.data.loader import DeviceLoader
from rlal.data.specs import DatasetSpec, Loader, dataset_spec
from rlal.data.splits import derive_seed, resolve_reward_size, reward_split, seeded_subset
from rlal.data.transforms import EvalTransform, PadCropFlipTransform, ResizeTransform, TrainTransform
from rlal.errors import DataError

EVAL_RESIZE_RATIO = 0.875
"""Eval images are resized to ``input_size / 0.875`` (256 for 224) before the centre crop."""
SMALL_IMAGE_SIZE = 64
"""Image folders read at this size or less are augmented by pad-and-crop (``data.augment_kind: auto``)."""

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


def build_data(
    cfg: DataConfig, device: torch.device, seed: int, channels_last: bool = False, *, need_reward: bool = True
) -> Data:
    """Find and read ``cfg.dataset`` and build its train, reward and test loaders for ``device``.

    The reward split (``cfg.reward_size`` training images, or a size from the data when it is None, see
    :func:`~rlal.data.splits.auto_reward_size`) and the ``cfg.train_subset`` sample are drawn with
    ``seed``; ``cfg.test_subset`` takes the first images of a fixed, seed-independent shuffle of the test
    set, so every run and seed is scored on the same images and a class-sorted test set (an image-folder
    tree) still gives a subset with all classes. Without ``need_reward`` (a run that scores no
    sub-network), a set reward size that leaves no training image is dropped with a warning. Raises
    :class:`~rlal.errors.DataError` for anything missing or invalid.
    """
    spec = dataset_spec(cfg.dataset)
    if spec.name == "imagefolder":
        return check_recorded(cfg, _build_image_folder(cfg, spec, device, seed, channels_last, need_reward))
    if cfg.input_size is not None and cfg.input_size != spec.input_size:
        raise DataError(f"data.input_size ({cfg.input_size}) applies to image folders only: {spec.name} "
                        f"images are {spec.input_size}x{spec.input_size} (leave it unset)")
    loader = load_fashion_mnist if spec.name == "fashion-mnist" else load_cifar10
    train_set, test_set, source = loader(cfg)
    warn_if_one_class(train_set.labels.numpy(), train_set.classes, source)
    augment = (CIFAR_AUGMENT if spec.name == "cifar10" else FASHION_MNIST_AUGMENT) if cfg.augment else None
    spec = dataclasses.replace(spec, num_classes=len(train_set.classes))
    return check_recorded(cfg, in_memory_data(spec, train_set, test_set, source, cfg, device, seed, augment,
                                              channels_last, need_reward=need_reward))


def check_recorded(cfg: DataConfig, data: Data) -> Data:
    """``data``, once checked against the channels and classes ``cfg`` records (a Python API run's
    ``config.yaml`` does); :class:`DataError` naming the key when they differ."""
    if cfg.in_channels is not None and cfg.in_channels != data.spec.in_channels:
        raise DataError(f"{data.source}: images have {data.spec.in_channels} channels but data.in_channels "
                        f"is {cfg.in_channels}")
    if cfg.classes is not None and list(cfg.classes) != list(data.classes):
        raise DataError(f"{data.source}: the classes found ({', '.join(data.classes[:5])}"
                        f"{', ...' if len(data.classes) > 5 else ''}) are not those of data.classes "
                        f"({', '.join(cfg.classes[:5])}{', ...' if len(cfg.classes) > 5 else ''})")
    return data


def in_memory_data(
    spec: DatasetSpec, train_set: ArrayDataset, test_set: ArrayDataset, source: str, cfg: DataConfig,
    device: torch.device, seed: int, augment: CropFlip | None, channels_last: bool = False,
    *, need_reward: bool = True,
) -> Data:
    """Split and batch images held in memory: the reward split and ``train_subset`` drawn with ``seed``,
    ``test_subset`` from the fixed shuffle, all of it copied once to ``device``. Labels outside
    ``spec.num_classes`` are refused here, naming the split, rather than failing in the training loop."""
    for split, part in (("train", train_set), ("test", test_set)):
        check_labels(part.labels.numpy(), spec.num_classes, f"{source}: {split}")
    reward_size = resolve_reward_size(len(train_set), cfg.reward_size, need_reward)
    train_idx, reward_idx = reward_split(len(train_set), reward_size, seed)
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
    cfg: DataConfig, spec: DatasetSpec, device: torch.device, seed: int, channels_last: bool,
    need_reward: bool,
) -> Data:
    train_set, test_set, source = load_image_folder(cfg.data_dir)
    warn_if_one_class(train_set.labels, train_set.classes, source)
    size = cfg.input_size or common_size([train_set, test_set]) or spec.input_size
    kind = augment_kind(cfg.augment_kind, size)
    if kind == "pad-crop-flip":
        eval_transform: EvalTransform | ResizeTransform = ResizeTransform(size)
        train_transform = PadCropFlipTransform(size) if cfg.augment else eval_transform
    else:
        eval_transform = EvalTransform(size, round(size / EVAL_RESIZE_RATIO))
        train_transform = TrainTransform(size) if cfg.augment else eval_transform
    reward_size = resolve_reward_size(len(train_set), cfg.reward_size, need_reward)
    train_idx, reward_idx = reward_split(len(train_set), reward_size, seed)
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
    spec = dataclasses.replace(spec, num_classes=len(classes), input_size=size)
    source = f"{source}, read at {size}x{size} ({kind})"
    return Data(spec, classes, source, train, reward, test)


def augment_kind(kind: str, size: int) -> str:
    """``data.augment_kind`` with ``auto`` resolved: ``pad-crop-flip`` up to 64 pixels, else
    ``resized-crop`` (a random-resized crop of a 32-pixel image keeps too little of it)."""
    if kind != "auto":
        return kind
    return "pad-crop-flip" if size <= SMALL_IMAGE_SIZE else "resized-crop"


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` naming ``where`` when a label lies outside ``0..num_classes - 1`` (it would
    stop training with an IndexError deep in the loss)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.max()) if labels.max() >= num_classes else int(labels.min())
        raise DataError(
            f"{where} has the label {bad}, outside the {num_classes} classes 0..{num_classes - 1}"
        )


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
