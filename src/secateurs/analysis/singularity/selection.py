"""The two levels of the hierarchical pruning: how many filters each unit loses, then which.

Level 1 (spec section B.3): with ``n`` live filters and ``r`` effective ones, a unit loses
``k(alpha) = min(floor(alpha (n - r)), n - max(1, ceil(kappa n0)))`` filters, ``n0`` its original
width. ``k`` never passes the cap ``n - r`` for ``alpha <= 1`` and grows monotonically with ``alpha``,
so one scalar found by bisection meets a global target. Beyond the caps (only when the user asks,
``alpha`` in ``(1, 2]``) every unit moves linearly from its cap to its minimum keep: an extension of
ours, the spec only says caps may be overridden.

Level 2: column-pivoted QR of ``Z~`` orders the filters by how much each adds to the span of those
before it; the first ``n - k`` pivots are kept. QR with column pivoting picks, at each step, the
column with the largest norm after projecting out the chosen ones, and those residual norms are the
diagonal of the Schur complement of the Gram ``Z~^T Z~``: so the order is computed from the Gram
alone, by pivoted Cholesky, and ``Z~`` never needs to be stored. Filters whose residual is
numerically zero (silent, unread, or copies of kept ones) are ordered among themselves by the L1 norm
of their weights (the spec's tie break).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["cap_counts", "find_alpha", "pivot_order", "removal_counts"]

#: Residuals at or below this fraction of the largest diagonal entry count as zero.
_RESIDUAL_FLOOR = 1e-10


def pivot_order(gram: Tensor, tie_break: Tensor | None = None, alive: Tensor | None = None) -> list[int]:
    """Column order of a pivoted QR of ``Z~``, from its Gram ``Z~^T Z~`` (any positive scale).

    Args:
        gram: ``(n, n)`` symmetric positive semi-definite.
        tie_break: ``(n,)`` scores ordering columns whose residual is zero (higher first), e.g. L1
            norms; default: column index.
        alive: ``(n,)`` boolean; dead columns (already pruned) go last whatever their residual.

    Returns:
        All ``n`` column indices, most independent first.
    """
    s = gram.to(torch.float64)
    n = s.shape[0]
    alive = torch.ones(n, dtype=torch.bool) if alive is None else alive.to(torch.bool).cpu()
    tie = torch.zeros(n, dtype=torch.float64) if tie_break is None else tie_break.to(torch.float64).cpu()
    residual = torch.diagonal(s).clone().clamp_min(0.0)
    floor = _RESIDUAL_FLOOR * float(residual.max()) if n else 0.0
    factor = torch.zeros(n, n, dtype=torch.float64)
    order: list[int] = []
    free = alive.clone()
    while bool(free.any()):
        candidates = torch.where(free, residual, torch.full_like(residual, -1.0))
        j = int(candidates.argmax())
        if float(residual[j]) <= floor or float(residual[j]) <= 0.0:
            break
        step = len(order)
        column = s[:, j] - factor[:, :step] @ factor[j, :step]
        column = column / math.sqrt(float(residual[j]))
        factor[:, step] = column
        residual = (residual - column.pow(2)).clamp_min(0.0)
        order.append(j)
        free[j] = False
    rest = [int(i) for i in torch.nonzero(free).flatten()]
    rest.sort(key=lambda i: (-float(tie[i]), i))
    dead = [int(i) for i in torch.nonzero(~alive).flatten()]
    return order + rest + dead


def cap_counts(live: int, effective: int, original: int, kappa: float) -> tuple[int, int]:
    """``(cap, most)``: filters removable within the estimate, and at most (minimum keep ``kappa``)."""
    floor = max(1, math.ceil(kappa * original))
    most = max(0, live - floor)
    return min(max(0, live - effective), most), most


def removal_counts(caps: Sequence[tuple[int, int]], alpha: float) -> list[int]:
    """``k`` per unit for a level-1 scalar ``alpha`` in ``[0, 2]`` (``(cap, most)`` per unit)."""
    out = []
    for cap, most in caps:
        if alpha <= 1.0:
            out.append(min(math.floor(alpha * cap + 1e-9), most))
        else:
            out.append(min(most, cap + math.floor((alpha - 1.0) * (most - cap) + 1e-9)))
    return out


def find_alpha(reached: Callable[[float], bool], *, upper: float = 1.0, iterations: int = 40) -> float | None:
    """The smallest ``alpha`` in ``[0, upper]`` with ``reached(alpha)`` (monotone), by bisection.

    Returns None when even ``upper`` does not reach the target.
    """
    if reached(0.0):
        return 0.0
    if not reached(upper):
        return None
    low, high = 0.0, upper
    for _ in range(iterations):
        middle = (low + high) / 2
        if reached(middle):
            high = middle
        else:
            low = middle
    return high
