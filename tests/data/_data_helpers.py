"""Writers of the on-disk dataset formats for the data tests, independent of the library code."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx_by_hand(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """Write ``array`` (uint8) as IDX: magic 0x00000803/0x00000801, big-endian sizes, raw bytes."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_mnist_like(directory: Path, *, n_train: int = 30, n_test: int = 12, gz: bool = True, seed: int = 0) -> dict:
    """Write the four MNIST-style IDX files into ``directory``; return the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        write_idx_by_hand(directory / (stem + (".gz" if gz else "")), array, gz=gz)
    return arrays


def write_cifar(
    root: Path, kind: str, *, per_batch: int = 6, n_test: int = 5, seed: int = 0, protocol: int = 2
) -> dict:
    """Write CIFAR python-version files exactly as torchvision extracts them; return what was written."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, classes = "test_batch", "batches.meta", 10
    else:
        folder = root / "cifar-100-python"
        train_files, test_file, meta_file, classes = ["train"], "test", "meta", 100
    folder.mkdir(parents=True)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    for name in [*train_files, test_file]:
        n = n_test if name == test_file else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, n)]
        batch = {b"batch_label": name.encode(), b"data": data, b"filenames": [b"x.png"] * n}
        if kind == "cifar10":
            batch[b"labels"] = labels
        else:
            batch[b"fine_labels"] = labels
            batch[b"coarse_labels"] = [v // 5 for v in labels]
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        written[name] = (data, labels)
    if kind == "cifar10":
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": per_batch}
    else:
        meta = {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"k{i}".encode() for i in range(20)],
        }
    with open(folder / meta_file, "wb") as f:
        pickle.dump(meta, f, protocol=protocol)
    return written
