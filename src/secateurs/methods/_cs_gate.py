"""The Continuous Sparsification gate and its schedules (helpers of :mod:`.continuous_sparsification`).

``CSGate`` is the parametrization: one real score ``s`` per unit (per weight for the paper's
unstructured setting), initialised to ``s0``; in training the weight is multiplied by the
deterministic soft gate ``σ(β s) / σ(s0)``, in evaluation by the hard gate ``1[s > 0] / σ(s0)``.
Once the mask is fixed (fine-tuning or ticket training) the gate is a stored boolean mask and the
scores no longer enter the forward pass. Every piece of state (scores, β, λ, the fixed mask) lives
in the module, so ``model.state_dict()`` carries it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.core.granularity import Granularity
from secateurs.core.parametrize import MaskParametrization

__all__ = ["CSGate", "beta_at", "pruned_fraction", "ramp"]


def beta_at(index: int, round_steps: int, beta_final: float) -> float:
    """Inverse temperature for the ``index``-th step (0-based) of a round of ``round_steps`` steps.

    Exponential growth ``β = β_T ** (index / (round_steps - 1))``: 1 at the first step of the round,
    ``β_T`` at its last (the paper's per-epoch schedule ``β_T ** (e / (E - 1))``, taken per step).
    """
    if round_steps <= 1:
        return float(beta_final)
    t = min(max(index / (round_steps - 1), 0.0), 1.0)
    return float(beta_final) ** t


def ramp(progress: float, start: float, end: float, until: float) -> float:
    """Target sparsity along a round: cubic from ``start`` to ``end``, reached at ``until`` of the round.

    The cubic (Zhu & Gupta's shape) moves fast while β is small and the gates can still move, and
    holds ``end`` for the rest of the round so that the signs settle at the target as β grows.
    """
    t = 1.0 if until <= 0 else min(max(progress / until, 0.0), 1.0)
    return end + (start - end) * (1.0 - t) ** 3


def pruned_fraction(scores: Tensor) -> Tensor:
    """The fraction of ``scores <= 0``: the value of ``(scores <= 0).float().mean()`` (float32, 0-d).

    An integer count divided by the size is the same float32 division of the same exact numbers
    (a float32 sum of zeros and ones is exact below 2**24 elements), without the float copy.
    """
    n = scores.numel()
    if n == 0 or n >= 1 << 24 or torch.get_default_dtype() != torch.float32:
        return (scores <= 0).float().mean()
    return scores.le(0).sum(dtype=torch.int32) / n


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``k`` (an exact learning-rate scale for SGD)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, k: float) -> Tensor:  # type: ignore[override]
        ctx.k = k  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.k, None  # type: ignore[attr-defined]


class _GateSum(torch.autograd.Function):
    """``Σ σ(β s')·scale`` from the gate the forward pass already computed, with the gradient that
    autograd gives a freshly computed ``soft_gate().sum()``, op for op (the L1 penalty's path).

    Inputs: the scores, then (not differentiated) the forward's ``σ(β s')``, its gate, β, the scale
    and the gradient factor of ``s'``.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, sig: Tensor, gate: Tensor, beta: Tensor, scale: Tensor,  # type: ignore[override]
                k: float) -> Tensor:
        ctx.save_for_backward(sig, beta, scale)
        ctx.k = k
        return gate.sum()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        sig, beta, scale = ctx.saved_tensors
        # The chain of SumBackward, MulBackward (scale), SigmoidBackward, MulBackward (β), _ScaleGrad.
        g = torch.ops.aten.sigmoid_backward(grad.expand(sig.shape) * scale, sig) * beta
        if ctx.k != 1.0:
            g = g * ctx.k
        return g, None, None, None, None, None


class CSGate(MaskParametrization):
    """``weight * expand(gate)`` with ``gate = σ(β s)/σ(s0)`` (train), ``1[s>0]/σ(s0)`` (eval), or fixed.

    Attributes:
        scores: the mask parameter ``s`` at unit shape (trained, no weight decay).
        beta: current inverse temperature (0-d buffer, set by the method each step).
        log_lam: natural log of this tensor's λ (0-d buffer; adapted in target mode).
        log_lam_integral: the integral part of the λ controller (0-d buffer).
        frozen: whether the mask is fixed (0-d bool buffer).
        fixed: the fixed boolean unit mask (meaningful once ``frozen``).
        scale: ``1/σ(s0)`` (0-d buffer), so that the network starts exactly dense (1 when disabled);
            folded into the weight (and set to 1) by the method when the mask is fixed.
        unit_size: weight elements per unit (the L1 penalty counts weight elements).
        grad_scale: factor on the scores' gradient (the scores' learning rate relative to the weights').
    """

    beta: Tensor
    scale: Tensor
    gate_reads_weight = False  # the gate comes from its own state
    log_lam: Tensor
    log_lam_integral: Tensor
    frozen: Tensor
    fixed: Tensor

    def __init__(
        self,
        granularity: Granularity,
        weight_shape: torch.Size,
        *,
        s0: float,
        lam: float,
        rescale: bool = True,
        grad_scale: float = 1.0,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(granularity, weight_shape)
        unit = granularity.unit_shape(weight_shape)
        self.scores = nn.Parameter(torch.full(unit, float(s0), device=device))
        self.register_buffer("beta", torch.ones((), device=device))
        log_lam = math.log(lam) if lam > 0 else -math.inf
        self.register_buffer("log_lam", torch.tensor(log_lam, device=device))
        self.register_buffer("log_lam_integral", torch.tensor(log_lam, device=device))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool, device=device))
        self.register_buffer("fixed", torch.ones(unit, dtype=torch.bool, device=device))
        self.s0 = float(s0)
        self.register_buffer("scale", torch.tensor(1.0 + math.exp(-self.s0) if rescale else 1.0, device=device))
        self.unit_size = granularity.unit_size(weight_shape)
        self.grad_scale = float(grad_scale)
        self._step_gate: tuple[tuple[int, ...], Tensor, Tensor] | None = None  # see l1

    # ------------------------------------------------------------------ gates
    def soft_gate(self) -> Tensor:
        """``σ(β s) / σ(s0)`` (differentiable in ``s``)."""
        scores = self.scores if self.grad_scale == 1.0 else _ScaleGrad.apply(self.scores, self.grad_scale)
        sig = torch.sigmoid(self.beta * scores)
        gate = sig * self.scale
        if gate.requires_grad and not torch.compiler.is_compiling():
            # For :meth:`l1` in the same step: valid while scores, β and the scale keep their versions.
            self._step_gate = (self._state_key(), sig.detach(), gate.detach())
        return gate

    def _state_key(self) -> tuple[int, ...]:
        return (self.scores._version, self.beta._version, self.scale._version, self.scores.data_ptr())

    def sign_mask(self) -> Tensor:
        """The mask the scores alone define: keep a unit iff ``s > 0``."""
        return self.scores.detach() > 0

    def unit_mask(self, weight: Tensor) -> Tensor:
        if weight.device.type == "cpu" and not torch.compiler.is_compiling():
            # On a CPU reading the flag costs nothing: compute only the branch in use. The values and
            # gradients are those of the torch.where below (which passes the live gradient unchanged).
            if not bool(self.frozen):
                return self.soft_gate() if self.training else self.sign_mask().to(weight.dtype) * self.scale
            if not self.scores.requires_grad:
                return self.fixed.to(weight.dtype) * self.scale
        # torch.where rather than ``if self.frozen``: no host synchronisation in the forward pass.
        fixed = self.fixed.to(weight.dtype) * self.scale
        live = self.soft_gate() if self.training else self.sign_mask().to(weight.dtype) * self.scale
        return torch.where(self.frozen, fixed, live)

    def hard_mask(self, weight: Tensor) -> Tensor:
        return torch.where(self.frozen, self.fixed, self.sign_mask())

    def follower_gate(self, gate: Tensor) -> Tensor:
        # 1 at the start (σ(s0)·scale = 1) and for every kept channel, falling to 0 as a channel is pruned.
        return gate.clamp(max=1.0)

    # ------------------------------------------------------------------ state changes
    def l1(self) -> Tensor:
        """``Σ`` of the soft gate over the tensor's weight elements (the paper's ‖σ(βs)‖₁ incl. scaling).

        After a training forward pass in the same state it reuses that pass's gate (the values and
        gradients of recomputing it, without three full-size passes).
        """
        cached, self._step_gate = self._step_gate, None
        if cached is not None and cached[0] == self._state_key() and self.scores.requires_grad \
                and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            _, sig, gate = cached
            return _GateSum.apply(self.scores, sig, gate, self.beta, self.scale, self.grad_scale) * self.unit_size
        return self.soft_gate().sum() * self.unit_size

    def penalty_term(self) -> Tensor:
        """``λ ‖gate‖₁``, zero once the mask is fixed."""
        if self.log_lam.device.type == "cpu" and not self.scores.requires_grad and bool(self.frozen):
            # Fixed for good (fine-tuning, the ticket): the value below without computing the gates.
            return self.log_lam.new_zeros(())
        # torch.where instead of ``if frozen``: no host synchronisation.
        return torch.where(self.frozen, 0.0, self.log_lam.exp() * self.l1())

    @torch.no_grad()
    def reset_(self, factor: float) -> None:
        """End-of-round reset ``s <- min(factor * s, s0)``."""
        self.scores.copy_(torch.clamp(self.scores * factor, max=self.s0))

    @torch.no_grad()
    def freeze_(self, mask: Tensor) -> None:
        """Fix the mask; the scores stop entering the forward pass."""
        self.fixed.copy_(mask.to(torch.bool).reshape(self.fixed.shape))
        self.frozen.fill_(True)

    def extra_repr(self) -> str:
        return f"{self.granularity}, s0={self.s0:g}"
