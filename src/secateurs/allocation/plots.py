"""Plots of an allocation in the run directory: per-key keep ratios beside uniform, and the search trace.

matplotlib is optional (``secateurs[report]``); without it nothing is drawn and a debug line says so.
Drawn on the Agg canvas directly (no pyplot), so a user's plotting state is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_allocation", "plot_search"]

log = logging.getLogger(__name__)


def _figure(rows: int = 1, height: float = 3.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, height * rows), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def plot_allocation(keep: Mapping[str, float], uniform: Mapping[str, float], path: Path, title: str) -> Path | None:
    """Bars of the kept fraction of every key, the allocation's beside uniform's."""
    try:
        fig = _figure()
    except ImportError:
        log.debug("matplotlib is not installed; no allocation plot")
        return None
    ax = fig.add_subplot(1, 1, 1)
    names = list(keep)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [keep[n] for n in names], width=0.4, label="allocation")
    ax.bar([i + 0.2 for i in x], [uniform.get(n, float("nan")) for n in names], width=0.4, label="uniform")
    ax.set_xticks(list(x))
    ax.set_xticklabels([n.removesuffix(".weight") for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("kept fraction")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_search(trace: Sequence[Mapping[str, Any]], budgets: Sequence[float], names: Sequence[str],
                path: Path) -> Path | None:
    """Reward, costs (with their budgets) and multipliers ν over the search's rollouts."""
    if not trace:
        return None
    try:
        fig = _figure(rows=3, height=2.4)
    except ImportError:
        log.debug("matplotlib is not installed; no search plot")
        return None
    episodes = [row["episodes"] for row in trace]
    ax = fig.add_subplot(3, 1, 1)
    ax.plot(episodes, [row["reward"] for row in trace])
    ax.set_ylabel("reward (%)")
    ax = fig.add_subplot(3, 1, 2)
    for k, name in enumerate(names):
        line = ax.plot(episodes, [row["costs"][k] for row in trace], label=name)[0]
        ax.axhline(budgets[k], color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_ylabel("cost (% of dense)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(3, 1, 3)
    for k, name in enumerate(names):
        ax.plot(episodes, [row["nu"][k] for row in trace], label=name)
    ax.set_ylabel("ν")
    ax.set_xlabel("episodes")
    fig.tight_layout()
    fig.savefig(path)
    return path
