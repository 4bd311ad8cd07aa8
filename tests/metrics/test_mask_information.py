"""Mask-information metrics on hand-built distributions (secateurs.metrics.mask_information)."""

from __future__ import annotations

import math

import pytest
import torch

from secateurs.metrics.mask_information import (
    group_entropies,
    inclusion_confidence,
    inclusion_probabilities,
    information_metrics,
    plot_layer_metrics,
)

BIG = 60.0  # a logit gap that makes softmax numerically one-hot


def k_set_logits(rows: list[list[int]], n: int) -> torch.Tensor:
    """Logits whose softmax is uniform over the given k-set in each row (and ~0 elsewhere)."""
    logits = torch.full((len(rows), n), -BIG)
    for g, chosen in enumerate(rows):
        logits[g, chosen] = 0.0
    return logits


def test_uniform_groups_have_minimum_confidence_and_no_mutual_information():
    m = information_metrics(torch.zeros(5, 8), k=3)
    assert m["confidence"] == pytest.approx(0.0, abs=1e-12)
    assert m["diversity"] == pytest.approx(1.0)
    assert m["mutual_information"] == pytest.approx(0.0, abs=1e-12)
    assert m["entropy_mean"] == pytest.approx(math.log(8))


def test_one_hot_k_sets_have_confidence_one():
    m = information_metrics(k_set_logits([[0, 1, 2], [3, 4, 5], [1, 6, 7]], n=8), k=3)
    assert m["confidence"] == pytest.approx(1.0, abs=1e-9)
    assert m["entropy_mean"] == pytest.approx(math.log(3), abs=1e-9)


def test_confidence_grows_as_groups_sharpen():
    base = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    values = [information_metrics(base * scale, k=2)["confidence"] for scale in (0.1, 1.0, 3.0)]
    assert values[0] < values[1] < values[2]


def test_identical_groups_give_minimum_diversity_and_zero_mutual_information():
    n, k = 8, 2
    identical = information_metrics(k_set_logits([[0, 1]] * 4, n), k)
    disjoint = information_metrics(k_set_logits([[0, 1], [2, 3], [4, 5], [6, 7]], n), k)
    # Same per-group confidence, but identical groups all keep the same two inputs.
    assert identical["confidence"] == pytest.approx(disjoint["confidence"])
    assert identical["diversity"] == pytest.approx(math.log(k) / math.log(n))  # the minimum for k-sets
    assert disjoint["diversity"] == pytest.approx(1.0)
    assert identical["mutual_information"] == pytest.approx(0.0, abs=1e-9)
    assert disjoint["mutual_information"] == pytest.approx((math.log(n) - math.log(k)) / math.log(n))
    # For soft groups too: permuting identical rows apart can only raise diversity (concavity of H).
    row = torch.randn(1, n, generator=torch.Generator().manual_seed(1))
    same = information_metrics(row.repeat(4, 1), k)
    shifted = information_metrics(torch.cat([row.roll(s, 1) for s in range(4)]), k)
    assert same["diversity"] < shifted["diversity"]
    assert same["mutual_information"] == pytest.approx(0.0, abs=1e-9)


def test_group_entropies_match_the_definition():
    logits = torch.tensor([[0.0, 0.0], [0.0, -BIG]])
    torch.testing.assert_close(group_entropies(logits), torch.tensor([math.log(2), 0.0], dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_inclusion_probabilities_sum_to_k_and_follow_the_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -2.0]] * 3)
    q = inclusion_probabilities(logits, 2, noise_scale=1.0, samples=2000, generator=g)
    torch.testing.assert_close(q.sum(1), torch.full((3,), 2.0))
    assert torch.all(q[:, :-1] >= q[:, 1:] - 0.03)  # more likely candidates are kept more often
    assert 0.0 < inclusion_confidence(q, 2) < 1.0


def test_inclusion_confidence_extremes():
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    deterministic = inclusion_probabilities(logits, 3, noise_scale=0.0)
    assert set(deterministic.unique().tolist()) == {0.0, 1.0}
    assert inclusion_confidence(deterministic, 3) == pytest.approx(1.0)
    uniform = torch.full((4, 6), 0.5)
    assert inclusion_confidence(uniform, 3) == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(3)
    sampled = inclusion_probabilities(torch.zeros(4, 6), 3, noise_scale=1.0, samples=4000, generator=g)
    assert inclusion_confidence(sampled, 3) < 0.01


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    series = {"confidence": [0.1, 0.4, 0.8], "diversity": [0.9, 0.8, 0.7]}
    path = plot_layer_metrics("fc1.weight", series, tmp_path / "plots" / "fc1.png", torch.rand(4, 5), [1, 2, 3])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
