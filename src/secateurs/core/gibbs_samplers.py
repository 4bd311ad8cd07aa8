"""Exact samplers of the Gibbs-pruning Hamiltonians (Labach & Valaee, arXiv 2006.04981).

Pure tensor kernels: no module state, every random number from the ``generator`` passed in, every
sampler vectorised over all kernels / filters of a layer (Python loops run only over the positions of
one kernel or over Gibbs sweeps, never over units).

Conventions (spec ``gibbs_cs_dpp.md`` §1.3). A spin ``x = +1`` keeps a weight, ``x = -1`` prunes
it; ``field`` is ``b_i = Q - w_i**2`` (negative for weights above the threshold ``Q``).

- independent spins: ``P(keep_i) = sigmoid(-beta * b_i)``;
- kernel spins: ``p(x) ∝ exp(-beta * H)`` with ``H = -c * ((Σ x)**2 - N) + Σ b_i x_i`` over the ``N``
  weights of one kernel. With ``M`` kept weights and kept set ``S``,
  ``log p = beta*c*(2M - N)**2 - 2*beta*Σ_{i∈S} b_i + const``: the energy depends on the spins only
  through the field sum and the kept count, so a dynamic programme over the elementary symmetric
  polynomials of ``λ_i = exp(-2*beta*b_i)`` samples exactly in ``O(N**2)`` per kernel;
- filter spins: two colours (input-channel halves A and B of each filter) coupled bipartitely,
  ``H = Σ b_i x_i - c * Σ_{i∈A} Σ_{j∈B} x_i x_j``, sampled by chromatic Gibbs sweeps with the
  conditionals ``P(x_i = +1) = sigmoid(-beta * (b_i - c * S_other))``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

__all__ = [
    "enumerate_kernel_log_probs",
    "kernel_count_log_probs",
    "linear_quantile",
    "sample_bipartite_filter_spins",
    "sample_filter_mask",
    "sample_independent_spins",
    "sample_kernel_mask",
    "sample_kernel_spins",
]


def linear_quantile(values: Tensor, q: float, dim: int = -1) -> Tensor:
    """Linearly interpolated ``q``-quantile along ``dim`` (as ``torch.quantile(..., 'linear')``).

    One ``torch.kthvalue`` (no size limit, linear time; ``torch.quantile`` refuses large inputs and
    sorts) finds the lower order statistic; the next one is the smallest value above it unless the
    lower one is tied. The reduced dimension is kept with size 1. A large 1-D input on a CPU (a
    layer's threshold, every training step) first tries :func:`_bracketed_order_statistics`, which
    returns the same order statistics faster.
    """
    n = values.shape[dim]
    position = q * (n - 1)
    lower = min(int(position), n - 1)
    frac = position - lower
    exact = lower == n - 1 or frac == 0.0
    if values.dim() == 1 and n >= _BRACKET_MIN and values.device.type == "cpu" and not bool(values.sum().isnan()):
        found = _bracketed_order_statistics(values, lower, 1 if exact else 2)
        if found is not None:
            low = found[0].reshape(1)
            return low if exact else low + frac * (found[1].reshape(1) - low)
    low = torch.kthvalue(values, lower + 1, dim=dim, keepdim=True).values
    if exact:
        return low
    not_above = values <= low
    tied = not_above.sum(dim, keepdim=True) >= lower + 2
    next_up = values.masked_fill(not_above, float("inf")).amin(dim, keepdim=True)
    high = torch.where(tied, low, next_up)
    return low + frac * (high - low)


#: Inputs from this size use the bracketed selection; every this-many-th element forms its sample.
_BRACKET_MIN, _BRACKET_STRIDE = 1 << 15, 64


def _bracketed_order_statistics(values: Tensor, first: int, count: int) -> list[Tensor] | None:
    """The ``first``-th to ``first + count - 1``-th smallest (0-based) of a 1-D tensor, or None.

    A sorted strided sample brackets the wanted ranks in ``[lo, hi]`` (about four standard deviations
    of a sample rank on each side); when the elements below ``lo`` and inside the bracket show that
    the ranks fall inside it, they are order statistics of the (few) elements inside, found by
    ``kthvalue`` on those alone. Same values as ``kthvalue`` on the whole tensor; None when the
    bracket misses (the caller then selects over everything). No NaN allowed.
    """
    n = values.numel()
    sample = torch.sort(values[::_BRACKET_STRIDE]).values
    m = sample.numel()
    p = first / max(n - 1, 1)
    centre, spread = p * (m - 1), 4.0 * math.sqrt(m * p * (1.0 - p)) + 2.0
    lo, hi = sample[max(int(centre - spread), 0)], sample[min(int(centre + spread) + 1, m - 1)]
    below = int((values < lo).sum())
    inside = values[(values >= lo) & (values <= hi)]
    if below > first or below + inside.numel() < first + count:
        return None
    return [torch.kthvalue(inside, first - below + 1 + i).values for i in range(count)]


def sample_independent_spins(field: Tensor, beta: float | Tensor, generator: torch.Generator) -> Tensor:
    """Independent spins: keep each weight with probability ``sigmoid(-beta * field)``.

    Returns a boolean tensor of ``field``'s shape (True = keep).
    """
    u = torch.rand(field.shape, generator=generator, device=field.device, dtype=field.dtype)
    return u < torch.sigmoid(-beta * field)


def _suffix_log_esp(log_lam: Tensor) -> Tensor:
    """``T[k, i, j + 1] = log e_j(λ_i, ..., λ_{N-1})`` (elementary symmetric polynomials), ``T[..., 0] = -inf``.

    ``log_lam`` has shape ``(K, N)``; the table has shape ``(K, N + 1, N + 2)``. Column 0 stands for
    ``j = -1`` so that ``e_{j-1}`` is a shifted read without bounds checks. Row ``i`` only has
    ``N - i + 1`` finite entries, so each step updates that triangle only.
    """
    k, n = log_lam.shape
    table = log_lam.new_full((k, n + 1, n + 2), float("-inf"))
    table[:, n, 1] = 0.0  # e_0 of the empty set is 1
    for i in range(n - 1, -1, -1):
        length = n - i  # suffix i.. has `length` weights: e_0 .. e_length, columns 1 .. length + 1
        nxt = table[:, i + 1]
        table[:, i, 1 : length + 2] = _logaddexp(nxt[:, 1 : length + 2], log_lam[:, i : i + 1] + nxt[:, : length + 1])
    return table


def _logaddexp(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) + exp(b))`` for operands never both ``-inf`` (faster than ``torch.logaddexp`` on CPU)."""
    return torch.maximum(a, b).add_((a - b).abs_().neg_().exp_().add_(1.0).log_())


def _kernel_terms(field: Tensor, beta: float | Tensor, coupling: float) -> tuple[Tensor, Tensor]:
    """Centred per-weight log-factors and the per-count log-potentials of the kernel model.

    ``log λ_i = -2 beta b_i`` is shifted by its kernel mean ``m`` (keeps the table's numbers small,
    which float32 needs at large beta); ``e_j`` then shrinks by ``exp(j m)``, which the per-count term
    ``φ(j) + j m`` (with ``φ(j) = beta c (2j - N)**2``) puts back. Conditionals given the count do not
    change under the shift.
    """
    n = field.shape[-1]
    log_lam = -2.0 * beta * field
    centre = log_lam.mean(-1, keepdim=True)
    counts = torch.arange(n + 1, device=field.device, dtype=field.dtype)
    per_count = beta * coupling * (2.0 * counts - n) ** 2 + counts * centre
    return log_lam - centre, per_count


def kernel_count_log_probs(field: Tensor, beta: float | Tensor, coupling: float) -> Tensor:
    """Exact ``log P(M = m)`` of the number of kept weights per kernel, ``m = 0..N``.

    Args:
        field: ``(K, N)`` fields ``b_i`` of ``K`` kernels with ``N`` weights each.
        beta: inverse temperature.
        coupling: ferromagnetic coupling ``c`` inside a kernel.

    Returns:
        ``(K, N + 1)`` normalised log-probabilities.
    """
    log_lam, per_count = _kernel_terms(field, beta, coupling)
    table = _suffix_log_esp(log_lam)
    return torch.log_softmax(per_count + table[:, 0, 1:], dim=-1)


def sample_kernel_spins(
    field: Tensor, beta: float | Tensor, coupling: float, generator: torch.Generator
) -> Tensor:
    """Exact samples of the kernel Hamiltonian, one per kernel, in ``O(N**2)`` per kernel.

    First the kept count ``M`` is drawn from its exact marginal, then the kept set given ``M`` by
    sequential conditional-Bernoulli draws (``P(keep_i | r left) = λ_i e_{r-1}(λ_{i+1:}) / e_r(λ_{i:})``).

    Args:
        field: ``(K, N)`` fields ``b_i``; the sampler computes in their dtype (float32 is accurate to
            about 1e-4 in each keep probability at beta = 1e4 with w² spreads of 0.01 in a kernel).
        beta: inverse temperature.
        coupling: ferromagnetic coupling ``c``.
        generator: source of randomness (on ``field``'s device).

    Returns:
        ``(K, N)`` boolean keep mask.
    """
    k, n = field.shape
    log_lam, per_count = _kernel_terms(field, beta, coupling)
    table = _suffix_log_esp(log_lam)
    u = torch.rand((k, n + 1), generator=generator, device=field.device, dtype=field.dtype)
    # Inverse-CDF draw of M (one uniform per kernel); the other n uniforms drive the sequential draws.
    cdf = torch.softmax(per_count + table[:, 0, 1:], dim=-1).cumsum(-1)
    remaining = (cdf[:, :-1] < u[:, :1] * cdf[:, -1:]).sum(-1)
    # Row-major (K, (N + 1) * (N + 2)) view of the table: one gather reads e_{r-1} of the suffix after
    # i (row i + 1, column r) and e_r of the suffix from i (row i, column r + 1) together; both read
    # positions move one row (``width``) per step, and one column left when a weight is kept.
    width = n + 2
    flat = table.reshape(k, -1)
    index = torch.stack([remaining + width, remaining + 1], dim=1)
    # keep iff log u < log λ_i + log e_{r-1}(after) - log e_r(here); impossible states give nan -> False.
    threshold = (u[:, 1:].log() - log_lam).T.contiguous()
    keep = torch.empty((n, k), dtype=torch.bool, device=field.device)
    for i in range(n):
        after_here = flat.gather(1, index)
        torch.lt(threshold[i], after_here[:, 0] - after_here[:, 1], out=keep[i])
        index.sub_(keep[i, :, None].long()).add_(width)
    return keep.T


def _spin_states(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """All ``2**n`` spin configurations as a ``(2**n, n)`` tensor of ±1."""
    bits = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=n)), device=device, dtype=dtype)
    return bits.reshape(2**n, n)


def enumerate_kernel_log_probs(field: Tensor, beta: float | Tensor, coupling: float) -> tuple[Tensor, Tensor]:
    """Reference for small kernels: log-probabilities of all ``2**N`` states by enumeration.

    Returns:
        ``(states, log_probs)``: ``(2**N, N)`` spins (±1) and ``(K, 2**N)`` normalised log-probabilities.
    """
    n = field.shape[-1]
    states = _spin_states(n, field.device, field.dtype)
    total = states.sum(-1)
    energy = -coupling * (total**2 - n) + field @ states.T
    return states, torch.log_softmax(-beta * energy, dim=-1)


def sample_bipartite_filter_spins(
    field_a: Tensor,
    field_b: Tensor,
    initial_b: Tensor,
    beta: float | Tensor,
    coupling: float,
    sweeps: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Chromatic (two-colour) Gibbs sampling of the bipartite filter Hamiltonian, all filters at once.

    Spins of one colour are conditionally independent given the other colour's spin sum, so each
    half-sweep is one vectorised draw. The chain starts from colour B set to ``initial_b`` (±1 per
    filter) and runs ``sweeps`` double sweeps; the last A and B draws are returned.

    Args:
        field_a: ``(F, n_A)`` fields of colour A of each filter (``n_A`` may be 0).
        field_b: ``(F, n_B)`` fields of colour B.
        initial_b: ``(F,)`` initial spin (±1) of all of colour B in each filter.
        beta: inverse temperature.
        coupling: coupling ``c`` between the colours.
        sweeps: number of A-then-B sweeps (at least 1).
        generator: source of randomness.

    Returns:
        ``(keep_a, keep_b)`` boolean masks of the shapes of ``field_a`` and ``field_b``.
    """
    n_a, n_b = field_a.shape[1], field_b.shape[1]
    # x = +1 iff u < sigmoid(beta*(c*S - b)) iff logit(u) + beta*b < beta*c*S: the noise and beta*b of
    # many sweeps are drawn and folded in at once, so a half-sweep is one comparison and one sum.
    scaled_a, scaled_b = beta * field_a, beta * field_b
    pull = float(beta) * coupling  # a Python number: the loop below then launches no scalar tensor ops
    pull_on_a = initial_b.to(field_b.dtype)[:, None] * (pull * n_b)
    keep_a = keep_b = None
    chunk = max(1, _NOISE_BUDGET // max(field_a.numel() + field_b.numel(), 1))
    done = 0
    while done < sweeps:
        if _frozen(pull_on_a, pull, scaled_a, scaled_b):
            # No noise the uniform draws can produce flips a spin any more: the chain sits at a fixed
            # point (every filter wholly kept or wholly pruned), so the remaining sweeps change nothing.
            keep = (pull_on_a > 0).expand(-1, max(n_a, n_b))
            return keep[:, :n_a], keep[:, :n_b]
        t = min(chunk, sweeps - done)
        noisy_a = _logistic_noise((t, *field_a.shape), field_a, generator).add_(scaled_a)
        noisy_b = _logistic_noise((t, *field_b.shape), field_b, generator).add_(scaled_b)
        for step in range(t):
            keep_a = noisy_a[step] < pull_on_a
            pull_on_b = keep_a.sum(1, keepdim=True).mul(2 * pull).sub_(pull * n_a)  # c * S_A, scaled by beta
            keep_b = noisy_b[step] < pull_on_b
            pull_on_a = keep_b.sum(1, keepdim=True).mul(2 * pull).sub_(pull * n_b)
        done += t
    assert keep_a is not None and keep_b is not None, "sweeps must be at least 1"
    return keep_a, keep_b


#: Most noise elements drawn at once by the filter sampler (bounds its memory on large layers).
_NOISE_BUDGET = 1 << 22


def _noise_bound(dtype: torch.dtype) -> float:
    """Largest ``|logit(u)|`` of a uniform draw ``u`` in ``(0, 1)`` at the resolution of ``dtype``, plus 1."""
    return -math.log(torch.finfo(dtype).eps / 2) + 1.0


def _frozen(pull_on_a: Tensor, pull: float, scaled_a: Tensor, scaled_b: Tensor) -> bool:
    """Whether every spin is decided whatever the noise, now and in every later half-sweep.

    True when each filter's pull on colour A beats colour A's largest field by more than any logistic
    noise, and a wholly aligned colour pulls the other one (and back) just as surely.
    """
    n_a, n_b = scaled_a.shape[1], scaled_b.shape[1]
    if n_a == 0 or n_b == 0 or pull_on_a.numel() == 0:
        return False
    bound = _noise_bound(scaled_a.dtype)
    reach_a = scaled_a.abs().amax() + bound
    reach_b = scaled_b.abs().amax() + bound
    if not (pull * n_a > float(reach_b) and pull * n_b > float(reach_a)):
        return False
    return bool((pull_on_a.abs() > reach_a).all())


def _logistic_noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator) -> Tensor:
    """``logit(u)`` for uniform ``u``: standard logistic noise."""
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype).logit_()


# --------------------------------------------------------------------------- layer-level masks


def sample_kernel_mask(
    squared: Tensor, threshold: Tensor, beta: float | Tensor, coupling: float, generator: torch.Generator
) -> Tensor:
    """Kernel-wise Gibbs mask of a whole layer (one exact kernel sample per 2-D kernel).

    Args:
        squared: squared weights ``(out, in, *kernel)`` (a 2-D weight has 1-element kernels).
        threshold: ``Q`` as a scalar tensor or one value per kernel ``(out, in)``.
        beta: inverse temperature.
        coupling: ferromagnetic coupling ``c`` inside a kernel.
        generator: source of randomness.

    Returns:
        Boolean keep mask of ``squared``'s shape.
    """
    kernels = squared.reshape(squared.shape[0] * squared.shape[1], -1)
    q = threshold.reshape(-1, 1) if threshold.dim() > 0 else threshold
    return sample_kernel_spins(q - kernels, beta, coupling, generator).reshape(squared.shape)


def sample_filter_mask(
    squared: Tensor,
    threshold: Tensor,
    beta: float | Tensor,
    coupling: float,
    sweeps: int,
    generator: torch.Generator,
    draw_start: bool = False,
) -> Tensor:
    """Filter-wise Gibbs mask of a whole layer: two colours split by input channel, all filters at once.

    Colour A holds input channels ``[0, in // 2)``, colour B the rest. Colour B starts at +1 in filters
    whose mean squared weight exceeds ``Q`` and at -1 elsewhere (the deterministic filter mask), or,
    with ``draw_start``, at +1 with probability ``σ(β (mean w² - Q))``: a draw of the filter as one
    spin. A strongly coupled chain hardly ever leaves the aligned state it starts in, so with the
    deterministic start it only reproduces its initial guess; a drawn start makes the filter itself
    random at low β.

    Args:
        squared: squared weights ``(out, in, *kernel)``.
        threshold: ``Q`` as a scalar tensor or one value per filter ``(out,)``.
        beta: inverse temperature.
        coupling: coupling ``c`` between the two halves of a filter.
        sweeps: chromatic Gibbs sweeps per call.
        generator: source of randomness.

    Returns:
        Boolean keep mask of ``squared``'s shape.
    """
    out, cin = squared.shape[0], squared.shape[1]
    per_filter = squared.reshape(out, cin, -1)
    q = threshold.reshape(-1).expand(out) if threshold.dim() > 0 else threshold.expand(out)
    field = q[:, None, None] - per_filter
    half = cin // 2
    if draw_start:
        keep_p = torch.sigmoid(beta * (per_filter.mean(dim=(1, 2)) - q))
        start = torch.rand(keep_p.shape, generator=generator, device=keep_p.device, dtype=keep_p.dtype) < keep_p
    else:
        start = per_filter.mean(dim=(1, 2)) > q
    initial_b = torch.where(start, 1.0, -1.0).to(squared.dtype)
    keep_a, keep_b = sample_bipartite_filter_spins(
        field[:, :half].reshape(out, -1), field[:, half:].reshape(out, -1), initial_b, beta, coupling, sweeps, generator
    )
    per_channel = per_filter.shape[2]
    keep = torch.cat([keep_a.reshape(out, half, per_channel), keep_b.reshape(out, cin - half, per_channel)], dim=1)
    return keep.reshape(squared.shape)
