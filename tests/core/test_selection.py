"""Exact, tie-safe selection: top-k, per-group quotas and the global ranking."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.core.selection import keep_count, select, select_global, select_per_group, topk_mask
from secateurs.errors import UsageError

FAST = settings(max_examples=40, deadline=None)
GRANULARITIES = [Unstructured(), Kernel(), Filter(), NofM(2, 4), NofM(1, 4)]


def clean(t: torch.Tensor) -> torch.Tensor:
    """NaN counts as the lowest score."""
    return torch.nan_to_num(t.double(), nan=float("-inf"))


def assert_kept_dominate(scores: torch.Tensor, mask: torch.Tensor) -> None:
    s = clean(scores)
    if mask.any() and (~mask).any():
        assert s[mask].min() >= s[~mask].max()


@st.composite
def score_tensors(draw, max_numel: int = 60):
    """Score tensors with many ties, NaNs and infinities."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    n = math.prod(shape)
    values = draw(
        st.lists(
            st.one_of(
                st.sampled_from([0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), float("-inf")]),
                st.floats(-10, 10, allow_nan=False),
            ),
            min_size=n,
            max_size=n,
        )
    )
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


# --------------------------------------------------------------------------- keep_count / topk


def test_keep_count():
    assert keep_count(10, 0.0) == 10
    assert keep_count(10, 0.5) == 5
    assert keep_count(10, 0.94) == 1
    assert keep_count(10, 0.96) == 0
    assert keep_count(8, 0.75) == 2
    assert keep_count(3, 0.5) == 3 - round(1.5)
    for n in range(1, 30):
        for s in (0.1, 0.33, 0.5, 0.9):
            assert keep_count(n, s) == n - round(s * n)


@FAST
@given(scores=score_tensors(), data=st.data())
def test_topk_keeps_exactly_k_and_the_largest(scores, data):
    k = data.draw(st.integers(0, scores.numel()))
    mask = topk_mask(scores, k)
    assert mask.dtype == torch.bool
    assert mask.shape == scores.shape
    assert int(mask.sum()) == k
    assert_kept_dominate(scores, mask)
    assert torch.equal(mask, topk_mask(scores.clone(), k))  # deterministic


@pytest.mark.parametrize("k", [0, 1, 7, 12])
def test_topk_all_equal_scores_keeps_exactly_k_first_positions(k):
    scores = torch.full((3, 4), 0.25)
    mask = topk_mask(scores, k)
    assert int(mask.sum()) == k
    # Ties break by position: the earliest positions win.
    assert mask.reshape(-1)[:k].all() and not mask.reshape(-1)[k:].any()


def test_topk_nan_scores_count_as_lowest():
    scores = torch.tensor([float("nan"), 0.1, float("nan"), -5.0, float("nan"), 2.0])
    mask = topk_mask(scores, 3)
    assert mask.tolist() == [False, True, False, True, False, True]
    all_nan = torch.full((5,), float("nan"))
    assert int(topk_mask(all_nan, 2).sum()) == 2


def test_topk_does_not_modify_scores_and_detaches():
    scores = torch.tensor([3.0, float("nan"), 1.0], requires_grad=False)
    before = scores.clone()
    topk_mask(scores, 1)
    assert torch.equal(torch.isnan(scores), torch.isnan(before))
    w = torch.randn(6, requires_grad=True)
    assert not topk_mask(w, 2).requires_grad


@pytest.mark.parametrize("k", [-1, 7])
def test_topk_rejects_impossible_k(k):
    with pytest.raises(ValueError):
        topk_mask(torch.randn(6), k)


# --------------------------------------------------------------------------- per group


@pytest.mark.parametrize("gran", GRANULARITIES, ids=str)
@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (4, 8, 3, 3), (8, 12), (5, 8, 1, 1)])
def test_per_group_keeps_exactly_k_in_every_group(gran, shape):
    if not gran.supports(shape):
        pytest.skip("unsupported shape")
    g = torch.Generator().manual_seed(7)
    unit_scores = gran.reduce(torch.randn(shape, generator=g))
    for sparsity in (0.0, 0.25, 0.5, 0.75, 0.9):
        mask = select_per_group(unit_scores, gran, sparsity)
        assert mask.shape == unit_scores.shape and mask.dtype == torch.bool
        grouped_mask = gran.group_view(mask)
        grouped_scores = gran.group_view(unit_scores)
        n = grouped_mask.shape[1]
        k = n - round(sparsity * n)
        assert torch.all(grouped_mask.sum(dim=1) == k), sparsity
        for row_mask, row_scores in zip(grouped_mask, grouped_scores):
            assert_kept_dominate(row_scores, row_mask)


def test_per_group_kernel_rows_are_filters_with_cin_ne_cout():
    # 3 filters x 5 input channels: each filter keeps exactly 2 of its 5 kernels.
    w = torch.randn(3, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    unit = Kernel().reduce(w)
    mask = select_per_group(unit, Kernel(), 0.6)
    assert mask.shape == (3, 5)
    assert mask.sum(dim=1).tolist() == [2, 2, 2]
    for o in range(3):
        assert set(unit[o].topk(2).indices.tolist()) == set(mask[o].nonzero().reshape(-1).tolist())


def test_per_group_two_of_four_blocks():
    w = torch.tensor([[1.0, -4.0, 3.0, 2.0, 0.0, 0.5, -0.1, 9.0]])
    mask = select_per_group(w.abs(), NofM(2, 4), 0.5)
    assert mask.tolist() == [[False, True, True, False, False, True, False, True]]


def test_per_group_ties_and_nans_exact():
    scores = torch.tensor([[float("nan"), 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    mask = select_per_group(scores, NofM(2, 4), 0.5)
    assert mask.tolist() == [[False, True, True, False], [True, True, False, False]]


@FAST
@given(
    out=st.integers(1, 5),
    inn=st.integers(1, 6),
    k=st.sampled_from([1, 3]),
    gran=st.sampled_from([Unstructured(), Kernel(), Filter()]),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 1000),
    ties=st.booleans(),
)
def test_per_group_property(out, inn, k, gran, sparsity, seed, ties):
    shape = (out, inn, k, k)
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    unit = gran.reduce(w)
    mask = select_per_group(unit, gran, sparsity)
    gm, gs = gran.group_view(mask), gran.group_view(unit)
    n = gm.shape[1]
    assert torch.all(gm.sum(1) == n - round(sparsity * n))
    for rm, rs in zip(gm, gs):
        assert_kept_dominate(rs, rm)
    assert torch.equal(mask, select_per_group(unit, gran, sparsity))


# --------------------------------------------------------------------------- global


@FAST
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
    ties=st.booleans(),
)
def test_global_unstructured_removes_exact_count(sizes, sparsity, seed, ties):
    g = torch.Generator().manual_seed(seed)
    scores = {}
    for i, n in enumerate(sizes):
        t = torch.randint(0, 4, (n,), generator=g).float() if ties else torch.randn(n, generator=g) * (i + 1)
        scores[f"t{i}"] = t
    keep = select_global(scores, {name: 1 for name in scores}, sparsity)
    assert set(keep) == set(scores)
    total = sum(sizes)
    removed = sum(int((~m).sum()) for m in keep.values())
    assert removed == round(sparsity * total)
    kept_all = torch.cat([scores[n][keep[n]] for n in scores])
    dropped_all = torch.cat([scores[n][~keep[n]] for n in scores])
    if kept_all.numel() and dropped_all.numel():
        assert dropped_all.max() <= kept_all.min()
    again = select_global(scores, {name: 1 for name in scores}, sparsity)
    assert all(torch.equal(keep[n], again[n]) for n in scores)


def test_global_through_select_with_nan_and_shapes():
    scores = {
        "a.weight": torch.tensor([[0.1, float("nan")], [5.0, 0.2]]),
        "b.weight": torch.tensor([[3.0, 0.05, 4.0]]),
    }
    grans = {"a.weight": Unstructured(), "b.weight": Unstructured()}
    shapes = {n: s.shape for n, s in scores.items()}
    keep = select(scores, grans, shapes, 3 / 7, scope="global")
    assert keep["a.weight"].shape == (2, 2) and keep["b.weight"].shape == (1, 3)
    # NaN, 0.05 and 0.1 are the three lowest.
    assert keep["a.weight"].tolist() == [[False, False], [True, True]]
    assert keep["b.weight"].tolist() == [[True, False, True]]


@FAST
@given(
    outs=st.lists(st.integers(1, 6), min_size=2, max_size=3),
    ins=st.lists(st.integers(1, 5), min_size=3, max_size=3),
    sparsity=st.floats(0.0, 0.95),
    seed=st.integers(0, 10_000),
)
def test_global_filter_quota_within_one_unit(outs, ins, sparsity, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = {f"l{i}.weight": torch.Size((o, ins[i], 3, 3)) for i, o in enumerate(outs)}
    weights = {n: torch.randn(s, generator=g) * (1 + int(n[1])) for n, s in shapes.items()}
    gran = Filter()
    unit_scores = {n: gran.reduce(w) for n, w in weights.items()}
    keep = select(unit_scores, {n: gran for n in shapes}, shapes, sparsity, scope="global")
    total = sum(math.prod(s) for s in shapes.values())
    removed = sum(int((~keep[n]).sum()) * gran.unit_size(shapes[n]) for n in shapes)
    target = round(sparsity * total)
    max_unit = max(gran.unit_size(s) for s in shapes.values())
    assert target <= removed < target + max_unit
    kept = torch.cat([unit_scores[n][keep[n]] for n in shapes])
    dropped = torch.cat([unit_scores[n][~keep[n]] for n in shapes])
    if kept.numel() and dropped.numel():
        assert dropped.max() <= kept.min()


def test_global_gives_different_per_tensor_sparsities():
    scores = {"small": torch.linspace(0.0, 1.0, 50), "large": torch.linspace(1.0, 2.0, 50)}
    keep = select_global(scores, {"small": 1, "large": 1}, 0.5)
    assert int((~keep["small"]).sum()) == 50 and int((~keep["large"]).sum()) == 0


# --------------------------------------------------------------------------- select()


def test_select_tensor_scope_per_tensor_exact():
    g = torch.Generator().manual_seed(3)
    shapes = {"a": torch.Size((7, 5)), "b": torch.Size((4, 6, 3, 3))}
    scores = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    keep = select(scores, {n: Unstructured() for n in shapes}, shapes, 0.3)
    for n, s in shapes.items():
        assert int((~keep[n]).sum()) == round(0.3 * math.prod(s))
        assert_kept_dominate(scores[n], keep[n])


def test_select_per_tensor_sparsity_mapping():
    g = torch.Generator().manual_seed(4)
    shapes = {"a": torch.Size((10, 10)), "b": torch.Size((10, 10))}
    scores = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    grans = {n: Unstructured() for n in shapes}
    keep = select(scores, grans, shapes, {"a": 0.2, "b": 0.7})
    assert int((~keep["a"]).sum()) == 20 and int((~keep["b"]).sum()) == 70
    keep = select(scores, grans, shapes, {"a": 0.5, "b": 0.25}, scope="group")
    assert torch.all(keep["a"].sum(1) == 5) and torch.all(keep["b"].sum(1) == 8)


def test_select_filter_tensor_scope_counts_units():
    shape = torch.Size((10, 3, 3, 3))
    unit = Filter().reduce(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    keep = select({"w": unit}, {"w": Filter()}, {"w": shape}, 0.35)
    assert keep["w"].shape == (10,)
    assert int((~keep["w"]).sum()) == round(3.5)


def test_select_rejects_bad_scope_and_mapping_with_global():
    s = {"a": torch.randn(4, 4)}
    grans, shapes = {"a": Unstructured()}, {"a": torch.Size((4, 4))}
    with pytest.raises(UsageError):
        select(s, grans, shapes, 0.5, scope="layer")
    with pytest.raises(UsageError):
        select(s, grans, shapes, {"a": 0.5}, scope="global")
