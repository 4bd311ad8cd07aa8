"""The portable architecture spec of a shrunk model: kept channel indices per group, as JSON.

A shrunk model is its original class with narrower layers. Rather than pickling the module, we
store which output channels of each group's root layer survive; rebuilding is "construct the
original model, trace it, cut the same channels" (timm's pruned-architecture files do the same), and
the weights come separately from a safetensors file.

Example ``arch.json``::

    {"format": "secateurs.arch", "version": 1,
     "model_class": "secateurs.models.resnet_cifar.CifarResNet",
     "model": {"name": "resnet20", "in_channels": 1, "num_classes": 10, "image_size": [28, 28]},
     "input_shapes": [[1, 1, 28, 28]], "round_to": 1,
     "groups": [{"root": "layer1.0.conv1", "channels": 16, "keep": [0, 2, 3, 5, 8, 9, 11, 14]}]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from secateurs.errors import DamagedFileError, UsageError

__all__ = ["ArchSpec", "SpecGroup", "class_path"]

FORMAT = "secateurs.arch"
VERSION = 1


def class_path(model: nn.Module) -> str:
    """``module.QualName`` of a model's class, as recorded in specs."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class SpecGroup:
    """One changed group: its root layer, its original channel count and the channels kept."""

    root: str
    channels: int
    keep: tuple[int, ...]


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a shrunk model's shapes from its original class.

    Attributes:
        model_class: Class of the original model (``module.QualName``).
        input_shapes: Shapes of the example inputs used to trace the model (one per positional input).
        groups: The groups that lost channels, in the order they were cut.
        model: How to build the original model from the secateurs zoo (``name``, ``in_channels``,
            ``num_classes``, ``image_size``), or None for a user's own model.
        round_to: The ``round_to`` the channel counts were rounded to.
    """

    model_class: str
    input_shapes: tuple[tuple[int, ...], ...]
    groups: tuple[SpecGroup, ...] = ()
    model: dict[str, Any] | None = None
    round_to: int = 1
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_class": self.model_class,
            "model": self.model,
            "input_shapes": [list(s) for s in self.input_shapes],
            "round_to": self.round_to,
            "groups": [{"root": g.root, "channels": g.channels, "keep": list(g.keep)} for g in self.groups],
            **({"extras": self.extras} if self.extras else {}),
        }

    @classmethod
    def from_dict(cls, raw: Any, source: str = "spec") -> ArchSpec:
        """Validate and build from parsed JSON.

        Raises:
            UsageError: If ``raw`` is not a secateurs architecture spec of a known version.
        """
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise UsageError(f"{source} is not a secateurs architecture spec")
        if raw.get("version") != VERSION:
            raise UsageError(f"{source} has spec version {raw.get('version')}; this secateurs reads {VERSION}")
        try:
            groups = tuple(
                SpecGroup(str(g["root"]), int(g["channels"]), tuple(int(i) for i in g["keep"]))
                for g in raw["groups"]
            )
            spec = cls(
                model_class=str(raw["model_class"]),
                input_shapes=tuple(tuple(int(d) for d in s) for s in raw["input_shapes"]),
                groups=groups,
                model=raw.get("model"),
                round_to=int(raw.get("round_to", 1)),
                extras=dict(raw.get("extras") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedFileError(f"{source} is damaged: a malformed architecture spec ({type(exc).__name__}: {exc})"
                                   ) from None
        for g in spec.groups:
            if not g.keep or any(not 0 <= i < g.channels for i in g.keep) or len(set(g.keep)) != len(g.keep):
                raise UsageError(f"{source}: group {g.root} keeps invalid channels for {g.channels} channels")
        return spec

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically."""
        from secateurs.utils.io import save_json

        save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        """Read a spec written by :meth:`save`."""
        from secateurs.utils.io import read_json

        try:
            raw = read_json(path)  # DamagedFileError for a truncated or corrupt file
        except FileNotFoundError:
            raise UsageError(f"no architecture spec at {path}") from None
        return cls.from_dict(raw, source=str(path))
