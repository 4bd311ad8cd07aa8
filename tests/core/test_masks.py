"""MaskSet: element-level sparsity, safetensors round trip without pickle, validation, intersection."""

from __future__ import annotations

import json
import math
import pickle
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.core.masks import MaskEntry, MaskSet
from secateurs.core.parametrize import FixedMask, attach_
from secateurs.errors import UsageError

FAST = settings(max_examples=30, deadline=None)


def random_entry(gran, shape, seed=0, p=0.5) -> MaskEntry:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(gran.unit_shape(shape), generator=g) < p
    return MaskEntry(mask, gran, torch.Size(shape))


def mixed_set(seed: int = 0) -> MaskSet:
    return MaskSet(
        {
            "conv1.weight": random_entry(Filter(), (8, 4, 3, 3), seed),
            "conv2.weight": random_entry(Kernel(), (6, 8, 3, 3), seed + 1),
            "fc1.weight": random_entry(Unstructured(), (10, 20), seed + 2),
            "fc2.weight": random_entry(NofM(2, 4), (4, 8), seed + 3),
        }
    )


def assert_same(a: MaskSet, b: MaskSet) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].granularity == b[name].granularity
        assert a[name].weight_shape == b[name].weight_shape
        assert a[name].mask.dtype == torch.bool == b[name].mask.dtype
        assert torch.equal(a[name].mask, b[name].mask)


# --------------------------------------------------------------------------- entries and arithmetic


def test_filter_mask_sparsity_is_element_level():
    mask = torch.tensor([True, False, True, True, False, True, True, False])
    entry = MaskEntry(mask, Filter(), torch.Size((8, 4, 3, 3)))
    assert entry.numel == 8 * 36
    assert entry.kept == 5 * 36
    assert entry.sparsity == pytest.approx(3 / 8)
    ms = MaskSet({"w": entry})
    assert ms.sparsity("w") == pytest.approx(3 / 8)
    assert ms.sparsity() == pytest.approx(3 / 8)
    assert ms.density() == pytest.approx(5 / 8)


def test_mixed_set_sparsity_weights_by_elements():
    # 1 of 2 filters of a (2, 10) linear (10 elements of 20) + 1 of 80 elements of an unstructured one.
    a = MaskEntry(torch.tensor([True, False]), Filter(), torch.Size((2, 10)))
    um = torch.ones(8, 10, dtype=torch.bool)
    um[3, 7] = False
    b = MaskEntry(um, Unstructured(), torch.Size((8, 10)))
    ms = MaskSet({"a": a, "b": b})
    assert ms.sparsity("a") == pytest.approx(0.5)
    assert ms.sparsity("b") == pytest.approx(1 / 80)
    assert ms.sparsity() == pytest.approx(11 / 100)  # not the mean of per-tensor sparsities
    assert ms.density("b") == pytest.approx(79 / 80)


@FAST
@given(seed=st.integers(0, 10_000), p=st.floats(0.0, 1.0))
def test_sparsity_equals_zero_fraction_of_full_masks(seed, p):
    ms = MaskSet({n: random_entry(e.granularity, e.weight_shape, seed + i, p) for i, (n, e) in enumerate(mixed_set().items())})
    zeros = sum(int((~e.full()).sum()) for e in ms.values())
    total = sum(e.numel for e in ms.values())
    assert ms.sparsity() == pytest.approx(zeros / total)
    for n, e in ms.items():
        full = e.full()
        assert full.shape == e.weight_shape
        assert ms.sparsity(n) == pytest.approx(float((~full).sum()) / full.numel())
        assert e.kept == int(full.sum())


def test_empty_set():
    ms = MaskSet()
    assert len(ms) == 0 and ms.sparsity() == 0.0 and list(ms) == []


def test_full_is_an_independent_copy():
    e = random_entry(Kernel(), (3, 4, 3, 3))
    full = e.full()
    assert full.is_contiguous()
    before = e.mask.clone()
    full.fill_(False)
    assert torch.equal(e.mask, before)
    assert torch.equal(e.full(), Kernel().expand(before, (3, 4, 3, 3)))


@pytest.mark.parametrize(
    "gran, weight_shape, mask_shape",
    [
        (Filter(), (8, 4, 3, 3), (8, 4)),
        (Filter(), (8, 4, 3, 3), (4,)),
        (Kernel(), (8, 4, 3, 3), (8,)),
        (Kernel(), (8, 4, 3, 3), (4, 8)),
        (Unstructured(), (10, 20), (20, 10)),
        (Unstructured(), (10, 20), (200,)),
        (NofM(2, 4), (4, 8), (4, 2)),
    ],
)
def test_invalid_mask_shapes_rejected(gran, weight_shape, mask_shape):
    with pytest.raises(ValueError):
        MaskEntry(torch.ones(mask_shape, dtype=torch.bool), gran, torch.Size(weight_shape))


def test_non_boolean_masks_rejected():
    with pytest.raises(ValueError):
        MaskEntry(torch.ones(8), Filter(), torch.Size((8, 3)))
    with pytest.raises(ValueError):
        MaskEntry(torch.ones(8, dtype=torch.uint8), Filter(), torch.Size((8, 3)))


def test_from_masks_converts_and_takes_per_name_granularities():
    masks = {"a": torch.tensor([1.0, 0.0, 1.0]), "b": torch.tensor([[1, 0], [0, 0]])}
    ms = MaskSet.from_masks(masks, {"a": Filter(), "b": Unstructured()}, {"a": (3, 5), "b": (2, 2)})
    assert ms["a"].mask.dtype == torch.bool and ms["a"].granularity == Filter()
    assert ms["a"].weight_shape == torch.Size((3, 5))
    assert ms.sparsity("a") == pytest.approx(1 / 3) and ms.sparsity("b") == pytest.approx(3 / 4)
    one = MaskSet.from_masks({"a": torch.tensor([True, False, True])}, Filter(), {"a": (3, 5)})
    assert one["a"].granularity == Filter()
    with pytest.raises(ValueError):
        MaskSet.from_masks({"a": torch.ones(4, dtype=torch.bool)}, Filter(), {"a": (3, 5)})


# --------------------------------------------------------------------------- disk


def test_save_load_round_trip(tmp_path):
    ms = mixed_set()
    path = tmp_path / "sub" / "masks.safetensors"
    ms.save(path)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["masks.safetensors"]  # no temporary left behind
    loaded = MaskSet.load(path)
    assert_same(ms, loaded)
    assert loaded.sparsity() == pytest.approx(ms.sparsity())
    # Overwrite with a different set: the new content wins.
    other = MaskSet({"x": random_entry(Filter(), (5, 2), 9)})
    other.save(path)
    assert_same(other, MaskSet.load(path))


def test_file_is_safetensors_and_loads_without_pickle(tmp_path, monkeypatch):
    ms = mixed_set(3)
    path = tmp_path / "masks.safetensors"
    ms.save(path)
    raw = path.read_bytes()
    # safetensors layout: little-endian u64 header length, then a JSON header, then raw tensor bytes.
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == set(ms)
    for name, e in ms.items():
        assert header[name]["dtype"] == "U8"
        assert header[name]["shape"] == list(e.mask.shape)
    assert "secateurs.masks" in header["__metadata__"]
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither a pickle nor a zip

    # Only the bytes matter: a copy elsewhere loads, and nothing is unpickled on the way.
    copy = tmp_path / "elsewhere" / "copy.bin"
    copy.parent.mkdir()
    copy.write_bytes(raw)

    def forbidden(*args, **kwargs):
        raise AssertionError("MaskSet.load must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert_same(ms, MaskSet.load(copy))


def test_load_rejects_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(UsageError):
        MaskSet.load(path)


# --------------------------------------------------------------------------- validation against a model


def _masks_for(model: nn.Module, names: list[str]) -> MaskSet:
    return MaskSet(
        {n: MaskEntry(torch.ones(p.shape[0], dtype=torch.bool), Filter(), p.shape) for n, p in model.named_parameters() if n in names}
    )


def test_validate_accepts_matching_model_plain_and_parametrized(tiny_cnn):
    names = ["conv1.weight", "fc1.weight"]
    ms = _masks_for(tiny_cnn, names)
    ms.validate(tiny_cnn)
    for n in names:
        attach_(tiny_cnn, n, FixedMask(Filter(), tiny_cnn.get_parameter(n).shape))
    ms.validate(tiny_cnn)  # original names still resolve while parametrized


def test_validate_rejects_unknown_name(tiny_cnn):
    ms = MaskSet({"conv9.weight": MaskEntry(torch.ones(12, dtype=torch.bool), Filter(), torch.Size((12, 8, 3, 3)))})
    with pytest.raises(UsageError, match="conv9.weight"):
        ms.validate(tiny_cnn)


def test_validate_rejects_wrong_shape(tiny_cnn):
    ms = MaskSet({"conv1.weight": MaskEntry(torch.ones(12, dtype=torch.bool), Filter(), torch.Size((12, 8, 5, 5)))})
    with pytest.raises(UsageError, match="conv1.weight"):
        ms.validate(tiny_cnn)


def test_validate_rejects_mask_state_names(tiny_cnn):
    attach_(tiny_cnn, "conv1.weight", FixedMask(Filter(), tiny_cnn.conv1.weight.shape))
    name = "conv1.parametrizations.weight.original"
    ms = MaskSet({name: MaskEntry(torch.ones(12, dtype=torch.bool), Filter(), torch.Size((12, 8, 3, 3)))})
    with pytest.raises(UsageError):
        ms.validate(tiny_cnn)


# --------------------------------------------------------------------------- intersect


@FAST
@given(seed_a=st.integers(0, 10_000), seed_b=st.integers(0, 10_000), p=st.floats(0.1, 0.9))
def test_intersect_is_monotone(seed_a, seed_b, p):
    a = MaskSet({n: random_entry(e.granularity, e.weight_shape, seed_a + i, p) for i, (n, e) in enumerate(mixed_set().items())})
    b = MaskSet({n: random_entry(e.granularity, e.weight_shape, seed_b + i, p) for i, (n, e) in enumerate(mixed_set().items())})
    c = a.intersect(b)
    assert list(c) == list(a)
    for n in c:
        assert torch.equal(c[n].mask, a[n].mask & b[n].mask)
        assert not (c[n].mask & ~a[n].mask).any() and not (c[n].mask & ~b[n].mask).any()
        assert c.sparsity(n) >= max(a.sparsity(n), b.sparsity(n)) - 1e-12
        assert c[n].granularity == a[n].granularity and c[n].weight_shape == a[n].weight_shape
    assert c.sparsity() >= max(a.sparsity(), b.sparsity()) - 1e-12
    assert_same(c, b.intersect(a))
    assert_same(c, c.intersect(a))  # idempotent once merged


def test_intersect_rejects_different_names():
    a = MaskSet({"a": random_entry(Filter(), (3, 3))})
    b = MaskSet({"b": random_entry(Filter(), (3, 3))})
    with pytest.raises(ValueError):
        a.intersect(b)


def test_mapping_interface():
    ms = mixed_set()
    assert len(ms) == 4 and "fc1.weight" in ms and "nope" not in ms
    assert isinstance(ms["conv1.weight"], MaskEntry)
    with pytest.raises(KeyError):
        ms["nope"]
    assert "4 tensors" in repr(ms)
    assert math.isclose(ms.sparsity() + ms.density(), 1.0)


@st.composite
def mask_sets(draw) -> MaskSet:
    """Sets of one to four entries at any granularity, with random masks (all kept and none kept too)."""
    grans = [Unstructured(), Kernel(), Filter(), NofM(2, 4), NofM(1, 8)]
    entries = {}
    for i in range(draw(st.integers(1, 4))):
        gran = draw(st.sampled_from(grans))
        inner = 8 if isinstance(gran, NofM) else draw(st.integers(1, 5))
        conv = draw(st.booleans()) and not isinstance(gran, NofM)
        shape = (draw(st.integers(1, 6)), inner, 3, 3) if conv or isinstance(gran, Kernel) else (draw(st.integers(1, 6)), inner)
        p = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
        entries[f"layer{i}.{draw(st.sampled_from(['weight', 'sub.weight']))}"] = random_entry(
            gran, shape, draw(st.integers(0, 2**16)), p)
    return MaskSet(entries)


@FAST
@given(masks=mask_sets())
def test_save_load_round_trip_property(masks, tmp_path_factory):
    path = tmp_path_factory.mktemp("masks") / "masks.safetensors"
    masks.save(path)
    loaded = MaskSet.load(path)
    assert_same(masks, loaded)
    assert loaded.sparsity() == masks.sparsity()
    # Saving what was loaded writes the same bytes: the format is canonical.
    again = path.with_name("again.safetensors")
    loaded.save(again)
    assert again.read_bytes() == path.read_bytes()


def test_load_of_a_damaged_mask_file_raises_damaged_file_error(tmp_path):
    from secateurs.core.granularity import parse_granularity
    from secateurs.core.masks import MaskEntry
    from secateurs.errors import DamagedFileError

    masks = MaskSet({"w": MaskEntry(torch.tensor([True, False, True]), parse_granularity("unstructured"),
                                    torch.Size([3]))})
    path = tmp_path / "m.safetensors"
    masks.save(path)
    good = path.read_bytes()
    damaged = {"truncated": good[: len(good) // 2], "bit-flip": good[:-1] + bytes([good[-1] ^ 0x01]),
               "empty": b"", "text": b"not a mask file at all"}
    for how, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(DamagedFileError, match="m.safetensors"):
            MaskSet.load(path)
    path.write_bytes(good)
    assert torch.equal(MaskSet.load(path)["w"].mask, masks["w"].mask)
