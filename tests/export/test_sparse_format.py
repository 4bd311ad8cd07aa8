"""The compressed sparse format restores every tensor exactly and is smaller than dense fp32."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.core.granularity import NofM, Unstructured
from secateurs.core.masks import MaskSet
from secateurs.errors import UsageError
from secateurs.export import load_sparse, quantize_symmetric, save_sparse


def _sparse(shape, density, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=g).to(dtype)
    return values * (torch.rand(shape, generator=g) < density)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9), cols=st.integers(1, 40), density=st.floats(0.0, 1.0),
    layout=st.sampled_from(["bitmask", "csr"]), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact_for_any_pattern(tmp_path_factory, rows, cols, density, layout, dtype, seed):
    path = tmp_path_factory.mktemp("sparse") / "w.safetensors"
    tensors = {"conv.weight": _sparse((rows, cols, 1, 1), density, seed, dtype), "conv.bias": torch.randn(rows),
               "bn.num_batches_tracked": torch.tensor(3)}
    save_sparse(path, tensors, layout=layout)
    restored = load_sparse(path)
    assert set(restored) == set(tensors)
    for name, tensor in tensors.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor)


@pytest.mark.parametrize("layout", ["bitmask", "csr"])
def test_sparse_weights_take_far_fewer_bytes(tmp_path, layout):
    weight = _sparse((256, 512), 0.05, 0)
    report = save_sparse(tmp_path / "w.safetensors", {"fc.weight": weight}, layout=layout)
    assert report.layouts == {"fc.weight": layout}
    assert report.bytes_dense_fp32 == weight.numel() * 4
    assert report.compression > 5
    assert report.bytes_on_disk == (tmp_path / "w.safetensors").stat().st_size


def test_dense_tensors_stay_dense(tmp_path):
    report = save_sparse(tmp_path / "w.safetensors", {"fc.weight": torch.randn(16, 16)})
    assert report.layouts == {"fc.weight": "dense"}


def test_masks_decide_the_stored_positions_and_must_hold(tmp_path):
    weight = _sparse((8, 16), 0.5, 1)
    weight[0, 0] = 0.0  # a kept weight that happens to be zero survives as a stored value
    mask = weight != 0
    mask[0, 0] = True
    masks = MaskSet.from_masks({"fc.weight": mask}, Unstructured(), {"fc.weight": weight.shape})
    save_sparse(tmp_path / "w.safetensors", {"fc.weight": weight}, masks=masks, layout="csr")
    assert torch.equal(load_sparse(tmp_path / "w.safetensors")["fc.weight"], weight)
    bad = weight.clone()
    bad[~mask] = 1.0
    with pytest.raises(UsageError, match="non-zero weights where its mask is False"):
        save_sparse(tmp_path / "bad.safetensors", {"fc.weight": bad}, masks=masks)


def test_two_four_weights_with_integer_values(tmp_path):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(256, 512, generator=g)
    blocks = weight.reshape(-1, 4)
    keep = blocks.abs().topk(2, dim=1).indices
    weight = torch.zeros_like(blocks).scatter(1, keep, blocks.gather(1, keep)).reshape(256, 512)
    masks = MaskSet.from_masks({"fc.weight": weight != 0}, NofM(2, 4), {"fc.weight": weight.shape})
    q = quantize_symmetric(weight, bits=8)
    report = save_sparse(tmp_path / "q.safetensors", {"fc.weight": weight}, masks=masks, quantized={"fc.weight": q})
    ints = load_sparse(tmp_path / "q.safetensors", dequantize=False)
    assert ints["fc.weight"].dtype == torch.int8 and torch.equal(ints["fc.weight"], q.ints)
    assert torch.equal(load_sparse(tmp_path / "q.safetensors")["fc.weight"], q.dequantize())
    assert (q.dequantize() - weight).abs().max() <= q.scale.max() / 2 + 1e-7
    assert report.compression > 6  # 1 bit of mask + 8 bits per kept half of the weights vs 32 bits each


def test_bad_layout_and_foreign_file_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="layout"):
        save_sparse(tmp_path / "w.safetensors", {"w": torch.zeros(2, 2)}, layout="coo")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UsageError, match="not a secateurs sparse"):
        load_sparse(tmp_path / "plain.safetensors")
