"""The runner: results lines, resume (finished cells skipped, half-finished runs continued), failures
that do not end the grid, stale configs, pretraining, MACs targets, and the command line."""

from __future__ import annotations

import json
import logging

import pytest

import secateurs.train.loop as loop
from secateurs.bench import parse_suite, read_results, run_suite
from secateurs.cli.main import main

TINY = {"data": "synthetic", "limit_train": 64, "limit_test": 32, "device": "cpu",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05}}


def tiny_suite(methods=("dense", "magnitude"), **changes):
    raw = {"name": "tiny", "base": dict(TINY),
           "grid": {"model": "mlp", "method": list(methods), "sparsity": [0.5], "seed": [0]}}
    raw.update(changes)
    return parse_suite(raw)


def lines_by_cell(out):
    grouped = {}
    for record in read_results(out):
        grouped.setdefault(record["cell"], []).append(record)
    return grouped


def test_failing_cell_is_logged_and_skipped_and_finished_cells_are_not_rerun(tmp_path, caplog):
    # lottery with 5 rounds needs 6 epochs: that cell fails when it starts, the others must still run.
    suite = tiny_suite(("dense", "lottery", "magnitude"), method_options={"lottery": {"rounds": 5}})
    with caplog.at_level(logging.WARNING, logger="secateurs.bench.runner"):
        summary = run_suite(suite, tmp_path)
    assert sorted(summary.ran) == ["runs/mlp/synthetic/dense/seed0",
                                   "runs/mlp/synthetic/magnitude/unstructured-s0.5/seed0"]
    [(failed_id, reason)] = summary.failed
    assert "lottery" in failed_id and "needs at least 6 epochs" in reason
    assert any("lottery" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    lines = lines_by_cell(tmp_path)
    assert lines[failed_id][-1]["status"] == "error"
    ok = lines["runs/mlp/synthetic/magnitude/unstructured-s0.5/seed0"][-1]
    report = json.loads((tmp_path / ok["run_dir"] / "report.json").read_text())
    assert ok["status"] == "ok" and ok["accuracy"] == report["accuracy"]
    assert ok["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert ok["target_kind"] == "sparsity" and ok["target_value"] == 0.5 and ok["granularity"] == "unstructured"

    stamp = (tmp_path / ok["run_dir"] / "report.json").stat().st_mtime_ns
    again = run_suite(suite, tmp_path)
    assert sorted(again.skipped) == sorted(summary.ran) and not again.ran
    assert [cell for cell, _ in again.failed] == [failed_id]  # failures are tried again
    assert (tmp_path / ok["run_dir"] / "report.json").stat().st_mtime_ns == stamp
    relines = lines_by_cell(tmp_path)
    assert all(sum(r["status"] == "ok" for r in recs) <= 1 for recs in relines.values())


def test_half_finished_cell_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    real_save = loop.save_checkpoint
    killed = []

    def save_or_die(path, **kwargs):
        if kwargs["epochs_done"] == 2 and not killed:
            killed.append(path)
            raise RuntimeError("killed")
        return real_save(path, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", save_or_die)
    suite = tiny_suite(("magnitude",))
    first = run_suite(suite, tmp_path)
    assert first.failed and "killed" in first.failed[0][1]
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    second = run_suite(suite, tmp_path)
    assert second.ran == [first.failed[0][0]]
    metrics = tmp_path / second.ran[0] / "metrics.jsonl"
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs.count(1) == 1  # epoch 1 came from the checkpoint, not from training again
    assert epochs[-1] == 2


def test_changed_config_is_an_error_but_device_is_not(tmp_path):
    run_suite(tiny_suite(("dense",)), tmp_path)
    # where it runs may change (and the progress bar draws without a terminal)
    assert run_suite(tiny_suite(("dense",)), tmp_path, device="cpu", progress=True).skipped
    changed = tiny_suite(("dense",), base={**TINY, "train": {**TINY["train"], "lr": 0.01}})
    summary = run_suite(changed, tmp_path)
    assert summary.failed and "another config" in summary.failed[0][1]


def test_pretraining_feeds_every_cell_and_its_failure_fails_them(tmp_path):
    suite = tiny_suite(("dense", "magnitude"), pretrain={"train": {"epochs": 1}})
    summary = run_suite(suite, tmp_path)
    assert not summary.failed and len(summary.ran) == 3
    lines = {r["cell"]: r for r in read_results(tmp_path)}
    pre = lines["pretrain/mlp/synthetic/seed0"]
    assert pre["role"] == "pretrain" and pre["epochs"] == 1
    for cell in ("runs/mlp/synthetic/dense/seed0", "runs/mlp/synthetic/magnitude/unstructured-s0.5/seed0"):
        assert lines[cell]["dense_accuracy"] == pre["accuracy"]
        assert lines[cell]["pretrain_epochs"] == 1

    broken = parse_suite({"base": dict(TINY), "pretrain": {"augment": False},
                          "grid": {"model": "no-such-model", "method": ["dense", "random"], "sparsity": 0.5}})
    summary = run_suite(broken, tmp_path / "broken")
    assert len(summary.failed) == 3
    assert all("pretraining run" in reason for cell, reason in summary.failed if cell.startswith("runs/"))


def test_macs_target_leaves_that_share_of_the_dense_macs(tmp_path):
    """Per-layer filter masks: the target is on effective MACs (density-weighted)."""
    suite = parse_suite({"base": dict(TINY), "grid": {"model": "mlp", "method": "magnitude",
                                                      "granularity": "filter", "macs": [0.5]},
                         "method_options": {"magnitude": {"coupled": False}}})
    summary = run_suite(suite, tmp_path)
    assert not summary.failed
    [line] = read_results(tmp_path)
    assert line["target_kind"] == "macs" and line["target_value"] == 0.5
    # filters are whole rows of 300 and 100: the achieved share lies within one row of the target
    assert line["macs_effective"] / line["macs_dense"] == pytest.approx(0.5, abs=0.01)
    assert 0.0 < line["target_sparsity"] < 1.0


def test_macs_target_of_coupled_filter_pruning_is_the_shrunk_model(tmp_path):
    """Removing a channel also removes the weights that read it: the shrunk MACs meet the target at a
    much lower sparsity than the density count would need."""
    suite = parse_suite({"base": dict(TINY), "grid": {"model": "mlp", "method": "magnitude",
                                                      "granularity": "filter", "macs": [0.5]}})
    summary = run_suite(suite, tmp_path)
    assert not summary.failed
    [line] = read_results(tmp_path)
    assert line["macs_shrunk"] / line["macs_dense"] == pytest.approx(0.5, abs=0.02)
    assert line["macs_shrunk"] / line["macs_dense"] <= 0.5
    assert line["macs_shrunk"] < line["macs_effective"]
    assert 0.0 < line["target_sparsity"] < 0.5


def test_cli_bench_then_report(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps({"name": "cli", "base": TINY,
                                "grid": {"model": "mlp", "method": ["dense", "random"], "sparsity": 0.5}}))
    out = tmp_path / "bench"
    assert main(["bench", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "runs/mlp/synthetic/random/unstructured-s0.5/seed0" in capsys.readouterr().out
    assert not out.exists()
    assert main(["bench", str(path), "--out", str(out)]) == 0
    assert "2 ran" in capsys.readouterr().out
    assert main(["report", str(out), "--no-plots"]) == 0
    assert (out / "report" / "index.html").exists() and not (out / "report" / "img").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench", "{tmp}/missing.yaml", "--out", "{tmp}/b"], "no suite file"),
        (["bench", "{tmp}/bad.yaml", "--out", "{tmp}/b"], "unknown key 'grids'"),
        (["report", "{tmp}/nothing"], "no results.jsonl"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.yaml").write_text("grids: {}\n")
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_config_hash_follows_the_declared_run_not_where_it_runs():
    from secateurs.bench.results import config_hash, matches_saved
    from secateurs.experiment.config import RunConfig

    base = RunConfig.from_dict({"model": "mlp", "data": "synthetic", "method": "lottery",
                                "method_options": {"sparsity": 0.5}})
    moved = base.with_overrides(device="cpu", data_dir="/elsewhere", from_checkpoint="/some/run")
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) != config_hash(base.with_overrides(seed=1))
    assert config_hash(base) != config_hash(base.with_overrides(method_options={"sparsity": 0.6}))
    assert config_hash(base) != config_hash(base, pretrain="pretrain/x")
    # config.yaml holds every option resolved; only the declared ones and the other fields must match
    saved = base.to_dict()
    assert saved["method_options"]["rounds"] == 3 and matches_saved(base, saved)
    assert not matches_saved(base.with_overrides(seed=1), saved)
    assert not matches_saved(base, {**saved, "method_options": {**saved["method_options"], "sparsity": 0.9}})


def test_settings_added_later_with_defaults_keep_finished_cells_valid():
    """A run directory written before the training loop gained an option still matches, and the hash
    of a cell does not move when the loop gains a setting."""
    from secateurs.bench.results import config_hash, matches_saved
    from secateurs.experiment.config import RunConfig

    base = RunConfig.from_dict({"model": "mlp", "data": "synthetic", "method": "magnitude",
                                "method_options": {"sparsity": 0.5}})
    older = base.to_dict()
    del older["train"]["compile"], older["train"]["channels_last"]
    assert matches_saved(base, older)
    # Pinned: settings at their defaults are not hashed, so this value survives new options.
    assert config_hash(base) == "343b9028eb91fabd"
    assert config_hash(base.with_overrides(train={**base.to_dict()["train"], "compile": "default"})) != config_hash(base)
