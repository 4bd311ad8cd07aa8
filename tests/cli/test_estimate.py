"""``secateurs estimate`` and ``prune --method singularity`` through ``main(argv)``."""

from __future__ import annotations

import json

import pytest

from secateurs.cli.main import main

QUICK = ["--data", "synthetic", "--limit-train", "160", "--limit-test", "64", "--batch-size", "64",
         "--epochs", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "dense"
    assert main(["train", "--model", "lenet5", *QUICK, "--out", str(run)]) == 0
    return run


def test_estimate_prints_the_table_writes_json_and_flags_targets(dense, tmp_path, capsys):
    out = tmp_path / "est"
    code = main(["estimate", "--model", "lenet5", "--data", "synthetic", "--limit-train", "160", "--from", str(dense),
                 "--calibration", "64", "--target", "sparsity=0.99", "--target", "macs=0.01", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "conv1" in text and "maximum network redundancy" in text
    assert "target sparsity 0.99: BEYOND" in text and "target macs 0.01: within" in text
    saved = json.loads((out / "estimate.json").read_text())
    assert {u["root"] for u in saved["units"]} == {"conv1", "conv2", "fc1", "fc2"}
    for unit in saved["units"]:
        assert 0 <= unit["effective"] <= unit["channels"]
        assert unit["max_rate"] == pytest.approx(1 - unit["effective"] / unit["channels"])
        assert sum(unit["spectrum"]) == pytest.approx(1.0)
    assert 0 < saved["max_params_reduction"] < 1 and saved["targets"][0]["beyond_maximum"]
    assert (out / "estimate.png").stat().st_size > 0
    # On the run directory itself: the same numbers (same seed and calibration draw).
    assert main(["estimate", str(dense), "--calibration", "64", "--json", "--no-plot", "--out", str(tmp_path)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [u["effective"] for u in again["units"]] == [u["effective"] for u in saved["units"]]


def test_singularity_prune_shrinks_to_the_masked_model(dense, tmp_path, capsys):
    run = tmp_path / "s"
    assert main(["prune", "--model", "lenet5", *QUICK, "--val-fraction", "0.2", "--method", "singularity",
                 "--sparsity", "0.5", "--granularity", "filter", "--from", str(dense), "-o", "calibration=64",
                 "--out", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    extras = report["singularity"]
    assert extras["rounds"] and extras["dense_val_accuracy"] is not None
    assert (run / "estimate.json").exists()
    assert main(["shrink", str(run), "--out", str(tmp_path / "small")]) == 0
    text = capsys.readouterr().out
    assert "as predicted: yes" in text
    shrunk = json.loads((tmp_path / "small" / "report.json").read_text())
    # by default (round_to 8) the widths are rounded up, the channels given back stay zero
    assert shrunk["max_abs_diff_vs_run"] < 1e-4 and shrunk["round_to"] == 8
    assert all(g["kept"] % 8 == 0 or g["kept"] == g["channels"] for g in shrunk["groups"])
    assert main(["shrink", str(run), "--round-to", "1", "--out", str(tmp_path / "exact")]) == 0
    exact = json.loads((tmp_path / "exact" / "report.json").read_text())
    assert exact["max_abs_diff_vs_run"] < 1e-4 and exact["channels_masked"] == 0


@pytest.mark.parametrize("argv", [
    ["estimate"],
    ["estimate", "--model", "lenet5", "--data", "synthetic"],
    ["estimate", "--target", "flops=0.5"],
    ["estimate", "--target", "sparsity=1.5"],
    ["estimate", "/no/such/run"],
    ["estimate", "--model", "lenet5", "--data", "synthetic", "--from", "/no/such/run", "--criterion", "median"],
])
def test_bad_estimate_input_is_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
