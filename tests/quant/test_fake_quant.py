"""Symmetric fake quantization (STE) and the k-of-n integer export (secateurs.quant)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from secateurs.errors import UsageError
from secateurs.quant import (
    QuantConfig,
    export_layer,
    fake_quantize,
    index_dtype,
    integer_dtype,
    packed_size_bits,
    quantize_to_int,
    save_export,
)


def weight(seed: int = 0, shape=(6, 4, 3, 3)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("scale", ["tensor", "channel"])
def test_values_lie_on_the_integer_grid_of_their_scale(bits, scale):
    config = QuantConfig(bits, scale)
    w = weight(bits)
    w[0, 1] = 0.0  # pruned weights
    q = fake_quantize(w, config)
    codes, s = quantize_to_int(w, config)
    assert codes.dtype == torch.int8
    assert s.shape == ((6, 1, 1, 1) if scale == "channel" else ())
    ratio = q / s
    torch.testing.assert_close(ratio, torch.round(ratio), rtol=0, atol=1e-4)
    assert ratio.abs().max() <= config.qmax + 1e-4
    assert torch.equal(codes.float(), torch.round(ratio))
    assert torch.all(q[0, 1] == 0)  # zero stays exactly zero
    # The largest magnitude (per scale group) maps to +-qmax exactly.
    dims = (1, 2, 3) if scale == "channel" else (0, 1, 2, 3)
    assert torch.all(codes.abs().amax(dim=dims) == config.qmax)
    # Quantization error is at most half a step.
    assert torch.all((q - w).abs() <= s / 2 + 1e-6)


def test_more_bits_means_smaller_error():
    w = weight(3)
    errors = [float((fake_quantize(w, QuantConfig(b)) - w).pow(2).mean()) for b in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2]


def test_one_bit_is_binary_then_ternary_once_masked():
    w = weight(1, (5, 8))
    mask = torch.rand(5, 8, generator=torch.Generator().manual_seed(2)) > 0.5
    for scale in ("tensor", "channel"):
        q = fake_quantize(w * mask, QuantConfig(1, scale))
        codes, s = quantize_to_int(w * mask, QuantConfig(1, scale))
        assert set(codes.unique().tolist()) <= {-1, 0, 1}
        assert torch.equal(codes == 0, ~mask)
        torch.testing.assert_close(q, codes.float() * s)
    # Per-tensor scale = mean |w| over the kept weights (L2-optimal for fixed signs).
    _, s = quantize_to_int(w * mask, QuantConfig(1))
    torch.testing.assert_close(s, (w * mask).abs().sum() / mask.sum())


def test_gradient_is_straight_through():
    w = weight(4).requires_grad_()
    upstream = weight(5)
    (fake_quantize(w, QuantConfig(4, "channel")) * upstream).sum().backward()
    assert torch.equal(w.grad, upstream)


def test_all_zero_channel_has_a_finite_scale():
    w = weight(6, (3, 4))
    w[1] = 0
    codes, s = quantize_to_int(w, QuantConfig(4, "channel"))
    assert torch.isfinite(s).all() and torch.all(codes[1] == 0)


@pytest.mark.parametrize("bad", [0, 17, -1, 2.5, "4", True])
def test_bad_bit_widths_are_usage_errors(bad):
    with pytest.raises(UsageError, match="bits"):
        QuantConfig(bad)


def test_bad_scale_is_a_usage_error():
    with pytest.raises(UsageError, match="scale"):
        QuantConfig(4, "row")


def test_dtypes():
    assert integer_dtype(8) == torch.int8 and integer_dtype(12) == torch.int16
    assert index_dtype(256) == torch.uint8 and index_dtype(257) == torch.int16 and index_dtype(70000) == torch.int32


def test_packed_size_counts_values_indices_and_scales():
    # 4 groups keep 3 of 16 single weights at 4 bits: values 4*3*4, indices min(3*4, 16) = 12 per group.
    assert packed_size_bits(4, 16, 3, 1, 4, 1) == 48 + 48 + 32
    # Keeping more than n / log2(n) candidates: the n-bit bitmap is cheaper than a list of indices.
    assert packed_size_bits(2, 8, 6, 1, 8, 0) == 2 * 6 * 8 + 2 * 8
    # Nothing pruned: no index is needed.
    assert packed_size_bits(2, 8, 8, 9, 32, 0) == 2 * 8 * 9 * 32


def kofn_rows(groups: int, n: int, k: int, seed: int) -> torch.Tensor:
    scores = torch.rand(groups, n, generator=torch.Generator().manual_seed(seed))
    keep = torch.zeros(groups, n, dtype=torch.bool)
    return keep.scatter_(1, scores.topk(k, dim=1).indices, True)


@pytest.mark.parametrize("quant", [None, QuantConfig(4, "channel"), QuantConfig(1)])
def test_export_reconstructs_the_layer(tmp_path, quant):
    # Kernel granularity: units (6, 4) of 3x3 values; groups = filters, k = 2 of 4 kernels.
    w = weight(7)
    keep = kofn_rows(6, 4, 2, seed=8)
    masked = w * keep[:, :, None, None]
    unit_ids = torch.arange(24).reshape(6, 4)
    layer = export_layer("conv.weight", masked, unit_ids, keep, quant, {"granularity": "kernel"})
    idx = layer.tensors["conv.weight.indices"]
    values = layer.tensors["conv.weight.values"]
    assert idx.dtype == torch.uint8 and idx.shape == (6, 2) and values.shape == (6, 2, 9)
    assert torch.all(idx[:, :-1] < idx[:, 1:])  # ascending positions
    rebuilt = torch.zeros(24, 9, dtype=torch.float32)
    flat_ids = unit_ids.gather(1, idx.long()).reshape(-1)
    if quant is None:
        rebuilt[flat_ids] = values.reshape(-1, 9)
        expected = masked
    else:
        assert values.dtype == torch.int8
        scale = layer.tensors["conv.weight.scale"]
        rebuilt[flat_ids] = values.reshape(-1, 9).float()
        rebuilt = rebuilt.reshape(6, 4, 3, 3) * (scale.reshape(-1, 1, 1, 1) if scale.numel() > 1 else scale)
        expected = fake_quantize(masked, quant)
    torch.testing.assert_close(rebuilt.reshape(6, 4, 3, 3), expected)
    value_bits = quant.bits if quant else 32
    scales = (6 if quant.per_channel else 1) if quant else 0
    assert layer.size_bits == packed_size_bits(6, 4, 2, 9, value_bits, scales)
    assert layer.size_bytes == math.ceil(layer.size_bits / 8)

    path = save_export({"conv.weight": layer}, tmp_path / "export.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["secateurs.kofn"])
        assert meta["conv.weight"]["k"] == 2 and meta["conv.weight"]["n"] == 4
        assert meta["conv.weight"]["granularity"] == "kernel"
        assert torch.equal(f.get_tensor("conv.weight.values"), values)


def test_export_rejects_unequal_groups():
    keep = kofn_rows(3, 5, 2, seed=0)
    keep[0, keep[0].nonzero()[0]] = False
    with pytest.raises(ValueError, match="different"):
        export_layer("w", torch.randn(3, 5), torch.arange(15).reshape(3, 5), keep, None)
