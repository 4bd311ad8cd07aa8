"""MaskSet: the one value type for masks exchanged between methods, metrics, the CLI and disk.

A MaskSet maps the *original* fully qualified parameter name (``"layer1.0.conv1.weight"``, also while
the module carries a parametrization) to a boolean mask at the granularity's unit shape, together
with that granularity and the weight's full shape. Sparsity is always reported over weight elements.

On disk it is a safetensors file (masks as uint8) whose metadata holds the granularity and the weight
shape of each entry: loading never unpickles anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from secateurs.core.granularity import Granularity, parse_granularity
from secateurs.core.parametrize import original_name
from secateurs.errors import DamagedFileError, UsageError

__all__ = ["MaskEntry", "MaskSet"]


@dataclass(frozen=True)
class MaskEntry:
    """One tensor's mask: ``mask`` (bool, unit shape), its granularity and the weight shape."""

    mask: Tensor
    granularity: Granularity
    weight_shape: torch.Size

    def __post_init__(self) -> None:
        expected = self.granularity.unit_shape(self.weight_shape)
        if self.mask.dtype != torch.bool:
            raise ValueError(f"masks are boolean, got {self.mask.dtype}")
        if self.mask.shape != expected:
            raise ValueError(
                f"mask shape {tuple(self.mask.shape)} is not the {self.granularity} unit shape "
                f"{tuple(expected)} of a weight {tuple(self.weight_shape)}"
            )

    @property
    def numel(self) -> int:
        """Number of weight elements the mask covers."""
        return math.prod(self.weight_shape)

    @property
    def kept(self) -> int:
        """Number of weight elements kept."""
        return int(self.mask.sum()) * self.granularity.unit_size(self.weight_shape)

    @property
    def sparsity(self) -> float:
        """Fraction of weight elements removed."""
        return 1.0 - self.kept / self.numel

    def full(self) -> Tensor:
        """The mask expanded to the weight's shape (a new, contiguous tensor)."""
        return self.granularity.expand(self.mask, self.weight_shape).clone()


class MaskSet(Mapping[str, MaskEntry]):
    """Boolean unit masks of several weights, keyed by original parameter name.

    Example:
        >>> masks = method.hard_masks()
        >>> masks.sparsity()          # over all masked elements
        >>> masks.save("masks.safetensors"); MaskSet.load("masks.safetensors")
    """

    def __init__(self, entries: Mapping[str, MaskEntry] | None = None) -> None:
        self._entries: dict[str, MaskEntry] = dict(entries or {})

    @classmethod
    def from_masks(
        cls,
        masks: Mapping[str, Tensor],
        granularities: Mapping[str, Granularity] | Granularity,
        weight_shapes: Mapping[str, torch.Size],
    ) -> MaskSet:
        """Build from name -> unit mask, with one granularity for all or one per name."""
        entries = {}
        for name, mask in masks.items():
            gran = granularities if isinstance(granularities, Granularity) else granularities[name]
            entries[name] = MaskEntry(mask.detach().to(torch.bool).cpu(), gran, torch.Size(weight_shapes[name]))
        return cls(entries)

    def __getitem__(self, name: str) -> MaskEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MaskSet({len(self)} tensors, sparsity={self.sparsity():.4f})"

    def sparsity(self, name: str | None = None) -> float:
        """Fraction of removed elements of one tensor, or over all tensors of the set."""
        if name is not None:
            return self._entries[name].sparsity
        total = sum(e.numel for e in self._entries.values())
        if total == 0:
            return 0.0
        return 1.0 - sum(e.kept for e in self._entries.values()) / total

    def density(self, name: str | None = None) -> float:
        """1 - sparsity."""
        return 1.0 - self.sparsity(name)

    def intersect(self, other: MaskSet) -> MaskSet:
        """Monotone merge: a unit pruned in either set stays pruned (names must agree)."""
        if set(self) != set(other):
            raise ValueError("cannot merge mask sets over different tensors")
        return MaskSet(
            {
                n: MaskEntry(e.mask & other[n].mask, e.granularity, e.weight_shape)
                for n, e in self._entries.items()
            }
        )

    def validate(self, model: nn.Module) -> None:
        """Raise UsageError unless every entry names a weight of ``model`` with the recorded shape."""
        shapes = _original_weight_shapes(model)
        for name, entry in self._entries.items():
            if name not in shapes:
                raise UsageError(f"mask names {name!r}, which the model does not have")
            if shapes[name] != entry.weight_shape:
                raise UsageError(
                    f"mask for {name!r} is for shape {tuple(entry.weight_shape)}, "
                    f"the model's weight is {tuple(shapes[name])}"
                )

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file atomically (no pickle)."""
        from secateurs.utils.io import save_safetensors

        tensors = {n: e.mask.to(torch.uint8).contiguous() for n, e in self._entries.items()}
        meta = {n: {"granularity": e.granularity.spec, "shape": list(e.weight_shape)} for n, e in self._entries.items()}
        save_safetensors(tensors, path, metadata={"secateurs.masks": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> MaskSet:
        """Read a file written by :meth:`save`.

        Raises:
            UsageError: no such file, or not a mask file.
            DamagedFileError: the file is truncated or corrupt (a UsageError too).
        """
        from secateurs.utils.io import read_safetensors

        try:
            tensors, metadata = read_safetensors(path)
        except FileNotFoundError:
            raise UsageError(f"no mask file at {path}") from None
        raw = metadata.get("secateurs.masks")
        if raw is None:
            raise UsageError(f"{path} is not a secateurs mask file")
        try:
            entries = {}
            for name, info in json.loads(raw).items():
                mask = tensors[name]
                if mask.dtype != torch.uint8 or bool((mask > 1).any()):
                    raise ValueError("mask values other than 0 and 1")
                entries[name] = MaskEntry(mask.to(torch.bool), parse_granularity(info["granularity"]),
                                          torch.Size(info["shape"]))
            return cls(entries)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UsageError is a ValueError too
            raise DamagedFileError(f"{path} is damaged ({exc.__class__.__name__}: {str(exc)[:120]})") from None


def _original_weight_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Parameter name -> shape, naming parametrized weights by their original name."""
    shapes = {}
    for name, param in model.named_parameters():
        original = original_name(name)
        if original is not None:  # None: learned mask state living inside a parametrization
            shapes[original] = param.shape
    return shapes
