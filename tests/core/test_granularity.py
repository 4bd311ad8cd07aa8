"""Granularities: unit shapes, reduce, expand, groups and parsing, checked against explicit loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.core.granularity import (
    Filter,
    Granularity,
    Kernel,
    NofM,
    Unstructured,
    list_granularities,
    parse_granularity,
)
from secateurs.errors import UsageError

GRANULARITIES = [Unstructured(), Kernel(), Filter(), NofM(2, 4), NofM(1, 4)]
GRAN_IDS = [g.spec for g in GRANULARITIES]
REDUCTIONS = ["l2", "l1", "sum", "mean"]

LINEAR_SHAPES = [(6, 8), (3, 12), (12, 4), (1, 8)]
CONV_SHAPES = [(4, 6, 3, 3), (6, 4, 3, 3), (5, 8, 1, 1), (2, 4, 3, 1), (1, 4, 2, 2), (3, 1, 2, 2)]
ALL_SHAPES = LINEAR_SHAPES + CONV_SHAPES

FAST = settings(max_examples=40, deadline=None)


@st.composite
def weight_shapes(draw, min_inner: int = 1):
    """Linear (out, in), conv2d (out, in, kh, kw), and conv1d (out, in, k) shapes."""
    out = draw(st.integers(1, 6))
    inn = draw(st.integers(min_inner, 6))
    kind = draw(st.sampled_from(["linear", "conv1d", "conv2d"]))
    if kind == "linear":
        return (out, inn)
    if kind == "conv1d":
        return (out, inn, draw(st.integers(1, 3)))
    return (out, inn, draw(st.integers(1, 3)), draw(st.integers(1, 3)))


@st.composite
def nofm_shapes(draw, m: int = 4):
    """Shapes whose flattened input size is a multiple of ``m`` (so N:M applies)."""
    out = draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["linear", "conv2d"]))
    if kind == "linear":
        return (out, m * draw(st.integers(1, 4)))
    return (out, m * draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))


# --------------------------------------------------------------------------- explicit references


def reference_unit_shape(gran: Granularity, shape) -> tuple[int, ...]:
    if isinstance(gran, (Unstructured, NofM)):
        return tuple(shape)
    if isinstance(gran, Kernel):
        return tuple(shape[:2])
    if isinstance(gran, Filter):
        return (shape[0],)
    raise AssertionError(gran)


def reference_expand(gran: Granularity, unit_mask: torch.Tensor, shape) -> torch.Tensor:
    """Element by element: which unit owns each weight element."""
    full = torch.empty(shape, dtype=unit_mask.dtype)
    for idx in itertools.product(*(range(s) for s in shape)):
        if isinstance(gran, (Unstructured, NofM)):
            full[idx] = unit_mask[idx]
        elif isinstance(gran, Kernel):
            full[idx] = unit_mask[idx[0], idx[1]]
        elif isinstance(gran, Filter):
            full[idx] = unit_mask[idx[0]]
    return full


def reference_reduce(gran: Granularity, scores: torch.Tensor, how: str) -> torch.Tensor:
    unit_shape = reference_unit_shape(gran, scores.shape)
    out = torch.empty(unit_shape, dtype=scores.dtype)
    for uidx in itertools.product(*(range(s) for s in unit_shape)):
        block = scores[uidx].reshape(-1)  # the elements of this unit
        if how == "l2":
            out[uidx] = block.pow(2).sum().sqrt()
        elif how == "l1":
            out[uidx] = block.abs().sum()
        elif how == "sum":
            out[uidx] = block.sum()
        else:
            out[uidx] = block.mean()
    return out


def reference_groups(gran: Granularity, unit: torch.Tensor) -> list[torch.Tensor]:
    """The documented groups (rows), built by hand."""
    if isinstance(gran, Unstructured):
        return [unit[o].reshape(-1) for o in range(unit.shape[0])]
    if isinstance(gran, Kernel):
        return [unit[o] for o in range(unit.shape[0])]
    if isinstance(gran, Filter):
        return [unit.reshape(-1)]
    if isinstance(gran, NofM):
        rows = unit.reshape(unit.shape[0], -1)
        return [rows[o, b : b + gran.m] for o in range(rows.shape[0]) for b in range(0, rows.shape[1], gran.m)]
    raise AssertionError(gran)


# --------------------------------------------------------------------------- unit shapes and sizes


def supported_shapes(gran: Granularity) -> list[tuple[int, ...]]:
    shapes = [s for s in ALL_SHAPES if gran.supports(s)]
    assert len(shapes) >= 4, "too few shapes exercise this granularity"
    return shapes


@pytest.mark.parametrize("gran", GRANULARITIES, ids=GRAN_IDS)
def test_unit_shape_and_sizes(gran):
    for shape in supported_shapes(gran):
        unit_shape = gran.unit_shape(shape)
        assert isinstance(unit_shape, torch.Size)
        assert tuple(unit_shape) == reference_unit_shape(gran, shape)
        num_units = math.prod(unit_shape)
        assert gran.unit_size(shape) * num_units == math.prod(shape)
        # The unit size is the number of elements each unit owns in the explicit expansion.
        owners = reference_expand(gran, torch.arange(num_units).reshape(unit_shape), shape)
        counts = torch.bincount(owners.reshape(-1), minlength=num_units)
        assert torch.all(counts == gran.unit_size(shape)), shape


@FAST
@given(shape=weight_shapes(), gran=st.sampled_from(GRANULARITIES))
def test_unit_size_times_units_is_numel(shape, gran):
    if not gran.supports(shape):
        return
    assert gran.unit_size(shape) * math.prod(gran.unit_shape(shape)) == math.prod(shape)
    assert tuple(gran.unit_shape(shape)) == reference_unit_shape(gran, shape)


# --------------------------------------------------------------------------- expand


@pytest.mark.parametrize("gran", GRANULARITIES, ids=GRAN_IDS)
def test_expand_matches_explicit_loop(gran):
    g = torch.Generator().manual_seed(0)
    for shape in supported_shapes(gran):
        unit_mask = torch.rand(gran.unit_shape(shape), generator=g) < 0.5
        full = gran.expand(unit_mask, shape)
        assert full.shape == torch.Size(shape)
        assert full.dtype == torch.bool
        assert torch.equal(full, reference_expand(gran, unit_mask, shape)), shape
        # broadcastable() applies the same mask by multiplication.
        weight = torch.randn(shape, generator=g)
        assert torch.equal(weight * gran.broadcastable(unit_mask.float(), shape), weight * full.float())


@FAST
@given(shape=weight_shapes(), gran=st.sampled_from(GRANULARITIES), seed=st.integers(0, 2**16))
def test_expand_matches_explicit_loop_property(shape, gran, seed):
    if not gran.supports(shape):
        return
    g = torch.Generator().manual_seed(seed)
    unit = torch.randn(gran.unit_shape(shape), generator=g)
    assert torch.equal(gran.expand(unit, shape), reference_expand(gran, unit, shape))


# --------------------------------------------------------------------------- reduce


@pytest.mark.parametrize("how", REDUCTIONS)
@pytest.mark.parametrize("gran", GRANULARITIES, ids=GRAN_IDS)
def test_reduce_matches_explicit_loop(gran, how):
    g = torch.Generator().manual_seed(1)
    for shape in supported_shapes(gran):
        scores = torch.randn(shape, generator=g, dtype=torch.float64)
        unit = gran.reduce(scores, how=how)
        assert unit.shape == gran.unit_shape(shape)
        expected = reference_reduce(gran, scores, how)
        if how in ("l2", "l1") and isinstance(gran, (Unstructured, NofM)):
            expected = scores.abs()  # single-element units: the norm is the magnitude
        torch.testing.assert_close(unit, expected, rtol=1e-12, atol=1e-12, msg=f"{shape}")


@FAST
@given(
    shape=weight_shapes(),
    gran=st.sampled_from(GRANULARITIES),
    how=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_reduce_property(shape, gran, how, seed):
    if not gran.supports(shape):
        return
    scores = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    unit = gran.reduce(scores, how=how)
    assert unit.shape == gran.unit_shape(shape)
    torch.testing.assert_close(unit, reference_reduce(gran, scores, how), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gran", GRANULARITIES, ids=GRAN_IDS)
def test_reduce_rejects_unknown_reduction(gran):
    with pytest.raises(ValueError):
        gran.reduce(torch.randn(4, 8, 3, 3), how="max")
    with pytest.raises(ValueError):
        gran.reduce(torch.randn(4, 8), how="median")


def test_reduce_l2_ranks_whole_filters():
    w = torch.zeros(3, 2, 2, 2)
    w[0] = 1.0  # norm sqrt(8)
    w[1, 0, 0, 0] = 2.5  # norm 2.5, the largest single element
    w[2] = 0.1
    unit = Filter().reduce(w)
    assert unit.shape == (3,)
    assert unit.argmax().item() == 0
    torch.testing.assert_close(unit, torch.tensor([math.sqrt(8.0), 2.5, math.sqrt(8 * 0.01)]))


# --------------------------------------------------------------------------- groups


@pytest.mark.parametrize("gran", GRANULARITIES, ids=GRAN_IDS)
def test_group_view_layout_and_round_trip(gran):
    for shape in supported_shapes(gran):
        unit_shape = gran.unit_shape(shape)
        unit = torch.arange(math.prod(unit_shape)).reshape(unit_shape)
        grouped = gran.group_view(unit)
        assert grouped.dim() == 2
        assert grouped.numel() == unit.numel()
        rows = reference_groups(gran, unit)
        assert grouped.shape[0] == len(rows), shape
        for got, want in zip(grouped, rows):
            assert torch.equal(got, want), shape
        assert torch.equal(gran.from_groups(grouped, unit_shape), unit)


@FAST
@given(shape=weight_shapes(), gran=st.sampled_from(GRANULARITIES))
def test_group_round_trip_property(shape, gran):
    if not gran.supports(shape):
        return
    unit_shape = gran.unit_shape(shape)
    unit = torch.arange(math.prod(unit_shape), dtype=torch.float32).reshape(unit_shape)
    grouped = gran.group_view(unit)
    assert grouped.dim() == 2
    if isinstance(gran, NofM):
        assert grouped.shape[1] == gran.m
    assert torch.equal(gran.from_groups(grouped, unit_shape), unit)
    # Every unit belongs to exactly one group.
    ids = torch.arange(unit.numel()).reshape(unit_shape)
    assert sorted(gran.group_view(ids).reshape(-1).tolist()) == list(range(unit.numel()))


@FAST
@given(shape=nofm_shapes(4), n=st.integers(1, 4))
def test_nofm_groups_are_consecutive_inputs_of_one_row(shape, n):
    gran = NofM(n, 4)
    assert gran.supports(shape)
    rows = torch.arange(math.prod(shape)).reshape(shape[0], -1)
    grouped = gran.group_view(torch.arange(math.prod(shape)).reshape(shape))
    blocks_per_row = rows.shape[1] // 4
    for gi, group in enumerate(grouped):
        o, b = divmod(gi, blocks_per_row)
        assert torch.equal(group, rows[o, 4 * b : 4 * b + 4])


# --------------------------------------------------------------------------- supports


def test_supports_rules():
    assert Unstructured().supports((5,))
    for gran in (Kernel(), Filter(), NofM(2, 4), NofM(1, 4)):
        assert not gran.supports((8,)), gran
    assert Kernel().supports((4, 6)) and Filter().supports((4, 6, 3, 3))
    # N:M needs the flattened input size to be a multiple of M.
    assert NofM(2, 4).supports((3, 8))
    assert NofM(2, 4).supports((3, 4, 3, 3))  # 36 % 4 == 0
    assert not NofM(2, 4).supports((3, 6))
    assert not NofM(2, 4).supports((3, 3, 3, 3))  # 27
    assert not NofM(1, 4).supports((5, 5))
    assert NofM(2, 3).supports((5, 6)) and not NofM(2, 3).supports((5, 4))


@FAST
@given(shape=weight_shapes(), m=st.integers(2, 5))
def test_nofm_supports_iff_inner_size_divisible(shape, m):
    assert NofM(1, m).supports(shape) == (math.prod(shape[1:]) % m == 0)


# --------------------------------------------------------------------------- parsing and value semantics


@pytest.mark.parametrize(
    "text, expected",
    [
        ("unstructured", Unstructured()),
        ("kernel", Kernel()),
        ("filter", Filter()),
        ("  Filter ", Filter()),
        ("KERNEL", Kernel()),
        ("2:4", NofM(2, 4)),
        ("1:4", NofM(1, 4)),
        ("4:8", NofM(4, 8)),
        ("1:1", NofM(1, 1)),
    ],
)
def test_parse_granularity(text, expected):
    gran = parse_granularity(text)
    assert gran == expected
    assert type(gran) is type(expected)


@pytest.mark.parametrize("gran", GRANULARITIES, ids=GRAN_IDS)
def test_spec_round_trip_and_identity(gran):
    assert parse_granularity(gran) is gran
    assert parse_granularity(gran.spec) == gran
    assert parse_granularity(str(gran)) == gran
    assert hash(parse_granularity(gran.spec)) == hash(gran)


@pytest.mark.parametrize("text", ["bogus", "", "channel", "2:", ":4", "a:b", "2:4:8", "4:2", "0:4", "-1:4", "2.5:4"])
def test_parse_granularity_rejects_unknown(text):
    with pytest.raises(UsageError):
        parse_granularity(text)


def test_unknown_granularity_message_lists_known():
    with pytest.raises(UsageError, match="unstructured"):
        parse_granularity("nope")


def test_nofm_validates_and_implies_density():
    with pytest.raises(UsageError):
        NofM(5, 4)
    with pytest.raises(UsageError):
        NofM(0, 4)
    assert NofM(2, 4).fixed_density == 0.5
    assert NofM(1, 4).fixed_density == 0.25
    for gran in (Unstructured(), Kernel(), Filter()):
        assert gran.fixed_density is None
    assert NofM(2, 4).spec == "2:4" and str(NofM(1, 4)) == "1:4"


def test_granularities_are_distinct_values():
    grans = [Unstructured(), Kernel(), Filter(), NofM(2, 4), NofM(1, 4)]
    assert len(set(grans)) == len(grans)
    assert NofM(2, 4) == NofM(2, 4) and NofM(2, 4) != NofM(1, 4)


def test_list_granularities_names_parse():
    listed = list_granularities()
    names = [name for name, _ in listed]
    assert {"unstructured", "kernel", "filter"} <= set(names)
    assert all(text for _, text in listed)
    for name in names:
        if name != "N:M":
            parse_granularity(name)


@FAST
@given(shape=weight_shapes(), gran=st.sampled_from(GRANULARITIES), seed=st.integers(0, 2**16),
       how=st.sampled_from(["sum", "mean", "l1"]))
def test_reduce_of_expand_round_trips(shape, gran, seed, how):
    """Expanding unit values to the weight and reducing them again gives the unit values back (times
    the unit size for a sum): reduce and expand address the same elements for every unit."""
    if not gran.supports(shape):
        return
    g = torch.Generator().manual_seed(seed)
    unit = torch.rand(gran.unit_shape(shape), generator=g, dtype=torch.float64)
    full = gran.expand(unit, shape).contiguous()
    size = gran.unit_size(shape)
    expected = unit if how == "mean" else unit * size
    assert torch.allclose(gran.reduce(full, how), expected)
    # A boolean unit mask survives the round trip exactly.
    mask = unit < 0.5
    assert torch.equal(gran.reduce(gran.expand(mask, shape).double(), "sum") == size, mask)
