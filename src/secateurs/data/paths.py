"""Where datasets are looked for and downloaded to, and the optional torchvision download."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

__all__ = ["cache_dir", "data_root", "torchvision_download"]


def data_root() -> Path:
    """The directory under which downloaded datasets are kept.

    Returns:
        ``$SECATEURS_DATA`` when set, else ``~/.cache/secateurs/data``. Each dataset lives in its own
        sub-directory, see :func:`cache_dir`.
    """
    env = os.environ.get("SECATEURS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "secateurs" / "data"


def cache_dir(name: str) -> Path:
    """The cache directory of one dataset: ``data_root() / name``.

    Args:
        name: The dataset's registry name, e.g. ``"fashion-mnist"``.

    Returns:
        The directory (not created).
    """
    return data_root() / name


def torchvision_download(class_name: str, root: Path) -> str | None:
    """Download a dataset with ``torchvision.datasets.<class_name>`` into ``root``.

    Both splits are fetched. Failures are returned, not raised, so that the caller can fold them into
    its single "data not found" message.

    Args:
        class_name: A torchvision dataset class taking ``root``, ``train`` and ``download``, e.g.
            ``"FashionMNIST"`` or ``"CIFAR10"``.
        root: Directory to download into; created if needed.

    Returns:
        ``None`` on success, else a short reason why nothing was downloaded.
    """
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except ImportError:
        return "torchvision is not installed"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(datasets, class_name)(root=str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - network, checksum and disk errors all mean "not fetched"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"download failed ({reason[:200]})"
    return None
