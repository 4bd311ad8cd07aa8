"""``results.jsonl``: one JSON line per finished, failed or inapplicable cell, appended as the grid runs.

A line holds the cell's grid point (``cell``, ``role``, ``model``, ``dataset``, ``method``,
``granularity``, ``scope``, ``target_kind``, ``target_value``, ``seed``, ``epochs``,
``pretrain_epochs``), a ``status`` (``ok``, ``error`` or ``not_applicable``), the run directory and
a hash of the cell's config, then every field of the run's ``report.json`` (ok lines) or the
``error`` (other lines), and ``finished_at`` (Unix time the line was written). A cell may appear
more than once (a failure, then a success after a fix); the latest line wins.

A sharded grid (``bench --shard I/N``) writes ``results.shard-I-of-N.jsonl`` instead, one file per
shard, so that machines sharing the directory never append to the same file. Readers merge every
results file of the directory and order the lines by ``finished_at`` (lines written before that field
existed count as oldest, in file order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from secateurs.bench.locks import locked_append
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.train.config import TrainConfig

__all__ = [
    "RESULTS", "ResultsIndex", "append_result", "config_hash", "declared_options", "latest_by_cell", "matches_saved",
    "read_results", "results_files",
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


def results_files(bench_dir: str | Path) -> list[Path]:
    """Every results file of a bench directory: ``results.jsonl`` first, then the shards' files in name order."""
    bench_dir = Path(bench_dir)
    main = [bench_dir / RESULTS] if (bench_dir / RESULTS).is_file() else []
    return main + sorted(p for p in bench_dir.glob(SHARD_RESULTS_GLOB) if p.is_file())


#: Name pattern of the shards' results files (:attr:`secateurs.bench.shard.Shard.results_name`).
SHARD_RESULTS_GLOB = "results.shard-*-of-*.jsonl"


def read_results(bench_dir: str | Path) -> list[dict[str, Any]]:
    """Every line of every results file of ``bench_dir``, oldest first (see the module docstring).

    A line that does not parse (cut short by a killed process) is skipped with a warning.
    """
    keyed = []
    for rank, path in enumerate(results_files(bench_dir)):
        for number, record in _parse(path.read_bytes(), path, 0):
            keyed.append((_order(record), rank, number, record))
    keyed.sort(key=lambda item: item[:3])
    return [record for *_, record in keyed]


def _parse(data: bytes, path: Path, first_line: int) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each complete, valid results line of ``data``."""
    out = []
    for number, text in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=first_line + 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            log.warning("%s:%d is not valid JSON; skipped", path, number)
            continue
        if isinstance(record, dict) and "cell" in record:
            out.append((number, record))
    return out


def _order(record: dict[str, Any]) -> float:
    stamp = record.get("finished_at")
    return float(stamp) if isinstance(stamp, int | float) else 0.0


def latest_by_cell(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last line of each cell, in order of first appearance."""
    out: dict[str, dict[str, Any]] = {}
    for record in lines:
        out[record["cell"]] = record
    return out


def append_result(record: dict[str, Any], bench_dir: str | Path, name: str = RESULTS) -> dict[str, Any]:
    """Append one line to ``bench_dir/name`` (locked, flushed to disk), stamped with ``finished_at``.

    Strict JSON: NaN or infinity raise ValueError. Returns the record as written.
    """
    record = {**record, "finished_at": round(time.time(), 3)}
    locked_append(Path(bench_dir) / name, json.dumps(record, allow_nan=False))
    return record


class ResultsIndex:
    """The latest line of each cell over every results file of a bench directory, kept up to date by
    reading only what was appended since the last :meth:`refresh` (other processes append as they go).
    """

    def __init__(self, bench_dir: str | Path) -> None:
        self._dir = Path(bench_dir)
        self._reset()

    def _reset(self) -> None:
        self._read: dict[Path, tuple[int, int]] = {}  # file -> (bytes consumed, lines consumed)
        self._latest: dict[str, tuple[tuple[float, int], dict[str, Any]]] = {}
        self._arrivals = 0

    def refresh(self) -> ResultsIndex:
        """Read the lines appended to any results file since the last call (a replaced file from the start)."""
        for path in results_files(self._dir):
            offset, lines = self._read.get(path, (0, 0))
            with path.open("rb") as f:
                if f.seek(0, 2) < offset:  # the file was rewritten: read everything again
                    self._reset()
                    return self.refresh()
                f.seek(offset)
                data = f.read()
            whole = data.rfind(b"\n") + 1  # a line still being written is read next time
            for _, record in _parse(data[:whole], path, lines):
                self._arrivals += 1
                key = (_order(record), self._arrivals)
                held = self._latest.get(record["cell"])
                if held is None or key >= held[0]:
                    self._latest[record["cell"]] = (key, record)
            self._read[path] = (offset + whole, lines + data[:whole].count(b"\n"))
        return self

    def latest(self, cell_id: str) -> dict[str, Any] | None:
        """The latest line of ``cell_id`` read so far (``None`` when it has none)."""
        held = self._latest.get(cell_id)
        return held[1] if held is not None else None

    def cells(self) -> dict[str, dict[str, Any]]:
        """The latest line of every cell read so far."""
        return {cell: record for cell, (_, record) in self._latest.items()}
