"""secateurs: pruning neural networks in PyTorch."""

from secateurs._version import __version__

__all__ = ["__version__"]
