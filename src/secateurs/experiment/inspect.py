"""``secateurs inspect RUN``: a run's summary and its per-layer table."""

from __future__ import annotations

import json
from pathlib import Path

from secateurs.errors import UsageError

__all__ = ["describe_run"]


def describe_run(run: Path, *, as_json: bool = False) -> str:
    """Render ``run/report.json`` as text (or JSON); explain an unfinished run."""
    report_path = run / "report.json"
    if not report_path.exists():
        metrics = run / "metrics.jsonl"
        done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if done or (run / "checkpoint.pt").exists():
            raise UsageError(f"{run} is not finished ({done} epochs logged); continue it with --resume")
        raise UsageError(f"{run} holds no secateurs run (no report.json)")
    report = json.loads(report_path.read_text())
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
        "",
    ]
    return "\n".join(lines) + render_layer_table(report["layers"])
