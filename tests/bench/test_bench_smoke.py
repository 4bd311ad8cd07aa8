"""The shipped smoke suite end to end, as CI runs it: every registered method runs, the report is made.

A method that registers but cannot run at the smoke budget fails here; give it options under
``method_options`` in benchmarks/smoke.yaml.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs.bench import read_results
from secateurs.cli.main import main
from secateurs.methods import METHODS

SMOKE = Path(__file__).parents[2] / "benchmarks" / "smoke.yaml"


@pytest.mark.slow
def test_smoke_suite_runs_every_method_and_reports(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", str(SMOKE), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    ok = {r["method"] for r in read_results(out) if r["status"] == "ok" and r["role"] == "run"}
    assert ok == {"dense", *METHODS.names()}

    assert main(["report", str(out)]) == 0
    report = out / "report"
    md = (report / "results.md").read_text()
    for name in METHODS.names():
        assert f"| {name}" in md
    pngs = sorted((report / "img").glob("*.png"))
    assert {p.name.split("-")[0] for p in pngs} >= {"acc", "layers", "curves"}
    page = (report / "index.html").read_text()
    assert all(f"img/{p.name}" in page for p in pngs)
    # header, pretraining, dense, one row per method
    assert (report / "results.csv").read_text().count("\n") == 3 + len(METHODS.names())
