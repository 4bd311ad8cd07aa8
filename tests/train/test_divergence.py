"""A diverged run is never a success: non-finite values stop `fit` with the last good checkpoint kept."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from secateurs.data import build_data
from secateurs.errors import DivergedError, UsageError
from secateurs.methods import build_method
from secateurs.train import TrainConfig, fit
from secateurs.train.checkpoint import load_checkpoint
from secateurs.utils.io import append_jsonl


def _strict(text: str) -> list[dict]:
    def refuse(token: str) -> float:
        raise AssertionError(f"metrics.jsonl holds {token}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _setup():
    data = build_data("synthetic", batch_size=64, limit_train=128, limit_test=64, seed=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 10))
    method = build_method("magnitude", sparsity=0.5)
    return data, model, method


def _fit(data, model, method, run_dir):
    fit(model, data.train, config=TrainConfig(epochs=3, lr=0.05), method=method, eval_loader=data.test,
        run_dir=run_dir)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    data, model, method = _setup()
    steps = len(data.train)
    _step = [0]  # steps done; the penalty turns NaN in epoch 2
    method.penalty = lambda: torch.tensor(float("nan")) if _step[0] >= steps else None  # type: ignore[method-assign]
    real_on_step = method.on_step

    def count(step: int) -> None:
        _step[0] = step
        real_on_step(step)

    method.on_step = count  # type: ignore[method-assign]
    with pytest.raises(DivergedError) as info:
        _fit(data, model, method, tmp_path)
    message = str(info.value)
    assert "epoch 2" in message and f"step {steps + 1}" in message and "loss is not finite" in message
    assert f"{tmp_path / 'checkpoint.pt'} (epoch 1)" in message and "--lr" in message
    assert "\n" not in message
    assert [r["epoch"] for r in _strict((tmp_path / "metrics.jsonl").read_text())] == [1]
    assert load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))["epochs_done"] == 1


def test_non_finite_weights_stop_the_run(tmp_path):
    """A weight that turns non-finite without a non-finite loss (here: written after the epoch's last step)."""
    data, model, method = _setup()
    last = 2 * len(data.train)

    real_on_step = method.on_step

    def poison(step: int) -> None:
        real_on_step(step)
        if step == last:
            with torch.no_grad():
                model[3].bias.fill_(math.inf)

    method.on_step = poison  # type: ignore[method-assign]
    with pytest.raises(DivergedError, match=r"epoch 2: 3\.bias is not finite"):
        _fit(data, model, method, tmp_path)
    assert [r["epoch"] for r in _strict((tmp_path / "metrics.jsonl").read_text())] == [1]


def test_a_first_epoch_divergence_says_no_checkpoint_exists(tmp_path):
    data, model, method = _setup()
    method.penalty = lambda: torch.tensor(float("inf"))  # type: ignore[method-assign]
    with pytest.raises(DivergedError, match="epoch 1 .*no good checkpoint"):
        _fit(data, model, method, tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_metrics_lines_are_strict_json(tmp_path):
    with pytest.raises(ValueError):
        append_jsonl({"loss": float("nan")}, tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists() or (tmp_path / "m.jsonl").read_text() == ""


@pytest.mark.parametrize("field", ["lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_hyper_parameters_are_refused(field, value):
    with pytest.raises(UsageError, match=f"{field} must be a finite number"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("option", ["sparsity", "s0", "lam"])
def test_non_finite_method_options_are_refused(option):
    options = {"sparsity": 0.5, option: math.nan}
    with pytest.raises(UsageError, match=f"{option} must be a finite number"):
        build_method("cs", **options)
