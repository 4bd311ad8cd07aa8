"""count_macs: hand-computed MACs, effective MACs of masked layers, parametrized paths."""

from __future__ import annotations

import torch
from torch import nn

from secateurs.metrics import count_macs


def test_linear_macs() -> None:
    report = count_macs(nn.Linear(10, 20), torch.randn(1, 10))
    assert report.dense == 200 and report.effective == 200
    assert [(layer.name, layer.dense) for layer in report.per_layer] == [("", 200)]


def test_conv_macs_match_formula() -> None:
    conv = nn.Conv2d(4, 8, kernel_size=3, stride=2, padding=1, groups=2)
    batch, height, width = 2, 16, 12
    out_h, out_w = (height + 2 - 3) // 2 + 1, (width + 2 - 3) // 2 + 1
    expected = batch * out_h * out_w * 8 * (4 // 2) * 3 * 3
    report = count_macs(conv, torch.randn(batch, 4, height, width))
    assert report.dense == expected == report.effective


def _net() -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )
    for module in (model[0], model[4]):
        nn.init.ones_(module.weight)
    return model


CONV_MACS = 8 * 8 * 4 * 3 * 9
LINEAR_MACS = 4 * 8 * 8 * 10


def test_zeroed_weights_halve_effective_macs(half_mask) -> None:
    model = _net()
    with torch.no_grad():
        model[0].weight.mul_(half_mask(model[0].weight.shape))
    report = count_macs(model, torch.randn(1, 3, 8, 8))
    assert report.dense == CONV_MACS + LINEAR_MACS
    assert report.effective == CONV_MACS // 2 + LINEAR_MACS
    conv_row = report.per_layer[0]
    assert (conv_row.name, conv_row.kind, conv_row.density) == ("0", "Conv2d", 0.5)
    assert conv_row.effective * 2 == conv_row.dense == CONV_MACS


def test_parametrized_mask_halves_effective_macs(apply_mask, half_mask) -> None:
    model = _net()
    apply_mask(model[4], half_mask(model[4].weight.shape), extra_matmul=True)
    report = count_macs(model, torch.randn(1, 3, 8, 8))
    mask_matmul_macs = 4 * 4 * 4  # scores @ scores inside the parametrization
    assert report.dense == CONV_MACS + LINEAR_MACS + mask_matmul_macs
    assert report.effective == CONV_MACS + LINEAR_MACS // 2 + mask_matmul_macs
    linear_row = report.per_layer[1]
    assert linear_row.name == "4" and linear_row.dense == LINEAR_MACS
    assert linear_row.effective == LINEAR_MACS // 2


def test_modes_restored_and_tuple_input() -> None:
    model = _net().train()
    count_macs(model, (torch.randn(2, 3, 8, 8),))
    assert model.training and model[1].training
    model.eval()
    count_macs(model, torch.randn(1, 3, 8, 8))
    assert not model.training


def test_batch_norm_statistics_untouched() -> None:
    model = _net().train()
    before = model[1].running_mean.clone()
    count_macs(model, torch.randn(2, 3, 8, 8))
    assert torch.equal(model[1].running_mean, before)
