"""The fast top-k selections and Gumbel noise give exactly what the straightforward code gives."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.core.gibbs_samplers import linear_quantile
from secateurs.core.gumbel import gumbel_noise, hard_topk, hard_topk_mask, k_hot, relaxed_topk, straight_through_topk
from secateurs.metrics.mask_information import inclusion_probabilities


def _stable_sort_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


@st.composite
def _scores_and_k(draw):
    groups, n = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    # Few distinct values: ties everywhere, also across the k-th place; NaN and signed zeros too.
    values = st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.5, float("nan"), float("inf")]) | st.floats(-3, 3, width=32)
    flat = draw(st.lists(values, min_size=groups * n, max_size=groups * n))
    return torch.tensor(flat, dtype=torch.float32).reshape(groups, n), draw(st.integers(0, n))


@settings(max_examples=300, deadline=None)
@given(_scores_and_k())
def test_hard_topk_equals_the_first_k_of_a_stable_descending_sort(case):
    scores, k = case
    expected = _stable_sort_topk(scores, k)
    assert torch.equal(hard_topk(scores, k), expected)
    assert torch.equal(hard_topk_mask(scores, k), k_hot(expected, scores.shape[1]).bool())


def test_gumbel_noise_equals_the_textbook_formula():
    got = gumbel_noise((50, 40), generator=torch.Generator().manual_seed(3))
    u = torch.rand((50, 40), generator=torch.Generator().manual_seed(3))
    u = u.clamp(min=torch.finfo(torch.float32).tiny, max=1.0 - torch.finfo(torch.float32).eps)
    assert torch.equal(got, -torch.log(-torch.log(u)))


def test_inclusion_probabilities_equal_the_sort_based_estimate():
    logits = torch.randn(7, 30, generator=torch.Generator().manual_seed(0))
    got = inclusion_probabilities(logits, 4, 0.7, 25, generator=torch.Generator().manual_seed(1))
    noise = gumbel_noise((25, 7, 30), generator=torch.Generator().manual_seed(1))
    perturbed = (logits.unsqueeze(0) + 0.7 * noise).reshape(25 * 7, 30)
    expected = k_hot(_stable_sort_topk(perturbed, 4), 30).reshape(25, 7, 30).mean(0)
    assert torch.equal(got, expected)
    assert torch.equal(inclusion_probabilities(logits, 4, 0.0), k_hot(_stable_sort_topk(logits, 4), 30))


def test_straight_through_equals_hard_plus_soft_minus_detached_soft_in_value_and_gradient():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(9, 20, generator=g)
    upstream = torch.randn(9, 20, generator=g)
    idx = torch.topk(logits, 6, dim=1).indices
    fast_in, plain_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fast = straight_through_topk(fast_in, idx, 0.7)
    soft = relaxed_topk(plain_in, idx, 0.7)
    plain = k_hot(idx, 20) + (soft - soft.detach())
    assert torch.equal(fast, plain)
    (fast * upstream).sum().backward()
    (plain * upstream).sum().backward()
    assert torch.equal(fast_in.grad, plain_in.grad)


def _kthvalue_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """linear_quantile's selection over the whole tensor (its path for small inputs)."""
    n = values.numel()
    position = q * (n - 1)
    lower = min(int(position), n - 1)
    low = torch.kthvalue(values, lower + 1, keepdim=True).values
    frac = position - lower
    if lower == n - 1 or frac == 0.0:
        return low
    not_above = values <= low
    tied = not_above.sum(keepdim=True, dim=0) >= lower + 2
    high = torch.where(tied, low, values.masked_fill(not_above, float("inf")).amin(0, keepdim=True))
    return low + frac * (high - low)


def test_bracketed_quantile_of_a_large_layer_equals_the_whole_tensor_selection():
    g = torch.Generator().manual_seed(0)
    n = 40_000  # above the size from which the bracketed selection is tried
    cases = [
        torch.randn(n, generator=g).square(),  # squared weights
        torch.randint(0, 4, (n,), generator=g).float(),  # heavy ties
        torch.cat([torch.zeros(n // 2), torch.rand(n - n // 2, generator=g)]),  # half pruned
        torch.sort(torch.randn(n, generator=g)).values,  # ordered: a strided sample still brackets
        torch.cat([torch.randn(n - 3, generator=g), torch.tensor([float("inf"), -float("inf"), 0.0])]),
    ]
    for values in cases:
        for q in (0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 0.9999, 1.0, 1 / 3):
            got = linear_quantile(values, q)
            assert got.shape == (1,) and torch.equal(got, _kthvalue_quantile(values, q)), q
