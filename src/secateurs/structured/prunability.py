"""Pre-flight report: which channels of a model can be removed structurally, and which cannot.

``secateurs inspect --prunability MODEL`` renders :func:`prunability_report`. Groups that cannot be
removed (they feed the output, pass through attention, an unknown operation...) are not an error:
their pruned channels simply stay in the model as zeros (masking), and the report says so.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from torch import nn

from secateurs.core.masks import MaskSet
from secateurs.metrics import count_macs, count_params
from secateurs.structured.graph import coupled_channel_groups
from secateurs.structured.groups import ChannelGroup
from secateurs.structured.plan import plan_removal
from secateurs.structured.predict import predict_shrunk_size

__all__ = ["prunability_report", "render_prunability"]


def _status(group: ChannelGroup) -> str:
    if not group.removable:
        return f"masking only: {group.blocker}"
    if not group.exact:
        return "removable (approximate: normalised across channels)"
    return f"removable (LayerNorms masked: {len(group.norms)})" if group.norms else "removable"


def prunability_report(
    model: nn.Module, example_input: Any, masks: MaskSet | None = None, *, round_to: int = 1
) -> dict[str, Any]:
    """Describe the model's coupled groups and, given masks, what shrinking would remove.

    Args:
        model: The model (finalised, when masks are given).
        example_input: An input of the model.
        masks: Filter masks of a run, to predict the shrunk size; None describes the model only.
        round_to: As in :func:`secateurs.structured.shrink`.

    Returns:
        A JSON-ready dict: ``groups`` (one row per group), ``summary`` and, with masks, ``predicted``.
    """
    groups = coupled_channel_groups(model, example_input)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    plan = plan_removal(groups, masks, round_to=round_to, shapes=shapes) if masks is not None else None
    by_root = plan.by_root() if plan is not None else {}
    rows = []
    for group in groups:
        row: dict[str, Any] = {
            "root": group.root, "channels": group.channels, "layers": list(group.layers),
            "members": len(group.members), "status": _status(group),
        }
        if group.chunks > 1:
            row["chunks"] = group.chunks
        decided = by_root.get(group.root)
        if decided is not None:
            row.update(kept=len(decided.keep), removed=len(decided.removed), masked=decided.masked,
                       note=decided.note)
        rows.append(row)
    weights = {n for n, p in model.named_parameters() if p.dim() >= 2}
    covered = {m.param for g in groups if g.removable for m in g.producers if m.dim == 0} & weights
    blocked = Counter(g.blocker for g in groups if not g.removable)
    summary = {
        "groups": len(groups),
        "removable": sum(g.removable for g in groups),
        "approximate": sum(g.removable and not g.exact for g in groups),
        "blocked": dict(blocked),
        "weights_removable": len(covered),
        "weights_total": len(weights),
        "params": count_params(model),
        "macs": count_macs(model, example_input).dense,
    }
    report: dict[str, Any] = {"model": type(model).__name__, "summary": summary, "groups": rows}
    if plan is not None:
        size = predict_shrunk_size(model, groups, plan, example_input)
        report["predicted"] = {
            "params_after": size.params_after, "macs_after": size.macs_after,
            "channels_removed": plan.removed_channels, "channels_masked": plan.masked_channels,
            "round_to": round_to,
        }
    return report


def render_prunability(report: dict[str, Any]) -> str:
    """The report as a plain-text table plus summary and warning lines."""
    from rich.console import Console
    from rich.table import Table

    with_plan = "predicted" in report
    table = Table()
    for column in ("group root", "channels", "producers", "status") + (("kept", "masked") if with_plan else ()):
        table.add_column(column, justify="right" if column in ("channels", "kept", "masked") else "left")
    for row in report["groups"]:
        layers = row["layers"]
        shown = ", ".join(layers[:3]) + (f" (+{len(layers) - 3})" if len(layers) > 3 else "")
        cells = [row["root"], str(row["channels"]), shown, row["status"]]
        if with_plan:
            cells += [str(row.get("kept", "")), str(row.get("masked", ""))]
        table.add_row(*cells)
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None, force_terminal=False).print(table)
    s = report["summary"]
    lines = [
        f"model      {report['model']}: {s['params']:,} params, {s['macs']:,} MACs",
        f"groups     {s['groups']} coupled channel groups, {s['removable']} removable "
        f"({s['approximate']} approximate); filters of {s['weights_removable']} of {s['weights_total']} "
        "weight tensors can be removed",
    ]
    if with_plan:
        p = report["predicted"]
        lines.append(f"shrink     {p['channels_removed']} channels removed, {p['channels_masked']} pruned channels "
                     f"stay masked; predicted {p['params_after']:,} params, {p['macs_after']:,} MACs")
    warnings = [f"warning: {n} group(s) cannot be removed structurally ({reason}); "
                "their pruned channels stay as zeros (masking)" for reason, n in s["blocked"].items()]
    return "\n".join(lines) + "\n" + buffer.getvalue() + "\n".join(warnings) + ("\n" if warnings else "")
