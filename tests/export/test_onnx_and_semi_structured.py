"""ONNX export checked by onnxruntime, and the CUDA-only 2:4 conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.export import check_onnx, export_onnx, is_two_four, semi_structured_available, to_semi_structured_


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(tmp_path, tiny_cnn):
    pytest.importorskip("onnxruntime")
    tiny_cnn.train()
    path = export_onnx(tiny_cnn, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    assert tiny_cnn.training  # modes restored
    assert check_onnx(path, tiny_cnn, torch.randn(5, 3, 8, 8)) <= 1e-4


def test_onnx_check_catches_a_different_model(tmp_path, tiny_cnn, make_cnn):
    pytest.importorskip("onnxruntime")
    from secateurs.export import OnnxMismatchError

    path = export_onnx(tiny_cnn, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    with pytest.raises(OnnxMismatchError):
        check_onnx(path, make_cnn(seed=7), torch.randn(2, 3, 8, 8))


def test_two_four_pattern_detection():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    assert is_two_four(w)
    w[0, 1] = 5.0
    assert not is_two_four(w)
    assert not is_two_four(torch.zeros(2, 6))  # rows not made of whole blocks of 4


@pytest.mark.skipif(semi_structured_available(), reason="checks the CPU refusal")
def test_semi_structured_needs_a_gpu():
    with pytest.raises(UsageError, match="CUDA"):
        to_semi_structured_(nn.Sequential(nn.Linear(64, 32)))


@pytest.mark.gpu
@pytest.mark.skipif(not semi_structured_available(), reason="needs a CUDA GPU with compute capability >= 8.0")
def test_semi_structured_linear_matches_dense_on_gpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32)).cuda()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            blocks = layer.weight.reshape(-1, 4)
            keep = blocks.abs().topk(2, dim=1).indices
            pruned = torch.zeros_like(blocks).scatter(1, keep, blocks.gather(1, keep))
            layer.weight.copy_(pruned.reshape_as(layer.weight))
    x = torch.randn(64, 128, device="cuda")
    expected = model.half()(x.half())
    assert to_semi_structured_(model) == ["0", "2"]
    assert (model(x.half()) - expected).abs().max() <= 1e-2
