from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from _data_helpers import write_idx_by_hand

from secateurs.data import find_idx_files, read_idx, write_idx
from secateurs.errors import UsageError


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (5, 4, 3), (0, 28, 28)])
def test_read_idx_reads_hand_written_files_exactly(tmp_path, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / ("f.gz" if gz else "f")
    write_idx_by_hand(path, array, gz=gz)
    out = read_idx(path)
    assert out.dtype == torch.uint8
    assert tuple(out.shape) == shape
    assert torch.equal(out, torch.from_numpy(array))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_write_then_read_round_trips_every_idx_type(tmp_path, dtype, compress):
    t = (torch.arange(24) * 37 - 100).reshape(2, 3, 4).to(dtype)
    path = write_idx(tmp_path / "t.idx", t, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    assert torch.equal(read_idx(path), t)


def test_write_idx_header_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "t", torch.tensor([1, 258], dtype=torch.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx_by_hand(tmp_path / "plain-name", array, gz=True)
    assert torch.equal(read_idx(tmp_path / "plain-name"), torch.from_numpy(array))


def test_bad_magic_and_truncation_are_usage_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UsageError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    write_idx_by_hand(tmp_path / "short", np.zeros((4, 4), dtype=np.uint8), gz=False)
    data = (tmp_path / "short").read_bytes()
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(data[:-3])
    with pytest.raises(UsageError, match="damaged"):
        read_idx(tmp_path / "short.gz")


def test_find_idx_files_accepts_raw_names_and_torchvision_layout(tmp_path):
    a = np.zeros((2, 28, 28), dtype=np.uint8)
    labels = np.zeros(2, dtype=np.uint8)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, arr in [("train-images-idx3-ubyte", a), ("train-labels-idx1-ubyte", labels),
                      ("t10k-images-idx3-ubyte", a), ("t10k-labels-idx1-ubyte", labels)]:  # fmt: skip
        write_idx_by_hand(raw / stem, arr, gz=False)
    assert find_idx_files(tmp_path) is None
    found = find_idx_files(tmp_path, ["MNIST/raw", "FashionMNIST/raw"])
    assert found is not None and found.train_images == raw / "train-images-idx3-ubyte"
    # The dotted variant of the names, gzipped, directly in the directory.
    flat = tmp_path / "flat"
    flat.mkdir()
    for stem in ["train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte"]:
        write_idx_by_hand(flat / (stem + ".gz"), labels, gz=True)
    assert find_idx_files(flat) is None  # one file missing
    write_idx_by_hand(flat / "t10k-labels.idx1-ubyte.gz", labels, gz=True)
    assert find_idx_files(flat).test_labels == flat / "t10k-labels.idx1-ubyte.gz"
