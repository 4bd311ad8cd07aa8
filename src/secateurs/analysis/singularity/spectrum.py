"""Effective filter count ``r`` from a unit's spectrum (the eigenvalues of ``S~``, i.e. ``sigma^2``).

Criteria (spec crl_singularity.md, section B.2.2; every threshold here is the spec's proposal, not a
value from the paper, whose method section was not available):

- ``energy`` (default): the smallest ``r`` whose top singular values hold ``tau`` of the energy
  ``sum sigma_j^2`` (``tau = 0.99``).
- ``numerical``: the numerical rank, ``sigma_j > epsilon * sigma_1`` (``epsilon = 1e-3``).
- ``effective``: the effective rank of Roy & Vetterli, ``exp(entropy of sigma_j / sum sigma)``,
  rounded up.
- ``gavish-donoho``: the optimal hard threshold for a low-rank matrix in noise of unknown level
  (Gavish & Donoho 2014): ``sigma_j > omega(beta) * median(sigma)`` with
  ``omega(beta) = 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43`` and ``beta = n / M`` the aspect
  ratio of the ``M x n`` gradient matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from secateurs.errors import UsageError

__all__ = ["CRITERIA", "Criterion", "effective_filters", "spectrum"]

CRITERIA = ("energy", "numerical", "effective", "gavish-donoho")


@dataclass(frozen=True)
class Criterion:
    """How ``r`` is read off a spectrum.

    Attributes:
        name: One of :data:`CRITERIA`.
        tau: Energy share kept by the ``energy`` criterion, in (0, 1].
        epsilon: Relative singular-value floor of the ``numerical`` criterion.
    """

    name: str = "energy"
    tau: float = 0.99
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in CRITERIA:
            raise UsageError(f"unknown criterion {self.name!r}; known: {', '.join(CRITERIA)}")
        if not 0.0 < self.tau <= 1.0:
            raise UsageError(f"tau must lie in (0, 1], got {self.tau}")
        if not 0.0 < self.epsilon < 1.0:
            raise UsageError(f"epsilon must lie in (0, 1), got {self.epsilon}")


def spectrum(gram: Tensor) -> Tensor:
    """Eigenvalues of a symmetric positive semi-definite Gram, descending, clamped at 0 (float64)."""
    values = torch.linalg.eigvalsh(gram.to(torch.float64))
    return values.flip(0).clamp_min(0.0)


def effective_filters(eigenvalues: Tensor, criterion: Criterion, rows: int) -> int:
    """The effective filter count of a unit.

    Args:
        eigenvalues: ``sigma_j^2``, descending (:func:`spectrum`).
        criterion: How to count.
        rows: Rows ``M`` of the gradient matrix (the Gavish-Donoho aspect ratio).

    Returns:
        ``r`` in ``[0, n]``; 0 only for an all-zero matrix (no channel carries anything).
    """
    n = eigenvalues.numel()
    total = float(eigenvalues.sum())
    if n == 0 or total <= 0.0:
        return 0
    sigma = eigenvalues.sqrt()
    if criterion.name == "energy":
        cumulative = torch.cumsum(eigenvalues, 0) / total
        # The tolerance keeps tau = 1 from asking for more energy than rounding leaves.
        return min(n, int((cumulative < criterion.tau - 1e-12).sum()) + 1)
    if criterion.name == "numerical":
        return int((sigma > criterion.epsilon * sigma[0]).sum())
    if criterion.name == "effective":
        p = sigma / sigma.sum()
        p = p[p > 0]
        return min(n, math.ceil(math.exp(float(-(p * p.log()).sum())) - 1e-9))
    beta = min(n / max(rows, 1), 1.0)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return int((sigma > omega * sigma.median()).sum())
