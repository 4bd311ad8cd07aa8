"""Loaders for MNIST and Fashion-MNIST from their standard IDX files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from secateurs.data.idx import IdxFiles, find_idx_files, read_idx
from secateurs.data.paths import cache_dir, torchvision_download
from secateurs.data.splits import ImageSplits
from secateurs.errors import DataNotFoundError, UsageError

__all__ = ["FASHION_MNIST_SYSTEM_DIR", "load_fashion_mnist", "load_mnist", "load_mnist_like"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class _Source:
    display: str
    torchvision_class: str  # also the name of torchvision's sub-directory: <root>/<class>/raw
    system_dir: Path | None
    how_to_get: str
    class_names: tuple[str, ...]


_SOURCES: dict[str, _Source] = {
    "fashion-mnist": _Source(
        display="Fashion-MNIST",
        torchvision_class="FashionMNIST",
        system_dir=FASHION_MNIST_SYSTEM_DIR,
        how_to_get="install it with `apt-get install dataset-fashion-mnist` or pass --data-dir DIR with the IDX files",
        class_names=FASHION_MNIST_CLASSES,
    ),
    "mnist": _Source(
        display="MNIST",
        torchvision_class="MNIST",
        system_dir=None,
        how_to_get=(
            "pass --data-dir DIR with the IDX files (train-images-idx3-ubyte[.gz], ...) "
            "or add --download to fetch it with torchvision"
        ),
        class_names=tuple(str(d) for d in range(10)),
    ),
}


def _search_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    source = _SOURCES[name]
    if data_dir is not None:  # asked for explicitly: no silent fall-back to another copy
        return [Path(data_dir).expanduser()]
    dirs: list[Path] = []
    if source.system_dir is not None:
        dirs.append(source.system_dir)
    dirs.append(cache_dir(name))
    return dirs


def _find(name: str, dirs: list[Path]) -> IdxFiles | None:
    # Each directory may hold the raw files directly or torchvision's <root>/<Class>/raw layout.
    subdirs = (f"{_SOURCES[name].torchvision_class}/raw",)
    for directory in dirs:
        found = find_idx_files(directory, subdirs)
        if found is not None:
            return found
    return None


def _read_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dim() != 3 or labels.dim() != 1 or images.dtype != torch.uint8:
        raise UsageError(
            f"{images_path} / {labels_path}: expected uint8 images (N, H, W) and labels (N,), "
            f"got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return images.unsqueeze(1), labels.long()


def load_mnist_like(name: str, *, data_dir: str | Path | None = None, download: bool = False) -> ImageSplits:
    """Load ``"fashion-mnist"`` or ``"mnist"`` from IDX files.

    Search order: ``data_dir`` alone when given (an explicit directory without the files is an error,
    not a fall-back to another copy); else for Fashion-MNIST ``/usr/share/datasets/fashion-mnist``; the cache
    directory (``$SECATEURS_DATA/<name>`` or ``~/.cache/secateurs/data/<name>``). In each directory the
    raw names (``train-images-idx3-ubyte[.gz]``, ``t10k-...``) are accepted directly or under
    torchvision's ``FashionMNIST/raw`` / ``MNIST/raw``. When nothing is found and ``download`` is true,
    torchvision downloads into the cache directory.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        data_dir: The directory to take the files from (the only one searched when given).
        download: Allow a torchvision download into the cache directory.

    Returns:
        The splits, images ``uint8`` of shape ``(N, 1, 28, 28)``.

    Raises:
        UsageError: If ``name`` is not an MNIST-like dataset or the files are malformed.
        DataNotFoundError: If the files are nowhere to be found (one-line message saying how to get them).
    """
    if name not in _SOURCES:
        raise UsageError(f"unknown MNIST-like dataset {name!r}; known: {', '.join(_SOURCES)}")
    source = _SOURCES[name]
    dirs = _search_dirs(name, data_dir)
    found = _find(name, dirs)
    failure = ""
    if found is None and download:
        reason = torchvision_download(source.torchvision_class, cache_dir(name))
        failure = f"; {reason}" if reason else ""
        found = _find(name, [cache_dir(name)])
    if found is None:
        looked = ", ".join(str(d) for d in dirs)
        raise DataNotFoundError(
            f"{source.display} not found (looked in {looked}){failure}; {source.how_to_get}"
        )
    x_train, y_train = _read_split(found.train_images, found.train_labels)
    x_test, y_test = _read_split(found.test_images, found.test_labels)
    return ImageSplits(x_train, y_train, x_test, y_test, num_classes=10, class_names=source.class_names,
                       files=tuple(found))


def load_fashion_mnist(*, data_dir: str | Path | None = None, download: bool = False) -> ImageSplits:
    """Load Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey, 10 classes).

    Args:
        data_dir: A directory to search first; see :func:`load_mnist_like` for the search order.
        download: Allow a torchvision download into the cache directory.

    Returns:
        The splits.

    Raises:
        DataNotFoundError: If the files are nowhere to be found.
    """
    return load_mnist_like("fashion-mnist", data_dir=data_dir, download=download)


def load_mnist(*, data_dir: str | Path | None = None, download: bool = False) -> ImageSplits:
    """Load MNIST (60,000 train / 10,000 test, 28x28 grey digits, 10 classes).

    Args:
        data_dir: A directory to search first; see :func:`load_mnist_like` for the search order.
        download: Allow a torchvision download into the cache directory.

    Returns:
        The splits.

    Raises:
        DataNotFoundError: If the files are nowhere to be found.
    """
    return load_mnist_like("mnist", data_dir=data_dir, download=download)
