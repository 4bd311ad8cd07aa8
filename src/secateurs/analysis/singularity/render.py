"""The estimate for people: a per-unit table, the network maxima, targets checked against them, and
a PNG of the normalised spectra with each unit's cap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from secateurs.analysis.singularity.estimate import NetworkEstimate

__all__ = ["TargetCheck", "check_targets", "plot_estimate", "render_estimate"]

#: Kinds of target ``secateurs estimate --target`` checks, with what the estimate's maximum is.
TARGET_KINDS = ("sparsity", "params", "macs")


@dataclass(frozen=True)
class TargetCheck:
    """A compression target compared with the estimated maximum.

    Attributes:
        kind: ``sparsity`` (of the pruned weights), ``params`` or ``macs`` (reduction of the shrunk model).
        value: The target, a fraction removed.
        maximum: The estimated maximum of the same quantity.
    """

    kind: str
    value: float
    maximum: float

    @property
    def beyond(self) -> bool:
        """Whether the target asks for more than the estimate allows (over-pruning)."""
        return self.value > self.maximum + 1e-12

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON."""
        return {"kind": self.kind, "value": self.value, "maximum": self.maximum, "beyond_maximum": self.beyond}


def check_targets(estimate: NetworkEstimate, targets: dict[str, float]) -> list[TargetCheck]:
    """Each target against the matching network maximum."""
    maxima = {"sparsity": estimate.max_sparsity, "params": estimate.max_params_reduction,
              "macs": estimate.max_macs_reduction}
    return [TargetCheck(kind, value, maxima[kind]) for kind, value in targets.items()]


def render_estimate(estimate: NetworkEstimate, checks: list[TargetCheck] = ()) -> str:  # type: ignore[assignment]
    """The per-unit table and the network maxima as text."""
    c = estimate.criterion
    rule = {"energy": f"energy tau={c.tau:g}", "numerical": f"numerical rank eps={c.epsilon:g}"}.get(c.name, c.name)
    header = f"{'group (root layer)':<24} {'layers':>6} {'n':>5} {'r':>5} {'rho_max':>8} {'energy':>7}"
    lines = [f"effective filters ({rule}; {estimate.calibration} calibration images, "
             f"{estimate.positions} positions each)", header, "-" * len(header)]
    for e in estimate.units:
        lines.append(f"{e.unit.group.root:<24} {len(e.unit.layers):>6} {e.live:>5} {e.effective:>5} "
                     f"{e.rate:>8.3f} {e.energy_kept:>7.4f}")
    lines.append("")
    lines.append("maximum network redundancy (the model `shrink` would deliver, every group at r filters):")
    lines.append(f"  params {estimate.params_dense:,} -> {estimate.params_max:,}  "
                 f"(-{100 * estimate.max_params_reduction:.1f}%)")
    lines.append(f"  MACs   {estimate.macs_dense:,} -> {estimate.macs_max:,}  "
                 f"(-{100 * estimate.max_macs_reduction:.1f}%)")
    lines.append(f"  sparsity of the pruned weights (--sparsity): {estimate.max_sparsity:.4f}")
    for root, why in estimate.skipped.items():
        lines.append(f"not analysed: {root} ({why})")
    for check in checks:
        verdict = "BEYOND the estimated maximum" if check.beyond else "within the estimated maximum"
        warn = " (over-pruning: some group loses effective filters)" if check.beyond else ""
        lines.append(f"target {check.kind} {check.value:g}: {verdict} {check.maximum:.4f}{warn}")
    return "\n".join(lines)


def plot_estimate(estimate: NetworkEstimate, path: str | Path) -> Path:
    """Normalised spectra (log scale, r marked) and per-group widths against their caps, as a PNG.

    Raises:
        ImportError: when matplotlib (the ``report`` extra) is not installed.
    """
    from matplotlib.figure import Figure  # lazily: matplotlib is an optional extra

    path = Path(path)
    fig = Figure(figsize=(11, 4.2))
    spectra, caps = fig.subplots(1, 2)
    for e in estimate.units:
        total = float(e.eigenvalues.sum())
        if total <= 0:
            continue
        values = (e.eigenvalues / total).clamp_min(1e-16).tolist()
        xs = [i / max(len(values) - 1, 1) for i in range(len(values))]
        (line,) = spectra.semilogy(xs, values, linewidth=1, label=e.unit.group.root)
        if 0 < e.effective <= len(values):
            spectra.plot([xs[e.effective - 1]], [values[e.effective - 1]], "o", color=line.get_color(), markersize=4)
    spectra.set_xlabel("eigenvalue index / (n - 1)")
    spectra.set_ylabel("sigma^2 / sum sigma^2")
    spectra.set_title("normalised spectra (dot: r)")
    if len(estimate.units) <= 14:
        spectra.legend(fontsize=6)
    names = [e.unit.group.root for e in estimate.units]
    xs = list(range(len(names)))
    caps.bar(xs, [e.live for e in estimate.units], color="0.8", label="n (filters)")
    caps.bar(xs, [e.effective for e in estimate.units], color="tab:blue", label="r (effective)")
    caps.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
    caps.set_ylabel("filters")
    caps.set_title(f"caps: max params -{100 * estimate.max_params_reduction:.0f}%, "
                   f"MACs -{100 * estimate.max_macs_reduction:.0f}%")
    caps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
