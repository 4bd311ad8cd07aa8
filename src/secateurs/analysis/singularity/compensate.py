"""Least-squares compensation: the consumers of a unit take over what its removed filters carried.

When channels ``D`` of a unit are removed and ``K`` kept, each removed channel's activation is
replaced by its best linear reconstruction from the kept ones, ``x_j ~ sum_k B[j, k] x_k``, with
``B = S[:, K] (S[K, K] + lambda I)^-1`` from the unweighted channel Gram ``S = Z^T Z / M`` of the
tensor the consumer reads (ridge ``lambda = 1e-4 trace(S[K, K]) / |K|``: the spec's choice). Folding
``B`` into the consumer's weights, ``W'[:, k] = sum_j W[:, j] B[j, k]`` (at every kernel offset or
flattened position), keeps the consumer's output wherever the removed channels were linear
combinations of the kept ones: exactly for a duplicated or a silent filter. The spec proposes a
ThiNet/AMC-style refit on the consumer's unfolded patches; this channel-level version uses the
gradient-matrix Gram the analysis already holds (our simplification: cross-offset correlations are
ignored, which changes nothing for exact dependencies).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from secateurs.analysis.singularity.estimate import UnitEstimate

__all__ = ["compensate_consumers_", "reconstruction"]

#: Ridge of the least-squares fit, relative to the mean eigenvalue of the kept channels' Gram.
RIDGE = 1e-4


def reconstruction(gram: Tensor, keep: Tensor) -> Tensor:
    """``(n, |K|)`` coefficients reconstructing every channel from the kept ones.

    Args:
        gram: Unweighted channel Gram ``Z^T Z / M``, ``(n, n)``.
        keep: Boolean ``(n,)``: the channels that stay.
    """
    kept = torch.nonzero(keep.cpu()).flatten()
    s = gram.to(torch.float64)
    block = s[kept][:, kept]
    ridge = RIDGE * float(torch.diagonal(block).mean()) if kept.numel() else 0.0
    if ridge <= 0.0:
        ridge = 1e-12
    system = block + ridge * torch.eye(kept.numel(), dtype=torch.float64)
    # B^T = (S[K,K] + lambda I)^-1 S[K, :]  (symmetric system)
    return torch.linalg.solve(system, s[kept]).T


def _original(module: nn.Module) -> Tensor:
    plist = getattr(module, "parametrizations", None)
    if plist is not None and "weight" in plist:
        return plist["weight"].original
    return module.weight


@torch.no_grad()
def compensate_consumers_(model: nn.Module, estimate: UnitEstimate, keep: Tensor) -> int:
    """Refit, in place, every consumer of a unit for the channels ``keep`` (boolean per channel).

    Returns:
        The number of consumer weights changed.
    """
    keep = keep.to(torch.bool).cpu()
    kept = torch.nonzero(keep).flatten()
    if kept.numel() == 0 or bool(keep.all()):
        return 0
    changed = 0
    for consumers, gram in estimate.raw:
        mix = reconstruction(gram, keep)  # (n, |K|)
        for c in consumers:
            read = estimate.unit.consumers[c]
            weight = _original(model.get_submodule(read.module))
            channels, per = read.index.shape
            index = read.index.to(weight.device)
            chosen = weight.index_select(1, index.reshape(-1))
            chosen = chosen.reshape(weight.shape[0], channels, per, *weight.shape[2:]).to(torch.float64)
            mixed = torch.einsum("ojp...,jk->okp...", chosen, mix.to(weight.device))
            positions = index[kept.to(weight.device)].reshape(-1)
            weight.index_copy_(1, positions, mixed.reshape(weight.shape[0], -1, *weight.shape[2:]).to(weight.dtype))
            changed += 1
    return changed
