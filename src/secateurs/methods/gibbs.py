"""Gibbs pruning: Labach & Valaee, "A Framework for Neural Network Pruning Using Gibbs Distributions"
(arXiv 2006.04981, https://arxiv.org/abs/2006.04981).

Algorithm. Every prunable weight carries a binary spin (keep / prune). At every training step a fresh
mask is drawn from the Gibbs distribution ``p(x) ∝ exp(-β H(x; W))`` of the current weights and the
layer computes with ``W ⊙ mask``; no gradient flows through the mask. The field of weight ``i`` is
``b_i = Q - w_i²``, with ``Q`` the p-quantile of the layer's (mean) squared weights per unit, so the
ground state is magnitude pruning at fraction ``p``. The inverse temperature ``β`` rises on a
log-spaced schedule (per step by default, per epoch in the paper), moving from DropConnect-like noise
to that ground state; by default ``β`` multiplies fields measured in units of each layer's mean
squared weight, and once the anneal ends the ground-state mask is fixed for the rest of the run:

- ``unstructured``: independent spins, ``P(keep_i) = σ(β (w_i² - Q))`` (``N:M``: ``Q`` per block);
- ``kernel``: ferromagnetic coupling ``c`` inside each 2-D kernel, sampled exactly by a dynamic
  programme over the kept count (any kernel size; see :mod:`secateurs.core.gibbs_samplers`);
- ``filter``: bipartite coupling between the two input-channel halves of each filter, sampled by
  ``sweeps`` chromatic Gibbs sweeps, vectorised over the filters.

Evaluation and :meth:`GibbsPruning.hard_masks` use the deterministic ground-state mask: exact top-k
of the units' mean squared weights (tie-safe, :mod:`secateurs.core.selection`), so the pruned
fraction is exact and eval-mode forward passes are deterministic.

Symbols (paper / reference code -> config field):

=========================  =====================================================================
``p``                      ``sparsity`` (per layer; ``scope="global"``: one threshold for all)
``c``                      ``coupling`` (absolute: 0.01 kernel, 1.0 filter; unused unstructured)
``β`` range                ``beta_start`` -> ``beta_end`` (absolute: 1 -> 1e4; filter 10^-2.5 -> 1)
annealing length           ``anneal_end``: fraction of the budget at which ``β`` reaches ``beta_end``
(per-epoch annealer)       ``beta_every="epoch"`` (default ``"step"``)
(absolute fields)          ``beta_scale="absolute"`` (default ``"layer"``)
(never fixed)              ``fix_mask=False`` (default: fixed when the anneal ends)
(target from step 0)       ``ramp_end`` (default with ``--from``: the pruned share ramps up as gmp's)
``mcmc_steps``             ``sweeps`` (filter mode, default 50)
=========================  =====================================================================

The paper's behaviour is ``beta_every=epoch beta_scale=absolute anneal_end=0.6382 fix_mask=false
ramp_end=0``
(``docs/methods/gibbs.md`` lists why each default differs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from secateurs.core.gibbs_samplers import (
    linear_quantile,
    sample_filter_mask,
    sample_independent_spins,
    sample_kernel_mask,
)
from secateurs.core.granularity import Filter, Granularity, Kernel, NofM, Unstructured
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import MaskParametrization
from secateurs.core.schedules import exponential, polynomial
from secateurs.core.selection import keep_count, select_global, select_per_group, topk_mask
from secateurs.core.targets import Target
from secateurs.errors import UsageError
from secateurs.methods.base import Horizon, MethodConfig, PruningMethod
from secateurs.methods.registry import METHODS

__all__ = ["GibbsConfig", "GibbsMask", "GibbsPruning"]

#: ``(squared weights, unit threshold Q, β, coupling, sweeps, generator) -> boolean keep mask``.
Sampler = Callable[[Tensor, Tensor, Tensor, float, int, torch.Generator], Tensor]


@dataclass(frozen=True)
class _Mode:
    """How one granularity samples its training masks, with the reference's defaults for it."""

    sample: Sampler
    beta_start: float
    beta_end: float
    coupling: float


def _independent(squared: Tensor, q: Tensor, beta: Tensor, c: float, sweeps: int, g: torch.Generator) -> Tensor:
    return sample_independent_spins(q - squared, beta, g)


def _kernels(squared: Tensor, q: Tensor, beta: Tensor, c: float, sweeps: int, g: torch.Generator) -> Tensor:
    return sample_kernel_mask(squared, q, beta, c, g)


def _filters(squared: Tensor, q: Tensor, beta: Tensor, c: float, sweeps: int, g: torch.Generator) -> Tensor:
    return sample_filter_mask(squared, q, beta, c, sweeps, g)


def _filters_drawn_start(squared: Tensor, q: Tensor, beta: Tensor, c: float, sweeps: int, g: torch.Generator) -> Tensor:
    return sample_filter_mask(squared, q, beta, c, sweeps, g, draw_start=True)


# Reference schedules (spec §1.4): numpy logspace(0, 4) for unstructured/kernel, logspace(-2.5, 0)
# for filters, whose coupling field (c times a half-filter's spin sum) dwarfs the w² fields.
_MODES: dict[type[Granularity], _Mode] = {
    Unstructured: _Mode(_independent, 1.0, 1e4, 0.0),
    NofM: _Mode(_independent, 1.0, 1e4, 0.0),
    Kernel: _Mode(_kernels, 1.0, 1e4, 0.01),
    Filter: _Mode(_filters, 10**-2.5, 1.0, 1.0),
}

BETA_EVERY = ("step", "epoch")
BETA_SCALES = ("layer", "absolute")

#: ``beta_scale="layer"``: fields are in units of the layer's mean squared weight, so one range means
#: the same in every layer. At β = 1 a weight at the layer's mean square below the threshold keeps
#: with σ(-1) = 0.27: already informative, not a 50 % drop-connect; at β = 1e3 only weights within
#: about 0.5 % of that scale of the threshold still flip (the ground state, for practical purposes).
LAYER_BETA = (1.0, 1e3)
#: The first β when training starts from a trained model (``prune --from``): near the ground state,
#: with noise only around the threshold, so the trained weights are not hit by a random mask.
LAYER_BETA_PRETRAINED = 10.0
#: ``beta_scale="layer"`` couplings: the pull of a fully aligned neighbourhood (the other colour of a
#: filter, the rest of a kernel) on one spin, in units of the layer's mean squared weight. Chosen so
#: that samples are whole kernels / filters and reach the ground state at the final β (measured on
#: random 3x3 conv weights: kernel c = 1 left partial kernels that never reached it, filter c = 1
#: sampled weights one by one).
LAYER_COUPLING: dict[type[Granularity], float] = {Kernel: 4.0, Filter: 16.0}
#: ``ramp_end`` when pruning a trained model (``--from``) and the option is unset: the share of the run
#: over which the quantile target rises from 0 to the sparsity (chosen on the validation split).
PRETRAINED_RAMP_END = 0.5


@dataclass(frozen=True, kw_only=True)
class GibbsConfig(MethodConfig):
    """Gibbs pruning settings (``None`` = the reference default of the granularity).

    Attributes:
        coupling: Ising coupling ``c`` (kernel: inside a kernel; filter: between the input-channel
            halves of a filter); ignored by unstructured and N:M. With ``beta_scale="layer"`` it is
            the pull of a fully aligned neighbourhood on one spin in units of the layer's mean
            squared weight (default 4 kernel, 16 filter); with ``"absolute"`` the paper's ``c``
            (0.01 kernel, 1 filter).
        beta_start: inverse temperature at the start (default: 1, or 10 from a trained model, with
            ``beta_scale="layer"``; the reference's 1 or 10^-2.5 with ``"absolute"``).
        beta_end: final inverse temperature, reached at ``anneal_end`` of the budget and kept after
            (default 1e3 with ``"layer"``; the reference's 1e4 or 1 with ``"absolute"``).
        anneal_end: fraction of the budget at which ``beta_end`` is reached (the reference's 128 of 200
            epochs is 127/199; default 0.75, so that the last quarter fine-tunes at the fixed mask).
        beta_every: ``"step"`` (β rises at every optimizer step) or ``"epoch"`` (the reference: a
            3-epoch run would see only three values of β).
        beta_scale: ``"layer"``: the fields ``w² - Q`` are divided by the layer's mean squared weight
            (β means the same in every layer, whatever its scale); ``"absolute"``: the paper's fields.
        fix_mask: when the anneal ends, fix the ground-state mask (exact top-k of the units' mean
            squared weights at that moment) and train the rest of the run at it; False keeps
            sampling at ``beta_end`` (the reference).
        sweeps: chromatic Gibbs sweeps per training step (filter granularity).
        ramp_end: the share of the run over which the pruned fraction ``p`` (the quantile of the
            fields and the ground state's count) rises from 0 to each layer's target on gmp's cubic
            schedule; 0 = the paper (the target from the first step); None = 0.5 when pruning a
            trained model (``--from``: the full target from the first step is a one-shot cut of the
            trained network), 0 from scratch. Must end by ``anneal_end`` with ``fix_mask``.
    """

    coupling: float | None = field(default=None, metadata={"help": "Ising coupling c (kernel/filter)", "ge": 0.0})
    beta_start: float | None = field(default=None, metadata={"help": "first inverse temperature", "gt": 0.0})
    beta_end: float | None = field(default=None, metadata={"help": "final inverse temperature", "gt": 0.0})
    anneal_end: float = field(default=0.75, metadata={
        "help": "fraction of the budget to reach beta_end", "gt": 0.0, "le": 1.0})
    beta_every: str = field(default="step", metadata={"help": "step or epoch (reference)", "choices": BETA_EVERY})
    beta_scale: str = field(default="layer", metadata={
        "help": "layer (fields / mean w²) or absolute (reference)", "choices": BETA_SCALES})
    fix_mask: bool = field(default=True, metadata={"help": "fix the mask when the anneal ends"})
    sweeps: int = field(default=50, metadata={"help": "Gibbs sweeps per step (filter granularity)", "ge": 1})
    ramp_end: float | None = field(default=None, metadata={
        "help": "share of the run over which p rises from 0 (0: paper; default 0.5 with --from)", "ge": 0.0, "le": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ramp_end is not None and self.fix_mask and self.ramp_end > self.anneal_end:
            raise UsageError(f"ramp_end {self.ramp_end} comes after anneal_end {self.anneal_end}: the mask "
                             f"would be fixed before the pruned fraction reaches the target")
        if type(self.granularity) not in _MODES:
            raise UsageError(
                f"gibbs does not support granularity {self.granularity}; use unstructured, kernel, filter or N:M"
            )

    @property
    def mode(self) -> _Mode:
        """Sampler and reference defaults of the configured granularity."""
        return _MODES[type(self.granularity)]

    @property
    def relative(self) -> bool:
        """Whether fields are measured in units of each layer's mean squared weight."""
        return self.beta_scale == "layer"

    @property
    def resolved_coupling(self) -> float:
        """``coupling``, or the default of the granularity and ``beta_scale``."""
        if self.coupling is not None:
            return float(self.coupling)
        if self.relative:
            return LAYER_COUPLING.get(type(self.granularity), 0.0)
        return self.mode.coupling

    def beta_range_for(self, pretrained: bool = False) -> tuple[float, float]:
        """``(beta_start, beta_end)`` with the defaults of the granularity, scale and start filled in."""
        if self.relative:
            default_start = LAYER_BETA_PRETRAINED if pretrained else LAYER_BETA[0]
            default_end = LAYER_BETA[1]
        else:
            default_start, default_end = self.mode.beta_start, self.mode.beta_end
        start = default_start if self.beta_start is None else float(self.beta_start)
        end = default_end if self.beta_end is None else float(self.beta_end)
        return start, end

    @property
    def beta_range(self) -> tuple[float, float]:
        """``(beta_start, beta_end)`` when training from scratch."""
        return self.beta_range_for(pretrained=False)


class GibbsMask(MaskParametrization):
    """A weight's Gibbs mask: sampled per training forward pass, deterministic ground state in eval.

    Buffers: ``beta`` (pushed per step by the method), ``threshold`` (global scope: the shared
    ``Q``, pushed by the method), ``keep_units`` (units kept by the hard mask; per-tensor and
    global scopes), ``frozen`` and ``fixed`` (whether the mask is fixed, and the fixed unit mask).
    """

    beta: Tensor
    threshold: Tensor
    keep_units: Tensor
    frozen: Tensor
    fixed: Tensor

    def __init__(self, config: GibbsConfig, weight_shape: torch.Size, generator: torch.Generator,
                 beta: float = 1.0, sparsity: float | None = None) -> None:
        super().__init__(config.granularity, weight_shape)
        #: The final pruned fraction (an allocation's, else the config's); :attr:`sparsity` is the
        #: fraction of the current step, below it while the method's ramp runs (:meth:`set_sparsity`).
        self.target_sparsity = float(config.sparsity or 0.0) if sparsity is None else sparsity
        self.sparsity = self.target_sparsity
        self.scope = config.scope
        self.relative = config.relative
        self.coupling = config.resolved_coupling
        if self.relative:
            self.coupling /= _neighbours(config.granularity, weight_shape)
        self.sweeps = config.sweeps
        self.sampler = config.mode.sample
        if self.relative and isinstance(config.granularity, Filter):
            # In layer units each filter's own start is drawn (see sample_filter_mask): with a coupling
            # strong enough to keep filters whole, the chain would otherwise never leave its first guess.
            self.sampler = _filters_drawn_start
        self.generator = generator
        unit_shape = self.granularity.unit_shape(weight_shape)
        device = generator.device
        self.register_buffer("beta", torch.tensor(float(beta), device=device), persistent=False)
        self.register_buffer("threshold", torch.tensor(float("nan"), device=device), persistent=False)
        self.register_buffer("keep_units", torch.tensor(keep_count(unit_shape.numel(), self.sparsity), device=device))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool, device=device))
        self.register_buffer("fixed", torch.ones(unit_shape, dtype=torch.bool, device=device))
        self.last_keep: Tensor | None = None  # the latest training sample, for diagnostics

    def set_sparsity(self, sparsity: float) -> None:
        """Prune the fraction ``sparsity`` from now on (the quantile ``Q`` and the ground state's count)."""
        self.sparsity = float(sparsity)
        self.keep_units.fill_(keep_count(self.fixed.numel(), self.sparsity))

    def unit_scores(self, weight: Tensor) -> Tensor:
        """Mean squared weight of each unit (the energy's per-unit magnitude)."""
        return self.granularity.reduce(weight.detach().float().square(), how="mean")

    def unit_threshold(self, unit_scores: Tensor) -> Tensor:
        """``Q``: the p-quantile of the unit scores over the scope (scalar, or per unit for groups)."""
        if self.scope == "global":
            return self.threshold
        if self.scope == "group":
            grouped = self.granularity.group_view(unit_scores)
            q = linear_quantile(grouped, self.sparsity, dim=1).expand_as(grouped)
            return self.granularity.from_groups(q, unit_scores.shape)
        return linear_quantile(unit_scores.reshape(-1), self.sparsity).reshape(())

    @torch.no_grad()
    def sample(self, weight: Tensor) -> Tensor:
        """Draw a boolean keep mask of the weight's shape from the current Gibbs distribution."""
        squared = weight.detach().float().square()
        q = self.unit_threshold(self.granularity.reduce(squared, how="mean"))
        if self.relative:
            # Dividing w² and Q by the layer's mean square divides every field by it: the same β then
            # means the same sharpness in a layer of small weights as in one of large weights.
            scale = squared.mean().clamp(min=torch.finfo(torch.float32).tiny)
            squared, q = squared / scale, q / scale
        return self.sampler(squared, q, self.beta, self.coupling, self.sweeps, self.generator)

    @torch.no_grad()
    def ground_state(self, weight: Tensor) -> Tensor:
        """The deterministic mask of the current weights: exact top-k of the units' mean squares."""
        scores = self.unit_scores(weight)
        if self.scope == "group":
            return select_per_group(scores, self.granularity, self.sparsity)
        return topk_mask(scores, int(self.keep_units))

    @torch.no_grad()
    def hard_mask(self, weight: Tensor) -> Tensor:
        if bool(self.frozen):
            return self.fixed.clone()
        return self.ground_state(weight)

    @torch.no_grad()
    def fix_(self, weight: Tensor) -> None:
        """Fix the mask at the current ground state; training then uses it instead of samples."""
        self.fixed.copy_(self.ground_state(weight))
        self.frozen.fill_(True)

    def unit_mask(self, weight: Tensor) -> Tensor:
        # The eval path, and training once the mask is fixed; samples are weight-shaped (see forward).
        return self.hard_mask(weight)

    def _training_keep(self, weight: Tensor) -> Tensor | None:
        """A fresh sample while annealing; None once the mask is fixed (the unit mask applies)."""
        if bool(self.frozen):
            return None
        keep = self.sample(weight)
        self.last_keep = keep
        return keep

    def forward(self, weight: Tensor) -> Tensor:
        keep = self._training_keep(weight) if self.training else None
        if keep is None:
            return super().forward(weight)
        return weight * keep.to(weight.dtype)

    def channel_gate(self, weight: Tensor) -> Tensor:
        # A coupled group's sample is drawn over its group weight; training masks are weight-shaped.
        keep = self._training_keep(weight) if self.training else None
        if keep is None:
            return self.hard_mask(weight).to(weight.dtype)
        return keep.to(weight.dtype)


def _neighbours(granularity: Granularity, weight_shape: torch.Size) -> float:
    """Spins that pull on one spin (``beta_scale="layer"`` divides the coupling by it).

    Filter: the other colour (half the weights of a filter); kernel: twice the rest of the kernel
    (the kernel energy ``-c (Σx)²`` pulls each spin by ``2c`` per aligned neighbour).
    """
    per_filter = max(1, weight_shape[1:].numel())
    if isinstance(granularity, Filter):
        return float(max(1, per_filter // 2))
    if isinstance(granularity, Kernel):
        return float(max(1, 2 * (weight_shape[2:].numel() - 1)))
    return 1.0


@METHODS.register("gibbs", description="masks sampled from an annealed Gibbs distribution (Labach & Valaee)")
class GibbsPruning(PruningMethod):
    """Gibbs pruning at unstructured, kernel, filter or N:M granularity."""

    Config = GibbsConfig
    granularities = (Unstructured, Kernel, Filter, NofM)
    samples_masks = True
    config: GibbsConfig

    def __init__(self, config: GibbsConfig) -> None:
        super().__init__(config)
        self._step = 0  # the step of the latest _advance (the global scope's point on the ramp)

    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        mask = GibbsMask(self.config, target.shape, self.generator, beta=self.beta_for_step(0),
                         sparsity=self.sparsity_of(target.name))
        mask.set_sparsity(self.sparsity_at(0, mask.target_sparsity))
        return mask

    @property
    def ramp_steps(self) -> int:
        """Steps over which the pruned fraction rises to its target (0: the target from the first step)."""
        share = self.config.ramp_end
        if share is None:
            share = min(PRETRAINED_RAMP_END, self.config.anneal_end) if self.horizon.pretrained else 0.0
        return round(share * self.horizon.total_steps)

    def sparsity_at(self, step: int, target: float) -> float:
        """The pruned fraction after ``step`` steps on the way to ``target``: gmp's cubic ramp."""
        ramp = self.ramp_steps
        if ramp == 0 or step >= ramp:
            return target
        return polynomial(0, ramp, 0.0, target, 3.0)(step)

    def attach(
        self, model: torch.nn.Module, targets: list[Target] | None = None, horizon: Horizon | None = None,
        **kwargs: Any,
    ) -> None:
        self._step = 0
        super().attach(model, targets, horizon, **kwargs)
        self._refresh_global()  # the shared threshold is valid before the first step

    @property
    def beta_range(self) -> tuple[float, float]:
        """``(beta_start, beta_end)`` of this run (the start depends on ``horizon.pretrained``)."""
        return self.config.beta_range_for(self.horizon.pretrained)

    def beta_at(self, epoch: int) -> float:
        """Per-epoch annealer: log-spaced up to epoch ``round(anneal_end (E - 1))``, then flat."""
        start, end = self.beta_range
        last = round(self.config.anneal_end * (self.horizon.epochs - 1))
        return end if epoch >= last else exponential(0, last, start, end)(epoch)

    @property
    def anneal_steps(self) -> int:
        """The step count after which β stays at ``beta_end`` (and the mask is fixed, with ``fix_mask``)."""
        if self.config.beta_every == "epoch":
            return round(self.config.anneal_end * (self.horizon.epochs - 1)) * self.horizon.steps_per_epoch
        return max(1, round(self.config.anneal_end * self.horizon.total_steps))

    def beta_for_step(self, step: int) -> float:
        """β of the optimizer step that follows ``step`` steps (a pure function of the step).

        ``beta_every="step"``: log-spaced from ``beta_start`` (step 0) to ``beta_end`` at
        :attr:`anneal_steps`, flat after; ``"epoch"``: :meth:`beta_at` of the step's epoch.
        """
        if self.config.beta_every == "epoch":
            return self.beta_at(step // self.horizon.steps_per_epoch)
        start, end = self.beta_range
        return exponential(0, self.anneal_steps, start, end)(step)

    def _masks(self) -> list[GibbsMask]:
        return [p for p in self.parametrizations.values() if isinstance(p, GibbsMask)]

    def _advance(self, step: int) -> None:
        """Push β for the next step; fix the masks once the anneal is over (``fix_mask``)."""
        beta = self.beta_for_step(step)
        self._step = step
        for p in self._masks():
            p.beta.fill_(beta)
            p.set_sparsity(self.sparsity_at(step, p.target_sparsity))
        if self.config.fix_mask and step >= self.anneal_steps and not self.fixed:
            self._refresh_global()
            for _, p, weight in self.weights():
                assert isinstance(p, GibbsMask)
                p.fix_(weight)
        self._refresh_global()

    @property
    def fixed(self) -> bool:
        """Whether the masks are fixed (the anneal is over, with ``fix_mask``)."""
        return any(bool(p.frozen) for p in self._masks())

    def on_epoch_start(self, epoch: int) -> None:
        self._advance(epoch * self.horizon.steps_per_epoch)

    def on_step(self, step: int) -> None:
        self._advance(step)

    @torch.no_grad()
    def _refresh_global(self) -> None:
        """Global scope: one ranking across layers sets each layer's kept count and the shared ``Q``."""
        if self.config.scope != "global" or self.model is None or self.fixed:
            return
        gran = self.config.granularity
        scores, sizes, masks = {}, {}, {}
        for name, p, weight in self.weights():
            assert isinstance(p, GibbsMask)
            scores[name], sizes[name], masks[name] = p.unit_scores(weight), gran.unit_size(weight.shape), p
        keep = select_global(scores, sizes, self.sparsity_at(self._step, float(self.config.sparsity or 0.0)))
        inf = float("inf")
        lowest_kept = torch.stack([s.masked_fill(~keep[n], inf).amin() for n, s in scores.items()]).amin()
        highest_removed = torch.stack([s.masked_fill(keep[n], -inf).amax() for n, s in scores.items()]).amax()
        # Q sits between the last removed and the first kept unit (falls back to either when one is empty).
        q = torch.where(torch.isinf(highest_removed), lowest_kept, torch.where(
            torch.isinf(lowest_kept), highest_removed, 0.5 * (lowest_kept + highest_removed)))
        for name, p in masks.items():
            p.keep_units.copy_(keep[name].sum())
            p.threshold.copy_(q)

    def hard_masks(self) -> MaskSet:
        self._refresh_global()
        return super().hard_masks()

    def _sampled_sparsity(self) -> float | None:
        samples = [p.last_keep for p in self._masks() if p.last_keep is not None]
        if not samples:
            return None
        total = sum(s.numel() for s in samples)
        return 1.0 - float(sum(s.sum() for s in samples)) / total

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        logs = {"gibbs_beta": self.beta_for_step((epoch + 1) * self.horizon.steps_per_epoch - 1),
                "gibbs_fixed": float(self.fixed)}
        sampled = self._sampled_sparsity()
        if sampled is not None:
            logs["gibbs_sampled_sparsity"] = sampled
        return logs

    @torch.no_grad()
    def report_extras(self) -> dict[str, Any]:
        """Final β, and how far the last training sample was from the deterministic final mask."""
        extras: dict[str, Any] = {"gibbs_final_beta": self.beta_for_step(self.horizon.total_steps - 1),
                                  "gibbs_fixed_at_step": self.anneal_steps if self.fixed else None}
        sampled = self._sampled_sparsity()
        if sampled is not None:
            self._refresh_global()  # the hard masks below use the current global quota
            agree = total = 0
            for _, p, weight in self.weights():
                assert isinstance(p, GibbsMask)
                if p.last_keep is not None:
                    final = p.granularity.expand(p.hard_mask(weight), weight.shape)
                    agree += int((p.last_keep == final).sum())
                    total += p.last_keep.numel()
            extras["gibbs_sampled_sparsity"] = sampled
            extras["gibbs_sample_agreement"] = agree / max(total, 1)
        return extras

    def extra_state(self) -> dict[str, Any]:
        # The last training sample feeds the report (sampled sparsity, agreement): a run resumed after
        # its final checkpoint must report what the uninterrupted run reported.
        return {"last_keep": {name: p.last_keep for name, p in self.parametrizations.items()
                              if isinstance(p, GibbsMask) and p.last_keep is not None}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name, keep in state.get("last_keep", {}).items():
            p = self.parametrizations.get(name)
            if isinstance(p, GibbsMask):
                p.last_keep = keep
