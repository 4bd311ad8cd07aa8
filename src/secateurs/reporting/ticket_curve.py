"""The curve of a ticket search (``curve.json`` of ``secateurs search-tickets``) as Markdown and a plot.

A curve holds ``method``, ``label`` (what its tickets are called), ``model``, ``dataset``, ``vary``,
``points`` (per setting: ``value``, ``sparsity``, ``accuracy``, the method's own ticket fields and
``search_round_accuracy``), ``cost`` and, when asked for, ``imp`` (IMP's cost and measured curve).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secateurs.utils.io import atomic_path

__all__ = ["plot_ticket_curve", "render_ticket_markdown"]

#: Point keys every curve has; any other key is a method's own ticket field (a column of its own).
_STANDARD = ("value", "sparsity", "accuracy", "search_round_accuracy")


def _extra_fields(points: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for p in points for k in p if k not in _STANDARD))


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_ticket_markdown(result: dict[str, Any]) -> str:
    """The curve and the costs as a Markdown page."""
    vary, points = result["vary"], sorted(result["points"], key=lambda p: p["sparsity"])
    extra = _extra_fields(points)
    header = [f"{vary} (setting)", "sparsity", "ticket accuracy %", *(k.replace("_", " ") for k in extra)]
    lines = [f"# Ticket search ({result['method']}): {result['model']} on {result['dataset']}", "",
             "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for p in points:
        cells = [str(p["value"]), f"{p['sparsity']:.4f}", f"{p['accuracy']:.2f}", *(_cell(p.get(k)) for k in extra)]
        lines.append("| " + " | ".join(cells) + " |")
    c = result["cost"]
    lines += ["", "| cost | epochs (compute) | sequential epochs | seconds |", "|---|---:|---:|---:|",
              f"| {result['label']}, {c['replicas']} settings in one pass | {c['epochs']} | {c['sequential_epochs']} "
              f"| {c['seconds']:.0f} |"]
    if "imp" in result:
        imp = result["imp"]
        secs = f"{imp['measured_seconds']:.0f}" if "measured_seconds" in imp else "n/a"
        lines.append(f"| IMP, same points ({imp['how'].split(':')[0]}) | {imp['epochs']} "
                     f"| {imp['sequential_epochs']} | {secs} |")
        if imp.get("curve"):
            lines += ["", "| IMP sparsity | IMP ticket accuracy % |", "|---:|---:|"]
            lines += [f"| {p['sparsity']:.4f} | {p['accuracy']:.2f} |" for p in imp["curve"]]
    return "\n".join(lines) + "\n"


def plot_ticket_curve(result: dict[str, Any], path: str | Path) -> Path | None:
    """Sparsity vs ticket accuracy (and IMP's curve when measured); None without matplotlib."""
    try:
        from matplotlib.figure import Figure  # an optional extra; no pyplot: the backend stays untouched
    except ImportError:
        return None
    path = Path(path)
    pts = sorted(result["points"], key=lambda p: p["sparsity"])
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    ax.plot([p["sparsity"] for p in pts], [p["accuracy"] for p in pts], "o-", label=result["label"])
    for p in pts if result["vary"] != "sparsity" else ():
        ax.annotate(f"{result['vary']}={p['value']}", (p["sparsity"], p["accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    imp_curve = result.get("imp", {}).get("curve")
    if imp_curve:
        ax.plot([p["sparsity"] for p in imp_curve], [p["accuracy"] for p in imp_curve], "s--", label="IMP (lottery)")
    ax.set_xlabel("sparsity (fraction of target weights removed)")
    ax.set_ylabel("test accuracy of the ticket (%)")
    ax.set_title(f"{result['model']} on {result['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
