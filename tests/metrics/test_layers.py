"""layer_table and render_layer_table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.metrics import layer_table, render_layer_table


def _masked_model(apply_mask, half_mask) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))
    for module in (model[0], model[3]):
        nn.init.ones_(module.weight)
    apply_mask(model[0], half_mask(model[0].weight.shape))
    with torch.no_grad():
        model[3].weight[0].zero_()  # a quarter of the linear weight
    return model


def test_default_rows(apply_mask, half_mask) -> None:
    rows = layer_table(_masked_model(apply_mask, half_mask))
    assert [row["name"] for row in rows] == ["0.weight", "3.weight"]
    conv, linear = rows
    assert conv["shape"] == [2, 1, 3, 3] and conv["numel"] == 18 and conv["nonzero"] == 9
    assert conv["sparsity"] == pytest.approx(0.5)
    assert linear["shape"] == [4, 8] and linear["nonzero"] == 24
    assert linear["sparsity"] == pytest.approx(0.25)


def test_named_targets_accept_original_and_storage_names(apply_mask, half_mask) -> None:
    model = _masked_model(apply_mask, half_mask)
    rows = layer_table(model, ["0.weight", "0.parametrizations.weight.original", "3.bias"])
    assert [row["name"] for row in rows] == ["0.weight", "0.weight", "3.bias"]
    assert rows[0]["sparsity"] == rows[1]["sparsity"] == pytest.approx(0.5)
    assert rows[2]["numel"] == 4


@pytest.mark.parametrize("name", ["9.weight", "0.nothing", "2.weight", "1"])
def test_unknown_name(apply_mask, half_mask, name: str) -> None:
    with pytest.raises(UsageError):
        layer_table(_masked_model(apply_mask, half_mask), [name])


def test_render(apply_mask, half_mask) -> None:
    text = render_layer_table(layer_table(_masked_model(apply_mask, half_mask)))
    assert "0.weight" in text and "3.weight" in text
    assert "50.00%" in text and "25.00%" in text and "total" in text
    assert "\x1b[" not in text  # no terminal codes
    assert render_layer_table([])  # an empty table still renders
