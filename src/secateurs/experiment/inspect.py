"""``secateurs inspect RUN``: a run's summary and its per-layer table."""

from __future__ import annotations

import json
from pathlib import Path

from secateurs.errors import DamagedFileError, UsageError
from secateurs.experiment.record import RECORD, describe_record, json_text, read_record
from secateurs.utils.io import read_json

__all__ = ["describe_run"]


def describe_run(run: Path, *, as_json: bool = False, record: bool = False) -> str:
    """Render ``run/report.json`` as text (or JSON) with the run record; explain an unfinished run.

    ``record=True`` prints the run record (``run.json``) itself, as JSON.
    """
    if record:
        if not (run / RECORD).exists():
            raise UsageError(f"{run} has no run record ({RECORD}); it was made by an older secateurs")
        return json_text(read_record(run))
    report_path = run / "report.json"
    if not report_path.exists():
        metrics = run / "metrics.jsonl"
        done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if done or (run / "checkpoint.pt").exists():
            raise UsageError(f"{run} is not finished ({done} epochs logged); continue it with --resume")
        raise UsageError(f"{run} holds no secateurs run (no report.json)")
    report = read_json(report_path)
    if not isinstance(report, dict) or "layers" not in report:
        raise DamagedFileError(f"{report_path} is damaged (not a secateurs report)")
    if as_json:
        return json.dumps(report, indent=2)
    from secateurs.metrics import render_layer_table

    def fmt(value: object, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    lines = [
        f"run        {run}",
        f"method     {report['method']}  granularity {report.get('granularity')}  scope {report.get('scope')}",
        f"model      {report['model']} on {report['dataset']}, {report['epochs']} epochs, "
        f"{fmt(report.get('train_seconds'), '.1f')} s",
        f"accuracy   {fmt(report.get('accuracy'), '.2f')} %  (dense {fmt(report.get('dense_accuracy'), '.2f')} %)",
        f"sparsity   target {fmt(report.get('target_sparsity'), '.4f')}  achieved "
        f"{fmt(report.get('achieved_sparsity'), '.4f')}",
        f"params     {report['params_nonzero']:,} non-zero of {report['params_total']:,}",
        f"MACs       {report['macs_effective']:,} effective of {report['macs_dense']:,} dense",
        f"latency    {fmt(report.get('latency_ms_batch1'), '.3f')} ms (batch 1, {report.get('latency_device')})",
    ]
    if "macs_shrunk" in report:
        lines.insert(-1, f"shrunk     {report['params_shrunk']:,} params, {report['macs_shrunk']:,} MACs "
                         "after `secateurs shrink`")
    lines.extend(_budget_lines(report))
    lines.append("")
    return ("\n".join(lines) + render_layer_table(report["layers"]) + _render_allocation(report)
            + _render_extras(report)
            + (describe_record(read_record(run)) if (run / RECORD).exists() else ""))


# Keys that build_report writes; anything else in report.json comes from a method's report_extras().
_STANDARD_KEYS = {
    "method", "model", "dataset", "granularity", "scope", "target_sparsity", "achieved_sparsity", "params_total",
    "params_nonzero", "macs_dense", "macs_effective", "accuracy", "dense_accuracy", "epochs", "train_seconds",
    "latency_ms_batch1", "latency_device", "seed", "method_options", "layers", "params_shrunk", "macs_shrunk",
    "budgets", "budgets_met", "budget_repairs", "allocation", "allocation_layers",
}


def _budget_lines(report: dict) -> list[str]:
    """One line per budget (measured on the delivered model) and the allocator's search cost."""
    lines = []
    for b in report.get("budgets", []):
        verdict = "met" if b["met"] else "NOT MET"
        lines.append(f"budget     {b['name']:<18} achieved {b['achieved']:.6g} of limit {b['limit']:.6g} "
                     f"({100 * b['achieved'] / max(b['dense'], 1e-12):.1f} % of dense)  {verdict}")
    if report.get("budget_repairs"):
        lines.append(f"repair     {report['budget_repairs']} tightening(s) after a measured miss")
    alloc = report.get("allocation")
    if alloc:
        cost = f"{alloc.get('evaluations', 0)} evaluations, {alloc.get('seconds', 0):.1f} s"
        lines.append(f"allocation {alloc.get('allocator')} ({cost})")
    return lines


def _render_allocation(report: dict) -> str:
    """The allocation per layer / channel group beside uniform's (kept fractions)."""
    rows = report.get("allocation_layers")
    if not rows:
        return ""
    width = max(len(n) for n in rows)
    lines = ["", f"  {'allocated key':<{width}}  {'units':>7}  {'keep':>7}  {'uniform':>7}"]
    for name, row in rows.items():
        lines.append(f"  {name:<{width}}  {row['units']:>7}  {row['keep']:>7.4f}  {row['uniform_keep']:>7.4f}")
    return "\n".join(lines) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, int) and not isinstance(value, bool):
        return format(value, ",")
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _render_extras(report: dict) -> str:
    """The method's own report fields: scalars one per line, name -> record mappings as a table."""
    extras = {k: v for k, v in report.items() if k not in _STANDARD_KEYS}
    if not extras:
        return ""
    lines = ["", "method extras"]
    width = max(len(k) for k in extras)
    tables = []
    for key, value in extras.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            tables.append((key, value))
        else:
            lines.append(f"  {key:<{width}}  {_scalar(value)}")
    for key, rows in tables:
        columns = list(dict.fromkeys(c for row in rows.values() for c in row))
        cells = [[name, *(_scalar(row.get(c, "")) for c in columns)] for name, row in rows.items()]
        header = [key, *columns]
        sizes = [max(len(str(x)) for x in col) for col in zip(header, *cells)]
        lines.append("")
        for row in [header, *cells]:
            lines.append("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, sizes)).rstrip())
    return "\n".join(lines) + "\n"
