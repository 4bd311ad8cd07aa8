"""Seeded synthetic image classification data, for tests and quick runs without any download."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from secateurs.data.splits import ImageSplits
from secateurs.errors import UsageError

__all__ = ["make_synthetic"]


def make_synthetic(
    *,
    n_train: int = 2048,
    n_test: int = 512,
    channels: int = 1,
    size: int = 28,
    num_classes: int = 10,
    noise: float = 0.3,
    seed: int = 0,
) -> ImageSplits:
    """Make a learnable synthetic image classification dataset.

    Each class has a smooth random prototype image (a random 4x4 pattern per channel, upsampled
    bilinearly to ``size``); a sample is its class prototype plus Gaussian pixel noise, clipped to
    ``[0, 1]`` and stored as ``uint8`` like real images. The classes differ at a coarse scale, so a
    small MLP or CNN separates them within a few dozen steps, while the noise keeps the task from being
    trivial. Labels are balanced (``i % num_classes`` before shuffling). Train and test share the
    prototypes. The data is a pure function of the arguments.

    Args:
        n_train: Number of training samples.
        n_test: Number of test samples.
        channels: Image channels ``C``.
        size: Image height and width.
        num_classes: Number of classes (at least 2).
        noise: Standard deviation of the pixel noise, in units of the ``[0, 1]`` intensity range.
        seed: Seed of the generator that draws prototypes, labels and noise.

    Returns:
        The splits, images ``uint8`` of shape ``(N, channels, size, size)``.

    Raises:
        UsageError: If a size or count is out of range.
    """
    if n_train < 1 or n_test < 1:
        raise UsageError(f"synthetic data needs n_train >= 1 and n_test >= 1, got {n_train} and {n_test}")
    if channels < 1 or size < 4:
        raise UsageError(f"synthetic data needs channels >= 1 and size >= 4, got {channels} and {size}")
    if num_classes < 2:
        raise UsageError(f"synthetic data needs at least 2 classes, got {num_classes}")
    if noise < 0:
        raise UsageError(f"synthetic noise must be >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=gen)
    prototypes = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
        images = prototypes[labels] + noise * torch.randn(n, channels, size, size, generator=gen)
        return images.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8), labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    names = tuple(f"class{k}" for k in range(num_classes))
    settings = {"name": "secateurs.data.make_synthetic", "n_train": n_train, "n_test": n_test, "channels": channels,
                "size": size, "num_classes": num_classes, "noise": noise, "seed": seed}
    return ImageSplits(x_train, y_train, x_test, y_test, num_classes=num_classes, class_names=names,
                       generator=settings)
