"""Batch-norm re-estimation for the final masks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from secateurs.cli.main import main
from secateurs.errors import UsageError
from secateurs.train import TrainConfig
from secateurs.train.recalibrate import recalibrate_batch_norm_


def test_statistics_become_the_exact_average_over_the_batches_and_nothing_else_changes():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(conv, nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU())
    model[1].running_mean.fill_(5.0)
    model.train()  # the mode is restored afterwards
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [(torch.randn(8, 3, 6, 6), torch.zeros(8)) for _ in range(5)]
    assert recalibrate_batch_norm_(model, batches, 3) == 3
    with torch.no_grad():
        features = torch.cat([conv(x) for x, _ in batches[:3]])
    torch.testing.assert_close(model[1].running_mean, features.mean((0, 2, 3)), rtol=0, atol=1e-5)
    per_batch_var = torch.stack([conv(x).var((0, 2, 3), unbiased=True) for x, _ in batches[:3]]).detach()
    torch.testing.assert_close(model[1].running_var, per_batch_var.mean(0), rtol=1e-5, atol=1e-6)
    assert model.training and model[1].momentum == 0.1
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_a_model_without_batch_norm_is_left_alone():
    assert recalibrate_batch_norm_(nn.Linear(3, 2), [(torch.randn(2, 3), torch.zeros(2))], 10) == 0


QUICK = ["--model", "resnet20", "--data", "synthetic", "--limit-train", "192", "--limit-test", "64",
         "--batch-size", "64", "--epochs", "2", "--granularity", "filter", "--sparsity", "0.5"]


@pytest.mark.parametrize(("method", "extra", "batches"), [("dpp", [], 3), ("gmp", [], None), ("dpp", ["0"], None),
                                                          ("gmp", ["2"], 2)])
def test_runs_recalibrate_by_default_only_for_sampled_masks(tmp_path, method, extra, batches):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"train": {"bn_recalibration": int(extra[0])}}) if extra else "{}")
    assert main(["prune", *QUICK, "--method", method, "--config", str(recipe), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report.get("bn_recalibration", {}).get("batches") == batches


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_recalibration_setting_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="bn_recalibration"):
        TrainConfig(bn_recalibration=bad)
