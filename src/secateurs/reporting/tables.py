"""Tables of a benchmark: accuracy by method and target (headline), full detail, failures; Markdown and CSV.

Tables are built once as plain cells of text (:class:`Table`) and rendered as Markdown here and as
HTML in :mod:`secateurs.reporting.html`, so both show the same numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secateurs.reporting.aggregate import Stat, SummaryRow, reference_for
from secateurs.reporting.environment import Environments

__all__ = ["CSV_COLUMNS", "Table", "build_tables", "render_markdown", "series_label", "target_label", "write_csv"]

CSV_COLUMNS = (
    "model", "dataset", "method", "role", "granularity", "scope", "target_kind", "target_value", "seeds",
    "epochs", "pretrain_epochs", "accuracy_mean", "accuracy_std", "accuracy_delta", "sparsity_mean",
    "compression_mean", "speedup_mean", "macs_effective_mean", "params_nonzero_mean", "train_seconds_mean",
)
_DETAIL_HEADER = ("method", "granularity", "scope", "target", "seeds", "accuracy (%)", "Δ vs dense",
                  "sparsity", "compression", "speedup", "MACs", "epochs", "train s")


@dataclass
class Table:
    """A titled table of text cells."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    setting: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)


def target_label(row: SummaryRow) -> str:
    """``90%`` for a sparsity target, ``50% of MACs`` for a MACs target, the pattern for N:M, ``—`` for dense."""
    if row.target_kind == "sparsity" and row.target_value is not None:
        return f"{row.target_value * 100:g}%"
    if row.target_kind == "macs" and row.target_value is not None:
        return f"{row.target_value * 100:g}% of MACs"
    if row.target_kind == "implied":
        return str(row.granularity)
    return "—"


def fmt_stat(stat: Stat | None, digits: int = 2) -> str:
    """``91.23 ± 0.15`` (mean ± sample std), or the mean alone for one seed."""
    if stat is None:
        return "n/a"
    text = f"{stat.mean:.{digits}f}"
    return text if stat.std is None else f"{text} ± {stat.std:.{digits}f}"


def build_tables(rows: Sequence[SummaryRow], environments: Environments | None = None) -> list[Table]:
    """Per (model, dataset): headline tables (accuracy by method x target), then the detail table.

    With ``environments`` (from the runs' records) the detail table names each row's environment and
    carries the run group's environment block (with a warning when its runs came from several).
    """
    tables: list[Table] = []
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        tables += _headline_tables(mine, setting, reference_for(rows, setting))
        detail = _detail_table(mine, setting)
        if environments is not None:
            detail.header = [*detail.header, "env"]
            for cells, row in zip(detail.rows, mine):
                cells.append(environments.column(row))
            detail.notes = environments.notes(mine)
        tables.append(detail)
    return tables


def _headline_tables(rows: list[SummaryRow], setting: tuple[str, str], ref: SummaryRow | None) -> list[Table]:
    pruned = [r for r in rows if not r.is_reference]
    caption = ""
    if ref is not None:
        caption = f"Dense reference ({ref.label}): {fmt_stat(ref.accuracy)} % top-1, {_epochs(ref)} epochs."
    out = []
    for gran, target_kind in dict.fromkeys((r.granularity, r.target_kind) for r in pruned):
        part = [r for r in pruned if (r.granularity, r.target_kind) == (gran, target_kind)]
        mixed = len({r.scope for r in part}) > 1
        targets = list(dict.fromkeys(target_label(r) for r in part))
        methods = list(dict.fromkeys(series_label(r, mixed) for r in part))
        cells = {(series_label(r, mixed), target_label(r)): r for r in part}
        body = [[m, *(_headline_cell(cells.get((m, t))) for t in targets)] for m in methods]
        what = "sparsity" if target_kind == "sparsity" else ""
        title = f"{setting[0]} on {setting[1]}: top-1 accuracy (%), {gran}"
        out.append(Table(title, ["method", *(f"{t} {what}".strip() for t in targets)], body, caption, setting))
    return out


def series_label(row: SummaryRow, mixed_scopes: bool) -> str:
    """The method, with its scope when one table or plot mixes scopes (e.g. ``dpp [group]``)."""
    return f"{row.method} [{row.scope}]" if mixed_scopes and row.scope else row.method


def _headline_cell(row: SummaryRow | None) -> str:
    return "—" if row is None else fmt_stat(row.accuracy)


def _detail_table(rows: list[SummaryRow], setting: tuple[str, str]) -> Table:
    body = []
    for r in rows:
        body.append([
            r.label, r.granularity or "—", r.scope or "—", target_label(r), str(len(r.seeds)), fmt_stat(r.accuracy),
            "—" if r.delta is None else f"{r.delta:+.2f}",
            _pct(r.sparsity), _times(r.compression), _times(r.speedup), _count(r.macs_effective), _epochs(r),
            "n/a" if r.train_seconds is None else f"{r.train_seconds.mean:.1f}",
        ])
    caption = ("Mean ± sample std over seeds. Compression = params_total / params_nonzero (whole model); "
               "speedup = macs_dense / macs_effective (theoretical); filter rows count the shrunk model "
               "(params_shrunk, macs_shrunk). Epochs: pretraining + run.")
    return Table(f"{setting[0]} on {setting[1]}: all runs", list(_DETAIL_HEADER), body, caption, setting)


def _epochs(row: SummaryRow) -> str:
    return f"{row.pretrain_epochs}+{row.epochs}" if row.pretrain_epochs else str(row.epochs)


def _pct(stat: Stat | None) -> str:
    return "n/a" if stat is None else f"{stat.mean * 100:.1f}%"


def _times(stat: Stat | None) -> str:
    return "n/a" if stat is None else f"{stat.mean:.2f}×"


def _count(stat: Stat | None) -> str:
    if stat is None:
        return "n/a"
    value = stat.mean
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def render_markdown(tables: Sequence[Table], *, title: str, description: str = "",
                    failures: Sequence[dict[str, Any]] = (), images: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report as Markdown: tables, failed cells, and links to the plots (``(path, title)``)."""
    lines = [f"# {title}", ""]
    if description:
        lines += [description.strip(), ""]
    for table in tables:
        lines += [f"## {table.title}", ""]
        if table.caption:
            lines += [table.caption, ""]
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join("---" for _ in table.header) + "|")
        lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table.rows]
        lines.append("")
        if table.notes:
            lines += [("> **" + n + "**") if n.startswith("Warning") else f"- {n}" for n in table.notes]
            lines.append("")
    if failures:
        lines += ["## Cells without a result", ""]
        lines += [f"- `{f['cell']}`: {f.get('status')}: {f.get('error', '')}" for f in failures]
        lines.append("")
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({path})" for path, name in images]
        lines.append("")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def write_csv(rows: Sequence[SummaryRow], path: str | Path) -> None:
    """One line per summary row with raw numbers (empty where not applicable)."""
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([
                r.model, r.dataset, r.method, r.role, r.granularity or "", r.scope or "", r.target_kind,
                _num(r.target_value), len(r.seeds), r.epochs, r.pretrain_epochs,
                _num(r.accuracy and r.accuracy.mean), _num(r.accuracy and r.accuracy.std), _num(r.delta),
                _num(r.sparsity and r.sparsity.mean), _num(r.compression and r.compression.mean),
                _num(r.speedup and r.speedup.mean), _num(r.macs_effective and r.macs_effective.mean),
                _num(r.params_nonzero and r.params_nonzero.mean), _num(r.train_seconds and r.train_seconds.mean),
            ])


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
