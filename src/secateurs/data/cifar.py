"""Loaders for CIFAR-10 and CIFAR-100 from the "python version" batch files.

That is the format torchvision downloads and extracts: ``cifar-10-batches-py/`` with ``data_batch_1``
.. ``data_batch_5``, ``test_batch`` and ``batches.meta``; ``cifar-100-python/`` with ``train``,
``test`` and ``meta``. Each file is a pickled dict (written by Python 2) whose ``data`` entry is a
``uint8`` array of shape ``(N, 3072)`` holding the red, green and blue planes of each 32x32 image.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secateurs.data.paths import cache_dir, torchvision_download
from secateurs.data.splits import ImageSplits
from secateurs.errors import DataNotFoundError, UsageError

__all__ = ["load_cifar", "load_cifar10", "load_cifar100"]


@dataclass(frozen=True)
class _Layout:
    display: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    torchvision_class: str


_LAYOUTS: dict[str, _Layout] = {
    "cifar10": _Layout(
        display="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        torchvision_class="CIFAR10",
    ),
    "cifar100": _Layout(
        display="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        torchvision_class="CIFAR100",
    ),
}

# The only globals a CIFAR batch file refers to: numpy's array reconstruction helpers. Anything else in
# a file means it is not a CIFAR batch, and refusing it keeps unpickling from running foreign code.
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 writes bytes at pickle protocol < 3 as codecs.encode(latin-1 text).
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Files written by numpy 1.x name numpy.core, which numpy 2 renamed to numpy._core.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return getattr(importlib.import_module(module), name)


def _load_batch(path: Path) -> Mapping[Any, Any]:
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the files come from Python 2, whose str keys arrive as bytes.
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} is not a CIFAR batch file ({exc})") from exc
    if not isinstance(obj, Mapping):
        raise UsageError(f"{path} is not a CIFAR batch file (not a dict)")
    return obj


def _get(batch: Mapping[Any, Any], key: str, path: Path) -> Any:
    # bytes keys from Python 2 files, str keys from files re-saved by Python 3.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise UsageError(f"{path} lacks the entry {key!r}")


def _read_images_labels(path: Path, layout: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _load_batch(path)
    data = np.asarray(_get(batch, "data", path), dtype=np.uint8)
    labels = np.asarray(_get(batch, layout.label_key, path), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise UsageError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.copy())


def _find(layout: _Layout, dirs: list[Path]) -> Path | None:
    needed = (*layout.train_files, layout.test_file)
    for directory in dirs:
        # Either the folder that holds the batch folder (torchvision's root) or the batch folder itself.
        for candidate in (directory / layout.folder, directory):
            if all((candidate / name).is_file() for name in needed):
                return candidate
    return None


def _class_names(folder: Path, layout: _Layout) -> tuple[str, ...] | None:
    path = folder / layout.meta_file
    if not path.is_file():
        return None  # the names are a convenience; the data is complete without them
    names = _get(_load_batch(path), layout.names_key, path)
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load_cifar(name: str, *, data_dir: str | Path | None = None, download: bool = False) -> ImageSplits:
    """Load ``"cifar10"`` or ``"cifar100"`` from torchvision's python batch files.

    Looks in ``data_dir`` alone when given (no fall-back), else in the cache directory (``$SECATEURS_DATA/<name>`` or
    ``~/.cache/secateurs/data/<name>``); each may hold the batch folder (``cifar-10-batches-py`` /
    ``cifar-100-python``) or be that folder. When nothing is found and ``download`` is true,
    torchvision downloads into the cache directory.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: A directory to search first.
        download: Allow a torchvision download into the cache directory.

    Returns:
        The splits, images ``uint8`` of shape ``(N, 3, 32, 32)``; CIFAR-100 uses the 100 fine labels.

    Raises:
        UsageError: If ``name`` is not a CIFAR dataset or a file is malformed.
        DataNotFoundError: If the files are nowhere to be found (one-line message saying how to get them).
    """
    if name not in _LAYOUTS:
        raise UsageError(f"unknown CIFAR dataset {name!r}; known: {', '.join(_LAYOUTS)}")
    layout = _LAYOUTS[name]
    # An explicit directory is the only one searched: no silent fall-back to another copy.
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else [cache_dir(name)]
    folder = _find(layout, dirs)
    failure = ""
    if folder is None and download:
        reason = torchvision_download(layout.torchvision_class, cache_dir(name))
        failure = f"; {reason}" if reason else ""
        folder = _find(layout, [cache_dir(name)])
    if folder is None:
        looked = ", ".join(str(d) for d in dirs)
        raise DataNotFoundError(
            f"{layout.display} not found (looked in {looked}){failure}; pass --data-dir DIR containing "
            f"{layout.folder}/ (torchvision's python version), or add --download to fetch it with torchvision"
        )
    parts = [_read_images_labels(folder / f, layout) for f in layout.train_files]
    x_train = torch.cat([p[0] for p in parts])
    y_train = torch.cat([p[1] for p in parts])
    x_test, y_test = _read_images_labels(folder / layout.test_file, layout)
    return ImageSplits(
        x_train, y_train, x_test, y_test, num_classes=layout.num_classes, class_names=_class_names(folder, layout),
        files=tuple(folder / f for f in (*layout.train_files, layout.test_file)),
    )


def load_cifar10(*, data_dir: str | Path | None = None, download: bool = False) -> ImageSplits:
    """Load CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB, 10 classes).

    Args:
        data_dir: A directory to search first; see :func:`load_cifar`.
        download: Allow a torchvision download into the cache directory.

    Returns:
        The splits.

    Raises:
        DataNotFoundError: If the files are nowhere to be found.
    """
    return load_cifar("cifar10", data_dir=data_dir, download=download)


def load_cifar100(*, data_dir: str | Path | None = None, download: bool = False) -> ImageSplits:
    """Load CIFAR-100 (50,000 train / 10,000 test, 32x32 RGB, 100 fine classes).

    Args:
        data_dir: A directory to search first; see :func:`load_cifar`.
        download: Allow a torchvision download into the cache directory.

    Returns:
        The splits.

    Raises:
        DataNotFoundError: If the files are nowhere to be found.
    """
    return load_cifar("cifar100", data_dir=data_dir, download=download)
