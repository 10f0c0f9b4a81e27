"""Image folders of any size: hand-written transforms, the lazy dataset and its DataLoader wrapper."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlal.config import DataConfig
from rlal.data import (
    EvalTransform,
    ImageFolderDataset,
    ImageFolderLoader,
    PadCropFlipTransform,
    ResizeTransform,
    TrainTransform,
    build_data,
    load_image_folder,
    random_resized_crop_box,
    seeded_generator,
)
from rlal.errors import DataError

SIZES = [(37, 51), (300, 200), (13, 9), (500, 40)]
WNIDS = ("n01440764", "n01443537")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("RLAL_DATA", raising=False)
    monkeypatch.setenv("RLAL_CACHE", str(tmp_path / "cache"))


def write_folder(root: Path, eval_split: str = "val", per_class: int = 4) -> Path:
    """ImageNet layout with small odd-sized JPEGs (and one PNG) of varied shapes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), (eval_split, 2)):
        for wnid in WNIDS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = SIZES[i % len(SIZES)]
                image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                image.save(folder / (f"{wnid}_{i}.JPEG" if i else f"{wnid}_{i}.png"))
    return root


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_train_and_eval_transforms_give_3x224x224_uint8(w, h):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    for transform in (TrainTransform(), EvalTransform()):
        out = transform(image, seeded_generator(0))
        assert out.shape == (3, 224, 224) and out.dtype == torch.uint8


def test_train_transform_depends_only_on_the_generator_seed():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    a = TrainTransform()(image, seeded_generator(5))
    assert torch.equal(a, TrainTransform()(image, seeded_generator(5)))
    assert not torch.equal(a, TrainTransform()(image, seeded_generator(6)))


def test_random_resized_crop_box_stays_inside_with_area_and_aspect_in_range():
    generator = seeded_generator(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(640, 480, generator)
        assert left >= 0 and left + w <= 640 and top >= 0 and top + h <= 480
        assert 0.08 * 0.9 <= w * h / (640 * 480) <= 1.0
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


@pytest.mark.parametrize(("size", "box"), [((1000, 10), (493, 0, 13, 10)), ((10, 1000), (0, 493, 10, 13))])
def test_random_resized_crop_falls_back_to_a_centre_crop_for_extreme_shapes(size, box):
    assert random_resized_crop_box(*size, seeded_generator(0)) == box


def test_eval_transform_resizes_the_shorter_side_then_crops_the_centre():
    array = np.random.default_rng(3).integers(0, 256, (256, 512, 3), dtype=np.uint8)  # already short side 256
    out = EvalTransform()(Image.fromarray(array))
    expected = array[16:240, 144:368].transpose(2, 0, 1)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_dataset_from_folder_lists_sorted_classes_and_files(tmp_path):
    root = write_folder(tmp_path / "d")
    dataset = ImageFolderDataset.from_folder(root / "train")
    assert dataset.classes == WNIDS and len(dataset) == 8
    assert dataset.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert dataset.path(0) == root / "train" / WNIDS[0] / f"{WNIDS[0]}_0.png"
    image, label = dataset[(5, 123)]
    assert image.shape == (3, 224, 224) and label == 1
    assert torch.equal(image, dataset[(5, 123)][0])
    sub = dataset.subset([6, 1], TrainTransform())
    assert len(sub) == 2 and sub.labels.tolist() == [1, 0] and sub.path(1) == dataset.path(1)


def test_undecodable_file_names_the_file_also_through_the_loader(tmp_path):
    root = write_folder(tmp_path / "d")
    bad = root / "train" / WNIDS[1] / "broken.JPEG"
    bad.write_bytes(b"not an image")
    dataset = ImageFolderDataset.from_folder(root / "train")
    index = [str(dataset.path(i)) for i in range(len(dataset))].index(str(bad))
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": cannot decode image"):
        dataset[index]
    loader = ImageFolderLoader(dataset, batch_size=4, device=torch.device("cpu"), mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(DataError, match=re.escape(str(bad))) as info:
        list(loader)
    assert "\n" not in str(info.value)


def test_loader_with_no_workers_iterates_normalised_batches(tmp_path):
    dataset = ImageFolderDataset.from_folder(write_folder(tmp_path / "d") / "train", TrainTransform())
    loader = ImageFolderLoader(
        dataset, batch_size=3, device=torch.device("cpu"), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), shuffle=True, drop_last=True, workers=0, seed=1,
    )
    got = list(loader)
    assert len(loader) == 2 and [len(y) for _, y in got] == [3, 3] and loader.num_samples == 8
    for x, y in got:
        assert x.shape[1:] == (3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() > -2.2 and x.max() < 2.7
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again, strict=True))
    loader.set_epoch(1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(got, list(loader), strict=True))


def test_worker_processes_give_the_same_batches_as_none(tmp_path):
    dataset = ImageFolderDataset.from_folder(write_folder(tmp_path / "d") / "train", TrainTransform())
    common = {"batch_size": 4, "device": torch.device("cpu"), "mean": (0,) * 3, "std": (1,) * 3,
              "shuffle": True, "seed": 3}
    inline = list(ImageFolderLoader(dataset, workers=0, **common))
    parallel = list(ImageFolderLoader(dataset, workers=2, **common))
    for (xa, ya), (xb, yb) in zip(inline, parallel, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("split", ["val", "test"])
def test_load_image_folder_accepts_val_or_test(tmp_path, split):
    root = write_folder(tmp_path / "d", eval_split=split)
    train, test, source = load_image_folder(str(root))
    assert train.classes == test.classes == WNIDS and len(test) == 4 and f"{split}/" in source


def test_image_folder_class_mismatch_names_the_folder(tmp_path):
    root = write_folder(tmp_path / "d")
    (root / "val" / WNIDS[1]).rename(root / "val" / "n99999999")
    with pytest.raises(DataError, match=re.escape(str(root)) + ": train and val class folders differ"):
        load_image_folder(str(root))


def test_missing_image_folder_lists_the_folders_searched(tmp_path):
    (tmp_path / "d").mkdir()
    names = "<split>/<class>/<image> named val/, valid/, validation/ or test/"
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "d")) + ".*" + re.escape(names)):
        load_image_folder(str(tmp_path / "d"))


def test_an_image_folder_without_val_says_val_is_missing(tmp_path):
    root = write_folder(tmp_path / "d")
    (root / "val").rename(tmp_path / "elsewhere")
    names = "val/, valid/, validation/ or test/"
    with pytest.raises(DataError, match=re.escape(f"{root} has train/ but no {names}")):
        load_image_folder(str(root))


def test_a_16_bit_grayscale_png_goes_through_the_transforms_scaled_to_8_bits(tmp_path):
    values = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode == "I;16"
        out = EvalTransform(224, 256)(img)
    expected = np.round(values[16:240, 16:240] / 257).astype(np.uint8)
    assert out.dtype == torch.uint8 and (out.numpy() == expected).all()


def test_build_data_on_an_image_folder(tmp_path):
    root = write_folder(tmp_path / "d", per_class=5)
    cfg = DataConfig(
        dataset="imagefolder", data_dir=str(root), reward_size=2, batch_size=4, eval_batch_size=8, workers=0
    )
    data = build_data(cfg, torch.device("cpu"), seed=0)
    assert data.spec.num_classes == 2 and data.spec.input_size == 224 and data.classes == WNIDS
    assert (data.train.num_samples, data.reward.num_samples, data.test.num_samples) == (8, 2, 4)
    assert len(data.train) == 2 and len(data.reward) == 1
    x, y = next(iter(data.reward))
    assert x.shape == (2, 3, 224, 224) and y.dtype == torch.int64


def write_pngs(root: Path, side: int = 16, eval_split: str = "val", per_class: int = 3) -> Path:
    """Two classes of ``side`` x ``side`` PNGs."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), (eval_split, 2)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.png")
    return root


def small_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(dataset="imagefolder", data_dir=str(root), reward_size=1, batch_size=2,
                      eval_batch_size=8, workers=0, **kwargs)


def test_an_image_folder_of_one_small_size_is_read_at_that_size_with_pad_crop_flip(tmp_path):
    data = build_data(small_cfg(write_pngs(tmp_path / "d")), torch.device("cpu"), seed=0)
    assert data.spec.input_size == 16 and "16x16 (pad-crop-flip)" in data.source
    x, _ = next(iter(data.test))
    assert x.shape[1:] == (3, 16, 16)
    image = Image.open(tmp_path / "d" / "val" / "cat" / "0.png")  # evaluated as it is: no crop, no resize
    assert torch.equal(ResizeTransform(16)(image), torch.from_numpy(np.array(image)).permute(2, 0, 1))
    assert isinstance(data.train.dataset.transform, PadCropFlipTransform)


def test_data_input_size_sets_the_size_an_image_folder_is_read_at(tmp_path):
    data = build_data(small_cfg(write_pngs(tmp_path / "d"), input_size=24), torch.device("cpu"), seed=0)
    x, _ = next(iter(data.train))
    assert data.spec.input_size == 24 and x.shape[1:] == (3, 24, 24)


def test_augment_kind_resized_crop_is_used_when_asked_even_for_small_images(tmp_path):
    cfg = small_cfg(write_pngs(tmp_path / "d"), augment_kind="resized-crop")
    data = build_data(cfg, torch.device("cpu"), seed=0)
    assert isinstance(data.train.dataset.transform, TrainTransform) and "(resized-crop)" in data.source


def test_pad_crop_flip_shifts_and_flips_within_the_padding():
    image = Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    outs = [PadCropFlipTransform(16)(image, seeded_generator(seed)) for seed in range(20)]
    assert all(o.shape == (3, 16, 16) and o.dtype == torch.uint8 for o in outs)
    assert len({o.numpy().tobytes() for o in outs}) > 5  # the crops differ
    assert PadCropFlipTransform(16).pad == 2


@pytest.mark.parametrize("name", ["valid", "validation", "test"])
def test_the_evaluation_split_may_be_named_val_valid_validation_or_test(tmp_path, name):
    root = write_pngs(tmp_path / "d", eval_split=name)
    _, test, source = load_image_folder(str(root))
    assert len(test) == 4 and f"{name}/" in source
