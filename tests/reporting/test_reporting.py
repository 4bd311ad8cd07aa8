"""The report from a fixed, hand-written results.jsonl: rows, numbers, and the files it writes."""

from __future__ import annotations

import csv
import json
import math

import pytest

from secateurs.bench.results import latest_by_cell, read_results
from secateurs.cli.main import main
from secateurs.reporting import summarize, write_report
from secateurs.reporting.aggregate import failures

LAYERS = [{"name": "fc1.weight", "sparsity": 0.5}, {"name": "fc2.weight", "sparsity": 0.7}]


def line(method, seed, accuracy, *, sparsity=None, nonzero=1000, macs=10_000, layers=None, **extra):
    dense = sparsity is None
    run_dir = f"runs/m/d/{method}/seed{seed}" if dense else f"runs/m/d/{method}/s{sparsity}/seed{seed}"
    return {
        "cell": run_dir, "role": "run", "model": "m", "dataset": "d", "method": method,
        "granularity": None if dense else "unstructured", "scope": None if dense else "tensor",
        "target_kind": "none" if dense else "sparsity", "target_value": sparsity, "seed": seed, "epochs": 5,
        "pretrain_epochs": 0, "status": "ok", "run_dir": run_dir, "accuracy": accuracy,
        "achieved_sparsity": 0.0 if dense else sparsity, "params_total": 1000, "params_nonzero": nonzero,
        "macs_dense": 10_000, "macs_effective": macs, "train_seconds": 2.0, "layers": layers or [], **extra,
    }


RECORDS = [
    line("dense", 0, 90.0),
    line("dense", 1, 92.0),
    line("magnitude", 0, 80.0, sparsity=0.9, nonzero=200, macs=2_000, layers=LAYERS),
    line("magnitude", 1, 84.0, sparsity=0.9, nonzero=200, macs=2_000, layers=LAYERS),
    line("magnitude", 0, 70.0, sparsity=0.95, nonzero=100, macs=1_000, layers=LAYERS),
    # a cell that failed first and succeeded after a fix: the last line counts
    {**line("random", 0, 0.0, sparsity=0.9), "status": "error", "error": "boom"},
    line("random", 0, 50.0, sparsity=0.9, nonzero=250, macs=2_500, layers=LAYERS),
    {"cell": "runs/m/d/gibbs/s0.9/seed0", "role": "run", "model": "m", "dataset": "d", "method": "gibbs",
     "status": "error", "error": "ran out of patience"},
    {"cell": "runs/m/d/odd/filter/seed0", "role": "run", "status": "not_applicable", "error": "no filter"},
]


@pytest.fixture
def bench(tmp_path):
    with (tmp_path / "results.jsonl").open("w") as f:
        for record in RECORDS:
            f.write(json.dumps(record) + "\n")
        f.write('{"cell": "torn')  # a crash mid-write leaves half a line: skipped
    (tmp_path / "suite.yaml").write_text("name: fixed\ndescription: a <fixed> suite\n")
    for record in RECORDS:
        if record.get("status") == "ok":
            metrics = tmp_path / record["run_dir"] / "metrics.jsonl"
            metrics.parent.mkdir(parents=True, exist_ok=True)
            sparsity = record["achieved_sparsity"]
            epochs = [{"epoch": e, "eval_accuracy": record["accuracy"] - 5 + e, "sparsity": sparsity}
                      for e in (1, 2, 3)]
            metrics.write_text("\n".join(json.dumps(x) for x in epochs) + "\n")
    return tmp_path


def rows_by_key(bench):
    records = list(latest_by_cell(read_results(bench)).values())
    return {(r.method, r.target_value): r for r in summarize(records)}, records


def test_summary_rows_have_mean_std_ratios_and_delta(bench):
    rows, records = rows_by_key(bench)
    assert set(rows) == {("dense", None), ("magnitude", 0.9), ("magnitude", 0.95), ("random", 0.9)}
    dense = rows["dense", None]
    assert dense.accuracy.mean == 91.0 and dense.accuracy.std == pytest.approx(math.sqrt(2))
    mag = rows["magnitude", 0.9]
    assert mag.seeds == [0, 1] and mag.accuracy.mean == 82.0 and mag.accuracy.std == pytest.approx(math.sqrt(8))
    assert mag.compression.mean == pytest.approx(5.0) and mag.speedup.mean == pytest.approx(5.0)
    assert mag.delta == pytest.approx(-9.0)
    single = rows["magnitude", 0.95]
    assert single.accuracy.std is None and single.compression.mean == pytest.approx(10.0)
    assert rows["random", 0.9].accuracy.mean == 50.0  # the later ok line replaced the error
    assert dict(mag.layers) == {"fc1.weight": 0.5, "fc2.weight": 0.7}
    assert [f["cell"] for f in failures(records)] == ["runs/m/d/gibbs/s0.9/seed0", "runs/m/d/odd/filter/seed0"]
    # reading order: reference first, then by target, methods in order of appearance
    assert [(r.method, r.target_value) for r in rows.values()] == [
        ("dense", None), ("magnitude", 0.9), ("random", 0.9), ("magnitude", 0.95)]


def test_markdown_csv_html_and_pngs_are_written(bench):
    files = write_report(bench)
    assert files.html == bench / "report" / "index.html"
    md = files.markdown.read_text()
    assert "# Benchmark report: fixed" in md
    assert "| magnitude | 82.00 ± 2.83 | 70.00 |" in md  # headline: method x target
    assert "| random | 50.00 | — |" in md
    assert "| dense | — | — | — | 2 | 91.00 ± 1.41 | — | 0.0% | 1.00× | 1.00× | 10.00k | 5 | 2.0 |" in md
    assert "| magnitude | unstructured | tensor | 90% | 2 | 82.00 ± 2.83 | -9.00 | 90.0% | 5.00× | 5.00× |" in md
    assert "ran out of patience" in md and "no filter" in md

    with files.csv.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    mag = next(r for r in table if r["method"] == "magnitude" and r["target_value"] == "0.9")
    assert float(mag["accuracy_mean"]) == 82.0 and float(mag["accuracy_std"]) == pytest.approx(2.828427, rel=1e-5)
    assert float(mag["compression_mean"]) == 5.0 and float(mag["speedup_mean"]) == 5.0
    assert float(mag["accuracy_delta"]) == -9.0 and mag["seeds"] == "2"

    names = sorted(p.name for p in files.images)
    assert names == ["acc-macs-m-d.png", "acc-sparsity-unstructured-m-d.png", "curves-unstructured-90pct-m-d.png",
                     "curves-unstructured-95pct-m-d.png", "layers-unstructured-m-d.png"]
    for path in files.images:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000

    page = files.html.read_text()
    for path in files.images:
        assert f"src='img/{path.name}'" in page
    assert "82.00 ± 2.83" in page and "a &lt;fixed&gt; suite" in page


def test_report_command_lists_the_files(bench, capsys):
    out = bench / "elsewhere"
    assert main(["report", str(bench), "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(out / "index.html")
    assert all((out / p).exists() for p in printed)


def test_pretraining_is_the_reference_when_there_is_no_dense_cell(tmp_path):
    pre = {**line("dense", 0, 88.0), "cell": "pretrain/m/d/seed0", "role": "pretrain", "run_dir": "pretrain/m/d/seed0"}
    pruned = {**line("magnitude", 0, 80.0, sparsity=0.9), "pretrain_epochs": 5}
    rows = summarize([pre, pruned])
    assert [r.label for r in rows] == ["dense (pretraining)", "magnitude"]
    assert rows[1].delta == pytest.approx(-8.0)
    files = write_report_for(tmp_path, [pre, pruned])
    assert "| magnitude | unstructured | tensor | 90% | 1 | 80.00 | -8.00 |" in files.markdown.read_text()
    assert "5+5" in files.markdown.read_text()  # pretraining + run epochs


def write_report_for(tmp_path, records):
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return write_report(tmp_path, plots=False)


def test_environment_block_per_run_group_and_a_warning_when_environments_differ(bench, tmp_path):
    env = {"secateurs": "0.1.0", "git_commit": "abc", "git_dirty": False, "python": "3.11.7", "torch": "2.5.0",
           "torchvision": None, "device": "cpu", "device_name": "Some CPU", "cuda": None, "threads": 1,
           "deterministic": False}
    ok = [r for r in RECORDS if r.get("status") == "ok"]
    for record in ok:
        threads = 2 if record["method"] == "random" else 1  # one run from another environment
        (tmp_path / record["run_dir"] / "run.json").write_text(json.dumps({"environment": {**env, "threads": threads}}))
    files = write_report(tmp_path, plots=False)
    text = files.markdown.read_text()
    assert "Environment E1: secateurs 0.1.0 (git abc) | python 3.11.7 | torch 2.5.0 | cpu: Some CPU, 1 threads" in text
    assert "Environment E2:" in text and "2 threads" in text
    assert "Warning: the runs compared here come from 2 environments (E1, E2) that differ in threads" in text
    random_row = next(line for line in text.splitlines() if line.startswith("| random | unstructured |"))
    assert random_row.rstrip(" |").endswith("E2")
    assert "class='warning'" in files.html.read_text()
    # All runs alike: the block, no warning.
    (tmp_path / ok[-1]["run_dir"] / "run.json").write_text(json.dumps({"environment": env}))
    text = write_report(tmp_path, plots=False).markdown.read_text()
    assert "Environment E1:" in text and "Warning" not in text
