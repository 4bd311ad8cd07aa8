"""examples/lightning_prune.py runs and prunes to its target."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("lightning.pytorch")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning_prune.py"


def _example():
    spec = importlib.util.spec_from_file_location("lightning_prune", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["gmp"])  # dpp on the 784-300-100 MLP takes ~10 s here; the callback tests cover it
def test_the_example_runs(method, tmp_path, capsys):
    code = _example().main(["--method", method, "--epochs", "2", "--limit", "512", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{method}: accuracy" in out and "sparsity 0.9" in out
    assert list(tmp_path.glob("checkpoints/*.ckpt"))  # Lightning's own checkpoint, with the masks in it


def test_the_example_refuses_bad_input(tmp_path, capsys):
    assert _example().main(["--sparsity", "1.2", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("lightning_prune: ")
    # A budget the method cannot use is found when it attaches inside trainer.fit: one line, exit 2.
    assert _example().main(["--method", "lottery", "--epochs", "3", "--limit", "128", "--out", str(tmp_path)]) == 2
    assert "lottery with 3 rounds needs at least 4 epochs" in capsys.readouterr().err
