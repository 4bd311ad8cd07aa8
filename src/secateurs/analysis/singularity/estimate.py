"""The singularity estimate of a network: effective filters per unit and the maximum compression.

For each unit, ``S~ = Z~^T Z~ / M`` is eigen-decomposed; ``r`` effective filters out of ``n`` give
the unit's maximum compression rate ``rho = 1 - r / n``. Pruning a unit beyond ``n - r`` filters
removes directions that carry more than ``1 - tau`` of its consumers' input energy: the spec's
definition of over-pruning (crl_singularity.md, section B.2.2). The network's maximum redundancy is
what removing ``n - r`` filters from every unit takes out of the model ``secateurs shrink`` would
deliver, in parameters and MACs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.analysis.singularity.gram import UnitGram, collect_grams, consumer_weight_norms
from secateurs.analysis.singularity.selection import pivot_order
from secateurs.analysis.singularity.sizes import ShrunkSize
from secateurs.analysis.singularity.spectrum import Criterion, effective_filters, spectrum
from secateurs.analysis.singularity.units import AnalysisUnit, analysis_units
from secateurs.core.parametrize import original_name
from secateurs.core.targets import Target
from secateurs.structured.groups import ChannelGroup

__all__ = ["NetworkEstimate", "UnitEstimate", "analyse_units", "calibration_subset", "estimate_network", "summarise"]


@dataclass(frozen=True)
class UnitEstimate:
    """The analysis of one unit.

    Attributes:
        unit: The unit.
        live: Filters not pruned yet (the unit's width in the current network).
        effective: ``r``, the effective filter count among the live ones.
        eigenvalues: ``sigma_j^2`` of ``S~``, descending (float64).
        gram: ``S~`` itself, for the filter selection.
        raw: Per tensor the unit is read from: ``(consumer indices, unweighted Z^T Z / M)``, for the
            least-squares compensation of the consumers.
        alive: Boolean per channel: not pruned yet.
    """

    unit: AnalysisUnit
    live: int
    effective: int
    eigenvalues: Tensor
    gram: Tensor
    raw: tuple[tuple[tuple[int, ...], Tensor], ...]
    alive: Tensor

    @property
    def channels(self) -> int:
        """Original channels ``n``."""
        return self.unit.channels

    @property
    def rate(self) -> float:
        """Maximum compression rate ``rho = 1 - r / n`` of the live filters."""
        return 1.0 - self.effective / self.live if self.live else 0.0

    @property
    def energy_kept(self) -> float:
        """Share of the spectrum energy in the top ``r`` eigenvalues."""
        total = float(self.eigenvalues.sum())
        return float(self.eigenvalues[: self.effective].sum()) / total if total > 0 else 1.0

    def removable(self) -> int:
        """Filters the estimate allows to remove (the shrinker keeps one channel per group)."""
        return max(0, min(self.live - self.effective, self.live - 1))

    def order(self, tie_break: Tensor | None = None) -> list[int]:
        """Channels by pivoted QR of ``Z~``, most independent first; pruned channels last."""
        return pivot_order(self.gram, tie_break, self.alive)


@dataclass
class NetworkEstimate:
    """The estimate of a whole network.

    Attributes:
        units: One per analysed unit, in group order.
        skipped: Group root -> why it was not analysed (its filters are never pruned).
        criterion: How ``r`` was counted.
        calibration: Calibration images used.
        positions: Positions sampled per image.
        params_dense / macs_dense: Counts of the model as it is.
        params_max / macs_max: Counts of the shrunk model with every unit at its ``r`` filters.
        target_elements: Elements of the pruned weights (the denominator of ``--sparsity``).
        masked_elements_max: Elements of those weights removed at the estimate's maximum.
    """

    units: list[UnitEstimate]
    skipped: dict[str, str]
    criterion: Criterion
    calibration: int
    positions: int
    params_dense: int = 0
    macs_dense: int = 0
    params_max: int = 0
    macs_max: int = 0
    target_elements: int = 0
    masked_elements_max: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_params_reduction(self) -> float:
        """Maximum network redundancy in parameters, ``1 - P(r) / P(n)``."""
        return 1.0 - self.params_max / self.params_dense if self.params_dense else 0.0

    @property
    def max_macs_reduction(self) -> float:
        """Maximum network redundancy in MACs, ``1 - F(r) / F(n)``."""
        return 1.0 - self.macs_max / self.macs_dense if self.macs_dense else 0.0

    @property
    def max_sparsity(self) -> float:
        """The largest ``--sparsity`` (of the pruned weights) that stays within every cap."""
        return self.masked_elements_max / self.target_elements if self.target_elements else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``estimate.json`` (spectra normalised to sum 1)."""
        layers = []
        for e in self.units:
            total = float(e.eigenvalues.sum())
            layers.append({
                "unit": e.unit.key, "root": e.unit.group.root, "layers": list(e.unit.layers),
                "channels": e.channels, "live": e.live, "effective": e.effective, "max_rate": e.rate,
                "energy_kept": e.energy_kept,
                "spectrum": [float(v) / total if total > 0 else 0.0 for v in e.eigenvalues],
            })
        return {
            "criterion": {"name": self.criterion.name, "tau": self.criterion.tau, "epsilon": self.criterion.epsilon},
            "calibration_images": self.calibration, "positions_per_image": self.positions,
            "params_dense": self.params_dense, "params_at_max": self.params_max,
            "macs_dense": self.macs_dense, "macs_at_max": self.macs_max,
            "max_params_reduction": self.max_params_reduction, "max_macs_reduction": self.max_macs_reduction,
            "max_sparsity": self.max_sparsity, "units": layers,
            "not_analysed": [{"root": root, "reason": why} for root, why in self.skipped.items()],
            **self.extra,
        }


def calibration_subset(images: Tensor, count: int, seed: int) -> Tensor:
    """A seeded random subset of ``count`` training images (in dataset order), the calibration set."""
    generator = torch.Generator().manual_seed(seed)
    count = min(count, images.shape[0])
    chosen = torch.randperm(images.shape[0], generator=generator)[:count].sort().values
    return images[chosen.to(images.device)].detach()


def analyse_units(
    model: nn.Module,
    grams: Sequence[UnitGram],
    criterion: Criterion,
    alive: Sequence[Tensor] | None = None,
) -> list[UnitEstimate]:
    """Spectrum, ``r`` and the Grams of every unit from its accumulated rows.

    Args:
        model: The network the rows came from (its consumer weights give ``omega``).
        grams: From :func:`collect_grams`.
        criterion: How ``r`` is counted.
        alive: Per unit, the channels not pruned yet (default: all). Pruned channels are left out of
            the spectrum (their columns are zero anyway).
    """
    out = []
    for i, unit_gram in enumerate(grams):
        unit = unit_gram.unit
        live_mask = alive[i].to(torch.bool).cpu() if alive is not None else torch.ones(unit.channels, dtype=torch.bool)
        weighted = unit_gram.weighted(consumer_weight_norms(model, unit))
        index = torch.nonzero(live_mask).flatten()
        values = spectrum(weighted[index][:, index])
        r = effective_filters(values, criterion, unit_gram.rows)
        raw = tuple((tuple(t.consumers), t.gram / max(t.rows, 1)) for t in unit_gram.tensors)
        out.append(UnitEstimate(unit, int(live_mask.sum()), r, values, weighted, raw, live_mask))
    return out


def estimate_network(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    targets: Sequence[Target],
    images: Tensor,
    *,
    criterion: Criterion | None = None,
    positions: int = 16,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> NetworkEstimate:
    """Analyse a (plain, unmasked) network on calibration images.

    Args:
        model: The trained network.
        groups: Its coupled channel groups.
        targets: The weights that may be pruned.
        images: Calibration inputs from the training data (no augmentation).
        criterion: How ``r`` is counted (default: energy, ``tau = 0.99``).
        positions: Spatial positions sampled per image.
        batch_size: Images per forward pass.
        generator: Source of the position draws.

    Returns:
        The per-unit estimates and the network maxima.
    """
    criterion = criterion or Criterion()
    units, skipped = analysis_units(model, groups, targets)
    grams = collect_grams(model, units, images, batch_size=batch_size, positions=positions, generator=generator)
    estimates = analyse_units(model, grams, criterion)
    return summarise(model, estimates, skipped, targets, criterion, images, positions)


def summarise(
    model: nn.Module,
    estimates: list[UnitEstimate],
    skipped: dict[str, str],
    targets: Sequence[Target],
    criterion: Criterion,
    images: Tensor,
    positions: int,
) -> NetworkEstimate:
    """Network maxima of unit estimates (counted on the shrunk model)."""
    device = next(model.parameters()).device
    sizes = ShrunkSize(model, [e.unit for e in estimates], images[:1].to(device))
    params_max, macs_max = sizes.counts([e.removable() for e in estimates])
    shapes = {n: p.shape for pn, p in model.named_parameters() if (n := original_name(pn)) is not None}
    target_elements = sum(shapes[t.name].numel() for t in targets)
    masked = sum(e.removable() * e.unit.width for e in estimates)
    return NetworkEstimate(
        estimates, skipped, criterion, images.shape[0], positions, sizes.params_dense, sizes.macs_dense,
        params_max, macs_max, target_elements, masked,
    )
