"""Resume records: a kill at any moment leaves a run that resumes to clean metrics and the same report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import secateurs.train.loop as loop
from secateurs.data import build_data
from secateurs.methods import build_method
from secateurs.train import TrainConfig, fit

CONFIG = TrainConfig(epochs=3, lr=0.05)


class _Killed(Exception):
    """Stands for a kill -9 at a chosen point."""


def _data():
    return build_data("synthetic", batch_size=64, limit_train=128, limit_test=64, seed=4)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 10))


def _fit(run_dir, method_name="gmp", options=None, *, resume=False):
    data, model = _data(), _model()
    method = build_method(method_name, **(options or {"sparsity": 0.5}))
    result = fit(model, data.train, config=CONFIG, method=method, eval_loader=data.test, run_dir=run_dir,
                 resume=resume)
    return model, method, result


def _epochs(run_dir) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_kill_between_the_metrics_line_and_the_checkpoint_leaves_no_duplicate_epoch(tmp_path, monkeypatch):
    straight, _, _ = _fit(tmp_path / "a")
    real_save = loop.save_checkpoint

    def die_before_epoch_2_is_saved(path, **kwargs):
        if kwargs["epochs_done"] == 2:
            raise _Killed  # the metrics line of epoch 2 is written, its checkpoint is not
        real_save(path, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", die_before_epoch_2_is_saved)
    with pytest.raises(_Killed):
        _fit(tmp_path / "b")
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert _epochs(tmp_path / "b") == [1, 2]
    with (tmp_path / "b" / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "train_lo')  # and a line cut off mid-write
    resumed, _, result = _fit(tmp_path / "b", resume=True)
    assert _epochs(tmp_path / "b") == [1, 2, 3]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_stale_temporary_files_are_removed(tmp_path):
    _fit(tmp_path)
    stale = tmp_path / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    _fit(tmp_path, resume=True)
    assert not stale.exists() and (tmp_path / "checkpoint.pt").exists()


def test_gibbs_reports_the_same_fields_when_resumed_after_its_final_checkpoint(tmp_path):
    options = {"sparsity": 0.5}
    _, straight, _ = _fit(tmp_path, "gibbs", options)
    extras = straight.report_extras()
    assert "gibbs_sample_agreement" in extras
    _, resumed, _ = _fit(tmp_path, "gibbs", options, resume=True)  # nothing left to train
    assert resumed.report_extras() == extras
