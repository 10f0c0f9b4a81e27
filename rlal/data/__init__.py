"""Datasets for training and pruning: Fashion-MNIST, CIFAR-10 and image folders (ImageNet layout).

:func:`build_data` turns a :class:`~rlal.config.DataConfig` into a :class:`Data` with three loaders
(train, reward, test) that follow the :class:`Loader` protocol. Small datasets live on the device
as uint8 tensors (:class:`DeviceLoader`); image folders of any size are decoded by DataLoader
workers (:class:`ImageFolderLoader`). Every bad input raises :class:`~rlal.errors.DataError`.
"""

from rlal.data.arrays import ArrayDataset
from rlal.data.augment import CIFAR_AUGMENT, FASHION_MNIST_AUGMENT, CropFlip, normalize, random_crop_flip
from rlal.data.build import Data, build_data
from rlal.data.cache import source_key
from rlal.data.cifar import (
    CifarSource,
    find_cifar10,
    load_cifar10,
    read_cifar_pickles,
    read_image_tarball,
    read_image_tree,
)
from rlal.data.decode import decode_images
from rlal.data.fashion_mnist import (
    OFFICIAL_SHA256,
    OFFICIAL_URL,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
)
from rlal.data.idx import read_idx, write_idx
from rlal.data.imagefolder import (
    EVAL_SPLITS,
    EpochSampler,
    ImageFolderDataset,
    ImageFolderLoader,
    find_image_folder,
    load_image_folder,
)
from rlal.data.loader import DeviceLoader, epoch_images
from rlal.data.locate import cache_root, search_roots
from rlal.data.memory import data_from_tensors
from rlal.data.specs import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IN_MEMORY,
    DatasetSpec,
    Loader,
    dataset_spec,
)
from rlal.data.splits import auto_reward_size, derive_seed, reward_split, seeded_generator, seeded_subset
from rlal.data.transforms import (
    EvalTransform,
    PadCropFlipTransform,
    ResizeTransform,
    TrainTransform,
    random_resized_crop_box,
)

__all__ = [
    "CIFAR_AUGMENT",
    "DATASETS",
    "EVAL_SPLITS",
    "FASHION_MNIST_AUGMENT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IN_MEMORY",
    "OFFICIAL_SHA256",
    "OFFICIAL_URL",
    "ArrayDataset",
    "CifarSource",
    "CropFlip",
    "Data",
    "DatasetSpec",
    "DeviceLoader",
    "EpochSampler",
    "EvalTransform",
    "ImageFolderDataset",
    "ImageFolderLoader",
    "Loader",
    "PadCropFlipTransform",
    "ResizeTransform",
    "TrainTransform",
    "auto_reward_size",
    "build_data",
    "cache_root",
    "data_from_tensors",
    "dataset_spec",
    "decode_images",
    "derive_seed",
    "download_fashion_mnist",
    "epoch_images",
    "find_cifar10",
    "find_fashion_mnist",
    "find_image_folder",
    "load_cifar10",
    "load_fashion_mnist",
    "load_image_folder",
    "normalize",
    "random_crop_flip",
    "random_resized_crop_box",
    "read_cifar_pickles",
    "read_idx",
    "read_image_tarball",
    "read_image_tree",
    "reward_split",
    "search_roots",
    "seeded_generator",
    "seeded_subset",
    "source_key",
    "write_idx",
]
