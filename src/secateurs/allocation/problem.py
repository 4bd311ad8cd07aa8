"""The allocation problem: which keys (weights, or coupled channel groups) get which sparsity.

A *key* is what a mask method keeps one mask for: a target weight, or, for ``--granularity filter``
with channel groups, a shared group named after its root weight (:mod:`secateurs.structured.coupled_masks`).
An allocation maps keys to sparsities; :class:`AllocationProblem` turns one into masks (magnitude
inside each key), into a :class:`~secateurs.budget.Subject` to measure, and checks it against the
constraints: the budgets, or, without budgets, the overall sparsity of the pruned weights.

Filter runs round each key's kept count up to a multiple of ``round_to`` (or the dense width):
channel counts such as 31 or 255 run slower than 32 or 256 although they cost fewer MACs. The
rounding happens here, where the masks are chosen, so every allocator searches over rounded counts,
the constraints are measured on them, and the method's masks already have the widths the shrunk
model gets (masked and shrunk outputs stay equal, and ``shrink`` has nothing to give back).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.budget import Budget, BudgetResult, Subject, dense_costs, measure_budgets
from secateurs.budget.costs import UserCost, resolve_cost
from secateurs.core.granularity import Filter, Granularity
from secateurs.core.masks import MaskSet
from secateurs.core.selection import keep_count, rounded_keep, topk_mask
from secateurs.core.targets import Target
from secateurs.errors import UsageError

__all__ = ["AllocationKey", "AllocationProblem", "build_keys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AllocationKey:
    """One unit of allocation.

    Attributes:
        name: The method's key (target weight name, or a shared group's root weight name).
        units: Number of units (filters / channels / kernels / elements).
        unit_size: Weight elements per unit (over every producer of a shared group).
        module: Name of the (root) module, for observations and tables.
        tie: The shared group, or None for a weight pruned on its own.
    """

    name: str
    units: int
    unit_size: int
    module: str
    tie: Any = None

    @property
    def max_sparsity(self) -> float:
        """The sparsity that keeps exactly one unit (the minimum keep)."""
        return (self.units - 1) / self.units


def build_keys(model: nn.Module, targets: Sequence[Target], granularity: Granularity,
               groups: Sequence[Any] | None = None) -> list[AllocationKey]:
    """The keys a mask method will hold for ``targets`` (shared groups first when ``groups`` are given)."""
    shapes = {n: p.shape for n, p in model.named_parameters()}
    ties: list[Any] = []
    own = list(targets)
    if groups is not None and isinstance(granularity, Filter):
        from secateurs.structured.coupled_masks import plan_shared_groups

        ties, own = plan_shared_groups(groups, targets, shapes)
    keys = [AllocationKey(t.name, t.units, t.width, t.name.rpartition(".")[0], t) for t in ties]
    for t in own:
        if not granularity.supports(t.shape) or granularity.fixed_density is not None:
            raise UsageError(f"{t.name} with shape {tuple(t.shape)} cannot take an allocation at granularity {granularity}")
        keys.append(AllocationKey(t.name, granularity.unit_shape(t.shape).numel(), granularity.unit_size(t.shape),
                                  t.module_name))
    order = {n: i for i, n in enumerate(shapes)}
    return sorted(keys, key=lambda k: order.get(k.name, len(order)))  # forward (definition) order


class AllocationProblem:
    """Everything an allocator needs, with helpers to evaluate a candidate allocation.

    Args:
        model: The dense (or pretrained) model, plain (no parametrizations); it is not modified.
        targets: The weights to prune.
        granularity: The unit of removal.
        example_input: One input of batch 1.
        groups: Channel groups (filter runs that couple channels), else None.
        budgets: Typed budgets; when empty, ``sparsity`` is the constraint.
        sparsity: The overall target sparsity of the pruned weights (used without budgets).
        reward: ``reward(problem, masks, units) -> float``, higher is better (search allocators only).
        options: Allocator options (episodes, minutes, ...).
        run_dir: Where a search may checkpoint; None for no checkpoint.
        seed: Seed of the allocator's randomness.
        calibration: Training images for allocators that analyse the model (``needs_calibration``).
        round_to: Filter granularity: kept counts are rounded up to multiples of this (or the key's
            width); 1 keeps exact counts. Other granularities ignore it.
    """

    def __init__(self, model: nn.Module, targets: Sequence[Target], granularity: Granularity,
                 example_input: Tensor, *, groups: Sequence[Any] | None = None, budgets: Sequence[Budget] = (),
                 sparsity: float | None = None, reward: Callable[..., float] | None = None,
                 options: Mapping[str, Any] | None = None, run_dir: Any = None, seed: int = 0,
                 show_progress: bool = False, calibration: Tensor | None = None, round_to: int = 1) -> None:
        self.model = model
        self.targets = list(targets)
        self.granularity = granularity
        self.example_input = example_input
        self.groups = list(groups) if groups is not None else None
        self.budgets = tuple(budgets)
        self.sparsity = sparsity
        self.reward_fn = reward
        self.options = dict(options or {})
        self.run_dir = run_dir
        self.seed = seed
        self.show_progress = show_progress
        self.calibration = calibration
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise UsageError(f"round_to must be a positive integer, got {round_to!r}")
        self.round_to = round_to if isinstance(granularity, Filter) else 1
        #: The multiple asked for when :meth:`check_meetable` had to drop rounding, else None.
        self.rounding_dropped: int | None = None
        if not self.budgets and sparsity is None:
            raise UsageError("an allocation needs a sparsity or at least one budget")
        self.keys = build_keys(model, self.targets, granularity, self.groups)
        if not self.keys:
            raise UsageError("nothing to allocate: the run prunes no weights")
        self._shapes = {n: p.shape for n, p in model.named_parameters()}
        self._scores = self._unit_scores()
        self._user_cost = any(isinstance(resolve_cost(b.cost, b.option_dict()), UserCost) for b in self.budgets)
        self.dense = dense_costs(self.budgets, Subject(model, None, example_input, groups=self.groups))
        self.evaluations = 0
        #: Constraints must hold at ``limit * margin`` (1 = exactly; the repair step lowers it when a
        #: measurement of the delivered model misses what the search measured).
        self.margin = 1.0

    # ----------------------------------------------------------------- masks
    @torch.no_grad()
    def _unit_scores(self) -> dict[str, Tensor]:
        """Magnitude of every unit (L2 norm; of the group weight's row for a shared group)."""
        params = dict(self.model.named_parameters())
        scores = {}
        for key in self.keys:
            if key.tie is not None:
                weight = key.tie.group_weight(lambda name: params[name].detach())
                scores[key.name] = weight.float().norm(dim=1).cpu()
            else:
                scores[key.name] = self.granularity.reduce(params[key.name].detach().abs().float(), how="l2").cpu()
        return scores

    def rescore_(self, model: nn.Module) -> None:
        """Rank units by ``model``'s weights from now on (the repair step ranks the trained weights)."""
        original, self.model = self.model, model
        try:
            self._scores = self._unit_scores()
        finally:
            self.model = original

    def sparsities_of(self, masks: MaskSet) -> dict[str, float]:
        """Per-key sparsity of a mask set over the targets (a shared group: its root's filter mask)."""
        out = {}
        for key in self.keys:
            if key.tie is None:
                out[key.name] = 1.0 - int(masks[key.name].mask.sum()) / key.units
                continue
            member = key.tie.producers[0]
            unit_of = torch.tensor(member.unit_of, dtype=torch.long)
            kept = unit_of[masks[member.param].mask.reshape(-1) & (unit_of >= 0)].unique().numel()
            out[key.name] = 1.0 - kept / key.units
        return out

    def unit_scores(self, key: str) -> Tensor:
        """The magnitude score of each unit of ``key`` (a copy)."""
        return self._scores[key].clone()

    def keep_counts(self, sparsities: Mapping[str, float]) -> dict[str, int]:
        """Units kept per key, never fewer than one, rounded up to multiples of ``round_to``."""
        return {k.name: rounded_keep(keep_count(k.units, float(sparsities[k.name])), k.units, self.round_to)
                for k in self.keys}

    def exact(self, sparsities: Mapping[str, float]) -> dict[str, float]:
        """The sparsities of the counts actually kept (rounding included): a method given these keeps
        exactly :meth:`keep_counts` units of each key (``keep_count(n, 1 - k / n) == k``)."""
        counts = self.keep_counts(sparsities)
        return {k.name: 1.0 - counts[k.name] / k.units for k in self.keys}

    def unit_masks(self, sparsities: Mapping[str, float]) -> dict[str, Tensor]:
        """Boolean unit masks per key: the largest-magnitude units at each key's keep count."""
        counts = self.keep_counts(sparsities)
        return {k.name: topk_mask(self._scores[k.name], counts[k.name]) for k in self.keys}

    def rounded_units(self, units: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Unit masks chosen unit by unit (a search), each topped up with its key's largest-magnitude
        dropped units until its count is rounded (:meth:`keep_counts`); unchanged when ``round_to`` is 1."""
        if self.round_to == 1:
            return dict(units)
        out = {}
        for key in self.keys:
            unit = units[key.name].to(torch.bool).cpu()
            want = rounded_keep(int(unit.sum()), key.units, self.round_to)
            if want > int(unit.sum()):
                scores = self._scores[key.name].clone()
                scores[unit] = float("inf")  # the chosen units stay; the best of the others join them
                unit = topk_mask(scores, want)
            out[key.name] = unit
        return out

    def masks_from_units(self, units: Mapping[str, Tensor]) -> MaskSet:
        """The MaskSet over the target weights for unit masks per key (shared groups spread onto producers)."""
        masks: dict[str, Tensor] = {}
        for key in self.keys:
            unit = units[key.name].to(torch.bool).cpu()
            if key.tie is None:
                masks[key.name] = unit
            else:
                for member in key.tie.producers:
                    masks[member.param] = member.spread(unit)
        return MaskSet.from_masks(masks, self.granularity, {n: self._shapes[n] for n in masks})

    def masks(self, sparsities: Mapping[str, float]) -> MaskSet:
        """Magnitude masks at ``sparsities``."""
        return self.masks_from_units(self.unit_masks(sparsities))

    @torch.no_grad()
    def apply_(self, model: nn.Module, units: Mapping[str, Tensor]) -> nn.Module:
        """Zero ``model``'s pruned units in place: filters, and for shared groups also the biases and
        normalisation scales/shifts of the removed channels (what removal does)."""
        for key in self.keys:
            unit = units[key.name].to(torch.bool)
            if key.tie is None:
                weight = model.get_parameter(key.name)
                weight.mul_(self.granularity.expand(unit.to(weight.device), weight.shape).to(weight.dtype))
                continue
            for member in key.tie.members:
                param = model.get_parameter(member.param)
                along = member.spread(unit.to(param.device)).to(param.dtype)
                shape = [1] * param.dim()
                shape[member.dim] = -1
                param.mul_(along.reshape(shape))
        return model

    # ----------------------------------------------------------------- constraints
    def subject(self, masks: MaskSet, units: Mapping[str, Tensor] | None = None) -> Subject:
        """What the costs measure for ``masks``. Built-in costs read only the masks and shapes; a
        user cost gets a copy of the model with the pruned units really zeroed."""
        model = self.model
        if self._user_cost and units is not None:
            model = self.apply_(copy.deepcopy(self.model), units)
        return Subject(model, masks, self.example_input, groups=self.groups, round_to=self.round_to)

    def measure(self, sparsities: Mapping[str, float] | None = None, *,
                units: Mapping[str, Tensor] | None = None) -> list[BudgetResult]:
        """Measure the budgets of an allocation (given as sparsities or as unit masks)."""
        units = self.rounded_units(units) if units is not None else self.unit_masks(sparsities or {})
        return measure_budgets(self.budgets, self.subject(self.masks_from_units(units), units), dense=self.dense)

    def density(self, sparsities: Mapping[str, float]) -> float:
        """Fraction of the pruned weights' elements kept (the constraint without budgets)."""
        counts = self.keep_counts(sparsities)
        total = sum(k.units * k.unit_size for k in self.keys)
        return sum(counts[k.name] * k.unit_size for k in self.keys) / total

    def constraint_names(self) -> list[str]:
        """One name per constraint: the budgets, or the overall sparsity."""
        return [b.text for b in self.budgets] if self.budgets else [f"sparsity>={self.sparsity:g}"]

    def usage(self, sparsities: Mapping[str, float] | None = None, *,
              units: Mapping[str, Tensor] | None = None) -> list[tuple[float, float]]:
        """``(achieved, limit)`` per constraint, both in percent of the dense model."""
        if not self.budgets:
            if units is not None:
                units = self.rounded_units(units)
                kept = {k.name: int(units[k.name].sum()) for k in self.keys}
                total = sum(k.units * k.unit_size for k in self.keys)
                density = sum(kept[k.name] * k.unit_size for k in self.keys) / total
            else:
                density = self.density(sparsities or {})
            return [(100.0 * density, 100.0 * (1.0 - float(self.sparsity or 0.0)))]
        results = self.measure(sparsities, units=units)
        return [(100.0 * r.achieved / max(r.dense, 1e-12), 100.0 * r.limit / max(r.dense, 1e-12)) for r in results]

    def feasible(self, sparsities: Mapping[str, float] | None = None, *,
                 units: Mapping[str, Tensor] | None = None) -> bool:
        """Whether every constraint holds."""
        return all(a <= lim * self.margin + 1e-9 for a, lim in self.usage(sparsities, units=units))

    def min_keep(self) -> dict[str, float]:
        """The allocation that keeps one unit per key (the tightest any method can deliver; with
        ``round_to`` the count rounds up to one multiple)."""
        return {k.name: k.max_sparsity for k in self.keys}

    def check_meetable(self) -> None:
        """UsageError (before training) when the budgets cannot be met even at the minimum keep.

        When they can be met with exact counts but not with rounded ones (a small model: LeNet-5's 16
        channels round to 8 or 16), rounding is dropped (``round_to`` becomes 1, ``rounding_dropped``
        the multiple that was asked for): a width that runs faster is not worth a missed budget.
        """
        if not self.budgets:
            return
        if self.round_to > 1 and not all(r.met for r in self.measure(self.min_keep())):
            asked, self.round_to = self.round_to, 1
            if all(r.met for r in self.measure(self.min_keep())):
                log.warning("the budgets cannot be met with channel counts rounded to multiples of %d; "
                            "the run keeps exact counts (round_to 1)", asked)
                self.rounding_dropped = asked
                return
        for result in self.measure(self.min_keep()):
            if not result.met:
                kept = "one unit" if self.round_to == 1 else f"{self.round_to} channels (round_to)"
                raise UsageError(
                    f"budget {result.name} cannot be met: even keeping {kept} per "
                    f"{'channel group' if self.groups else 'layer'} leaves {result.achieved:.6g} "
                    f"(limit {result.limit:.6g}, dense {result.dense:.6g})")

    def reward(self, units: Mapping[str, Tensor]) -> float:
        """The search reward of unit masks (counts one evaluation)."""
        if self.reward_fn is None:
            raise RuntimeError("this problem has no reward (a search allocator needs calibration data)")
        self.evaluations += 1
        return float(self.reward_fn(self, self.masks_from_units(units), units))

    def scaled(self, sparsities: Mapping[str, float], t: float) -> dict[str, float]:
        """Move every key a fraction ``t`` of the way from ``sparsities`` to the minimum keep."""
        return {k.name: float(sparsities[k.name]) + t * (k.max_sparsity - float(sparsities[k.name]))
                for k in self.keys}

    def tighten(self, sparsities: Mapping[str, float], *, steps: int = 12) -> dict[str, float]:
        """The least tightening of ``sparsities`` (toward the minimum keep) that meets the constraints.

        Bisection over the fraction of the way to the minimum keep; returns ``sparsities`` unchanged
        when they already fit, and the minimum keep when nothing less does.
        """
        base = {k.name: float(sparsities[k.name]) for k in self.keys}
        if self.feasible(base):
            return base
        low, high = 0.0, 1.0
        for _ in range(steps):
            mid = 0.5 * (low + high)
            if self.feasible(self.scaled(base, mid)):
                high = mid
            else:
                low = mid
        return self.scaled(base, high)
