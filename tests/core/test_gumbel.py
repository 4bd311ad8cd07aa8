"""Gumbel top-k sampling and the closed-form sequential relaxation (secateurs.core.gumbel)."""

from __future__ import annotations

import pytest
import torch

from secateurs.core.gumbel import (
    RELAX_ORDERS,
    gumbel_noise,
    gumbel_topk,
    hard_topk,
    k_hot,
    relaxed_topk,
    straight_through_topk,
)


def literal_relaxation(perturbed, indices, temperature, order, eps=1e-300):
    """The spec's formula written out with (G, k, n) softmaxes: s = sum_r softmax((z + log(1 - c_r)) / T)."""
    idx = indices if order == "rank" else torch.sort(indices, dim=1).values
    onehots = torch.nn.functional.one_hot(idx, perturbed.shape[1]).to(perturbed.dtype)
    before = onehots.cumsum(1) - onehots
    logits = perturbed.unsqueeze(1) + torch.log(1.0 - before + eps)
    return torch.softmax(logits / temperature, dim=-1).sum(1)


@pytest.mark.parametrize("order", RELAX_ORDERS)
@pytest.mark.parametrize("temperature", [5.0, 0.5, 0.05])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_closed_form_relaxation_equals_the_literal_formula_in_value_and_gradient(order, temperature, k):
    g = torch.Generator().manual_seed(k)
    phi = torch.randn(6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    z, idx = gumbel_topk(phi, k, 1.0, generator=g)
    ours = relaxed_topk(z, idx, temperature, order)
    ref = literal_relaxation(z, idx, temperature, order)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.sum(1), torch.full((6,), float(k), dtype=torch.float64))
    weights = torch.randn(6, 7, generator=g, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), phi)
    (grad_ref,) = torch.autograd.grad((literal_relaxation(z, idx, temperature, order) * weights).sum(), phi)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-7, atol=1e-10)


def test_rank_and_index_orders_differ():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 9, generator=g, dtype=torch.float64)
    idx = hard_topk(z, 4)
    assert not torch.allclose(relaxed_topk(z, idx, 1.0, "rank"), relaxed_topk(z, idx, 1.0, "index"))
    with pytest.raises(ValueError):
        relaxed_topk(z, idx, 1.0, "random")


def test_relaxation_stays_finite_for_huge_logits_and_small_temperature():
    z = torch.tensor([[3000.0, -2000.0, 1500.0, 10.0, 0.0], [1e4, 1e4, 1e4, -1e4, 5.0]], requires_grad=True)
    idx = hard_topk(z, 2)
    soft = relaxed_topk(z, idx, 0.01)
    assert torch.isfinite(soft).all()
    torch.testing.assert_close(soft.sum(1), torch.tensor([2.0, 2.0]))
    soft.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_straight_through_is_exactly_k_hot_forward_with_soft_gradient():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(5, 10, generator=g, requires_grad=True)
    z, idx = gumbel_topk(phi, 3, 0.5, generator=g)
    mask = straight_through_topk(z, idx, 2.0)
    assert torch.equal(mask, k_hot(idx, 10))  # bit-exact zeros and ones, not 1 +- an ulp
    assert torch.equal(mask.sum(1), torch.full((5,), 3.0))
    (mask * torch.randn(5, 10, generator=g)).sum().backward()
    assert phi.grad is not None and phi.grad.abs().sum() > 0


def test_k_zero_and_k_n():
    phi = torch.randn(3, 4, requires_grad=True)
    z, idx = gumbel_topk(phi, 0, 1.0)
    assert idx.shape == (3, 0) and torch.equal(straight_through_topk(z, idx, 1.0), torch.zeros(3, 4))
    z, idx = gumbel_topk(phi, 4, 1.0)
    assert torch.equal(straight_through_topk(z, idx, 1.0), torch.ones(3, 4))


def test_hard_topk_breaks_ties_by_position_and_zero_noise_is_deterministic():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert hard_topk(scores, 2).tolist() == [[1, 2]]
    z, idx = gumbel_topk(scores, 2, 0.0)
    assert z is scores and idx.tolist() == [[1, 2]]


def test_gumbel_top1_samples_the_softmax_distribution():
    # eta = 1 and k = 1: the Gumbel-max trick draws exactly from softmax(phi).
    phi = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    g = torch.Generator().manual_seed(7)
    draws = 20000
    _, idx = gumbel_topk(phi.expand(draws, 4), 1, 1.0, generator=g)
    freq = torch.bincount(idx.reshape(-1), minlength=4).float() / draws
    torch.testing.assert_close(freq, torch.softmax(phi[0], 0), atol=0.015, rtol=0)


def test_small_noise_scale_sharpens_the_distribution():
    phi = torch.tensor([[0.0, 0.5, 1.0, 1.5]])
    g = torch.Generator().manual_seed(3)
    _, idx = gumbel_topk(phi.expand(4000, 4), 1, 0.1, generator=g)
    assert (idx == 3).float().mean() > 0.95  # sampling from softmax(phi / eta)


def test_same_generator_seed_gives_the_same_draws():
    a = gumbel_noise((3, 5), generator=torch.Generator().manual_seed(11))
    b = gumbel_noise((3, 5), generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b) and torch.isfinite(a).all()
