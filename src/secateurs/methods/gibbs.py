"""Gibbs pruning: Labach & Valaee, "A Framework for Neural Network Pruning Using Gibbs Distributions"
(arXiv 2006.04981, https://arxiv.org/abs/2006.04981).

Algorithm. Every prunable weight carries a binary spin (keep / prune). At every training step a fresh
mask is drawn from the Gibbs distribution ``p(x) ∝ exp(-β H(x; W))`` of the current weights and the
layer computes with ``W ⊙ mask``; no gradient flows through the mask. The field of weight ``i`` is
``b_i = Q - w_i²``, with ``Q`` the p-quantile of the layer's (mean) squared weights per unit, so the
ground state is magnitude pruning at fraction ``p``. The inverse temperature ``β`` rises once per
epoch on a log-spaced schedule, moving from DropConnect-like noise to that ground state:

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
``c``                      ``coupling`` (default 0.01 kernel, 1.0 filter; unused unstructured)
``β`` range                ``beta_start`` -> ``beta_end`` (default 1 -> 1e4; filter 10^-2.5 -> 1)
annealing length           ``anneal_end``: fraction of the epochs at which ``β`` reaches ``beta_end``
``mcmc_steps``             ``sweeps`` (filter mode, default 50)
=========================  =====================================================================
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
from secateurs.core.schedules import exponential
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


# Reference schedules (spec §1.4): numpy logspace(0, 4) for unstructured/kernel, logspace(-2.5, 0)
# for filters, whose coupling field (c times a half-filter's spin sum) dwarfs the w² fields.
_MODES: dict[type[Granularity], _Mode] = {
    Unstructured: _Mode(_independent, 1.0, 1e4, 0.0),
    NofM: _Mode(_independent, 1.0, 1e4, 0.0),
    Kernel: _Mode(_kernels, 1.0, 1e4, 0.01),
    Filter: _Mode(_filters, 10**-2.5, 1.0, 1.0),
}


@dataclass(frozen=True, kw_only=True)
class GibbsConfig(MethodConfig):
    """Gibbs pruning settings (``None`` = the reference default of the granularity).

    Attributes:
        coupling: Ising coupling ``c`` (kernel: inside a kernel; filter: between the input-channel
            halves of a filter); ignored by unstructured and N:M.
        beta_start: inverse temperature of the first epoch.
        beta_end: final inverse temperature, reached at ``anneal_end`` of the epochs and kept after.
        anneal_end: fraction of the epoch budget at which ``beta_end`` is reached (the reference's
            128 of 200 epochs: 127/199).
        sweeps: chromatic Gibbs sweeps per training step (filter granularity).
    """

    coupling: float | None = field(default=None, metadata={"help": "Ising coupling c (kernel 0.01, filter 1.0)"})
    beta_start: float | None = field(default=None, metadata={"help": "first-epoch inverse temperature"})
    beta_end: float | None = field(default=None, metadata={"help": "final inverse temperature"})
    anneal_end: float = field(default=127 / 199, metadata={"help": "fraction of epochs to reach beta_end"})
    sweeps: int = field(default=50, metadata={"help": "Gibbs sweeps per step (filter granularity)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.granularity) not in _MODES:
            raise UsageError(
                f"gibbs does not support granularity {self.granularity}; use unstructured, kernel, filter or N:M"
            )
        if self.coupling is not None and not self.coupling >= 0.0:
            raise UsageError(f"coupling must be >= 0 (ferromagnetic), got {self.coupling}")
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise UsageError(f"{name} must be positive, got {value}")
        if not 0.0 < self.anneal_end <= 1.0:
            raise UsageError(f"anneal_end must lie in (0, 1], got {self.anneal_end}")
        if self.sweeps < 1:
            raise UsageError(f"sweeps must be at least 1, got {self.sweeps}")

    @property
    def mode(self) -> _Mode:
        """Sampler and reference defaults of the configured granularity."""
        return _MODES[type(self.granularity)]

    @property
    def resolved_coupling(self) -> float:
        """``coupling``, or the granularity's default."""
        return self.mode.coupling if self.coupling is None else float(self.coupling)

    @property
    def beta_range(self) -> tuple[float, float]:
        """``(beta_start, beta_end)`` with the granularity's defaults filled in."""
        start = self.mode.beta_start if self.beta_start is None else float(self.beta_start)
        end = self.mode.beta_end if self.beta_end is None else float(self.beta_end)
        return start, end


class GibbsMask(MaskParametrization):
    """A weight's Gibbs mask: sampled per training forward pass, deterministic ground state in eval.

    Buffers: ``beta`` (pushed per epoch by the method), ``threshold`` (global scope: the shared
    ``Q``, pushed by the method) and ``keep_units`` (units kept by the hard mask; per-tensor and
    global scopes).
    """

    beta: Tensor
    threshold: Tensor
    keep_units: Tensor

    def __init__(self, config: GibbsConfig, weight_shape: torch.Size, generator: torch.Generator) -> None:
        super().__init__(config.granularity, weight_shape)
        self.sparsity = float(config.sparsity or 0.0)
        self.scope = config.scope
        self.coupling = config.resolved_coupling
        self.sweeps = config.sweeps
        self.sampler = config.mode.sample
        self.generator = generator
        units = self.granularity.unit_shape(weight_shape).numel()
        device = generator.device
        self.register_buffer("beta", torch.tensor(config.beta_range[0], device=device), persistent=False)
        self.register_buffer("threshold", torch.tensor(float("nan"), device=device), persistent=False)
        self.register_buffer("keep_units", torch.tensor(keep_count(units, self.sparsity), device=device))
        self.last_keep: Tensor | None = None  # the latest training sample, for diagnostics

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
        return self.sampler(squared, q, self.beta, self.coupling, self.sweeps, self.generator)

    @torch.no_grad()
    def hard_mask(self, weight: Tensor) -> Tensor:
        scores = self.unit_scores(weight)
        if self.scope == "group":
            return select_per_group(scores, self.granularity, self.sparsity)
        return topk_mask(scores, int(self.keep_units))

    def unit_mask(self, weight: Tensor) -> Tensor:
        # Only the eval path goes through here; training masks are weight-shaped (see forward).
        return self.hard_mask(weight)

    def forward(self, weight: Tensor) -> Tensor:
        if not self.training:
            return super().forward(weight)
        keep = self.sample(weight)
        self.last_keep = keep
        return weight * keep.to(weight.dtype)

    def channel_gate(self, weight: Tensor) -> Tensor:
        # A coupled group's sample is drawn over its group weight; training masks are weight-shaped.
        if not self.training:
            return self.hard_mask(weight).to(weight.dtype)
        keep = self.sample(weight)
        self.last_keep = keep
        return keep.to(weight.dtype)


@METHODS.register("gibbs", description="masks sampled from an annealed Gibbs distribution (Labach & Valaee)")
class GibbsPruning(PruningMethod):
    """Gibbs pruning at unstructured, kernel, filter or N:M granularity."""

    Config = GibbsConfig
    samples_masks = True
    config: GibbsConfig

    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        return GibbsMask(self.config, target.shape, self.generator)

    def attach(
        self, model: torch.nn.Module, targets: list[Target] | None = None, horizon: Horizon | None = None,
        **kwargs: Any,
    ) -> None:
        super().attach(model, targets, horizon, **kwargs)
        self._refresh_global()  # the shared threshold is valid before the first step

    def beta_at(self, epoch: int) -> float:
        """Inverse temperature of ``epoch``: log-spaced up to ``anneal_end`` of the budget, then flat."""
        start, end = self.config.beta_range
        last = round(self.config.anneal_end * (self.horizon.epochs - 1))
        return end if epoch >= last else exponential(0, last, start, end)(epoch)

    def _masks(self) -> list[GibbsMask]:
        return [p for p in self.parametrizations.values() if isinstance(p, GibbsMask)]

    def on_epoch_start(self, epoch: int) -> None:
        beta = self.beta_at(epoch)
        for p in self._masks():
            p.beta.fill_(beta)
        self._refresh_global()

    def on_step(self, step: int) -> None:
        self._refresh_global()

    @torch.no_grad()
    def _refresh_global(self) -> None:
        """Global scope: one ranking across layers sets each layer's kept count and the shared ``Q``."""
        if self.config.scope != "global" or self.model is None:
            return
        gran = self.config.granularity
        scores, sizes, masks = {}, {}, {}
        for name, p, weight in self.weights():
            assert isinstance(p, GibbsMask)
            scores[name], sizes[name], masks[name] = p.unit_scores(weight), gran.unit_size(weight.shape), p
        keep = select_global(scores, sizes, float(self.config.sparsity or 0.0))
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
        logs = {"gibbs_beta": self.beta_at(epoch)}
        sampled = self._sampled_sparsity()
        if sampled is not None:
            logs["gibbs_sampled_sparsity"] = sampled
        return logs

    @torch.no_grad()
    def report_extras(self) -> dict[str, Any]:
        """Final β, and how far the last training sample was from the deterministic final mask."""
        extras: dict[str, Any] = {"gibbs_final_beta": self.beta_at(self.horizon.epochs - 1)}
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
