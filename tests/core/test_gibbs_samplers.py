"""The Gibbs-pruning samplers against closed forms and brute-force enumeration.

Statistical checks use a fixed seed and a margin of at least 5 binomial standard deviations (plus a
small absolute slack), so they are deterministic and far from their failure edge.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.core.gibbs_samplers import (
    enumerate_kernel_log_probs,
    kernel_count_log_probs,
    linear_quantile,
    sample_bipartite_filter_spins,
    sample_filter_mask,
    sample_independent_spins,
    sample_kernel_mask,
    sample_kernel_spins,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_frequencies(observed: torch.Tensor, expected: torch.Tensor, draws: int) -> None:
    """Empirical frequencies within 5 standard deviations (+1e-3) of the exact probabilities."""
    expected = expected.to(observed.dtype)
    margin = 5 * torch.sqrt(expected * (1 - expected) / draws) + 1e-3
    worst = ((observed - expected).abs() - margin).max()
    assert worst <= 0, f"frequency off by {float(worst):.4g} beyond the margin"


def _state_index(keep: torch.Tensor) -> torch.Tensor:
    """Index of a keep pattern in the enumeration order (itertools.product over (-1, +1), first spin MSB)."""
    n = keep.shape[-1]
    weights = 2 ** torch.arange(n - 1, -1, -1)
    return (keep.long() * weights).sum(-1)


# --------------------------------------------------------------------------- quantiles


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 4),
    n=st.integers(1, 60),
    q=st.floats(0.0, 1.0),
    integer_valued=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_linear_quantile_matches_torch_quantile(rows, n, q, integer_valued, seed):
    g = _gen(seed)
    if integer_valued:  # many ties
        x = torch.randint(0, 4, (rows, n), generator=g).double()
    else:
        x = torch.randn(rows, n, generator=g, dtype=torch.float64)
    expected = torch.quantile(x, q, dim=1, keepdim=True, interpolation="linear")
    torch.testing.assert_close(linear_quantile(x, q, dim=1), expected, rtol=0, atol=1e-12)


def test_linear_quantile_handles_inputs_torch_quantile_refuses():
    x = torch.arange(1 << 24 | 5, dtype=torch.float32).flip(0)  # above torch.quantile's 2**24 limit
    assert float(linear_quantile(x, 0.5)) == pytest.approx((x.numel() - 1) / 2)


# --------------------------------------------------------------------------- independent spins


def test_independent_spin_frequencies_match_the_closed_form():
    draws, beta = 20000, 3.0
    field = torch.linspace(-1.5, 1.5, 9)
    keep = sample_independent_spins(field.expand(draws, -1), beta, _gen(1))
    _assert_frequencies(keep.double().mean(0), torch.sigmoid(-beta * field).double(), draws)


# --------------------------------------------------------------------------- kernel sampler


@pytest.mark.parametrize("n", [1, 2, 4, 9])
@pytest.mark.parametrize(("beta", "coupling"), [(0.7, 0.0), (2.0, 0.3), (25.0, 0.01)])
def test_kernel_count_distribution_equals_enumeration(n, beta, coupling):
    field = torch.randn(6, n, generator=_gen(n), dtype=torch.float64) * 0.4
    states, log_probs = enumerate_kernel_log_probs(field, beta, coupling)
    counts = (states > 0).sum(-1).expand(field.shape[0], -1)
    expected = torch.zeros(field.shape[0], n + 1, dtype=torch.float64).scatter_add_(1, counts, log_probs.exp())
    torch.testing.assert_close(kernel_count_log_probs(field, beta, coupling).exp(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("n", "beta", "coupling"), [(3, 1.5, 0.4), (4, 0.8, 0.2), (4, 6.0, 0.05)])
def test_kernel_sampler_matches_the_enumerated_distribution(n, beta, coupling):
    draws = 30000
    field = torch.randn(1, n, generator=_gen(10 + n), dtype=torch.float64) * 0.5
    _, log_probs = enumerate_kernel_log_probs(field, beta, coupling)
    keep = sample_kernel_spins(field.expand(draws, -1).contiguous(), beta, coupling, _gen(2))
    observed = torch.bincount(_state_index(keep), minlength=2**n).double() / draws
    _assert_frequencies(observed, log_probs[0].exp(), draws)


@pytest.mark.parametrize("n", [25, 49])  # 5x5 and 7x7 kernels: far beyond enumeration
def test_kernel_sampler_without_coupling_is_independent_spins(n):
    draws, beta = 4000, 2.0
    field = torch.linspace(-1.0, 1.0, n)
    keep = sample_kernel_spins(field.expand(draws, -1).contiguous(), beta, 0.0, _gen(3))
    # H = Σ b x with no 1/2: each spin keeps with sigmoid(-2 beta b).
    _assert_frequencies(keep.double().mean(0), torch.sigmoid(-2 * beta * field).double(), draws)


@pytest.mark.parametrize(
    ("n", "beta", "coupling", "scale"),
    [(9, 3.0, 0.05, 0.3), (25, 3.0, 0.05, 0.3), (49, 3.0, 0.05, 0.3), (9, 1e4, 1e-4, 3e-4)],
)
def test_kernel_sampler_kept_counts_follow_their_exact_marginal(n, beta, coupling, scale):
    draws = 6000
    field = torch.randn(1, n, generator=_gen(n)) * scale  # float32, as in training
    keep = sample_kernel_spins(field.expand(draws, -1).contiguous(), beta, coupling, _gen(4))
    observed = torch.bincount(keep.sum(-1), minlength=n + 1).double() / draws
    _assert_frequencies(observed, kernel_count_log_probs(field.double(), beta, coupling)[0].exp(), draws)


def _ground_state_scores(field: torch.Tensor, coupling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force-free ground state: for each kept count M the best set is the M lowest fields.

    Returns ``(score, order)``: ``score[k, M] = c (2M - N)**2 - 2 * (sum of the M lowest fields)``,
    the log-probability over beta up to a constant, and the fields' ascending order.
    """
    n = field.shape[-1]
    order = field.argsort(dim=-1)
    prefix = torch.cat([torch.zeros(field.shape[0], 1, dtype=field.dtype), field.gather(1, order).cumsum(-1)], 1)
    counts = torch.arange(n + 1, dtype=field.dtype)
    return coupling * (2 * counts - n) ** 2 - 2 * prefix, order


@pytest.mark.parametrize("n", [1, 9, 25, 49])
def test_kernel_sampler_at_large_beta_returns_the_ground_state(n):
    beta, coupling, kernels = 1e6, 0.002, 300
    g = _gen(5 + n)
    # Distinct fields at least 1e-3 apart: within a count, the best set wins by >= 2000 nats.
    grid = torch.linspace(-0.3, 0.3, n, dtype=torch.float64) + 1e-4
    field = torch.stack([grid[torch.randperm(n, generator=g)] for _ in range(kernels)])
    score, order = _ground_state_scores(field, coupling)
    top2 = score.topk(min(2, n + 1), dim=-1).values
    clear = (top2[:, 0] - top2[:, -1]) * beta > 50  # kernels whose best count is unambiguous
    assert clear.sum() > kernels // 2
    expected = order.argsort(dim=-1) < score.argmax(-1)[:, None]
    keep = sample_kernel_spins(field, beta, coupling, _gen(6))  # float64: beta = 1e6 needs it
    assert torch.equal(keep[clear], expected[clear])


def test_kernel_mask_uses_one_threshold_per_kernel():
    squared = torch.rand(4, 3, 5, 5, generator=_gen(7))
    threshold = torch.full((4, 3), 2.0)  # above every weight: the field pushes every spin to prune
    threshold[1, 2] = -1.0  # below every weight: this kernel is kept whole
    keep = sample_kernel_mask(squared, threshold, 1e4, 0.0, _gen(8))
    assert keep.shape == squared.shape
    assert keep[1, 2].all() and keep.sum() == 25


# --------------------------------------------------------------------------- filter sampler


def test_filter_sampler_without_coupling_is_independent_spins():
    draws, beta = 20000, 2.0
    field_a, field_b = torch.linspace(-1, 1, 4), torch.linspace(1.5, -0.5, 5)
    initial = torch.ones(draws)
    keep_a, keep_b = sample_bipartite_filter_spins(
        field_a.expand(draws, -1), field_b.expand(draws, -1), initial, beta, 0.0, 3, _gen(9)
    )
    _assert_frequencies(keep_a.double().mean(0), torch.sigmoid(-beta * field_a).double(), draws)
    _assert_frequencies(keep_b.double().mean(0), torch.sigmoid(-beta * field_b).double(), draws)


def test_filter_chain_reaches_the_bipartite_gibbs_distribution():
    # Many identical filters = many independent chains. The conditionals sigmoid(-beta F) are those
    # of p(x) ∝ exp(-(beta / 2) H) with H = Σ b x - c Σ_A Σ_B x_i x_j (spec §1.3c).
    draws, beta, coupling = 30000, 1.2, 0.35
    field = torch.tensor([0.3, -0.2, 0.5, -0.6], dtype=torch.float64)
    keep_a, keep_b = sample_bipartite_filter_spins(
        field[:2].expand(draws, -1), field[2:].expand(draws, -1), -torch.ones(draws, dtype=torch.float64),
        beta, coupling, 30, _gen(10),
    )
    keep = torch.cat([keep_a, keep_b], 1)
    bits = [[(s >> (3 - i)) & 1 for i in range(4)] for s in range(16)]
    states = torch.tensor(bits, dtype=torch.float64) * 2 - 1
    energy = states @ field - coupling * states[:, :2].sum(1) * states[:, 2:].sum(1)
    expected = torch.softmax(-(beta / 2) * energy, 0)
    observed = torch.bincount(_state_index(keep), minlength=16).double() / draws
    _assert_frequencies(observed, expected, draws)


@pytest.mark.parametrize("cin", [1, 5, 16])
def test_filter_masks_converge_to_the_deterministic_filter_mask_as_beta_grows(cin):
    squared = torch.rand(12, cin, 3, 3, generator=_gen(cin)) * 0.02
    means = squared.mean(dim=(1, 2, 3))
    q = torch.quantile(means, 0.5)
    deterministic = (means > q)[:, None, None, None].expand_as(squared)
    disagreement = []
    for beta in (1e-3, 1e-1, 1.0, 30.0):
        masks = torch.stack([sample_filter_mask(squared, q, beta, 1.0, 20, _gen(s)) for s in range(20)])
        disagreement.append(float((masks != deterministic).double().mean()))
    if cin > 1:
        assert disagreement[-1] == 0.0
        assert disagreement[0] > 0.3  # near-uniform noise at small beta
        assert all(a >= b for a, b in zip(disagreement, disagreement[1:]))
    else:  # one input channel: colour A is empty and the spins are independent
        assert disagreement[-1] < disagreement[0]


def test_filter_mask_uses_one_threshold_per_filter():
    squared = torch.rand(3, 4, 3, 3, generator=_gen(11)) * 0.01
    threshold = torch.tensor([1.0, -1.0, 1.0])
    keep = sample_filter_mask(squared, threshold, 1e3, 1.0, 5, _gen(12))
    assert keep[1].all() and not keep[0].any() and not keep[2].any()


def test_frozen_chains_consume_no_noise_and_agree_with_full_sweeps():
    field_a = torch.randn(8, 18, generator=_gen(13)) * 0.01
    field_b = torch.randn(8, 18, generator=_gen(14)) * 0.01
    initial = torch.tensor([1.0, -1.0] * 4)
    g = _gen(15)
    keep_a, keep_b = sample_bipartite_filter_spins(field_a, field_b, initial, 50.0, 1.0, 10, g)
    assert torch.equal(g.get_state(), _gen(15).get_state())  # decided without drawing
    assert torch.equal(keep_a, (initial > 0)[:, None].expand_as(field_a))
    assert torch.equal(keep_b, (initial > 0)[:, None].expand_as(field_b))
    # A coupling just too weak to decide every spin runs the sweeps, and still lands on the same masks.
    weak = (math.log(2**24) + 1.0) / (50.0 * 18) * 0.9
    keep_a2, keep_b2 = sample_bipartite_filter_spins(field_a, field_b, initial, 50.0, weak, 10, _gen(15))
    assert torch.equal(keep_a2, keep_a) and torch.equal(keep_b2, keep_b)
