"""The raw form every dataset loader returns: uint8 images and integer labels, train and test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secateurs.errors import UsageError

__all__ = ["ImageSplits"]


@dataclass(frozen=True)
class ImageSplits:
    """A dataset's train and test splits as in-memory tensors, before normalisation.

    Attributes:
        x_train: Training images, ``uint8`` of shape ``(N, C, H, W)``.
        y_train: Training labels, ``int64`` of shape ``(N,)`` with values in ``[0, num_classes)``.
        x_test: Test images, same layout as ``x_train``.
        y_test: Test labels.
        num_classes: Number of classes.
        class_names: Human-readable class names, when the dataset ships them.
        files: The files the splits were read from (for the run record's data fingerprint).
        generator: For generated data, the generator and its settings (the data is a pure function of them).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] | None = None
    files: tuple[Path, ...] = ()
    generator: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Check once here so that every loader gets the same guarantees and no consumer re-checks.
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise UsageError(f"{split} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise UsageError(f"{split} has {x.shape[0]} images but labels of shape {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise UsageError(f"{split} labels fall outside [0, {self.num_classes})")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise UsageError("train and test images differ in shape")

    @property
    def in_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Image height (images are square in every dataset here)."""
        return int(self.x_train.shape[2])
