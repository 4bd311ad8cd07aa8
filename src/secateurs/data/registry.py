"""The dataset registry and :func:`build_data`, the one entry point the CLI and benchmarks use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secateurs.data.cifar import load_cifar10, load_cifar100
from secateurs.data.loader import Augment, TensorLoader, epoch_generator
from secateurs.data.mnist_like import load_fashion_mnist, load_mnist
from secateurs.data.splits import ImageSplits
from secateurs.data.synthetic import make_synthetic
from secateurs.errors import UsageError

__all__ = [
    "DataBundle",
    "DatasetSpec",
    "build_data",
    "describe_datasets",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]

# Reserved "epochs" of epoch_generator for the split draws, so they never coincide with a training
# epoch's shuffle (training epochs are >= 0).
_SPLIT_STREAM = -1
_TEST_SUBSET_STREAM = -2


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset and how to prepare it for training.

    Attributes:
        name: Registry name, e.g. ``"fashion-mnist"``.
        description: One line for ``secateurs list datasets``.
        load: Called as ``load(data_dir=..., download=..., **options)``; returns the raw splits.
        mean: Per-channel mean of the training images in ``[0, 1]`` units; ``None`` computes it from
            the training split at build time.
        std: Per-channel standard deviation, likewise.
        crop_padding: Padding of the random-crop augmentation (0: no cropping).
        flip: Whether random horizontal flips are a valid augmentation for this data.
        options: Names of the extra keyword options ``load`` accepts (see ``build_data(options=...)``).
    """

    name: str
    description: str
    load: Callable[..., ImageSplits]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_padding: int = 0
    flip: bool = False
    options: tuple[str, ...] = ()


@dataclass
class DataBundle:
    """Everything a training run needs from a dataset.

    Attributes:
        train: Training batches (shuffled, augmented when asked).
        test: Test batches (fixed order, never augmented).
        val: Validation batches carved from the training split, or ``None``.
        num_classes: Number of classes.
        in_channels: Image channels.
        image_size: Image height and width.
        name: Dataset registry name.
        class_names: Class names when the dataset ships them.
        mean: Per-channel mean used for normalisation (``[0, 1]`` units).
        std: Per-channel standard deviation used for normalisation.
        files: The files the data was read from (see :attr:`ImageSplits.files`).
        generator: For generated data, the generator's settings (see :attr:`ImageSplits.generator`).
    """

    train: TensorLoader
    test: TensorLoader
    val: TensorLoader | None
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    class_names: tuple[str, ...] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    files: tuple[Path, ...] = ()
    generator: Mapping[str, Any] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one input image."""
        return (self.in_channels, self.image_size, self.image_size)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset to the registry.

    Args:
        spec: The dataset.
        replace: Allow replacing a dataset of the same name.

    Returns:
        ``spec``.

    Raises:
        UsageError: If the name is taken and ``replace`` is false.
    """
    if spec.name in _REGISTRY and not replace:
        raise UsageError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Names of the registered datasets, in registration order."""
    return list(_REGISTRY)


def describe_datasets() -> dict[str, str]:
    """One-line description of each registered dataset, keyed by name."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


def get_dataset(name: str) -> DatasetSpec:
    """Look a dataset up by name.

    Args:
        name: Registry name.

    Returns:
        Its spec.

    Raises:
        UsageError: If no dataset has that name (the message lists the known names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; known datasets: {', '.join(_REGISTRY)}") from None


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # In place on a fresh float copy: one float tensor of the split's size, no temporaries.
    out = images.to(torch.float32).div_(255.0)
    return out.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.to(torch.float64).div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(dim=1).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(x.mean(dim=1).tolist()), tuple(std.tolist())


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def build_data(
    name: str,
    *,
    data_dir: str | Path | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 1024,
    val_fraction: float = 0.0,
    augment: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    download: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load a dataset, split and normalise it, and wrap it in loaders.

    The training split is shuffled once with a generator seeded by ``seed``; ``limit_train`` keeps the
    first ``limit_train`` samples of that order (the pool), and the validation set is the first
    ``val_fraction`` of the pool, the training set the rest. ``limit_test`` likewise keeps a seeded
    random subset of the test split. Subsets keep the file order. Images are normalised once here with
    the dataset's per-channel mean and standard deviation and stored as float32 on ``device``.

    Args:
        name: Registry name (see :func:`list_datasets`).
        data_dir: Directory to search first for the dataset's files.
        batch_size: Training batch size.
        eval_batch_size: Batch size of the test and validation loaders.
        val_fraction: Fraction of the training pool held out for validation, in ``[0, 1)``.
        augment: Use the dataset's training augmentation (test and validation are never augmented).
        seed: Seed of the split and of the training loader's per-epoch shuffling.
        device: Where the tensors live (move them to the GPU when training there).
        download: Allow a torchvision download when the files are not found.
        limit_train: Keep at most this many training samples (before the validation split).
        limit_test: Keep at most this many test samples.
        options: Dataset-specific options, e.g. ``{"channels": 3, "size": 32}`` for ``"synthetic"``.

    Returns:
        The loaders and the data's shape.

    Raises:
        UsageError: For an unknown name, unknown option or a value out of range.
        DataNotFoundError: If the dataset's files are missing (the message says how to get them).
    """
    spec = get_dataset(name)
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if batch_size < 1 or eval_batch_size < 1:
        raise UsageError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
    _check_limit("limit_train", limit_train)
    _check_limit("limit_test", limit_test)
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise UsageError(f"dataset {name!r} has no option {', '.join(unknown)} (accepted: {accepted})")

    raw = spec.load(data_dir=data_dir, download=download, **options)
    if spec.mean is not None and spec.std is not None:
        mean_t, std_t = spec.mean, spec.std
    else:
        mean_t, std_t = _channel_stats(raw.x_train)
    mean, std = torch.tensor(mean_t), torch.tensor(std_t)

    split_gen = epoch_generator(seed, _SPLIT_STREAM)
    pool = torch.randperm(raw.x_train.shape[0], generator=split_gen)
    if limit_train is not None:
        pool = pool[:limit_train]
    n_val = round(val_fraction * len(pool))
    if val_fraction > 0:
        n_val = max(n_val, 1)
        if n_val >= len(pool):
            raise UsageError(f"val_fraction {val_fraction} leaves no training samples out of {len(pool)}")
    val_idx, train_idx = pool[:n_val].sort().values, pool[n_val:].sort().values

    test_idx = None
    if limit_test is not None and limit_test < raw.x_test.shape[0]:
        test_gen = epoch_generator(seed, _TEST_SUBSET_STREAM)
        test_idx = torch.randperm(raw.x_test.shape[0], generator=test_gen)[:limit_test].sort().values

    def prepare(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if idx is not None:
            x, y = x[idx], y[idx]
        return _normalise(x, mean, std), y.to(torch.int64)

    train_aug = None
    if augment and (spec.crop_padding > 0 or spec.flip):
        # Pad with black, as torchvision's RandomCrop does before Normalize: -mean/std once normalised.
        black = tuple((-mean / std).tolist())
        train_aug = Augment(crop_padding=spec.crop_padding, flip=spec.flip, fill=black)
    x_tr, y_tr = prepare(raw.x_train, raw.y_train, train_idx)
    train = TensorLoader(
        x_tr, y_tr, batch_size=batch_size, shuffle=True, seed=seed, augment=train_aug, device=device
    )
    x_te, y_te = prepare(raw.x_test, raw.y_test, test_idx)
    test = TensorLoader(x_te, y_te, batch_size=eval_batch_size, device=device)
    val = None
    if n_val > 0:
        x_va, y_va = prepare(raw.x_train, raw.y_train, val_idx)
        val = TensorLoader(x_va, y_va, batch_size=eval_batch_size, device=device)
    return DataBundle(
        train=train,
        test=test,
        val=val,
        num_classes=raw.num_classes,
        in_channels=raw.in_channels,
        image_size=raw.image_size,
        name=name,
        class_names=raw.class_names,
        mean=tuple(mean_t),
        std=tuple(std_t),
        files=raw.files,
        generator=raw.generator,
    )


def _load_synthetic(*, data_dir: str | Path | None = None, download: bool = False, **options: Any) -> ImageSplits:
    del data_dir, download  # generated, never read from disk
    return make_synthetic(**options)


# Flips: CIFAR objects and Fashion-MNIST garments look alike mirrored, so flipping is a valid (and the
# customary) augmentation; MNIST digits do not (a mirrored 2, 3, 7 is not a digit), so no flip there.
# Synthetic data has no augmentation: its classes are fixed patterns, and its purpose is fast tests.
register_dataset(DatasetSpec(
    name="fashion-mnist",
    description="Fashion-MNIST: 28x28 grey images of clothing, 10 classes, 60k train / 10k test (IDX files)",
    load=load_fashion_mnist, mean=(0.2860,), std=(0.3530,), crop_padding=2, flip=True,
))  # fmt: skip
register_dataset(DatasetSpec(
    name="mnist",
    description="MNIST: 28x28 grey handwritten digits, 10 classes, 60k train / 10k test (IDX files)",
    load=load_mnist, mean=(0.1307,), std=(0.3081,), crop_padding=2, flip=False,
))  # fmt: skip
register_dataset(DatasetSpec(
    name="cifar10",
    description="CIFAR-10: 32x32 colour images, 10 classes, 50k train / 10k test (torchvision python batches)",
    load=load_cifar10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_padding=4, flip=True,
))  # fmt: skip
register_dataset(DatasetSpec(
    name="cifar100",
    description="CIFAR-100: 32x32 colour images, 100 classes, 50k train / 10k test (torchvision python batches)",
    load=load_cifar100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), crop_padding=4, flip=True,
))  # fmt: skip
register_dataset(DatasetSpec(
    name="synthetic",
    description="Synthetic: seeded noisy class prototypes, 1x28x28, 10 classes, 2048 train / 512 test (no files)",
    load=_load_synthetic,
    options=("n_train", "n_test", "channels", "size", "num_classes", "noise", "seed"),
))  # fmt: skip
