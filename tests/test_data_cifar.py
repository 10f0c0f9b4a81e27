"""CIFAR-10: the three layouts agree, the decoded cache is used, and bad input names the file."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rlal.data.cifar as cifar
import rlal.data.decode as decode
from rlal.config import DataConfig
from rlal.data import (
    build_data,
    dataset_spec,
    decode_images,
    find_cifar10,
    load_cifar10,
    read_cifar_pickles,
    read_image_tarball,
    read_image_tree,
)
from rlal.errors import DataError

CLASSES = ("cat", "dog", "frog")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("RLAL_DATA", raising=False)
    monkeypatch.setenv("RLAL_CACHE", str(tmp_path / "cache"))


def make_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random 32x32 RGB images ``N,32,32,3``, class by class, and their labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (per_class * len(CLASSES), 32, 32, 3), dtype=np.uint8)
    return images, np.repeat(np.arange(len(CLASSES)), per_class)


@pytest.fixture
def splits():
    return {"train": make_split(4, 0), "test": make_split(2, 1)}


def write_tree(root: Path, splits, ext: str = ".png") -> Path:
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}{ext}")
    return root


def write_tarball(path: Path, tree: Path, top: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tree / split, arcname=f"{top}/{split}" if top else split)
    return path


def write_pickles(folder: Path, splits, label_names=CLASSES, protocol: int = 2) -> Path:
    """The official layout: data rows are the R, G and B planes of each image, labels a list."""
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name, obj):
        with (folder / name).open("wb") as f:
            pickle.dump(obj, f, protocol=protocol)

    images, labels = splits["train"]
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for k, part in enumerate(np.array_split(np.arange(len(images)), 5), start=1):
        dump(f"data_batch_{k}", {b"data": rows[part], b"labels": labels[part].tolist(), b"batch_label": b"x"})
    images, labels = splits["test"]
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    dump("test_batch", {b"data": rows, b"labels": labels.tolist()})
    dump("batches.meta", {b"label_names": [n.encode() for n in label_names], b"num_vis": 3072})
    return folder


def assert_matches(dataset, images: np.ndarray, labels: np.ndarray):
    assert dataset.classes == CLASSES
    assert dataset.images.dtype == torch.uint8 and tuple(dataset.images.shape[1:]) == (3, 32, 32)
    np.testing.assert_array_equal(dataset.images.numpy(), images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(dataset.labels.numpy(), labels)


def test_pickle_folder_and_tarball_layouts_give_identical_arrays(tmp_path, splits):
    pickled = read_cifar_pickles(write_pickles(tmp_path / "cifar-10-batches-py", splits))
    tree = read_image_tree(write_tree(tmp_path / "tree", splits))
    tarred = read_image_tarball(write_tarball(tmp_path / "c.tar.gz", tmp_path / "tree"))
    for layout in (pickled, tree, tarred):
        for dataset, split in zip(layout, ("train", "test"), strict=True):
            assert_matches(dataset, *splits[split])


def test_pickles_written_by_numpy_2_with_protocol_5_load(tmp_path, splits):
    train, _ = read_cifar_pickles(write_pickles(tmp_path / "p", splits, protocol=5))
    assert_matches(train, *splits["train"])


def test_pickle_class_names_are_sorted_and_labels_remapped(tmp_path, splits):
    # Declared order frog, cat, dog: stored label 0 means frog.
    declared = ("frog", "cat", "dog")
    stored = {
        split: (images, np.array([declared.index(CLASSES[k]) for k in labels]))
        for split, (images, labels) in splits.items()
    }
    train, test = read_cifar_pickles(write_pickles(tmp_path / "p", stored, label_names=declared))
    assert_matches(train, *splits["train"])
    assert_matches(test, *splits["test"])


def test_tarball_with_a_top_level_folder_is_accepted(tmp_path, splits):
    tree = write_tree(tmp_path / "t", splits)
    tarred = read_image_tarball(write_tarball(tmp_path / "c.tgz", tree, top="cifar10"))
    assert_matches(tarred[0], *splits["train"])


def test_grey_and_rgba_images_are_converted_to_rgb(tmp_path, splits):
    root = write_tree(tmp_path / "t", splits)
    grey = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(root / "train" / "cat" / "0000.png")
    Image.fromarray(np.dstack([grey] * 4), mode="RGBA").save(root / "train" / "cat" / "0001.png")
    train, _ = read_image_tree(root)
    np.testing.assert_array_equal(train.images[0].numpy(), np.stack([grey] * 3))
    np.testing.assert_array_equal(train.images[1].numpy(), np.stack([grey] * 3))


def test_jpeg_tree_decodes_close_to_the_originals(tmp_path):
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3))
    splits = {"train": (np.stack([smooth] * 3), np.arange(3)), "test": (np.stack([smooth] * 3), np.arange(3))}
    train, _ = read_image_tree(write_tree(tmp_path / "t", splits, ext=".jpg"))
    error = np.abs(train.images.numpy().astype(int) - smooth.transpose(2, 0, 1)[None].astype(int))
    assert error.mean() < 3


# --- search --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "kind"),
    [
        ("batches", "pickle"), ("batches-itself", "pickle"), ("tree", "folder"), ("tarball", "tarball"),
        ("nested", "folder"), ("tarball-file", "tarball"),
    ],
)
def test_search_accepts_each_layout_in_a_data_dir(tmp_path, splits, layout, kind):
    d = tmp_path / "d"
    if layout == "batches":
        write_pickles(d / "cifar-10-batches-py", splits)
    elif layout == "batches-itself":
        write_pickles(d, splits)
    elif layout == "tree":
        write_tree(d, splits)
    elif layout == "nested":
        write_tree(d / "cifar10", splits)
    else:
        d.mkdir()
        write_tarball(d / "cifar10-jpg.tar.gz", write_tree(tmp_path / "t", splits))
        if layout == "tarball-file":
            d = d / "cifar10-jpg.tar.gz"
    source, _ = find_cifar10(str(d))
    assert source is not None and source.kind == kind
    train, test, description = load_cifar10(DataConfig(dataset="cifar10", data_dir=str(d)))
    assert_matches(train, *splits["train"])
    assert_matches(test, *splits["test"])
    assert str(source.path) in description


def test_search_uses_rlal_data_when_no_data_dir(tmp_path, splits, monkeypatch):
    write_tree(tmp_path / "env", splits)
    monkeypatch.setenv("RLAL_DATA", str(tmp_path / "env"))
    assert find_cifar10(None)[0].path == tmp_path / "env"


def test_missing_cifar_lists_the_folders_searched_and_says_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAL_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_cifar10(DataConfig(dataset="cifar10"))
    message = str(info.value)
    for path in (tmp_path / "env", tmp_path / "env" / "cifar10"):
        assert str(path) in message
    assert "not downloaded" in message and "--data-dir" in message and "cifar10-jpg.tar.gz" in message


def test_a_data_dir_without_cifar_is_refused_not_replaced_by_rlal_data(tmp_path, splits, monkeypatch):
    write_pickles(tmp_path / "env" / cifar.PICKLE_DIR, splits)  # a copy the run must not fall back to
    monkeypatch.setenv("RLAL_DATA", str(tmp_path / "env"))
    (tmp_path / "given").mkdir()
    with pytest.raises(DataError) as info:
        load_cifar10(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "given")))
    assert str(tmp_path / "given") in str(info.value) and str(tmp_path / "env") not in str(info.value)


@pytest.mark.parametrize("kept", ["train", "test"])
def test_a_cifar_folder_without_test_or_train_says_which_split_is_missing(tmp_path, splits, kept):
    root = write_tree(tmp_path / "c", splits)
    shutil.rmtree(root / ("test" if kept == "train" else "train"))
    missing = "test" if kept == "train" else "train"
    with pytest.raises(DataError, match=rf"{re.escape(str(root))} has {kept}/ but no {missing}/"):
        load_cifar10(DataConfig(dataset="cifar10", data_dir=str(root)))


def write_png16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit grayscale PNG (PIL mode I;16), as scanners and medical imaging tools write them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    return path


def test_a_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = write_png16(tmp_path / "deep.png", values)
    image = decode_images([(str(path), path)], size=32)[0]
    expected = np.round(values / 257).astype(np.uint8)  # 65535 / 255 = 257
    assert image.shape == (3, 32, 32) and (image == expected).all()
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image)) > 200


def test_a_16_bit_png_in_a_cifar_tree_decodes_like_its_8_bit_twin(tmp_path, splits):
    root = write_tree(tmp_path / "c", splits)
    eight = np.asarray(Image.open(root / "train" / "cat" / "0000.png").convert("L"))
    (root / "train" / "cat" / "0000.png").unlink()
    write_png16(root / "train" / "cat" / "0000.png", eight.astype(np.uint16) * 257)
    train, _ = read_image_tree(root)
    assert (train.images[0].numpy() == eight).all()


def test_floating_point_pixels_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: cannot decode image .*mode F"):
        decode_images([(str(path), path)], size=32)


# --- cache ---------------------------------------------------------------------------------------


def test_tarball_is_decoded_once_then_read_from_the_cache(tmp_path, splits, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    tarball = write_tarball(d / "cifar10-jpg.tar.gz", write_tree(tmp_path / "t", splits))
    cfg = DataConfig(dataset="cifar10", data_dir=str(d), cache_dir=str(tmp_path / "c"))
    load_cifar10(cfg)
    entries = list((tmp_path / "c" / "cifar10").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("tarball-")
    assert sorted(p.name for p in entries[0].iterdir()) == [
        "meta.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy",
    ]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cifar, "decode_images", no_decoding)
    train, test, source = load_cifar10(cfg)
    assert_matches(train, *splits["train"])
    assert_matches(test, *splits["test"])
    assert "cached in" in source and str(entries[0]) in source
    # A changed source (new mtime) is a new key: decoded again.
    os.utime(tarball, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        load_cifar10(cfg)


def test_folder_cache_key_changes_when_a_file_is_added(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    cfg = DataConfig(dataset="cifar10", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    load_cifar10(cfg)
    Image.fromarray(splits["train"][0][0]).save(root / "train" / "dog" / "9999.png")
    train, _, _ = load_cifar10(cfg)
    assert len(train) == len(splits["train"][0]) + 1
    assert len(list((tmp_path / "c" / "cifar10").iterdir())) == 2


def test_damaged_cache_entry_is_rebuilt(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    cfg = DataConfig(dataset="cifar10", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    load_cifar10(cfg)
    (entry,) = (tmp_path / "c" / "cifar10").iterdir()
    (entry / "train_images.npy").write_bytes(b"garbage")
    train, _, _ = load_cifar10(cfg)
    assert_matches(train, *splits["train"])
    assert np.load(entry / "train_images.npy").shape == (12, 3, 32, 32)


def test_unwritable_cache_warns_and_still_loads(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write the data cache"):
        train, _, _ = load_cifar10(DataConfig(dataset="cifar10", data_dir=str(root), cache_dir=str(blocker)))
    assert_matches(train, *splits["train"])


# --- bad input -----------------------------------------------------------------------------------


def test_undecodable_jpeg_in_a_folder_names_the_file(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    bad = root / "train" / "dog" / "0005.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": cannot decode image"):
        read_image_tree(root)


def test_undecodable_image_in_a_tarball_names_the_archive_and_member(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    (root / "test" / "frog" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    tarball = write_tarball(tmp_path / "c.tar.gz", root)
    with pytest.raises(DataError, match=re.escape(f"{tarball} member test/frog/0001.png: cannot decode")):
        read_image_tarball(tarball)


def test_image_of_the_wrong_size_names_the_file(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    Image.new("RGB", (33, 32)).save(root / "test" / "cat" / "0000.png")
    bad = root / "test" / "cat" / "0000.png"
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": image is 33x32, expected 32x32"):
        read_image_tree(root)


@pytest.mark.parametrize("chunk", [2048, 2])
def test_corrupt_tarball_names_the_archive(tmp_path, splits, monkeypatch, chunk):
    monkeypatch.setattr(decode, "CHUNK", chunk)  # 2: the archive is read while a process pool decodes
    monkeypatch.setattr(decode, "worker_count", lambda: 2)
    good = write_tarball(tmp_path / "good.tar.gz", write_tree(tmp_path / "t", splits)).read_bytes()
    bad = tmp_path / "cifar10-jpg.tar.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": corrupt or unreadable tar archive"):
        load_cifar10(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_folder_without_class_folders_names_the_folder(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "test").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "d" / "train")) + ": no class folders"):
        load_cifar10(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "d")))


def test_class_folders_without_images_name_the_folder(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    for image in (root / "test").rglob("*.png"):
        image.unlink()
    with pytest.raises(DataError, match=re.escape(str(root / "test")) + ": no images"):
        read_image_tree(root)


def test_train_and_test_classes_differ_in_a_folder(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    (root / "test" / "frog").rename(root / "test" / "toad")
    with pytest.raises(DataError, match=re.escape(str(root)) + ".*only in train: frog; only in test: toad"):
        read_image_tree(root)


def test_train_and_test_classes_differ_in_a_tarball(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    (root / "test" / "frog").rename(root / "test" / "toad")
    tarball = write_tarball(tmp_path / "c.tar.gz", root)
    with pytest.raises(DataError, match=re.escape(str(tarball)) + ".*only in train: frog; only in test: to"):
        read_image_tarball(tarball)


def test_tarball_without_a_test_split_names_the_archive(tmp_path, splits):
    root = write_tree(tmp_path / "d", splits)
    tarball = tmp_path / "c.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
    with pytest.raises(DataError, match=re.escape(str(tarball)) + ": no test/<class>/<image> members"):
        read_image_tarball(tarball)


def test_truncated_pickle_names_the_file(tmp_path, splits):
    folder = write_pickles(tmp_path / "p", splits)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match=re.escape(str(batch)) + ": corrupt or truncated pickle"):
        read_cifar_pickles(folder)


def test_pickle_that_would_run_code_is_refused(tmp_path, splits):
    folder = write_pickles(tmp_path / "p", splits)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=re.escape(str(folder / "test_batch")) + ".*refusing to load"):
        read_cifar_pickles(folder)


def test_pickle_without_the_cifar_keys_names_the_file(tmp_path, splits):
    folder = write_pickles(tmp_path / "p", splits)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"images": [1, 2]}))
    with pytest.raises(DataError, match=re.escape(str(folder / "data_batch_1")) + ": not a CIFAR-10 batch"):
        read_cifar_pickles(folder)


def test_missing_test_batch_names_the_folder(tmp_path, splits):
    folder = write_pickles(tmp_path / "cifar-10-batches-py", splits)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=re.escape(str(folder)) + ": no test_batch"):
        load_cifar10(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_unknown_dataset_name_lists_the_valid_ones():
    expected = "unknown dataset 'mnist' (valid: cifar10, fashion-mnist, imagefolder)"
    with pytest.raises(DataError, match=re.escape(expected)):
        dataset_spec("mnist")
    with pytest.raises(DataError, match=re.escape(expected)):
        build_data(DataConfig(dataset="mnist"), torch.device("cpu"), seed=0)


# --- parallel decoding ---------------------------------------------------------------------------


def _encoded(images: np.ndarray) -> list[tuple[str, bytes]]:
    out = []
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append((f"img{i}", buffer.getvalue()))
    return out


def test_pool_decoding_keeps_the_input_order(monkeypatch):
    images = np.random.default_rng(5).integers(0, 256, (23, 32, 32, 3), dtype=np.uint8)
    monkeypatch.setattr(decode, "CHUNK", 4)  # six chunks: the process pool path
    monkeypatch.setattr(decode, "worker_count", lambda: 2)
    out = decode_images(iter(_encoded(images)), 32)
    np.testing.assert_array_equal(out, images.transpose(0, 3, 1, 2))


def test_pool_decoding_names_the_bad_image(monkeypatch):
    items = _encoded(np.zeros((12, 32, 32, 3), dtype=np.uint8))
    items[9] = ("the-bad-one", b"junk")
    monkeypatch.setattr(decode, "CHUNK", 4)
    monkeypatch.setattr(decode, "worker_count", lambda: 2)
    with pytest.raises(DataError, match="the-bad-one: cannot decode image"):
        decode_images(items, 32)


# --- build_data on CIFAR -------------------------------------------------------------------------


def test_build_data_on_cifar_pickles(tmp_path, splits):
    write_pickles(tmp_path / "cifar-10-batches-py", splits)
    cfg = DataConfig(
        dataset="cifar10", data_dir=str(tmp_path), reward_size=2, batch_size=4, eval_batch_size=3
    )
    data = build_data(cfg, torch.device("cpu"), seed=0, channels_last=True)
    assert data.spec.num_classes == 3 and data.spec.in_channels == 3 and data.spec.input_size == 32
    assert data.classes == CLASSES and "python batches" in data.source
    assert (data.train.num_samples, data.reward.num_samples, data.test.num_samples) == (10, 2, 6)
    assert len(data.train) == 2 and len(data.reward) == 1 and len(data.test) == 2
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
