"""Gumbel top-k sampling and its sequential relaxation (straight-through), row-wise on ``(G, n)``.

Every row of a logit matrix ``phi`` is a categorical distribution over ``n`` candidates, of which
``k`` are drawn *without replacement*:

- **forward** (:func:`gumbel_topk`): perturb ``z = phi + eta * g`` with standard Gumbel noise ``g``
  and keep the ``k`` largest entries (the Gumbel-top-k trick; with ``eta = 1`` this samples exactly
  from the Plackett-Luce distribution of ``softmax(phi)``);
- **backward** (:func:`relaxed_topk`): the sequential Gumbel-softmax relaxation of the same draws,
  ``s = sum_r softmax((z + log(1 - c_r)) / T)`` where ``c_r`` marks the entries chosen before step
  ``r``; :func:`straight_through_topk` returns the exact k-hot mask in the forward pass with the
  gradient of ``s``.

The relaxation is computed in closed form in log space rather than by materialising the ``(G, k, n)``
tensor of the ``k`` softmaxes. With ``a = z / T``, chosen indices ``I_1..I_k`` in relaxation order and
``D_r = sum of exp(a_i)`` over the entries still available at step ``r``::

    s_i = exp(a_i) * sum_{r : i available at r} 1 / D_r

``log D_r`` is a reversed log-cum-sum-exp of the chosen entries plus the log-mass of the never-chosen
ones (sums of positive terms only: no cancellation), so memory is ``O(G (n + k))`` and nothing
overflows for large logits or small temperatures.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "RELAX_ORDERS",
    "gumbel_noise",
    "gumbel_topk",
    "hard_topk",
    "hard_topk_mask",
    "k_hot",
    "relaxed_topk",
    "straight_through_topk",
]

#: Order of the sequential relaxation: Gumbel rank order (Plackett-Luce) or ascending index (as released).
RELAX_ORDERS = ("rank", "index")


def gumbel_noise(shape: torch.Size | tuple[int, ...], *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard Gumbel noise ``-log(-log u)``, ``u ~ U(0, 1)`` clamped away from 0 and 1."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    # In place: the same values as the out-of-place expression, without four temporaries.
    return u.clamp_(min=tiny, max=1.0 - torch.finfo(dtype).eps).log_().neg_().log_().neg_()


def hard_topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean ``(G, n)`` mask of the ``k`` largest entries per row, ties to the earlier position.

    The same set as the first ``k`` of a stable descending sort (what :func:`hard_topk` returns), at
    the cost of a ``torch.topk`` for the ``k``-th largest value and a few passes: entries above it
    are kept, and entries equal to it fill the remaining places from the left.
    """
    scores = scores.detach()
    groups, n = scores.shape
    if k <= 0 or k >= n or scores.device.type != "cpu" or bool(torch.isnan(scores).any()):
        # Trivial counts; devices where a sort is cheap; NaN (the sort's own order decides it).
        chosen = torch.zeros(groups, n, dtype=torch.bool, device=scores.device)
        if k > 0:
            chosen.scatter_(1, torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k], True)
        return chosen
    kth = torch.topk(scores, k, dim=1, sorted=False).values.amin(1, keepdim=True)
    at_least = scores >= kth
    if bool((at_least.sum(1) == k).all()):  # the usual case: no tie straddles the k-th place
        return at_least
    above = scores > kth
    tied = at_least & ~above
    places = k - above.sum(1, keepdim=True)  # how many of the tied entries get in
    return above | (tied & (tied.cumsum(1) <= places))


def hard_topk(scores: Tensor, k: int) -> Tensor:
    """Indices ``(G, k)`` of the ``k`` largest entries per row, in descending order.

    Ties go to the earlier position (a stable sort), so the result is deterministic. It equals the
    first ``k`` indices of ``torch.sort(scores, descending=True, stable=True)``; only the ``k``
    chosen entries are sorted (:func:`hard_topk_mask` finds them).
    """
    if k == 0:
        return scores.new_zeros((scores.shape[0], 0), dtype=torch.long)
    scores = scores.detach()
    if scores.device.type != "cpu":
        return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    # Row-major nonzero lists each row's chosen positions in ascending order; a stable sort of their
    # values then puts them in descending order with ties still in ascending position.
    chosen = hard_topk_mask(scores, k).nonzero()[:, 1].reshape(scores.shape[0], k)
    order = torch.sort(scores.gather(1, chosen), dim=1, descending=True, stable=True).indices
    return chosen.gather(1, order)


def gumbel_topk(logits: Tensor, k: int, noise_scale: float, *,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw ``k`` of ``n`` per row without replacement by the Gumbel-top-k trick.

    Args:
        logits: ``(G, n)`` unnormalised log-probabilities.
        k: how many to keep per row (``0 <= k <= n``).
        noise_scale: ``eta``; 0 gives the deterministic top-k of the logits.
        generator: source of the noise (the method's own generator).

    Returns:
        ``(perturbed, indices)``: the perturbed logits ``phi + eta * g`` (differentiable in ``phi``)
        and the chosen indices ``(G, k)`` in rank order (largest perturbed logit first).
    """
    if noise_scale > 0:
        noise = gumbel_noise(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        perturbed = logits + noise_scale * noise
    else:
        perturbed = logits
    return perturbed, hard_topk(perturbed, k)


def k_hot(indices: Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(G, n)`` matrix with ones at ``indices`` (``(G, k)``) and zeros elsewhere."""
    out = torch.zeros(indices.shape[0], n, dtype=dtype, device=indices.device)
    return out.scatter_(1, indices, 1.0)


def _ordered(indices: Tensor, order: str) -> Tensor:
    if order == "rank":
        return indices
    if order == "index":
        return torch.sort(indices, dim=1).values
    raise ValueError(f"unknown relaxation order {order!r}; use one of {RELAX_ORDERS}")


def relaxed_topk(perturbed: Tensor, indices: Tensor, temperature: float | Tensor, order: str = "rank") -> Tensor:
    """Soft k-hot mask: the sum of ``k`` softmaxes, each excluding the entries chosen before it.

    Args:
        perturbed: ``(G, n)`` perturbed logits ``phi + eta * g``.
        indices: ``(G, k)`` chosen indices in rank order (as :func:`gumbel_topk` returns them).
        temperature: ``T > 0`` of the relaxation.
        order: ``"rank"`` relaxes the draws in the order they were ranked (the principled
            Plackett-Luce order); ``"index"`` in ascending index order (the released code's quirk).

    Returns:
        ``(G, n)`` soft mask, each row summing to ``k``.
    """
    k = indices.shape[1]
    if k == 0:
        return torch.zeros_like(perturbed)
    idx = _ordered(indices, order)
    # Softmax is shift-invariant: subtracting the row maximum keeps every exponent <= 0 and the
    # sums below well-conditioned even for logits of 1e4 at T = 0.01.
    a = (perturbed - perturbed.detach().amax(1, keepdim=True)) / temperature
    chosen = torch.zeros_like(a, dtype=torch.bool).scatter_(1, idx, True)
    log_unchosen = torch.logsumexp(a.masked_fill(chosen, float("-inf")), dim=1, keepdim=True)  # (G, 1)
    a_chosen = a.gather(1, idx)  # (G, k)
    # log D_r = log(sum_{r' >= r} exp(a_{I_r'}) + sum_unchosen exp(a_i)): available mass at step r.
    tail = torch.logcumsumexp(a_chosen.flip(1), dim=1).flip(1)
    log_avail = torch.logaddexp(tail, log_unchosen)  # (G, k)
    # Sum over steps r <= rho of 1 / D_r, in log space; rho = position of the entry (k if unchosen).
    log_inv_cum = torch.logcumsumexp(-log_avail, dim=1)  # (G, k)
    position = torch.full_like(a, k - 1, dtype=torch.long)
    position.scatter_(1, idx, torch.arange(k, device=a.device).expand_as(idx))
    log_weight = log_inv_cum.gather(1, position)
    # Each term exp(a_i - log D_r) <= 1 because i is available at r, so this never overflows.
    return torch.exp(a + log_weight)


class _StraightThrough(torch.autograd.Function):
    """Forward: the k-hot mask of ``indices``; backward: the incoming gradient, unchanged, to ``soft``.

    The values and gradients of ``hard + (soft - soft.detach())`` (addition and subtraction pass a
    gradient on as it is, and ``soft - soft.detach()`` is exactly 0), without its two full-size passes.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, soft: Tensor, indices: Tensor) -> Tensor:  # type: ignore[override]
        return k_hot(indices, soft.shape[1], dtype=soft.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def straight_through_topk(perturbed: Tensor, indices: Tensor, temperature: float | Tensor,
                          order: str = "rank") -> Tensor:
    """Exact k-hot mask in the forward pass, gradient of :func:`relaxed_topk` in the backward pass."""
    if indices.shape[1] == 0 or not perturbed.requires_grad:
        return k_hot(indices, perturbed.shape[1], dtype=perturbed.dtype)
    soft = relaxed_topk(perturbed, indices, temperature, order)
    return _StraightThrough.apply(soft, indices)
