"""Opt-in speed settings: they change how the forward pass runs, never what the run computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.data import build_data
from secateurs.errors import UsageError
from secateurs.methods import build_method
from secateurs.structured import coupled_channel_groups
from secateurs.train import TrainConfig, fit


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def _run(method_name: str, *, coupled: bool = False, **speed):
    data = build_data("synthetic", batch_size=64, limit_train=192, limit_test=64, seed=3)
    model = _net()
    method = build_method(method_name, sparsity=0.5, granularity="filter", **({"end": 0.5} if method_name == "gmp" else {}))
    groups = coupled_channel_groups(model, torch.zeros(1, 1, 28, 28)) if coupled else None
    result = fit(model, data.train, config=TrainConfig(epochs=2, lr=0.05, **speed), method=method,
                 eval_loader=data.test, channel_groups=groups)
    masks = method.finalize()
    return model, masks, result


def _assert_same_run(a, b, atol):
    (model_a, masks_a, result_a), (model_b, masks_b, result_b) = a, b
    assert all(torch.equal(masks_a[n].mask, masks_b[n].mask) for n in masks_a)
    for (name, x), y in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=name)
    assert result_a.final["accuracy"] == pytest.approx(result_b.final["accuracy"], abs=100 / 64 + 1e-9)


# Coupled masks: a per-layer filter mask leaves a constant channel in front of a batch norm, whose
# variance is then rounding noise, and the two memory formats round differently; group masks zero
# the norm's scale and shift with the filter, so the runs can be compared closely.


def test_channels_last_trains_the_same_model():
    plain, nhwc = _run("gmp", coupled=True), _run("gmp", coupled=True, channels_last=True)
    _assert_same_run(plain, nhwc, atol=1e-5)
    assert nhwc[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_compiled_forward_trains_the_same_model_and_sees_mask_updates():
    """gmp rewrites its masks in place during the run, and coupled masks share one gate per forward
    pass through hooks: the compiled forward must follow both."""
    _assert_same_run(_run("gmp", coupled=True), _run("gmp", coupled=True, compile="default"), atol=1e-4)


def test_unknown_compile_mode_is_a_usage_error():
    with pytest.raises(UsageError, match="compile must be one of off, default"):
        TrainConfig(compile="fastest")
