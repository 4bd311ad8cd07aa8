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
    u = u.clamp(min=tiny, max=1.0 - torch.finfo(dtype).eps)
    return -torch.log(-torch.log(u))


def hard_topk(scores: Tensor, k: int) -> Tensor:
    """Indices ``(G, k)`` of the ``k`` largest entries per row, in descending order.

    Ties go to the earlier position (a stable sort), so the result is deterministic.
    """
    if k == 0:
        return scores.new_zeros((scores.shape[0], 0), dtype=torch.long)
    return torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices[:, :k]


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


def straight_through_topk(perturbed: Tensor, indices: Tensor, temperature: float | Tensor,
                          order: str = "rank") -> Tensor:
    """Exact k-hot mask in the forward pass, gradient of :func:`relaxed_topk` in the backward pass."""
    hard = k_hot(indices, perturbed.shape[1], dtype=perturbed.dtype)
    if indices.shape[1] == 0 or not perturbed.requires_grad:
        return hard
    soft = relaxed_topk(perturbed, indices, temperature, order)
    # (soft - soft.detach()) is exactly 0 in value, so the forward value is exactly the k-hot mask.
    return hard + (soft - soft.detach())
