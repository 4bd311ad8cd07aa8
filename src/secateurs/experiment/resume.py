"""What ``--resume`` may do: continue a run as it was started, from a checkpoint that exists.

A resumed run continues with the settings saved in its directory. Settings given again on the
command line must agree with them (a changed learning rate or epoch budget would silently mix two
setups in one run); only where the run executes may change (:data:`MAY_CHANGE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secateurs.errors import UsageError

__all__ = ["MAY_CHANGE", "check_same_settings", "require_resumable", "setting_changes"]

#: Settings that may differ between the start and a resume: where the run executes, not what it does.
MAY_CHANGE = frozenset({"device", "data_dir", "download"})


def require_resumable(out: str | Path, finished: str) -> None:
    """UsageError unless ``out`` holds a checkpoint (or the file ``finished`` of a finished run)."""
    from secateurs.train.loop import CHECKPOINT

    out = Path(out)
    if (out / CHECKPOINT).exists() or (out / finished).exists():
        return
    if not out.exists():
        raise UsageError(f"--resume: {out} does not exist; check --out, or leave out --resume to start a new run")
    raise UsageError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}: no epoch was finished); "
                     "leave out --resume to start the run again")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    if isinstance(value, tuple):
        value = list(value)
    return {prefix[:-1]: value}


def setting_changes(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``["train.lr: 0.1 -> 0.05", ...]``: the settings (flattened keys) that differ, except :data:`MAY_CHANGE`."""
    old, new = _flatten(saved), _flatten(requested)
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in MAY_CHANGE]
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in keys if old.get(k) != new.get(k)]


def check_same_settings(saved: Mapping[str, Any], requested: Mapping[str, Any], out: str | Path) -> None:
    """UsageError listing every setting of the resume that differs from the run in ``out``."""
    changes = setting_changes(saved, requested)
    if changes:
        raise UsageError(f"--resume continues {out} with the settings it was started with, but these differ: "
                         f"{'; '.join(changes)}; leave them out, or choose another --out for a new run")
