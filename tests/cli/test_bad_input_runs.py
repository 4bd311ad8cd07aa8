"""Bad runs through ``main(argv)``: refused hyper-parameters (exit 2) and diverged runs (exit 3).

Each row asserts the exit code, exactly one line on stderr, no traceback, and what is left on disk.
"""

from __future__ import annotations

import json

import pytest

from secateurs.cli.main import main
from secateurs.errors import EXIT_DIVERGED

QUICK = ["--model", "mlp", "--data", "synthetic", "--limit-train", "128", "--limit-test", "64", "--batch-size", "64",
         "--device", "cpu", "--epochs", "1"]
PRUNE = ["prune", *QUICK, "--method", "magnitude", "--sparsity", "0.5"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", *QUICK, "--lr", "nan"], "lr must be a finite number"),
        (["train", *QUICK, "--lr", "inf"], "lr must be a finite number"),
        (["train", *QUICK, "--momentum", "nan"], "momentum must be a finite number"),
        (["prune", *QUICK, "--method", "cs", "--sparsity", "0.5", "-o", "s0=.nan"], "s0 must be a finite number"),
        (["search-tickets", *QUICK, "--epochs", "2", "-o", "rounds=1", "--lr=-inf"], "lr must be a finite number"),
    ],
)
def test_non_finite_settings_are_usage_errors(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert line.startswith("secateurs: error:") and needle in line
    assert not out.exists()  # refused before anything was written


SEARCH = ["search-tickets", *QUICK, "--epochs", "2", "-o", "rounds=1", "--values=0,0.1", "--imp", "none"]


@pytest.mark.parametrize("argv", [PRUNE, ["train", *QUICK], SEARCH])
def test_a_diverged_run_exits_non_zero_without_a_report(tmp_path, capsys, argv):
    out = tmp_path / "run"
    assert main([*argv, "--lr", "1e6", "--out", str(out)]) == EXIT_DIVERGED
    line = _one_line(capsys)
    assert "training diverged in epoch 1" in line and "--lr" in line
    assert not (out / "report.json").exists() and not (out / "model.safetensors").exists()
    assert not (out / "curve.json").exists() and ("replica=0" in line) == (argv is SEARCH)
    metrics = out / "metrics.jsonl"
    for text in metrics.read_text().splitlines() if metrics.exists() else []:
        json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict JSON {token}"))


def test_a_resumed_search_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["search-tickets", *QUICK, "--epochs", "2", "-o", "rounds=1", "--values=0,0.1", "--imp", "none",
            "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main([*argv, "--resume", "--values=0,0.2"]) == 2
    line = _one_line(capsys)
    assert "these differ: values: [0, 0.1] -> [0, 0.2]" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert main([*argv, "--resume"]) == 0  # the same settings continue (here: the finished search)


def test_a_run_that_diverged_in_its_first_epoch_cannot_be_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*PRUNE, "--lr", "1e6", "--out", str(out)]) == EXIT_DIVERGED
    capsys.readouterr()
    assert main([*PRUNE, "--lr", "1e6", "--out", str(out), "--resume"]) == 2
    assert "holds no checkpoint" in _one_line(capsys)
