"""``results.jsonl``: one JSON line per finished, failed or inapplicable cell, appended as the grid runs.

A line holds the cell's grid point (``cell``, ``role``, ``model``, ``dataset``, ``method``,
``granularity``, ``scope``, ``target_kind``, ``target_value``, ``seed``, ``epochs``,
``pretrain_epochs``), a ``status`` (``ok``, ``error`` or ``not_applicable``), the run directory and
a hash of the cell's config, then every field of the run's ``report.json`` (ok lines) or the
``error`` (other lines). A cell may appear more than once (a failure, then a success after a fix);
the last line wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.train.config import TrainConfig
from secateurs.utils.io import append_jsonl

__all__ = [
    "RESULTS", "append_result", "config_hash", "declared_options", "latest_by_cell", "matches_saved", "read_results",
]

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
#: Fields that say where or on what a run happens, not what it is: they may change between resumes.
_PLACE_FIELDS = ("device", "data_dir", "from_checkpoint")


def config_hash(config: RunConfig, **extra: Any) -> str:
    """A short hash of the run as the suite declares it (not the device, data location or checkpoint path).

    Method options count as given, not with the method's defaults filled in, and settings at their
    default values are left out, so a method or the training loop that gains an option does not
    invalidate finished cells; a changed suite does. ``extra`` adds values that
    identify the run beyond its config (e.g. which pretraining it starts from).
    """
    values = _without_defaults(config.to_dict())
    values["method_options"] = declared_options(config)
    values.update(extra)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def declared_options(config: RunConfig) -> dict[str, Any]:
    """The method options as the config was given them, in their plain (YAML) form."""
    if config.method is None:
        return {}
    resolved = config.method_config().to_dict()
    return {k: resolved[k] for k in sorted(config.declared_options) if k in resolved}


#: Settings hashed even at their defaults, as they always were (dropping them now would change the
#: hash of every finished cell); every other setting, including any added later, drops out at its default.
_ALWAYS_HASHED = ("model", "data", "method_options", "train", "include", "exclude")


def _without_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """A RunConfig's plain values without place fields and without entries at their default values."""
    top = RunConfig(model="-", data="-").to_dict()  # every default, in the same plain form as ``values``
    train_defaults = TrainConfig().to_dict()
    out = {k: v for k, v in values.items()
           if k not in _PLACE_FIELDS and (k in _ALWAYS_HASHED or top.get(k, _ABSENT) != v)}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if train_defaults.get(k, _ABSENT) != v}
    return out


_ABSENT = object()


def matches_saved(config: RunConfig, saved: dict[str, Any]) -> bool:
    """Whether a run directory's ``config.yaml`` (``saved``) was written for ``config``.

    The saved file is read back as a RunConfig first, so settings added since it was written count
    with their default values.
    """
    current = config.to_dict()
    try:
        saved = {**saved, **{k: v for k, v in RunConfig.from_dict(saved).to_dict().items() if k != "method_options"}}
    except (UsageError, TypeError, ValueError):
        return False
    for key, value in current.items():
        if key in _PLACE_FIELDS or key == "method_options":
            continue
        if saved.get(key) != value:
            return False
    options = saved.get("method_options") or {}
    return all(options.get(k) == v for k, v in declared_options(config).items())


def read_results(bench_dir: str | Path) -> list[dict[str, Any]]:
    """Every line of ``bench_dir/results.jsonl`` in order (a torn last line from a crash is skipped)."""
    path = Path(bench_dir) / RESULTS
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            log.warning("%s:%d is not valid JSON; skipped", path, number)
            continue
        if isinstance(record, dict) and "cell" in record:
            lines.append(record)
    return lines


def latest_by_cell(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last line of each cell, in order of first appearance."""
    out: dict[str, dict[str, Any]] = {}
    for record in lines:
        out[record["cell"]] = record
    return out


def append_result(record: dict[str, Any], bench_dir: str | Path) -> None:
    """Append one line to ``bench_dir/results.jsonl`` (flushed to disk)."""
    append_jsonl(record, Path(bench_dir) / RESULTS)
