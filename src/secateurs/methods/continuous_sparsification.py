"""Continuous Sparsification (Savarese, Silva & Maire, NeurIPS 2020; arXiv 1912.04427).

Every target weight gets a real mask score ``s`` (one per unit of the granularity), initialised to
``s0``. Training minimises ``L(f(x; w ⊙ σ(βs)/σ(s0))) + λ Σ σ(βs)/σ(s0)`` over the weights *and* the
scores, with the inverse temperature β growing exponentially from 1 to ``beta_final`` within each
round, so the deterministic soft gate approaches the step function ``1[s > 0]``. Between rounds the
scores are reset with ``s <- min(β_T s, s0)``: removed units stay removed, survivors compete again.

Hardening (not in the paper): the last ``harden_fraction`` of the final round raises β beyond β_T
to the value fitted to the scores, at which every gate is below 0.01 or above 0.99, so the network
the search ends with is the one the fix keeps (no one-shot cut). With ``--from`` the scores start
from the trained weights' magnitudes (``score_init``).

Two modes, each a sequence of phases (a fresh optimizer and learning-rate schedule per phase):

- ``prune``: ``rounds`` search rounds, then fine-tuning of the trained weights at the fixed hard mask
  (``finetune_fraction`` of the budget, at the end of the last round's phase; 0 skips it).
- ``ticket`` (the paper's ticket search): the weights and BatchNorm buffers are snapshotted at
  ``rewind_epoch`` of the first round; after ``rounds`` search rounds the mask is fixed, the
  snapshot is restored and the sparse ticket is trained with a fresh optimizer (mask frozen).

Sparsity: with ``free=True`` the final mask is the sign of the scores (the paper: sparsity emerges
from ``s0`` and ``λ``). With a target (the default), the final mask is an exact top-k over the
scores (per tensor, per group or global, following ``scope``), and with ``target_method="adapt"``
λ is adapted during the search so that the natural sparsity (the fraction of ``s <= 0``) tracks a
ramp towards the target and the top-k only corrects a small residual. See
``docs/methods/continuous-sparsification.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured, parse_granularity
from secateurs.core.parametrize import MaskParametrization
from secateurs.core.selection import select
from secateurs.core.targets import Target
from secateurs.errors import UsageError
from secateurs.methods._cs_gate import CSGate, beta_at, pruned_fraction, ramp
from secateurs.methods.base import MethodConfig, Phase, PruningMethod
from secateurs.methods.registry import METHODS
from secateurs.methods.rewind import rewind_, round_sparsity, snapshot
from secateurs.methods.ticket import TicketSearch

__all__ = ["CSConfig", "CSGate", "ContinuousSparsification"]

log = logging.getLogger(__name__)

MODES = ("prune", "ticket")
RESETS = ("paper", "code")
TARGET_METHODS = ("adapt", "topk")
LAM_MIN, LAM_MAX = 1e-12, 1.0
#: The paper's rewind point: epoch 2 of an 85-epoch round.
PAPER_REWIND = 2.0 / 85.0
SCORE_INITS = ("auto", "constant", "magnitude")
#: A gate is hard when σ(βs) is below 0.01 or above 0.99: β|s| >= ln 99.
HARD_LOGIT = math.log(99.0)
#: The hardening β never exceeds this (scores closer to 0 than ln 99 / 1e8 stay soft).
MAX_BETA = 1e8
#: Magnitude initialisation: scores are the units' standardised distance to the magnitude threshold
#: times this, so that at β = 1 every gate is σ(±0.02·z) ≈ ½ (the network starts dense) and at
#: β_T = 200 the trained ranking alone would make them hard; training can still reorder them.
MAGNITUDE_SCORE_SCALE = 0.02


@dataclass(frozen=True, kw_only=True)
class CSConfig(MethodConfig):
    """Continuous Sparsification settings (defaults from the official code where it has one).

    Attributes:
        mode: ``prune`` (search, then fine-tune the trained weights) or ``ticket`` (search, rewind,
            train the ticket).
        free: no sparsity target: the mask is ``1[s > 0]`` and ``sparsity`` (optional) is only
            reported, never enforced.
        s0: initial mask score (higher gives denser masks in free mode; the README uses -0.1 for
            high sparsity).
        lam: λ of the L1 gate penalty (summed over weight elements); the start value when adapted.
        beta_final: β at the end of each round (β_T).
        rounds: search rounds; default 1 in ``prune`` mode, 3 (the paper's) in ``ticket`` mode.
        reset: ``paper``: ``s <- min(β_T s, s0)`` between rounds; ``code``: ``min(s, s0)``, what the
            released code does (it resets β before the reset, which revives weakly removed units).
        rewind_epoch: ticket mode: the snapshot point in epochs (fractions allowed); default 2/85 of
            the first round (epoch 2 of 85 in the paper).
        finetune_fraction: prune mode: fraction of the epoch budget for fine-tuning at the final mask
            (default 0.5: the CPU reruns measured 2-4 points more than at 0.25 on short budgets).
        harden_fraction: fraction of the final search round over which β rises from β_T to the value
            at which every gate is hard (below 0.01 or above 0.99); 0 = the paper (β_T at the fix).
        score_init: ``constant`` (``s0``, the paper), ``magnitude`` (``s0`` plus the units'
            standardised distance to the magnitude threshold at the first round's goal, so the sign
            mask starts as the magnitude mask) or ``auto`` (magnitude in prune mode from a trained
            model, constant otherwise).
        finetune_phase: prune mode: fine-tune in a phase of its own (fresh optimizer, learning rate
            restarted at its peak) instead of at the end of the last round's phase, where the learning
            rate keeps decaying (default; a restart at the peak made LeNet-5 diverge).
        target_method: with a target: ``adapt`` (steer λ so the natural sparsity tracks the target,
            then exact top-k) or ``topk`` (plain CS search, then exact top-k over the scores).
        adapt_rate: gain of the λ controller: change of ln λ over a whole round for a sustained
            sparsity error of 1 (the gain per step is this over the round's steps, so short and
            long budgets behave alike).
        adapt_p: proportional gain of the λ controller (ln λ per unit of sparsity error); it damps
            the overshoot of the integral term.
        adapt_until: fraction of each round after which the tracked sparsity stays at the round's goal.
        mask_lr_scale: the scores' learning rate relative to the weights' (applied as a gradient
            factor: exact for SGD, no effect under Adam's scale invariance). None (default): 1 (the
            paper) for a network with BatchNorm, 0.1 without, where it keeps training stable (see
            the docs).
        rescale: divide the gate by σ(s0) so that the network starts exactly dense (the paper's code);
            the factor is folded into the weights when the mask is fixed.
        ticket_rescale: ticket mode: train the ticket behind ``1[s>0]/σ(s0)`` like the released code
            (default: the rewound weights behind ``1[s>0]``, the subnetwork of the network as it was at
            the rewind point, whose gates were ≈ 1).
    """

    mode: str = field(default="prune", metadata={"help": "prune or ticket", "choices": MODES})
    free: bool = field(default=False, metadata={"help": "no target: the mask is sign(s); sparsity only reported"})
    s0: float = field(default=0.0, metadata={"help": "initial mask score"})
    lam: float = field(default=1e-8, metadata={
        "help": "λ of the L1 gate penalty (start value when adapted)", "ge": 0.0})
    beta_final: float = field(default=200.0, metadata={"help": "β at the end of each round", "ge": 1.0})
    rounds: int | None = field(default=None, metadata={"help": "search rounds (default 1 prune, 3 ticket)", "ge": 1})
    reset: str = field(default="paper", metadata={"help": "paper: min(β_T s, s0); code: min(s, s0)", "choices": RESETS})
    rewind_epoch: float | None = field(default=None, metadata={
        "help": "ticket mode snapshot point, in epochs", "ge": 0.0})
    finetune_fraction: float = field(default=0.5, metadata={
        "help": "prune mode: fraction of epochs fine-tuning", "ge": 0.0, "lt": 1.0})
    harden_fraction: float = field(default=0.2, metadata={
        "help": "final-round share hardening the gates (0: paper)", "ge": 0.0, "lt": 1.0})
    score_init: str = field(default="auto", metadata={
        "help": "constant, magnitude or auto (magnitude with --from)", "choices": SCORE_INITS})
    finetune_phase: bool = field(default=False, metadata={"help": "fine-tune in a phase of its own (lr restarts)"})
    target_method: str = field(default="adapt", metadata={
        "help": "adapt (steer λ, then top-k) or topk", "choices": TARGET_METHODS})
    adapt_rate: float = field(default=100.0, metadata={
        "help": "ln λ change per round per unit sparsity error", "ge": 0.0})
    adapt_p: float = field(default=30.0, metadata={
        "help": "proportional gain: ln λ change per unit sparsity error", "ge": 0.0})
    adapt_until: float = field(default=0.5, metadata={
        "help": "fraction of a round to reach its sparsity goal", "ge": 0.0, "le": 1.0})
    mask_lr_scale: float | None = field(default=None, metadata={
        "help": "scores' lr / weights' (1 with BN, else 0.1)", "gt": 0.0})
    ticket_rescale: bool = field(default=False, metadata={"help": "ticket trains behind 1/σ(s0) as in the code"})
    rescale: bool = field(default=True, metadata={"help": "divide gates by σ(s0) (start exactly dense)"})

    def __post_init__(self) -> None:
        if self.free and parse_granularity(self.granularity).fixed_density is not None:
            raise UsageError(f"free mode cannot honour the fixed density of granularity {self.granularity}")
        super().__post_init__()

    def needs_sparsity(self) -> bool:
        return super().needs_sparsity() and not self.free  # free mode: the L1 penalty decides how much


@METHODS.register(
    "continuous-sparsification", aliases=("cs",),
    description="continuous sparsification: deterministic sigmoid gates with annealed β, rounds, ticket search",
)
class ContinuousSparsification(PruningMethod):
    """Learned soft gates σ(βs) with an L1 penalty, β annealed per round; prune or ticket mode."""

    Config = CSConfig
    granularities = (Unstructured, Kernel, Filter, NofM)
    config: CSConfig
    # The paper's ticket search: free masks whose sparsity emerges from s0 (or λ), rewind, train the ticket.
    ticket_search = TicketSearch(options={"mode": "ticket"}, untargeted={"free": True}, targeted={"free": False},
                                 vary="s0", values=(-0.3, -0.2, -0.1, 0.0, 0.1), label="CS tickets")

    def __init__(self, config: CSConfig) -> None:
        super().__init__(config)
        self._snapshot: dict[str, Tensor] = {}
        self._natural: float | None = None  # sign-mask sparsity when the mask was fixed
        self._flipped: float | None = None  # fraction of units the final selection changed
        self._mask_lr_scale = 0.1  # resolved at attach (needs the model)

    # ----------------------------------------------------------------- layout
    @property
    def rounds(self) -> int:
        """Number of search rounds."""
        if self.config.rounds is not None:
            return self.config.rounds
        return 3 if self.config.mode == "ticket" else 1

    def phases(self) -> list[Phase]:
        epochs, rounds = self.horizon.epochs, self.rounds
        if self.config.mode == "ticket":
            if epochs < rounds + 1:
                raise UsageError(f"cs ticket search with {rounds} rounds needs at least {rounds + 1} epochs")
            base, extra = divmod(epochs, rounds + 1)
            return [Phase(f"round{i + 1}", base) for i in range(rounds)] + [Phase("ticket", base + extra)]
        tune = self._finetune_epochs()
        if epochs - tune < rounds:
            raise UsageError(f"cs with {rounds} rounds needs at least {rounds + (tune > 0)} epochs")
        base, extra = divmod(epochs - tune, rounds)
        out = [Phase(f"round{i + 1}", base + (extra if i == rounds - 1 else 0)) for i in range(rounds)]
        if tune and self.config.finetune_phase:
            return [*out, Phase("finetune", tune)]
        if tune:  # fine-tuning ends the last round's phase: its learning rate keeps decaying
            out[-1] = Phase(f"round{rounds}+finetune", out[-1].epochs + tune)
        return out

    def _finetune_epochs(self) -> int:
        if self.config.mode == "ticket" or self.config.finetune_fraction == 0:
            return 0
        return max(1, round(self.config.finetune_fraction * self.horizon.epochs))

    def _round_bounds(self) -> list[tuple[int, int]]:
        """``(first step, end step)`` of each search round, in optimizer steps."""
        bounds, start = [], 0
        for phase in self.phases()[: self.rounds]:
            end = start + phase.epochs * self.horizon.steps_per_epoch
            bounds.append((start, end))
            start = end
        if not self.config.finetune_phase and self._finetune_epochs():
            first, end = bounds[-1]
            bounds[-1] = (first, end - self._finetune_epochs() * self.horizon.steps_per_epoch)
        return bounds

    @property
    def search_steps(self) -> int:
        """Optimizer steps of the whole search (the mask is fixed after them)."""
        return self._round_bounds()[-1][1]

    def rewind_step(self) -> int:
        """Ticket mode: the step after which weights are snapshotted (0: before training)."""
        if self.horizon.pretrained:
            return 0
        first = self._round_bounds()[0][1]
        epochs = self.config.rewind_epoch
        step = int(round(PAPER_REWIND * first)) if epochs is None else int(round(epochs * self.horizon.steps_per_epoch))
        if step >= first:
            raise UsageError(f"rewind_epoch {epochs} is not inside the first round ({first} steps)")
        return step

    def round_goal(self, round_index: int, target: float | None = None) -> float:
        """Target sparsity at the end of search round ``round_index`` (0-based), geometric like IMP,
        on the way to ``target`` (default the config's sparsity; an allocation gives one per key)."""
        return round_sparsity((self.config.sparsity or 0.0) if target is None else target, round_index + 1, self.rounds)

    # ----------------------------------------------------------------- setup
    def attach(self, model: Any, targets: list[Target] | None = None, horizon: Any = None, **kwargs: Any) -> None:
        scale = self.config.mask_lr_scale
        if scale is None:
            has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
            scale = 1.0 if has_bn else 0.1
        self._mask_lr_scale = float(scale)
        super().attach(model, targets, horizon, **kwargs)
        if self.config.mode == "ticket":
            self.rewind_step()  # validates the rewind point against the budget
        if self.uses_magnitude_init:
            self._scores_from_magnitudes()

    @property
    def uses_magnitude_init(self) -> bool:
        """Whether the scores start from the weights' magnitudes (``score_init``)."""
        init = self.config.score_init
        return init == "magnitude" or (init == "auto" and self.horizon.pretrained and self.config.mode == "prune")

    @property
    def mask_lr_scale(self) -> float:
        """The scores' learning rate relative to the weights' in this run."""
        return self._mask_lr_scale

    @torch.no_grad()
    def _scores_from_magnitudes(self) -> None:
        """``s = s0 + 0.02 · (m - τ) / std(m)`` per tensor, signed so that ``1[s > s0]`` is the magnitude mask.

        ``m`` are the units' L2 norms and the kept set is the exact selection at the first round's
        goal in the configured scope; ``τ`` sits between the tensor's last kept and first removed unit.
        """
        magnitudes = {n: self.config.granularity.reduce(w.detach().float(), how="l2") for n, _, w in self.weights()}
        gates = self.gates()
        shapes = {n: g.weight_shape for n, g in gates.items()}
        keep = select(magnitudes, {n: self.config.granularity for n in gates}, shapes, self.round_goal(0),
                      self.config.scope)
        for n, g in gates.items():
            m, k = magnitudes[n], keep[n]
            low = m[k].min() if bool(k.any()) else m.max()
            high = m[~k].max() if bool((~k).any()) else m.min()
            z = (m - 0.5 * (low + high)) / m.std().clamp(min=1e-12) if m.numel() > 1 else torch.zeros_like(m)
            # At least a hundredth of the scale off zero, on the side the selection put the unit.
            z = torch.where(k, z.clamp(min=0.01), z.clamp(max=-0.01))
            g.scores.copy_(self.config.s0 + MAGNITUDE_SCORE_SCALE * z)

    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        lam = max(self.config.lam, LAM_MIN) if self._adapting else self.config.lam
        return CSGate(self.config.granularity, target.shape, s0=self.config.s0, lam=lam, rescale=self.config.rescale,
                      grad_scale=self._mask_lr_scale, device=weight.device)

    @property
    def _adapting(self) -> bool:
        return not self.config.free and self.config.target_method == "adapt"

    def gates(self) -> dict[str, CSGate]:
        """The gate of every target weight."""
        return {n: p for n, p in self.parametrizations.items() if isinstance(p, CSGate)}

    def _frozen(self) -> bool:
        return any(bool(g.frozen) for g in self.gates().values())

    def mask_param_groups(self) -> list[dict[str, Any]]:
        # A phase that starts with the mask fixed (ticket, separate fine-tuning) trains weights only. Where
        # fine-tuning ends the last round's phase, the scores stay in that phase's optimizer (so that a
        # resumed run rebuilds the same groups) but stop receiving gradients once the mask is fixed.
        fresh_phase_after_fix = self.config.mode == "ticket" or self.config.finetune_phase
        params = self.mask_parameters()
        if not params or (fresh_phase_after_fix and self._frozen()):
            return []
        return [{"params": params, "weight_decay": 0.0}]

    # ----------------------------------------------------------------- hooks
    def hardening_start(self) -> int:
        """The step from which β rises past β_T towards hard gates (the search's end: none)."""
        first, end = self._round_bounds()[-1]
        return end - int(round(self.config.harden_fraction * (end - first)))

    @torch.no_grad()
    def hard_beta(self) -> float:
        """β at which every gate is hard: ``ln 99 / min |s|`` (at least β_T, at most 1e8)."""
        smallest = min((float(g.scores.abs().min()) for g in self.gates().values() if g.scores.numel()),
                       default=0.0)
        fitted = HARD_LOGIT / smallest * 1.0001 if smallest > 0 else MAX_BETA
        return min(max(fitted, self.config.beta_final), MAX_BETA)

    def beta_for_step(self, step: int) -> float | None:
        """β of the optimizer step that follows ``step`` steps (None outside the search).

        Within a round it rises geometrically from 1 to β_T (the paper); in the final round that
        rise ends at :meth:`hardening_start`, and β then rises geometrically to :meth:`hard_beta`,
        reached at the last search step.
        """
        bounds = self._round_bounds()
        for r, (first, end) in enumerate(bounds):
            if not first <= step < end:
                continue
            harden = self.hardening_start() if r == len(bounds) - 1 else end
            if step < harden or harden <= first:
                return beta_at(step - first, max(harden, first + 1) - first, self.config.beta_final)
            t = (step - harden + 1) / (end - harden)
            beta_t = self.config.beta_final
            return beta_t * (self.hard_beta() / beta_t) ** t
        return None

    def _set_beta(self, step: int) -> None:
        """Push :meth:`beta_for_step` into every gate (a pure function of the step and the scores)."""
        beta = self.beta_for_step(step)
        if beta is not None:
            for g in self.gates().values():
                g.beta.fill_(beta)

    def on_phase_start(self, phase_index: int) -> None:
        if phase_index < self.rounds:
            if phase_index > 0:
                factor = self.config.beta_final if self.config.reset == "paper" else 1.0
                for g in self.gates().values():
                    g.reset_(factor)
            elif self.config.mode == "ticket" and self.rewind_step() == 0 and not self._snapshot:
                self._take_snapshot()
            self._set_beta(self._round_bounds()[phase_index][0])
            return
        self.fix_mask()
        if self.config.mode == "ticket":
            self._rewind()

    def on_epoch_start(self, epoch: int) -> None:
        self._set_beta(epoch * self.horizon.steps_per_epoch)

    def on_step(self, step: int) -> None:
        if self.config.mode == "ticket" and not self._snapshot and step == self.rewind_step():
            self._take_snapshot()
        if step > self.search_steps:
            return
        if self._adapting:
            self._adapt(step)
        if step == self.search_steps:
            self.fix_mask()
        else:
            self._set_beta(step)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        gates = list(self.gates().values())
        if not gates:
            return {}
        lam = torch.stack([g.log_lam for g in gates]).exp().mean()
        return {"cs_beta": float(gates[0].beta), "cs_lambda": float(lam),
                "cs_natural_sparsity": self.natural_sparsity()}

    def penalty(self) -> Tensor | None:
        gates = list(self.gates().values())
        if not gates:
            return None
        terms = [g.penalty_term() for g in gates]
        return torch.stack(terms).sum()

    # ----------------------------------------------------------------- λ adaptation
    @torch.no_grad()
    def _adapt(self, step: int) -> None:
        """After ``step`` steps: PI control of ln λ so that the sign mask's sparsity tracks the ramp.

        The plant integrates λ (scores drift by about ``λ`` per step), so an integral term alone
        overshoots; the proportional term damps it: ``ln λ = I + k_p e`` with ``I += k_i e`` per step,
        ``e`` = target − current sparsity. All on the device: no host synchronisation.
        """
        bounds = self._round_bounds()
        r = next(i for i, (a, b) in enumerate(bounds) if a < step <= b)
        first, end = bounds[r]
        gates = self.gates()

        def want_of(target: float | None) -> float:
            start = self.round_goal(r - 1, target) if r > 0 else 0.0
            return ramp((step - first) / (end - first), start, self.round_goal(r, target), self.config.adapt_until)

        want = want_of(None)
        k_i, k_p = self.config.adapt_rate / (end - first), self.config.adapt_p
        # λ never drops below the configured value: adaptation only adds pressure where it is needed.
        lo, hi = math.log(max(self.config.lam, LAM_MIN)), math.log(LAM_MAX)
        if self.config.scope == "global":
            total = sum(g.scores.numel() * g.unit_size for g in gates.values())
            pruned = sum((g.scores <= 0).sum() * g.unit_size for g in gates.values())
            errors = {n: want - pruned / total for n in gates}
        else:
            errors = {n: want_of(self.allocation.get(n)) - pruned_fraction(g.scores) for n, g in gates.items()}
        for n, g in gates.items():
            g.log_lam_integral.add_(k_i * errors[n]).clamp_(lo, hi)
            torch.clamp(g.log_lam_integral + k_p * errors[n], lo, hi, out=g.log_lam)

    # ----------------------------------------------------------------- masks
    def natural_sparsity(self) -> float:
        """Sparsity of the sign mask ``1[s > 0]`` over all targets (what free mode would keep)."""
        gates = self.gates().values()
        total = sum(g.scores.numel() * g.unit_size for g in gates)
        kept = sum(int(g.sign_mask().sum()) * g.unit_size for g in gates)
        return 1.0 - kept / max(total, 1)

    @torch.no_grad()
    def final_selection(self) -> dict[str, Tensor]:
        """The mask the search ends with: sign of the scores (free) or exact top-k at the target."""
        gates = self.gates()
        if self.config.free:
            return {n: g.sign_mask() for n, g in gates.items()}
        scores = {n: g.scores.detach().float() for n, g in gates.items()}
        grans = {n: self.config.granularity for n in gates}
        shapes = {n: g.weight_shape for n, g in gates.items()}
        return select(scores, grans, shapes, self.sparsity_targets(), self.config.scope)

    @torch.no_grad()
    def fix_mask(self) -> None:
        """Freeze every gate at :meth:`final_selection` (idempotent)."""
        gates = self.gates()
        if not gates or self._frozen():
            return
        self._natural = self.natural_sparsity()
        chosen = self.final_selection()
        units = sum(g.scores.numel() for g in gates.values())
        self._flipped = sum(int((chosen[n] != g.sign_mask()).sum()) for n, g in gates.items()) / max(units, 1)
        for n, g in gates.items():
            g.freeze_(chosen[n])
            g.scores.requires_grad_(False)
            if not bool(chosen[n].any()):
                log.warning("cs: every unit of %s is pruned (raise s0 or lower λ, or give a target sparsity)", n)
        # The hard gate is 1[s>0]/σ(s0); fine-tuning a weight behind a constant factor 1/σ(s0) (2 for s0=0)
        # multiplies its effective learning rate by 1/σ(s0)², enough to make a restarted schedule diverge.
        self._fold_scales()

    @torch.no_grad()
    def _fold_scales(self) -> None:
        for name, gate, _ in self.weights():
            if isinstance(gate, CSGate):
                self.scale_weights_(name, gate.scale)  # a coupled group: its filter banks
                gate.scale.fill_(1.0)

    def finalize(self, squash: bool = True) -> Any:
        self.fix_mask()
        if squash and self.model is not None:
            self._fold_scales()  # a ticket trained with ``ticket_rescale`` still has its factor
        return super().finalize(squash)

    # ----------------------------------------------------------------- ticket snapshot
    def _take_snapshot(self) -> None:
        assert self.model is not None
        self._snapshot = snapshot(self.model)

    @torch.no_grad()
    def _rewind(self) -> None:
        assert self.model is not None
        if not self._snapshot:
            raise RuntimeError("ticket mode reached the ticket phase without a snapshot")
        rewind_(self.model, self._snapshot)
        if self.config.ticket_rescale:  # the released code trains the ticket behind 1[s>0]/σ(s0)
            for g in self.gates().values():
                g.scale.fill_(1.0 + math.exp(-self.config.s0))

    # ----------------------------------------------------------------- state and reports
    def extra_state(self) -> dict[str, Any]:
        return {"snapshot": self._snapshot, "natural": self._natural, "flipped": self._flipped}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._snapshot = dict(state.get("snapshot", {}))
        self._natural, self._flipped = state.get("natural"), state.get("flipped")
        for g in self.gates().values():  # the model's state (loaded first) says whether the mask is fixed
            g.scores.requires_grad_(not bool(g.frozen))

    def ticket_fields(self) -> dict[str, Any]:
        return {"natural_sparsity": self._natural}

    def report_extras(self) -> dict[str, Any]:
        gates = list(self.gates().values())
        lam = [float(g.log_lam.exp()) for g in gates]
        return {
            "cs": {
                "mode": self.config.mode,
                "rounds": self.rounds,
                "free": self.config.free,
                "natural_sparsity": self._natural,
                "score_init": "magnitude" if self.uses_magnitude_init else "constant",
                "mask_lr_scale": self._mask_lr_scale,
                "selection_changed_fraction": self._flipped,
                "lambda_final": dict(zip(self.gates(), lam, strict=True)),
            }
        }

