"""``secateurs reproduce``: a rerun from the record matches byte for byte, and edits or gaps are named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from secateurs.cli.main import main

QUICK = ["--model", "mlp", "--limit-train", "96", "--limit-test", "32", "--batch-size", "32", "--device", "cpu",
         "--epochs", "2"]


@pytest.fixture(scope="module")
def gibbs_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gibbs") / "run"
    assert main(["prune", *QUICK, "--data", "synthetic", "--method", "gibbs", "--sparsity", "0.8", "--seed", "2",
                 "--out", str(out)]) == 0
    return out


def test_an_untouched_gibbs_run_is_reproduced_byte_for_byte(gibbs_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["reproduce", str(gibbs_run), "--out", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.startswith("reproduced exactly")
    for name in ("masks.safetensors", "model.safetensors"):
        assert (gibbs_run / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    record = json.loads((tmp_path / "again" / "run.json").read_text())
    assert record["reproduced_from"] == str(gibbs_run.resolve()) and record["argv"][1] == "reproduce"


def test_an_edited_recorded_setting_is_reported(gibbs_run, tmp_path, capsys):
    edited = tmp_path / "edited"
    edited.mkdir()
    for path in gibbs_run.iterdir():
        if path.is_file():
            (edited / path.name).write_bytes(path.read_bytes())
    record = json.loads((edited / "run.json").read_text())
    record["config"]["train"]["lr"] = 0.01
    (edited / "run.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["reproduce", str(edited), "--out", str(tmp_path / "again")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("not reproduced")
    (row,) = [line for line in out.splitlines() if "setting " in line]
    assert row.split() == ["setting", "train.lr", "0.1", "0.01"]


def test_a_run_without_a_record_or_with_missing_data_is_refused_in_one_line(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from _data_helpers import write_mnist_like

    write_mnist_like(tmp_path / "mnist", n_train=40, n_test=20)
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--data", "mnist", "--data-dir", str(tmp_path / "mnist"), "--out", str(run)]) == 0
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    capsys.readouterr()
    assert main(["reproduce", str(run), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t10k-labels-idx1-ubyte.gz is no longer there" in err
    assert not (tmp_path / "again").exists()

    (run / "run.json").unlink()  # as a run of an older secateurs
    assert main(["reproduce", str(run), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "older secateurs" in err


def test_a_budget_run_is_reproduced_though_its_allocation_block_times_itself(tmp_path, capsys):
    # The report's allocation block carries the allocator's own measured seconds; durations at any
    # depth are not part of what a rerun must equal, while the allocation itself is.
    run = tmp_path / "run"
    assert main(["prune", *QUICK, "--data", "synthetic", "--method", "gmp", "--budget", "params<=30%",
                 "--out", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert "seconds" in report["allocation"]
    capsys.readouterr()
    assert main(["reproduce", str(run), "--out", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.startswith("reproduced exactly")
