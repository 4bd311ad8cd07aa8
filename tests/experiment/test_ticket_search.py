"""Parallel ticket search (CS): replicas sharing one data pass of `fit_replicas`, curve outputs, costs,
resume, CLI."""

from __future__ import annotations

import json

import pytest
import torch

import secateurs.experiment.ticket_search as ts
import secateurs.train.loop as loop
from secateurs.cli.main import main
from secateurs.core.masks import MaskSet
from secateurs.errors import UsageError
from secateurs.experiment import RunConfig, execute
from secateurs.experiment.ticket_search import imp_cost, replica_configs, search_tickets
from secateurs.train import TrainConfig

QUICK = ["--data", "synthetic", "--limit-train", "192", "--limit-test", "64", "--batch-size", "64", "--device", "cpu"]


def base(**options) -> RunConfig:
    opts = {"free": True, "rounds": 1, **options}
    return RunConfig(model="mlp", data="synthetic", method="cs", method_options=opts, device="cpu",
                     limit_train=192, limit_test=64, train=TrainConfig(epochs=2, batch_size=64, lr=0.05))


def test_outputs_and_costs(tmp_path):
    result = search_tickets(base(), "s0", [0.05, 0.0], tmp_path)
    assert [p["value"] for p in result["points"]] == [0.05, 0.0]
    for p in result["points"]:
        assert 0.0 <= p["sparsity"] < 1.0 and 0.0 <= p["accuracy"] <= 100.0
        assert p["natural_sparsity"] == pytest.approx(p["sparsity"])  # free mode: the sign mask is the ticket
    cost = result["cost"]
    assert cost["replicas"] == 2 and cost["epochs"] == 4 and cost["sequential_epochs"] == 2
    assert result["imp"] == imp_cost(2, 1) and result["imp"]["epochs"] == 3
    for name in ("curve.json", "curve.md", "curve.png", "metrics.jsonl", "checkpoint.pt", "search.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "curve.json").read_text()) == json.loads(json.dumps(result))
    assert "| s0 (setting) | sparsity |" in (tmp_path / "curve.md").read_text()
    for i in range(2):
        assert isinstance(MaskSet.load(tmp_path / "tickets" / str(i) / "masks.safetensors"), MaskSet)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["epoch"], r["replica"]) for r in lines) == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_a_replica_equals_a_standalone_ticket_run(tmp_path):
    """The shared pass changes nothing for a replica: same masks and accuracy as its own `prune` run."""
    result = search_tickets(base(), "s0", [0.05, 0.0], tmp_path / "search")
    cfg = replica_configs(base().with_method_options(mode="ticket"),
                          "s0", [0.0])[0]
    report = execute(cfg, tmp_path / "alone")
    alone = MaskSet.load(tmp_path / "alone" / "masks.safetensors")
    shared = MaskSet.load(tmp_path / "search" / "tickets" / "1" / "masks.safetensors")
    for name in alone:
        assert torch.equal(alone[name].mask, shared[name].mask), name
    assert result["points"][1]["accuracy"] == pytest.approx(report["accuracy"])


def test_target_sparsities_are_exact(tmp_path):
    result = search_tickets(base(free=False, sparsity=0.5), "sparsity", [0.5, 0.8], tmp_path)
    assert [p["value"] for p in result["points"]] == [0.5, 0.8]
    assert [p["sparsity"] for p in result["points"]] == pytest.approx([0.5, 0.8], abs=1e-3)


def test_resume_gives_the_same_curve(tmp_path, monkeypatch):
    straight = search_tickets(base(), "s0", [0.05, 0.0], tmp_path / "a", imp="none")
    real_save = loop.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        search_tickets(base(), "s0", [0.05, 0.0], tmp_path / "b", imp="none")
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    with pytest.raises(UsageError, match="resume"):
        search_tickets(base(), "s0", [0.05, 0.0], tmp_path / "b", imp="none")
    resumed = search_tickets(base(), "s0", [0.05, 0.0], tmp_path / "b", resume=True, imp="none")
    for a, b in zip(straight["points"], resumed["points"], strict=True):
        assert a["sparsity"] == b["sparsity"] and a["accuracy"] == pytest.approx(b["accuracy"])


def test_settings_that_change_the_phase_layout_are_refused(tmp_path):
    with pytest.raises(UsageError, match="phase layout"):
        search_tickets(ts.replace(base(), train=TrainConfig(epochs=4)), "rounds", [1, 2], tmp_path, imp="none")
    with pytest.raises(UsageError):
        replica_configs(RunConfig(model="mlp", data="synthetic", method="gmp", method_options={"sparsity": 0.5}),
                        "s0", [0.0])


def test_imp_cost_is_computed_from_rounds():
    assert imp_cost(5, 10) == {"rounds": 6, "epochs": 60, "sequential_epochs": 60,
                               "how": "computed: (points + 1) sequential rounds x epochs per round"}


def test_cli(tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["search-tickets", "--model", "mlp", *QUICK, "--epochs", "2", "-o", "rounds=1", "--values", "0.05,0",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "s0=0.05" in text and "IMP" in text and (out / "curve.png").exists()
    assert main(argv) == 2  # an existing search is not overwritten
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    code = main(["search-tickets", "--model", "mlp", *QUICK, "--method", "gmp", "--out", str(tmp_path / "x")])
    assert code == 2 and "cannot search tickets; methods that can: continuous-sparsification" in capsys.readouterr().err
