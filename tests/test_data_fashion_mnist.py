"""Fashion-MNIST: where it is looked for, what the error says when it is nowhere, and the download."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import rlal.data.fashion_mnist as fm
from rlal.config import DataConfig
from rlal.data import download_fashion_mnist, load_fashion_mnist, write_idx
from rlal.errors import DataError


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real data, cache or network: environment cleared, system path pointed at an empty folder."""
    for name in ("RLAL_DATA", "RLAL_FASHION_MNIST_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")  # the local test server must never go through a proxy
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system" / "fashion-mnist")
    # Anything that still tries the official address fails fast on a closed local port.
    monkeypatch.setattr(fm, "OFFICIAL_URL", "http://127.0.0.1:9/")


def write_fashion(
    folder: Path, first_label: int = 9, n_train: int = 12, n_test: int = 6, gz: bool = True
) -> Path:
    """Four tiny IDX files in the real format; ``first_label`` tells copies apart."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(first_label)
    suffix = ".gz" if gz else ""
    train_labels = rng.integers(0, 10, n_train, dtype=np.uint8)
    train_labels[0] = first_label
    images = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images[:n_train])
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", train_labels)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images[n_train:])
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test, dtype=np.uint8))
    return folder


def test_loads_the_four_idx_files_from_data_dir(tmp_path):
    folder = write_fashion(tmp_path / "d")
    train, test, source = load_fashion_mnist(DataConfig(data_dir=str(folder), download=False))
    assert tuple(train.images.shape) == (12, 1, 28, 28) and tuple(test.images.shape) == (6, 1, 28, 28)
    assert train.labels[0] == 9 and train.labels.dtype.is_floating_point is False
    assert train.classes[9] == "Ankle boot" and len(train.classes) == 10
    assert source == str(folder)


def test_accepts_uncompressed_files_and_a_fashion_mnist_subfolder(tmp_path):
    write_fashion(tmp_path / "d" / "fashion-mnist", first_label=4, gz=False)
    train, _, source = load_fashion_mnist(DataConfig(data_dir=str(tmp_path / "d"), download=False))
    assert train.labels[0] == 4 and source == str(tmp_path / "d" / "fashion-mnist")


def test_search_order_data_dir_then_env_then_system(tmp_path, monkeypatch):
    write_fashion(tmp_path / "given", first_label=1)
    write_fashion(tmp_path / "env", first_label=2)
    write_fashion(fm.SYSTEM_DIR, first_label=3)
    monkeypatch.setenv("RLAL_DATA", str(tmp_path / "env"))

    def first_label(data_dir):
        train, _, _ = load_fashion_mnist(DataConfig(data_dir=data_dir, download=False))
        return int(train.labels[0])

    assert first_label(str(tmp_path / "given")) == 1
    assert first_label(None) == 2
    monkeypatch.delenv("RLAL_DATA")
    assert first_label(None) == 3


def test_missing_data_lists_every_path_searched_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAL_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_fashion_mnist(DataConfig(download=False))
    message = str(info.value)
    assert "\n" not in message
    env, cache = tmp_path / "env", tmp_path / "cache"
    for path in (env, env / "fashion-mnist", fm.SYSTEM_DIR, cache / "fashion-mnist"):
        assert str(path) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "download is off" in message


@pytest.mark.parametrize("damage", ["missing", "empty", "lacks a file"])
@pytest.mark.parametrize("download", [False, True])
def test_a_data_dir_without_the_files_is_refused_never_replaced_by_the_system_copy(
    tmp_path, monkeypatch, server, damage, download
):
    """The folder the user names is the data of the run, or the run stops: never the system copy, the
    $RLAL_DATA copy, the download cache or a fresh download, which could hold other data."""
    url, checksums, requests = server
    monkeypatch.setenv("RLAL_FASHION_MNIST_URL", url)
    monkeypatch.setattr(fm, "OFFICIAL_SHA256", checksums)
    write_fashion(fm.SYSTEM_DIR, first_label=3)
    write_fashion(tmp_path / "env", first_label=2)
    monkeypatch.setenv("RLAL_DATA", str(tmp_path / "env"))
    given = tmp_path / "given"
    if damage == "empty":
        given.mkdir()
    elif damage == "lacks a file":
        (write_fashion(given) / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_fashion_mnist(DataConfig(data_dir=str(given), download=download))
    message = str(info.value)
    why = {"missing": "does not exist", "empty": "no Fashion-MNIST files",
           "lacks a file": "incomplete: no t10k-images-idx3-ubyte"}[damage]
    assert "\n" not in message and str(given) in message and why in message
    assert "never replaced" in message
    assert str(fm.SYSTEM_DIR) not in message and str(tmp_path / "env") not in message
    assert requests == []


def test_incomplete_folder_is_reported_with_the_missing_file(tmp_path):
    folder = write_fashion(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"incomplete: no t10k-labels-idx1-ubyte"):
        load_fashion_mnist(DataConfig(data_dir=str(folder), download=False))


def test_label_count_different_from_image_count_names_both_files(tmp_path):
    folder = write_fashion(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: 11 labels for 12 images in train-im"):
        load_fashion_mnist(DataConfig(data_dir=str(folder), download=False))


def test_images_of_the_wrong_shape_name_the_file(tmp_path):
    folder = write_fashion(tmp_path / "d")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((6, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: expected uint8 images Nx28x28"):
        load_fashion_mnist(DataConfig(data_dir=str(folder), download=False))


def test_label_out_of_range_names_the_file(tmp_path):
    folder = write_fashion(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(6, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: label 10 out of range 0\.\.9"):
        load_fashion_mnist(DataConfig(data_dir=str(folder), download=False))


# --- download, against a local HTTP server -----------------------------------------------------


@pytest.fixture
def server(tmp_path):
    """Serve a folder of tiny gzip IDX files on 127.0.0.1 (ephemeral port); yield (url, files, requests)."""
    folder = write_fashion(tmp_path / "served", first_label=7)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    checksums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.gz"))}
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", checksums, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_fetches_and_verifies_every_file(tmp_path, server):
    url, checksums, _ = server
    dest = download_fashion_mnist(tmp_path / "dl", base_url=url, checksums=checksums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(checksums)  # no temporary files left
    for name, digest in checksums.items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest


def test_download_skips_files_already_present_and_verified(tmp_path, server):
    url, checksums, requests = server
    download_fashion_mnist(tmp_path / "dl", base_url=url.rstrip("/"), checksums=checksums)
    assert len(requests) == 4
    download_fashion_mnist(tmp_path / "dl", base_url=url, checksums=checksums)
    assert len(requests) == 4


def test_download_checksum_mismatch_names_url_and_leaves_no_file(tmp_path, server):
    url, _, _ = server
    bad = {"train-labels-idx1-ubyte.gz": "0" * 64}
    with pytest.raises(DataError, match=rf"{url}train-labels-idx1-ubyte\.gz failed: sha256 mismatch"):
        download_fashion_mnist(tmp_path / "dl", base_url=url, checksums=bad)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_of_a_missing_file_names_url_and_leaves_no_file(tmp_path, server):
    url, _, _ = server
    with pytest.raises(DataError, match=rf"download of {url}nope\.gz failed: HTTP 404"):
        download_fashion_mnist(tmp_path / "dl", base_url=url, checksums={"nope.gz": "0" * 64})
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_network_failure_names_url(tmp_path):
    with pytest.raises(DataError, match=r"download of http://127\.0\.0\.1:9/x\.gz failed"):
        download_fashion_mnist(tmp_path / "dl", base_url="http://127.0.0.1:9/", checksums={"x.gz": "0" * 64})


def test_load_downloads_into_the_cache_once_from_the_url_in_the_environment(tmp_path, server, monkeypatch):
    url, checksums, requests = server
    monkeypatch.setenv("RLAL_FASHION_MNIST_URL", url)
    monkeypatch.setattr(fm, "OFFICIAL_SHA256", checksums)
    train, test, source = load_fashion_mnist(DataConfig(download=True))
    assert train.labels[0] == 7 and len(train) == 12 and len(test) == 6
    assert str(tmp_path / "cache" / "fashion-mnist") in source and url in source
    # The second load finds the downloaded copy in the cache: no request at all.
    monkeypatch.setenv("RLAL_FASHION_MNIST_URL", "http://127.0.0.1:9/")
    _, _, source = load_fashion_mnist(DataConfig(download=True))
    assert source == str(tmp_path / "cache" / "fashion-mnist") and len(requests) == 4


def test_load_with_a_failing_download_lists_paths_and_the_url(tmp_path, server, monkeypatch):
    url, _, _ = server  # serves files whose hashes do not match the official ones
    monkeypatch.setenv("RLAL_FASHION_MNIST_URL", url)
    with pytest.raises(DataError) as info:
        load_fashion_mnist(DataConfig(download=True))
    message = str(info.value)
    assert str(fm.SYSTEM_DIR) in message
    assert url in message and "sha256 mismatch" in message and "apt-get install" in message
    assert not list((tmp_path / "cache" / "fashion-mnist").glob("*.gz"))
