"""PNG plots of a benchmark: accuracy vs sparsity, accuracy vs effective MACs, per-layer sparsity,
training curves.

matplotlib is an optional extra (``pip install secateurs[report]``), imported only here and only when
plots are drawn. Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so drawing a
report never changes the backend or the global state of a user's session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secateurs.reporting.aggregate import SummaryRow, reference_for
from secateurs.reporting.tables import series_label, target_label

__all__ = ["PlotFile", "make_plots"]

_SIZE = (6.4, 4.0)
_DPI = 90


@dataclass(frozen=True)
class PlotFile:
    """A written plot and its caption."""

    path: Path
    title: str


def make_plots(rows: Sequence[SummaryRow], bench_dir: str | Path, img_dir: str | Path) -> list[PlotFile]:
    """Draw every plot of the report into ``img_dir`` and return the files in reading order.

    Args:
        rows: summary rows (:func:`secateurs.reporting.aggregate.summarize`).
        bench_dir: the bench directory (training curves are read from each run's ``metrics.jsonl``).
        img_dir: where the PNG files go (created).
    """
    from matplotlib.figure import Figure  # lazily: matplotlib is an optional extra

    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors([r.method for r in rows])
    out: list[PlotFile] = []
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        ref = reference_for(rows, setting)
        draw = _Drawer(Figure, img_dir, setting, colors)
        out += draw.accuracy_vs_sparsity(mine, ref)
        out += draw.accuracy_vs_macs(mine, ref)
        out += draw.layer_sparsity(mine)
        out += draw.training_curves(mine, Path(bench_dir))
    return out


class _Drawer:
    """The plots of one (model, dataset)."""

    def __init__(self, figure_cls: Any, img_dir: Path, setting: tuple[str, str], colors: dict[str, Any]) -> None:
        self.Figure, self.img_dir, self.colors = figure_cls, img_dir, colors
        self.model, self.dataset = setting
        self.name = f"{self.model} on {self.dataset}"

    def _save(self, fig: Any, stem: str, title: str) -> PlotFile:
        path = self.img_dir / (_slug(f"{stem}-{self.model}-{self.dataset}") + ".png")
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
        return PlotFile(path, title)

    def _reference_line(self, ax: Any, ref: SummaryRow | None) -> None:
        if ref is None or ref.accuracy is None:
            return
        mean, std = ref.accuracy.mean, ref.accuracy.std
        ax.axhline(mean, color="0.4", linestyle="--", linewidth=1, label=f"dense ({mean:.2f})")
        if std:
            ax.axhspan(mean - std, mean + std, color="0.4", alpha=0.12)

    def accuracy_vs_sparsity(self, rows: list[SummaryRow], ref: SummaryRow | None) -> list[PlotFile]:
        out = []
        points = [r for r in rows if r.target_kind in ("sparsity", "implied") and r.sparsity and r.accuracy]
        for gran in dict.fromkeys(r.granularity for r in points):
            part = [r for r in points if r.granularity == gran]
            mixed = len({r.scope for r in part}) > 1
            fig = self.Figure(figsize=_SIZE)
            ax = fig.subplots()
            for label in dict.fromkeys(series_label(r, mixed) for r in part):
                line = sorted((r for r in part if series_label(r, mixed) == label), key=lambda r: r.sparsity.mean)
                ax.errorbar([r.sparsity.mean for r in line], [r.accuracy.mean for r in line],
                            yerr=[r.accuracy.std or 0.0 for r in line], label=label, marker="o", capsize=3,
                            color=self.colors[line[0].method])
            self._reference_line(ax, ref)
            _sparsity_axis(ax, part)
            ax.set_xlabel("sparsity of the pruned weights")
            ax.set_ylabel("top-1 accuracy (%)")
            title = f"{self.name}: accuracy vs sparsity ({gran})"
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            out.append(self._save(fig, f"acc-sparsity-{gran}", title))
        return out

    def accuracy_vs_macs(self, rows: list[SummaryRow], ref: SummaryRow | None) -> list[PlotFile]:
        points = [r for r in rows if not r.is_reference and r.macs_effective and r.accuracy]
        if not points:
            return []
        series = list(dict.fromkeys((r.method, r.granularity, r.scope, r.target_kind) for r in points))
        many = len({s[1] for s in series}) > 1  # several granularities in one plot
        mixed = len({s[2] for s in series}) > 1
        fig = self.Figure(figsize=_SIZE)
        ax = fig.subplots()
        for method, gran, scope, kind in series:
            line = sorted((r for r in points if (r.method, r.granularity, r.scope, r.target_kind)
                           == (method, gran, scope, kind)), key=lambda r: r.macs_effective.mean)
            label = method + (f" ({gran})" if many else "") + (f" [{scope}]" if mixed else "")
            ax.errorbar([r.macs_effective.mean for r in line], [r.accuracy.mean for r in line],
                        yerr=[r.accuracy.std or 0.0 for r in line], label=label, capsize=3,
                        marker="o" if gran == "unstructured" else "s", color=self.colors[method],
                        linestyle="-" if kind != "macs" else "--")
        if ref is not None and ref.macs_effective and ref.accuracy:
            ax.plot([ref.macs_effective.mean], [ref.accuracy.mean], marker="*", markersize=12, color="0.3",
                    linestyle="none", label="dense")
        ax.set_xscale("log")
        ax.set_xlabel("MACs per image (zero weights skipped; filter runs: shrunk model)")
        ax.set_ylabel("top-1 accuracy (%)")
        title = f"{self.name}: accuracy vs MACs"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        return [self._save(fig, "acc-macs", title)]

    def layer_sparsity(self, rows: list[SummaryRow]) -> list[PlotFile]:
        out = []
        pruned = [r for r in rows if not r.is_reference and r.layers]
        for gran in dict.fromkeys(r.granularity for r in pruned):
            part = [r for r in pruned if r.granularity == gran]
            mixed = len({r.scope for r in part}) > 1
            targets = list(dict.fromkeys(target_label(r) for r in part))
            layers = list(dict.fromkeys(name for r in part for name, _ in r.layers))
            methods = list(dict.fromkeys(series_label(r, mixed) for r in part))
            fig = self.Figure(figsize=(max(6.4, 0.45 * len(layers) * max(1, len(methods) / 3)),
                                       1.0 + 2.0 * len(targets)))
            axes = fig.subplots(len(targets), 1, squeeze=False, sharex=True)[:, 0]
            width = 0.8 / len(methods)
            for ax, target in zip(axes, targets):
                for i, method in enumerate(methods):
                    row = next((r for r in part if series_label(r, mixed) == method and target_label(r) == target),
                               None)
                    if row is None:
                        continue
                    values = dict(row.layers)
                    xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(layers))]
                    ax.bar(xs, [values.get(name, 0.0) for name in layers], width=width, label=method,
                           color=self.colors[row.method])
                ax.set_ylim(0, 1)
                ax.set_ylabel(f"sparsity\n(target {target})", fontsize=8)
                ax.grid(alpha=0.3, axis="y")
            axes[-1].set_xticks(range(len(layers)))
            axes[-1].set_xticklabels([n.removesuffix(".weight") for n in layers], rotation=60, ha="right", fontsize=7)
            axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            title = f"{self.name}: per-layer sparsity ({gran})"
            axes[0].set_title(title, fontsize=10)
            out.append(self._save(fig, f"layers-{gran}", title))
        return out

    def training_curves(self, rows: list[SummaryRow], bench_dir: Path) -> list[PlotFile]:
        from matplotlib.ticker import MaxNLocator

        out = []
        dense = [r for r in rows if r.is_reference]
        pruned = [r for r in rows if not r.is_reference]
        for key in dict.fromkeys((r.granularity, target_label(r)) for r in pruned):
            selected = [r for r in pruned if (r.granularity, target_label(r)) == key]
            mixed = len({r.scope for r in selected}) > 1
            part = dense + selected
            curves = [(r, _mean_curves(bench_dir, r)) for r in part]
            curves = [(r, c) for r, c in curves if c]
            if not curves:
                continue
            fig = self.Figure(figsize=(9.6, 3.6))
            acc_ax, sp_ax = fig.subplots(1, 2)
            for row, curve in curves:
                shift = row.pretrain_epochs if row.role == "run" else 0
                style = {"color": "0.4" if row.is_reference else self.colors[row.method],
                         "linestyle": ":" if row.role == "pretrain" else "-",
                         "label": row.label if row.is_reference else series_label(row, mixed)}
                epochs = sorted(curve)
                acc = [(e + shift, curve[e]["eval_accuracy"]) for e in epochs if "eval_accuracy" in curve[e]]
                if acc:
                    acc_ax.plot(*zip(*acc), marker=".", **style)
                sp = [(e + shift, curve[e]["sparsity"]) for e in epochs if "sparsity" in curve[e]]
                if sp:
                    sp_ax.plot(*zip(*sp), marker=".", **style)
            gran, target = key
            title = f"{self.name}: training curves ({gran}, target {target})"
            acc_ax.set_title(title, fontsize=9)
            acc_ax.set_xlabel("epoch")
            acc_ax.set_ylabel("eval top-1 accuracy (%)")
            sp_ax.set_xlabel("epoch")
            sp_ax.set_ylabel("sparsity of the pruned weights")
            sp_ax.set_ylim(-0.02, 1.02)
            for ax in (acc_ax, sp_ax):
                ax.grid(alpha=0.3)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            acc_ax.legend(fontsize=7)
            out.append(self._save(fig, f"curves-{gran}-{target}", title))
        return out


def _sparsity_axis(ax: Any, rows: list[SummaryRow]) -> None:
    """Logit scale (0.9, 0.95, 0.98 spread evenly) with ticks at the targets, when the targets differ."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    targets = sorted({r.target_value for r in rows if r.target_value is not None and 0.0 < r.target_value < 1.0})
    if len(targets) > 1 and all(0.0 < r.sparsity.mean < 1.0 for r in rows if r.sparsity):
        ax.set_xscale("logit")
        ax.xaxis.set_major_locator(FixedLocator(targets))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.4g}%"))


def _mean_curves(bench_dir: Path, row: SummaryRow) -> dict[int, dict[str, float]]:
    """Epoch -> mean over seeds of ``eval_accuracy`` and ``sparsity`` from each run's metrics.jsonl."""
    values: dict[int, dict[str, list[float]]] = {}
    for run_dir in row.run_dirs:
        path = bench_dir / run_dir / "metrics.jsonl"
        if not path.exists():
            continue
        last: dict[int, dict[str, Any]] = {}
        for text in path.read_text().splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "epoch" in record:
                last[int(record["epoch"])] = record  # a resumed run may repeat an epoch: keep the last
        for epoch, record in last.items():
            for key in ("eval_accuracy", "sparsity"):
                if isinstance(record.get(key), int | float):
                    values.setdefault(epoch, {}).setdefault(key, []).append(float(record[key]))
    return {e: {k: sum(v) / len(v) for k, v in d.items()} for e, d in values.items()}


def _colors(methods: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    names = [m for m in dict.fromkeys(methods) if m != "dense"]
    out = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    out["dense"] = "0.4"
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.replace("%", "pct"))
