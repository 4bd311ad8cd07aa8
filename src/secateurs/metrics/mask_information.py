"""Information metrics of k-of-n mask distributions (Dynamic Probabilistic Pruning, §3.9 of the spec).

A layer has ``G`` groups, each choosing ``k`` of ``n`` candidates, with ``pi_g = softmax(phi_g)``.
The DPP paper proposes metrics of mask *confidence* and pruning *diversity*; its exact normalisation
could not be confirmed, so these are the definitions used here (raw quantities are returned too,
so another normalisation can be applied afterwards):

==========================  =====================================================================
key                         definition
==========================  =====================================================================
``entropy_mean``            ``H_bar = mean_g H(pi_g)`` in nats
``entropy_of_mean``         ``H(pi_bar)`` with ``pi_bar = mean_g pi_g``, in nats
``confidence``              ``1 - (H_bar - log k) / (log n - log k)`` clamped to [0, 1]: 0 for
                            uniform groups, 1 once every group is (at least as peaked as) a
                            uniform distribution over k candidates
``diversity``               ``H(pi_bar) / log n``: low when all groups favour the same candidates
``mutual_information``      ``(H(pi_bar) - H_bar) / log n`` = I(group; candidate) / log n: 0 when
                            all groups are identical, high when confident groups differ
``inclusion_confidence``    ``1 - mean_g sum_i h2(q_gi) / (n h2(k/n))`` from Monte-Carlo inclusion
                            probabilities ``q_gi = P(i in the sampled k-set)``: 1 for a
                            deterministic mask, 0 when every candidate is kept with chance k/n
==========================  =====================================================================

``h2`` is the binary entropy. The inclusion probabilities come from the sampler itself (Gumbel top-k
with noise scale ``eta``), so they describe the masks actually drawn, while the first five describe
``softmax(phi)`` as the spec defines them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from secateurs.core.gumbel import gumbel_noise, hard_topk_mask

__all__ = [
    "METRIC_NAMES",
    "group_entropies",
    "inclusion_confidence",
    "inclusion_probabilities",
    "information_metrics",
    "plot_layer_metrics",
]

#: Keys of :func:`information_metrics` plus ``inclusion_confidence``, in display order.
METRIC_NAMES = ("confidence", "diversity", "mutual_information", "inclusion_confidence", "entropy_mean",
                "entropy_of_mean")


def _entropy(log_p: Tensor) -> Tensor:
    # p log p with p = 0 contributes 0 (log_softmax gives finite values, so no 0 * -inf).
    return -(log_p.exp() * log_p).sum(-1)


def group_entropies(logits: Tensor) -> Tensor:
    """Entropy (nats) of ``softmax`` of every row of ``logits`` ``(G, n)``."""
    return _entropy(torch.log_softmax(logits.detach().double(), dim=-1))


@torch.no_grad()
def information_metrics(logits: Tensor, k: int) -> dict[str, float]:
    """Confidence, diversity, mutual information and raw entropies of ``(G, n)`` logits keeping ``k``.

    Args:
        logits: one row of logits per group.
        k: candidates kept per group.
    """
    probs = torch.softmax(logits.detach().double(), dim=-1)
    n = probs.shape[1]
    h_mean = float(group_entropies(logits).mean())
    p_bar = probs.mean(0)
    h_of_mean = float(-(p_bar * torch.log(p_bar.clamp(min=1e-300))).sum())
    log_n = math.log(n) if n > 1 else 0.0
    span = log_n - (math.log(k) if k > 0 else 0.0)
    confidence = 1.0 if span <= 0 else min(max(1.0 - (h_mean - math.log(max(k, 1))) / span, 0.0), 1.0)
    return {
        "confidence": confidence,
        "diversity": h_of_mean / log_n if log_n > 0 else 0.0,
        "mutual_information": max(h_of_mean - h_mean, 0.0) / log_n if log_n > 0 else 0.0,
        "entropy_mean": h_mean,
        "entropy_of_mean": h_of_mean,
    }


@torch.no_grad()
def inclusion_probabilities(logits: Tensor, k: int, noise_scale: float, samples: int = 100, *,
                            generator: torch.Generator | None = None) -> Tensor:
    """Monte-Carlo estimate of ``P(candidate i is in the k-set)`` under Gumbel top-k sampling.

    Args:
        logits: ``(G, n)`` logits.
        k: candidates kept per group.
        noise_scale: ``eta`` of the sampler (0: the deterministic top-k, probabilities 0 or 1).
        samples: number of draws.
        generator: noise source (use a private one so that training randomness is not consumed).

    Returns:
        ``(G, n)`` inclusion frequencies; every row sums to ``k``.
    """
    phi = logits.detach().float()
    groups, n = phi.shape
    if noise_scale <= 0 or samples < 1:
        return hard_topk_mask(phi, k).float()
    noise = gumbel_noise((samples, groups, n), generator=generator, device=phi.device)
    perturbed = noise.mul_(noise_scale).add_(phi.unsqueeze(0)).reshape(samples * groups, n)  # in place: 100x a layer
    hits = hard_topk_mask(perturbed, k).float().reshape(samples, groups, n)
    return hits.mean(0)


def _binary_entropy(q: Tensor) -> Tensor:
    q = q.double().clamp(0.0, 1.0)
    return -(torch.xlogy(q, q) + torch.xlogy(1.0 - q, 1.0 - q))


def inclusion_confidence(q: Tensor, k: int) -> float:
    """``1 - mean_g sum_i h2(q_gi) / (n h2(k/n))`` for inclusion probabilities ``q`` ``(G, n)``."""
    n = q.shape[1]
    worst = float(n * _binary_entropy(torch.tensor(k / n)))
    if worst <= 0:
        return 1.0
    return 1.0 - float(_binary_entropy(q).sum(1).mean()) / worst


def plot_layer_metrics(layer: str, series: Mapping[str, Sequence[float]], path: str | Path,
                       inclusion: Tensor | None = None, epochs: Sequence[int] | None = None) -> Path:
    """Draw one layer's metric histories (and a histogram of inclusion probabilities) into a PNG.

    Args:
        layer: the layer's name (title).
        series: metric name -> value per epoch (the unit-interval metrics of :data:`METRIC_NAMES`).
        path: the PNG file to write.
        inclusion: the layer's final inclusion probabilities, drawn as a histogram when given.
        epochs: x values (default 1, 2, ...).

    Requires matplotlib (imported only here).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = 2 if inclusion is not None else 1
    fig = Figure(figsize=(5.5 * panels, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    for name, values in series.items():
        xs = list(epochs) if epochs is not None else list(range(1, len(values) + 1))
        ax.plot(xs, list(values), marker="o", markersize=3, label=name.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{layer}: mask information")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if inclusion is not None:
        hist = fig.add_subplot(1, panels, 2)
        hist.hist(inclusion.detach().cpu().reshape(-1).numpy(), bins=20, range=(0.0, 1.0), color="tab:gray")
        hist.set_xlabel("inclusion probability q")
        hist.set_ylabel("candidates")
        hist.set_yscale("log")
        hist.set_title("final inclusion probabilities")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.13, top=0.9, wspace=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
