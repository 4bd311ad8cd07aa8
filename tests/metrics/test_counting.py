"""count_params and count_nonzero_params, dense and parametrized."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.metrics import count_nonzero_params, count_params


def _tiny() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for param in model.parameters():
        nn.init.ones_(param)  # no accidental zeros
    return model


TINY_PARAMS = 4 * 3 + 3 + 3 * 2 + 2


def test_count_params_by_hand() -> None:
    assert count_params(_tiny()) == TINY_PARAMS
    assert count_nonzero_params(_tiny()) == TINY_PARAMS


def test_tied_weights_count_once() -> None:
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    model[1].weight = model[0].weight
    assert count_params(model) == 9


def test_zeros_are_not_counted() -> None:
    model = _tiny()
    with torch.no_grad():
        model[2].bias.zero_()
    assert count_params(model) == TINY_PARAMS
    assert count_nonzero_params(model) == TINY_PARAMS - 2


def test_parametrized_weight_counts_original_once(apply_mask, half_mask) -> None:
    model = _tiny()
    parametrization = apply_mask(model[0], half_mask(model[0].weight.shape))
    # The parametrization's own parameter is visible to parameters() but is not a model parameter.
    assert any(p is parametrization.scores for p in model.parameters())
    assert count_params(model) == TINY_PARAMS
    assert count_nonzero_params(model) == TINY_PARAMS - 6


class _TrainOnlyZero(nn.Module):
    """Zeroes the weight in training mode only, like a stochastic mask that is hard in eval."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * 0.0 if self.training else weight


def test_nonzero_uses_eval_mode_and_restores_modes() -> None:
    model = _tiny()
    parametrize.register_parametrization(model[0], "weight", _TrainOnlyZero())
    model.train()
    model[2].eval()
    assert count_nonzero_params(model) == TINY_PARAMS
    assert model.training and model[0].training and not model[2].training
