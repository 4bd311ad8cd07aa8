"""From ``results.jsonl`` lines to one summary row per (model, data, method, granularity, scope, target).

Seeds are aggregated as mean and sample standard deviation. Following ShrinkBench, every row carries
both the compression ratio (``params_total / params_nonzero`` over the whole model) and the
theoretical speedup (``macs_dense / macs_effective``), and the accuracy difference to the dense
reference of the same model and data: the dense grid cells (same epoch budget) when the suite has
them, else the dense pretraining runs. Filter-pruned runs count the shrunk model's size
(``params_shrunk``, ``macs_shrunk``): what ``secateurs shrink`` delivers, zero filters and the
input weights that read them both gone.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Stat", "SummaryRow", "failures", "reference_for", "summarize"]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (``std`` is None for a single seed)."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        """The statistic of the non-missing ``values`` (None when there are none)."""
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass
class SummaryRow:
    """One comparison point, aggregated over seeds."""

    model: str
    dataset: str
    method: str
    role: str
    granularity: str | None
    scope: str | None
    target_kind: str
    target_value: float | None
    seeds: list[int]
    epochs: int
    pretrain_epochs: int
    accuracy: Stat | None
    sparsity: Stat | None
    compression: Stat | None
    speedup: Stat | None
    macs_effective: Stat | None
    params_nonzero: Stat | None
    train_seconds: Stat | None
    run_dirs: list[str] = field(default_factory=list)
    layers: list[tuple[str, float]] = field(default_factory=list)
    delta: float | None = None

    @property
    def is_reference(self) -> bool:
        """A dense run (grid cell or pretraining)."""
        return self.target_kind == "none"

    @property
    def label(self) -> str:
        """The method as tables and legends show it."""
        return "dense (pretraining)" if self.role == "pretrain" else self.method

    @property
    def setting(self) -> tuple[str, str]:
        """(model, dataset)."""
        return self.model, self.dataset


_GROUP_KEYS = ("model", "dataset", "method", "role", "granularity", "scope", "target_kind", "target_value")


def summarize(records: Sequence[dict[str, Any]]) -> list[SummaryRow]:
    """Aggregate the ``ok`` records (one per cell) into rows, ordered for reading.

    Order: settings in order of first appearance; within a setting the pretraining run, the dense
    reference, then by granularity, target, method (in order of first appearance) and scope.
    """
    ok = [r for r in records if r.get("status") == "ok"]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in ok:
        groups.setdefault(tuple(record.get(k) for k in _GROUP_KEYS), []).append(record)
    rows = [_row(recs) for recs in groups.values()]
    settings = _first_seen([r.setting for r in rows])
    methods = _first_seen([r.method for r in rows])
    rows.sort(key=lambda r: (
        settings.index(r.setting), 0 if r.role == "pretrain" else (1 if r.is_reference else 2),
        str(r.granularity), r.target_kind, r.target_value or 0.0, methods.index(r.method), str(r.scope),
    ))
    for row in rows:
        ref = reference_for(rows, row.setting)
        if ref is not None and ref is not row and row.accuracy and ref.accuracy:
            row.delta = row.accuracy.mean - ref.accuracy.mean
    return rows


def reference_for(rows: Sequence[SummaryRow], setting: tuple[str, str]) -> SummaryRow | None:
    """The dense reference of a (model, dataset): the dense grid cells, else the pretraining."""
    dense = [r for r in rows if r.setting == setting and r.is_reference]
    dense.sort(key=lambda r: r.role == "pretrain")
    return dense[0] if dense else None


def failures(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells whose last line is an error or not applicable."""
    return [r for r in records if r.get("status") in ("error", "not_applicable")]


def _row(records: list[dict[str, Any]]) -> SummaryRow:
    first = records[0]

    def stat(get: Callable[[dict[str, Any]], float | None]) -> Stat | None:
        return Stat.of([get(r) for r in records])

    return SummaryRow(
        model=first.get("model", "?"), dataset=first.get("dataset", "?"), method=first.get("method", "?"),
        role=first.get("role", "run"), granularity=first.get("granularity"), scope=first.get("scope"),
        target_kind=first.get("target_kind", "none"), target_value=first.get("target_value"),
        seeds=sorted(int(r.get("seed", 0)) for r in records),
        epochs=int(first.get("epochs", 0)), pretrain_epochs=int(first.get("pretrain_epochs", 0)),
        accuracy=stat(lambda r: r.get("accuracy")),
        sparsity=stat(lambda r: r.get("achieved_sparsity")),
        compression=stat(lambda r: _ratio(r.get("params_total"), _params(r))),
        speedup=stat(lambda r: _ratio(r.get("macs_dense"), _macs(r))),
        macs_effective=stat(_macs),
        params_nonzero=stat(_params),
        train_seconds=stat(lambda r: r.get("train_seconds")),
        run_dirs=[r["run_dir"] for r in records if r.get("run_dir")],
        layers=_mean_layers(records),
    )


def _params(result: dict[str, Any]) -> float | None:
    """Parameters left: the shrunk model's where the run prunes channels, else the non-zero ones."""
    return result.get("params_shrunk", result.get("params_nonzero"))


def _macs(result: dict[str, Any]) -> float | None:
    """MACs left: the shrunk model's where the run prunes channels, else the effective (density) count."""
    return result.get("macs_shrunk", result.get("macs_effective"))


def _ratio(total: float | None, part: float | None) -> float | None:
    if total is None or not part:
        return None
    return float(total) / float(part)


def _mean_layers(records: list[dict[str, Any]]) -> list[tuple[str, float]]:
    sums: dict[str, list[float]] = {}
    for record in records:
        for layer in record.get("layers") or []:
            if "name" in layer and layer.get("sparsity") is not None:
                sums.setdefault(layer["name"], []).append(float(layer["sparsity"]))
    return [(name, statistics.fmean(values)) for name, values in sums.items()]


def _first_seen(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))
