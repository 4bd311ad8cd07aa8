"""The training loop: hooks, logging, checkpoints and exact resumption."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from secateurs.data import build_data
from secateurs.methods import build_method
from secateurs.structured import coupled_channel_groups
from secateurs.train import TrainConfig, fit
from secateurs.train.optim import build_optimizer, lr_factor


class _Stop(Exception):
    """Raised by a callback to simulate a run killed after a checkpoint."""


class _StopAfter:
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, record: dict) -> None:
        if record["epoch"] == self.epochs:
            raise _Stop


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10),
    )


def _data():
    return build_data("synthetic", batch_size=64, limit_train=256, limit_test=128, seed=3)


def _run(tmp_path, method_name, options, *, stop_after=None, resume=False, epochs=3, coupled=False):
    data = _data()
    model = _net()
    method = build_method(method_name, **options) if method_name else None
    callbacks = [_StopAfter(stop_after)] if stop_after else []
    config = TrainConfig(epochs=epochs, lr=0.05)
    groups = coupled_channel_groups(model, torch.zeros(1, 1, 28, 28)) if coupled else None
    try:
        fit(model, data.train, config=config, method=method, eval_loader=data.test, run_dir=tmp_path,
            resume=resume, callbacks=callbacks, channel_groups=groups)
    except _Stop:
        return None
    if method is not None:
        method.finalize()
    return model.state_dict()


@pytest.mark.parametrize(
    ("method", "options", "stop_after"),
    [
        (None, {}, 1),
        ("gmp", {"sparsity": 0.8}, 1),  # killed mid-phase: optimizer state must continue
        ("lottery", {"sparsity": 0.8, "rounds": 2}, 2),  # killed at a phase boundary: rewind + fresh optimizer
        ("random", {"sparsity": 0.5, "granularity": "filter"}, 2),
        ("dpp", {"sparsity": 0.5, "granularity": "filter", "coupled": True}, 1),  # one draw per pass, shared
        ("gibbs", {"sparsity": 0.5, "granularity": "filter", "coupled": True}, 2),
    ],
)
def test_resume_reaches_the_same_weights(tmp_path, method, options, stop_after):
    coupled = options.get("coupled", False)
    straight = _run(tmp_path / "a", method, options, coupled=coupled)
    assert _run(tmp_path / "b", method, options, stop_after=stop_after, coupled=coupled) is None
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == stop_after
    resumed = _run(tmp_path / "b", method, options, resume=True, coupled=coupled)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The resumed run logged the remaining epochs only: one line per epoch overall.
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]


def test_metrics_lines_and_checkpoint(tmp_path):
    _run(tmp_path, "gmp", {"sparsity": 0.5}, epochs=2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"train_loss", "eval_accuracy", "lr", "sparsity", "step"} <= r.keys()
    assert records[-1]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert (tmp_path / "checkpoint.pt").exists()
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_training_learns_synthetic_data():
    data = _data()
    torch.manual_seed(0)
    # Synthetic classes are spatial prototypes: a flattening model sees them, global pooling would not.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
    result = fit(model, data.train, config=TrainConfig(epochs=2, lr=0.05), eval_loader=data.test)
    assert result.final["accuracy"] > 50.0  # 10 classes: chance is 10 %


def test_penalty_enters_the_loss():
    """A method's penalty gradient reaches the weights through the loop."""
    data = _data()
    seen = []

    class Probe:
        def on_epoch_end(self, record):
            seen.append(record)

    model = _net()
    method = build_method("magnitude", sparsity=0.5, prune_at=0.0)
    # Replace the penalty by a huge L2 term: the weights must shrink towards zero.
    method.penalty = lambda: 100.0 * sum((p**2).sum() for p in model.parameters())  # type: ignore[method-assign]
    before = sum(float(p.detach().abs().sum()) for p in model.parameters())
    fit(model, data.train, config=TrainConfig(epochs=1, lr=0.001, weight_decay=0.0), method=method, callbacks=[Probe()])
    after = sum(float(p.detach().abs().sum()) for p in model.parameters())
    assert after < 0.9 * before
    assert len(seen) == 1


def test_weight_decay_skips_mask_parameters():
    model = _net()
    method = build_method("magnitude", sparsity=0.5)
    method.attach(model)
    scores = nn.Parameter(torch.zeros(3))
    method.mask_param_groups = lambda: [{"params": [scores], "weight_decay": 0.0}]  # type: ignore[method-assign]
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1), method)
    assert opt.param_groups[0]["weight_decay"] == 0.1  # weight matrices; then biases (no decay by default)
    assert opt.param_groups[-1]["weight_decay"] == 0.0
    assert opt.param_groups[-1]["params"][0] is scores
    weight_ids = {id(p) for g in opt.param_groups[:-1] for p in g["params"]}
    assert id(scores) not in weight_ids


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "constant"])
def test_lr_schedules_are_pure_and_bounded(schedule):
    f = lr_factor(TrainConfig(lr_schedule=schedule, warmup_epochs=1), steps_in_phase=100, steps_per_epoch=10)
    values = [f(s) for s in range(100)]
    assert values == [f(s) for s in range(100)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[0] < values[9]  # warm-up rises
    if schedule == "cosine":
        assert values[-1] < 0.01
