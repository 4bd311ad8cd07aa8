"""`fit_replicas`: K networks over one data pass, each trained exactly as by a `fit` of its own."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from secateurs.data import build_data
from secateurs.errors import UsageError
from secateurs.methods import Horizon, build_method
from secateurs.train import Replica, TrainConfig, fit, fit_replicas
from secateurs.train.checkpoint import checkpoint_weights, load_checkpoint
from secateurs.utils.io import save_torch

CONFIG = TrainConfig(epochs=2, lr=0.05)


def _data():
    return build_data("synthetic", batch_size=64, limit_train=192, limit_test=64, seed=2)


def _model() -> nn.Module:
    torch.manual_seed(0)  # no dropout: the global RNG does not enter training
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 10))


def _attached(sparsity: float, data) -> Replica:
    model = _model()
    method = build_method("gmp", sparsity=sparsity)
    method.attach(model, horizon=Horizon(CONFIG.epochs, len(data.train)))
    return Replica(model, method, tags={"sparsity_target": sparsity})


def test_each_replica_trains_as_its_own_fit(tmp_path):
    data = _data()
    replicas = [_attached(0.5, data), _attached(0.8, data)]
    results = fit_replicas(replicas, data.train, config=CONFIG, eval_loader=data.test, run_dir=tmp_path)
    for replica, result in zip(replicas, results, strict=True):
        alone = _model()
        method = build_method("gmp", sparsity=replica.tags["sparsity_target"])
        own = fit(alone, data.train, config=CONFIG, method=method, eval_loader=data.test)
        for key, value in alone.state_dict().items():
            assert torch.equal(value, replica.model.state_dict()[key]), key
        assert result.final == own.final
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["sparsity_target"]) for r in lines] == [(1, 0.5), (1, 0.8), (2, 0.5), (2, 0.8)]
    state = load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))
    assert len(state["replicas"]) == 2 and state["epochs_done"] == 2


def test_replicas_must_share_the_phase_layout():
    data = _data()
    model = _model()
    lottery = build_method("lottery", sparsity=0.5, rounds=1)
    lottery.attach(model, horizon=Horizon(CONFIG.epochs, len(data.train)))
    with pytest.raises(UsageError, match="one pass over the data"):
        fit_replicas([_attached(0.5, data), Replica(model, lottery)], data.train, config=CONFIG)


def test_a_checkpoint_of_the_first_format_still_resumes(tmp_path):
    """Runs checkpointed before replicas existed (one model at the top level) continue."""
    data = _data()
    fit(_model(), data.train, config=TrainConfig(epochs=1, lr=0.05), run_dir=tmp_path / "new")
    state = torch.load(tmp_path / "new" / "checkpoint.pt", weights_only=True)
    old = {k: v for k, v in state.items() if k != "replicas"} | state["replicas"][0] | {"format": 1}
    save_torch(old, tmp_path / "old" / "checkpoint.pt")
    assert checkpoint_weights(old).keys() == checkpoint_weights(state).keys()
    resumed = fit(_model(), data.train, config=TrainConfig(epochs=2, lr=0.05), run_dir=tmp_path / "old", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
