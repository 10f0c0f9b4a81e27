"""The IDX reader: round trips, and every kind of damage is a DataError naming the file."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest

from rlal.data import read_idx, write_idx
from rlal.errors import DataError


def _names(path) -> str:
    return re.escape(str(path))


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_idx_round_trip_gzip_and_uncompressed(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / name, images)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (5, 28, 28)
    np.testing.assert_array_equal(back, images)
    assert back.flags.writeable


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_other_types_is_native_endian(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    back = read_idx(write_idx(tmp_path / "x.idx.gz", array))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_gzip_is_recognised_by_content_not_extension(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"  # no .gz, but gzip inside
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + labels.tobytes()))
    np.testing.assert_array_equal(read_idx(path), labels)


def test_idx_wrong_magic_number_names_file(tmp_path):
    path = tmp_path / "bad-magic-idx1-ubyte"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(DataError, match=_names(path) + ".*magic"):
        read_idx(path)


def test_idx_empty_file_names_file(tmp_path):
    path = tmp_path / "empty-idx1-ubyte"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=_names(path) + ".*not an IDX file"):
        read_idx(path)


def test_idx_unknown_type_code_names_file_and_code(tmp_path):
    path = tmp_path / "bad-type-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01"))
    with pytest.raises(DataError, match=_names(path) + ".*type code 0x07"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_payload_names_file_and_sizes(tmp_path, gz):
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4, 28, 28) + bytes(4 * 28 * 28 - 100)
    path = tmp_path / ("cut-idx3-ubyte.gz" if gz else "cut-idx3-ubyte")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match=_names(path) + ".*truncated.*4x28x28.*3136 bytes.*3036"):
        read_idx(path)


def test_idx_payload_longer_than_header_says(tmp_path):
    path = tmp_path / "long-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes(5))
    with pytest.raises(DataError, match=_names(path) + ".*too long"):
        read_idx(path)


def test_idx_truncated_header_names_file(tmp_path):
    path = tmp_path / "short-header-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">I", 4))
    with pytest.raises(DataError, match=_names(path) + ".*truncated IDX header"):
        read_idx(path)


def test_idx_corrupt_gzip_names_file(tmp_path):
    good = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 1000) + bytes(range(256)) * 4)
    path = tmp_path / "corrupt-idx1-ubyte.gz"
    path.write_bytes(good[:20] + b"\xff" * 40 + good[60:])
    with pytest.raises(DataError, match=_names(path) + ".*corrupt gzip"):
        read_idx(path)


def test_idx_cut_gzip_stream_names_file(tmp_path):
    good = gzip.compress(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=_names(path) + ".*corrupt gzip"):
        read_idx(path)


def test_idx_missing_file_names_file(tmp_path):
    path = tmp_path / "absent-idx1-ubyte.gz"
    with pytest.raises(DataError, match="cannot read " + _names(path)):
        read_idx(path)
