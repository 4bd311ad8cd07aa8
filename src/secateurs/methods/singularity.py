"""``singularity``: hierarchical filter pruning guided by gradient-matrix singularities.

Zhou et al., *Neural Network Compression via Effective Filter Analysis and Hierarchical Pruning*
(arXiv 2206.03596), as reconstructed in ``specs/crl_singularity.md`` part B (the paper's method
section was not available: every concrete choice below is the spec's proposal or ours, listed in
``docs/methods/singularity.md``).

Each round (one training phase each):

1. *Analysis*: on calibration images from the training data, the consumer-weighted gradient-matrix
   Gram of every coupled channel group gives its effective filter count ``r`` and cap ``n - r``.
2. *Level 1*: one scalar ``alpha`` (bisection) sets how many filters each group loses,
   ``floor(alpha (n - r))``, so that the pruned weights reach ``--sparsity``; the caps are never
   crossed unless ``exceed_caps`` is set. A target beyond the estimate is flagged in the report.
3. *Level 2*: inside each group, a column-pivoted QR of ``Z~`` keeps the most independent filters;
   optionally the consumers are refit by least squares for the removed ones.
4. *Recovery*: the phase fine-tunes. Before the next round, the validation accuracy is compared with
   the dense one; a later round that lost more than ``delta`` points is reverted and pruning stops.

Rounds stop early once the target is reached or no group has filters left to remove.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from secateurs.analysis.singularity.compensate import compensate_consumers_
from secateurs.analysis.singularity.estimate import UnitEstimate, analyse_units, calibration_subset, summarise
from secateurs.analysis.singularity.gram import collect_grams
from secateurs.analysis.singularity.selection import cap_counts, find_alpha, removal_counts
from secateurs.analysis.singularity.spectrum import Criterion
from secateurs.analysis.singularity.units import AnalysisUnit, analysis_units
from secateurs.core.granularity import Filter, Granularity, parse_granularity
from secateurs.core.parametrize import FixedMask, MaskParametrization
from secateurs.core.selection import keep_count
from secateurs.core.targets import Target
from secateurs.errors import UsageError
from secateurs.methods.base import Horizon, MethodConfig, Phase, PruningMethod
from secateurs.methods.registry import METHODS
from secateurs.utils.io import save_json

if TYPE_CHECKING:
    from secateurs.data.registry import DataBundle
    from secateurs.structured.groups import ChannelGroup

__all__ = ["SingularityConfig", "SingularityPruning"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SingularityConfig(MethodConfig):
    """Settings of the singularity method (defaults: the spec's proposals, section B.3).

    Attributes:
        criterion: How the effective filter count is read off the spectrum: ``energy``,
            ``numerical``, ``effective`` or ``gavish-donoho``.
        tau: Energy share of the ``energy`` criterion.
        epsilon: Relative singular-value floor of the ``numerical`` criterion.
        calibration: Training images of the analysis.
        positions: Spatial positions sampled per image and tensor.
        kappa: Minimum fraction of each group's filters kept (at least one).
        rounds: Most analysis-prune-fine-tune rounds (the epochs are split between them).
        delta: Validation accuracy drop (percentage points, vs the dense model) after which a later
            round is reverted and pruning stops.
        compensate: Refit the consumers of pruned filters by least squares.
        exceed_caps: Let level 1 go past the estimated caps to meet ``--sparsity``.
    """

    granularity: Granularity = field(default="filter", metadata={  # type: ignore[assignment]
        "help": "filter (the only granularity of this method)", "parse": parse_granularity})
    criterion: str = field(default="energy", metadata={"help": "energy, numerical, effective or gavish-donoho"})
    tau: float = field(default=0.99, metadata={"help": "energy share kept by the energy criterion"})
    epsilon: float = field(default=1e-3, metadata={"help": "relative floor of the numerical rank"})
    calibration: int = field(default=1024, metadata={"help": "calibration images from the training data"})
    positions: int = field(default=16, metadata={"help": "positions sampled per image"})
    kappa: float = field(default=0.1, metadata={"help": "minimum fraction of filters kept per group"})
    rounds: int = field(default=3, metadata={"help": "most pruning rounds"})
    delta: float = field(default=0.5, metadata={"help": "accuracy drop (points) that reverts a round"})
    compensate: bool = field(default=True, metadata={"help": "least-squares refit of the consumers"})
    exceed_caps: bool = field(default=False, metadata={"help": "allow pruning beyond the estimated caps"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.granularity, Filter):
            raise UsageError(f"singularity prunes filters; granularity {self.granularity} is not supported")
        if not self.coupled:
            raise UsageError("singularity prunes coupled channel groups; coupled=false is not supported")
        self.criterion_object()
        for name in ("calibration", "positions", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.kappa < 1.0:
            raise UsageError(f"kappa must lie in [0, 1), got {self.kappa}")
        if self.delta < 0:
            raise UsageError(f"delta must be >= 0, got {self.delta}")

    def criterion_object(self) -> Criterion:
        """The effective-filter criterion as an object."""
        return Criterion(self.criterion, float(self.tau), float(self.epsilon))


@METHODS.register(
    "singularity", description="effective-filter analysis (gradient-matrix spectrum) then hierarchical filter pruning"
)
class SingularityPruning(PruningMethod):
    """Layer-wise counts under estimated caps, then filters chosen by pivoted QR, in rounds."""

    Config = SingularityConfig
    granularities = (Filter,)
    config: SingularityConfig

    def __init__(self, config: SingularityConfig) -> None:
        super().__init__(config)
        self.images: Tensor | None = None
        self.val_loader: Any = None
        self.units: list[AnalysisUnit] = []
        self.skipped: dict[str, str] = {}
        self.rounds_log: list[dict[str, Any]] = []
        self.first_estimate: dict[str, Any] | None = None
        self.dense_accuracy: float | None = None
        self.stopped: str | None = None
        self.snapshot: dict[str, Tensor] | None = None
        self._target_elements = 0

    # ------------------------------------------------------------------ setup
    def bind_data(self, data: DataBundle) -> None:
        """Keep ``calibration`` training images (no augmentation) and the validation split."""
        self.set_calibration(data.train.x, data.val)

    def set_calibration(self, images: Tensor, val_loader: Any = None) -> None:
        """Calibration images (a random subset of ``images`` is kept) and an optional validation loader.

        Library users who call :func:`secateurs.train.fit` themselves call this before training.
        """
        self.images = calibration_subset(images, self.config.calibration, self.config.seed)
        self.val_loader = val_loader

    def phases(self) -> list[Phase]:
        epochs = self.horizon.epochs
        rounds = min(self.config.rounds, epochs)
        if rounds < 1:
            raise UsageError("singularity needs at least one epoch (one fine-tuning round)")
        base = epochs // rounds
        lengths = [base] * rounds
        lengths[-1] += epochs - base * rounds
        return [Phase(f"round{i + 1}", n) for i, n in enumerate(lengths)]

    def attach(
        self,
        model: nn.Module,
        targets: list[Target] | None = None,
        horizon: Horizon | None = None,
        *,
        channel_groups: Sequence[ChannelGroup] | None = None,
    ) -> None:
        if channel_groups is None:
            raise UsageError("singularity needs the model's coupled channel groups (a model secateurs can trace)")
        super().attach(model, targets, horizon, channel_groups=channel_groups)
        units, self.skipped = analysis_units(model, channel_groups, self.targets)
        self.units = [u for u in units if u.key in self.shared_groups]
        for unit in units:
            if unit.key not in self.shared_groups:
                self.skipped[unit.group.root] = "no coupled mask for this group"
        if not self.units:
            raise UsageError("singularity found no channel group it can analyse among the pruned weights")
        shapes = {t.name: t.shape for t in self.targets}
        self._target_elements = sum(s.numel() for s in shapes.values())

    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        return FixedMask(self.config.granularity, target.shape, device=weight.device)

    # ------------------------------------------------------------------ rounds
    def on_phase_start(self, phase_index: int) -> None:
        if self.stopped is not None:
            return
        accuracy = self._validate()
        if phase_index == 0:
            self.dense_accuracy = accuracy
        else:
            self.rounds_log[-1]["val_accuracy_after"] = accuracy
            if self._revert_if_worse(accuracy):
                return
        if self._sparsity() >= self._target() - 1e-12:
            self.stopped = "target reached"
            return
        # Round 1 is held to the caps and the user's target; a later round goes further, so keep
        # what to come back to.
        self.snapshot = (
            {k: v.detach().cpu().clone() for k, v in self._model.state_dict().items()} if phase_index > 0 else None
        )
        self._prune_round(phase_index)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if epoch == self.horizon.epochs - 1 and self.stopped is None and self.rounds_log:
            accuracy = self._validate()
            self.rounds_log[-1]["val_accuracy_after"] = accuracy
            self._revert_if_worse(accuracy)
        return {"singularity_round": float(len(self.rounds_log))}

    @property
    def _model(self) -> nn.Module:
        assert self.model is not None, "attach the method to a model first"
        return self.model

    def _validate(self) -> float | None:
        if self.val_loader is None:
            return None
        from secateurs.train import evaluate

        return float(evaluate(self._model, self.val_loader)["accuracy"])

    def _revert_if_worse(self, accuracy: float | None) -> bool:
        if accuracy is None or self.dense_accuracy is None or self.snapshot is None:
            return False
        if accuracy >= self.dense_accuracy - self.config.delta:
            return False
        self._model.load_state_dict({k: v.to(self._device) for k, v in self.snapshot.items()})
        self.rounds_log[-1]["reverted"] = True
        self.stopped = f"round {len(self.rounds_log)} lost more than {self.config.delta} points: reverted"
        log.info("singularity: %s", self.stopped)
        self.snapshot = None
        return True

    @property
    def _device(self) -> torch.device:
        return next(self._model.parameters()).device

    def _masks(self) -> list[FixedMask]:
        out = []
        for unit in self.units:
            p = self.parametrizations[unit.key]
            assert isinstance(p, FixedMask)
            out.append(p)
        return out

    def _masked_elements(self) -> int:
        total = 0
        for name, p in self.parametrizations.items():
            assert isinstance(p, FixedMask)
            tie = self.shared_groups.get(name)
            per_unit = tie[0].width if tie is not None else self._unit_width(name)
            total += int((~p.mask).sum()) * per_unit
        return total

    def _unit_width(self, name: str) -> int:
        shape = next(t.shape for t in self.targets if t.name == name)
        return shape.numel() // shape[0]

    def _target(self) -> float:
        """The overall sparsity to reach: ``--sparsity``, or the total of an allocation (``--budget``,
        ``--allocation``): level 1 then spreads that total under the caps itself."""
        if not self.allocation:
            return float(self.config.sparsity or 0.0)
        masked = 0
        for name, p in self.parametrizations.items():
            assert isinstance(p, FixedMask)
            tie = self.shared_groups.get(name)
            units = tie[0].units if tie is not None else int(p.mask.numel())
            width = tie[0].width if tie is not None else self._unit_width(name)
            kept = max(1, keep_count(units, self.allocation.get(name, 0.0)))
            masked += (units - kept) * width
        return masked / self._target_elements if self._target_elements else 0.0

    def _sparsity(self) -> float:
        return self._masked_elements() / self._target_elements if self._target_elements else 0.0

    def _analyse(self, phase_index: int) -> list[UnitEstimate]:
        if self.images is None:
            raise UsageError("singularity needs calibration images: bind_data() or set_calibration() before training")
        alive = [m.mask.reshape(-1).cpu() for m in self._masks()]
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + phase_index)
        grams = collect_grams(self._model, self.units, self.images, positions=self.config.positions,
                              generator=generator)
        return analyse_units(self._model, grams, self.config.criterion_object(), alive)

    @torch.no_grad()
    def _prune_round(self, phase_index: int) -> None:
        estimates = self._analyse(phase_index)
        if self.first_estimate is None:
            summary = summarise(self._model, estimates, self.skipped, self.targets, self.config.criterion_object(),
                                self.images, self.config.positions)  # type: ignore[arg-type]
            self.first_estimate = summary.to_dict()
        caps = [cap_counts(e.live, e.effective, e.channels, self.config.kappa) for e in estimates]
        masked_now = self._masked_elements()
        target = self._target()

        def reached(alpha: float) -> bool:
            ks = removal_counts(caps, alpha)
            removed = sum(k * e.unit.width for k, e in zip(ks, estimates))
            return masked_now + removed >= target * self._target_elements - 1e-9

        alpha = find_alpha(reached)
        beyond = alpha is None
        if alpha is None:
            alpha = (find_alpha(reached, upper=2.0) or 2.0) if self.config.exceed_caps else 1.0
        counts = removal_counts(caps, alpha)
        layers = []
        for estimate, mask, k in zip(estimates, self._masks(), counts):
            keep = estimate.alive.clone()
            if k > 0:
                tie = self.shared_groups[estimate.unit.key]
                tie_break = tie[1].weight().detach().abs().sum(1).cpu()
                order = estimate.order(tie_break)
                keep = torch.zeros_like(keep)
                keep[order[: estimate.live - k]] = True
                if self.config.compensate:
                    compensate_consumers_(self._model, estimate, keep)
                mask.set_(keep.to(mask.mask.device))
            layers.append({"unit": estimate.unit.key, "channels": estimate.channels, "live": estimate.live,
                           "effective": estimate.effective, "cap": caps[len(layers)][0], "removed": k})
        entry = {"round": phase_index + 1, "alpha": alpha, "target_beyond_estimate": beyond,
                 "sparsity_after": self._sparsity(), "val_accuracy_pruned": self._validate(), "layers": layers}
        self.rounds_log.append(entry)
        if beyond and not self.config.exceed_caps:
            log.warning("singularity: sparsity %.3f is beyond the estimated maximum; round %d pruned to the caps "
                        "(sparsity %.3f)", target, phase_index + 1, entry["sparsity_after"])
        if all(k == 0 for k in counts):
            self.stopped = "no group has filters left to remove"

    # ------------------------------------------------------------------ output
    def save_artifacts(self, run_dir: Path) -> list[Path]:
        if self.first_estimate is None:
            return []
        path = Path(run_dir) / "estimate.json"
        save_json(self.first_estimate, path)
        return [path]

    def report_extras(self) -> dict[str, Any]:
        first = self.first_estimate or {}
        return {"singularity": {
            "criterion": self.config.criterion, "tau": self.config.tau,
            "max_sparsity": first.get("max_sparsity"),
            "max_params_reduction": first.get("max_params_reduction"),
            "max_macs_reduction": first.get("max_macs_reduction"),
            "target_beyond_estimate": bool(self.rounds_log and self.rounds_log[0]["target_beyond_estimate"]),
            "dense_val_accuracy": self.dense_accuracy, "stopped": self.stopped, "rounds": self.rounds_log,
            "not_analysed": self.skipped,
        }}

    def extra_state(self) -> dict[str, Any]:
        return {"rounds_log": copy.deepcopy(self.rounds_log), "first_estimate": copy.deepcopy(self.first_estimate),
                "dense_accuracy": self.dense_accuracy, "stopped": self.stopped, "snapshot": self.snapshot}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rounds_log = list(state.get("rounds_log", []))
        self.first_estimate = state.get("first_estimate")
        self.dense_accuracy = state.get("dense_accuracy")
        self.stopped = state.get("stopped")
        self.snapshot = state.get("snapshot")
