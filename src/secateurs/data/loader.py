"""An in-memory batch loader with reproducible shuffling and batch-wise augmentation on the device.

The datasets used here fit in memory (CIFAR at float32 is about 600 MB), so the whole dataset lives in
two tensors, moved once to the training device. Batches are gathered by indexing, and augmentation
(random crop with padding, horizontal flip) runs on whole batches on that device: no worker
processes, no per-sample Python, no host-to-device copy per step.

Reproducibility: every random draw of an epoch (the permutation, the crop offsets, the flips) comes
from a fresh CPU ``torch.Generator`` seeded from ``(seed, epoch)``, so the batches of an epoch are a
pure function of the epoch number. A resumed run that calls ``set_epoch(e)`` sees exactly the batches
the original run saw, whatever device it trains on (the draws are made on the CPU and moved).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from secateurs.errors import UsageError

__all__ = ["Augment", "ShardBatch", "TensorLoader", "epoch_generator", "random_crop", "random_hflip"]

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    # A well-mixed 64-bit hash, so that nearby (seed, epoch) pairs give unrelated generator states.
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of ``(seed, epoch)``.

    Args:
        seed: The run's seed.
        epoch: The epoch number.

    Returns:
        A freshly seeded ``torch.Generator`` on the CPU.
    """
    mixed = _splitmix64(_splitmix64(seed & _MASK64) ^ (epoch & _MASK64))
    # manual_seed takes at most 64 bits; keep it non-negative for portability.
    return torch.Generator().manual_seed(mixed & ((1 << 63) - 1))


@dataclass(frozen=True)
class Augment:
    """Batch-wise training augmentation.

    Attributes:
        crop_padding: Pad each side by this many pixels, then crop back to the original size at a random
            offset (the usual ``RandomCrop(size, padding)``). 0 disables cropping.
        flip: Flip each image horizontally with probability 1/2.
        fill: Value of the padding pixels, one per channel (or one for all), in the units of the stored
            tensors. For normalised data, pass the normalised value of a black pixel (``-mean/std``) to
            match torchvision's ``RandomCrop(padding=p)`` applied before ``Normalize``.
    """

    crop_padding: int = 0
    flip: bool = False
    fill: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise UsageError(f"crop padding must be >= 0, got {self.crop_padding}")
        if len(self.fill) < 1:
            raise UsageError("augment fill needs at least one value")

    @property
    def enabled(self) -> bool:
        """Whether this augmentation changes anything."""
        return self.crop_padding > 0 or self.flip


def random_crop(
    x: torch.Tensor, padding: int, offsets: torch.Tensor, fill: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Pad a batch of images and crop each back to its size at its own offset.

    Output pixel ``(i, j)`` of image ``b`` is input pixel ``(i + dy - padding, j + dx - padding)`` with
    ``(dy, dx) = offsets[b]``, or ``fill`` where that falls outside the image. Offsets of
    ``(padding, padding)`` leave an image unchanged.

    Args:
        x: Images ``(B, C, H, W)``.
        padding: Pixels of padding on each side.
        offsets: Integer offsets ``(B, 2)`` in ``[0, 2 * padding]``, on ``x``'s device.
        fill: Padding value: a scalar or one value per channel.

    Returns:
        The cropped batch, same shape, dtype and device as ``x``.
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = x.new_empty(b, c, h + 2 * padding, w + 2 * padding)
    padded.copy_(torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1).expand_as(padded))
    padded[:, :, padding : padding + h, padding : padding + w] = x
    # Gather with index arithmetic: one advanced-indexing call crops every image at its own offset.
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    channels_last = padded.permute(0, 2, 3, 1)  # index (b, row, col) -> the C values of that pixel
    out = channels_last[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip the images of a batch whose entry in ``flip`` is true, left to right.

    Args:
        x: Images ``(B, C, H, W)``.
        flip: Booleans ``(B,)`` on ``x``'s device.

    Returns:
        The batch with the selected images mirrored.
    """
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class ShardBatch(tuple):
    """One process's share ``(x, y)`` of a batch; ``global_size`` counts the samples of the whole batch.

    Unpacks like the ``(x, y)`` pair it is; a training loop weighs the share's loss by it (see
    :meth:`TensorLoader.shard`).
    """

    global_size: int

    def __new__(cls, x: torch.Tensor, y: torch.Tensor, global_size: int) -> ShardBatch:
        batch = super().__new__(cls, (x, y))
        batch.global_size = global_size
        return batch


def _share(start: int, stop: int, rank: int, count: int) -> tuple[int, int]:
    """Part ``rank`` of ``count`` contiguous parts of ``range(start, stop)``, sizes as even as can be
    (the first ``(stop - start) % count`` parts one longer); a part may be empty."""
    base, extra = divmod(stop - start, count)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class TensorLoader:
    """Iterate over ``(x, y)`` batches of an in-memory dataset.

    Usage::

        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for x, y in loader:
                ...

    Iterating twice without ``set_epoch`` yields the same batches again (like
    ``DistributedSampler``): the order depends on the epoch number only, never on how many times the
    loader was iterated.

    Args:
        x: Inputs, first dimension indexing samples (normalised float images ``(N, C, H, W)`` here).
        y: Targets ``(N,)``.
        batch_size: Samples per batch.
        shuffle: Visit the samples in a fresh random order each epoch.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.
        seed: Seed of the per-epoch random draws.
        augment: Batch-wise augmentation; ``None`` for none. Only meaningful for ``(N, C, H, W)`` inputs.
        device: Move ``x`` and ``y`` there once; ``None`` keeps them where they are.

    Raises:
        UsageError: If ``batch_size`` is not positive or ``x`` and ``y`` differ in length.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        if x.shape[0] != y.shape[0]:
            raise UsageError(f"inputs have {x.shape[0]} samples but targets {y.shape[0]}")
        if augment is not None and augment.enabled and x.dim() != 4:
            raise UsageError(f"augmentation needs images (N, C, H, W), got shape {tuple(x.shape)}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.augment = augment if augment is not None and augment.enabled else None
        self._epoch = 0
        self._rank, self._ranks = 0, 1  # see shard()
        self._x = x
        self._y = y
        if device is not None:
            self.to(device)

    @property
    def x(self) -> torch.Tensor:
        """All inputs, in dataset order."""
        return self._x

    @property
    def y(self) -> torch.Tensor:
        """All targets, in dataset order."""
        return self._y

    @property
    def device(self) -> torch.device:
        """Where the data (and every batch) lives."""
        return self._x.device

    @property
    def num_samples(self) -> int:
        """Number of samples in the dataset."""
        return int(self._x.shape[0])

    @property
    def epoch(self) -> int:
        """The epoch whose batches the next iteration yields."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation draws the next iteration uses.

        Args:
            epoch: The epoch number (any integer; usually 0, 1, 2, ...).
        """
        self._epoch = int(epoch)

    def shard(self, rank: int, count: int) -> TensorLoader:
        """The share of process ``rank`` of ``count`` (data-parallel training): the same batches in the
        same order with the same augmentation draws, each split into ``count`` contiguous parts;
        this loader yields part ``rank`` of each as a :class:`ShardBatch`.

        The batch size stays the global one and ``len()`` is unchanged, so every process takes the
        steps of a one-process run. A part may be empty (a last batch smaller than ``count``).

        Args:
            rank: This process's index, in ``[0, count)``.
            count: The number of processes.

        Returns:
            A new loader sharing this one's tensors (set its epoch on it).
        """
        if not 0 <= rank < count:
            raise ValueError(f"rank {rank} is not in [0, {count})")
        part = copy.copy(self)
        part._rank, part._ranks = rank, count
        return part

    def to(self, device: torch.device | str) -> TensorLoader:
        """Move the data to ``device`` (once; batches are then cut there).

        Args:
            device: Target device.

        Returns:
            This loader.
        """
        self._x = self._x.to(device)
        self._y = self._y.to(device)
        return self

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the ``(x, y)`` batches of the current epoch."""
        n = self.num_samples
        device = self.device
        augment = self.augment
        order = offsets = flips = fill = None
        if self.shuffle or augment is not None:
            # Draw everything for the epoch up front, in a fixed order, on the CPU: one transfer per
            # epoch, and the same values whatever the device.
            gen = epoch_generator(self.seed, self._epoch)
            if self.shuffle:
                order = torch.randperm(n, generator=gen).to(device)
            if augment is not None and augment.crop_padding > 0:
                offsets = torch.randint(0, 2 * augment.crop_padding + 1, (n, 2), generator=gen).to(device)
                fill = torch.tensor(augment.fill, dtype=self._x.dtype, device=device)
            if augment is not None and augment.flip:
                flips = (torch.rand(n, generator=gen) < 0.5).to(device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, n)
            lo, hi = _share(start, stop, self._rank, self._ranks)  # the whole batch for one process
            if order is None:
                xb, yb = self._x[lo:hi], self._y[lo:hi]  # views: no copy without shuffling
            else:
                idx = order[lo:hi]
                xb, yb = self._x.index_select(0, idx), self._y.index_select(0, idx)
            if augment is not None and offsets is not None and fill is not None:
                xb = random_crop(xb, augment.crop_padding, offsets[lo:hi], fill)
            if flips is not None:
                xb = random_hflip(xb, flips[lo:hi])
            yield (xb, yb) if self._ranks == 1 else ShardBatch(xb, yb, stop - start)

    def __repr__(self) -> str:
        return (
            f"TensorLoader(samples={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, augment={self.augment}, device={self.device}"
            + (f", shard={self._rank}/{self._ranks})" if self._ranks > 1 else ")")
        )

