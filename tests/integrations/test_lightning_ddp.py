"""The callback under Lightning's DDP strategy: 2 CPU processes (gloo) end with the same masks and
weights on both ranks, at exactly the target, and equal (within float tolerance) to one process on
the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from integrations._lightning_helpers import Classifier, loader, trainer  # noqa: E402

from secateurs.integrations.lightning import SecateursPruning  # noqa: E402

SCRIPT = Path(__file__).with_name("_lightning_ddp_run.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
def test_two_ddp_processes_match_each_other_and_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    for name, ddp in result.items():
        assert ddp["ranks_equal"], name
        for key, zeros in ddp["zeros"].items():
            assert zeros == round(0.75 * ddp["numel"][key]), (name, key)
        # One process on the same global batches (16 = 2 x 8, in the same order) ends the same.
        module = Classifier(schedule=True)
        pruning = SecateursPruning(name, sparsity=0.75, submodule="model")
        trainer(4, [pruning]).fit(module, loader(batch_size=16, samples=64))
        flat = torch.cat([module.model.get_parameter(k).detach().flatten() for k in sorted(pruning.masks)]
                         + [p.detach().flatten() for p in module.parameters()])
        assert torch.allclose(flat, torch.tensor(ddp["weights"]), atol=1e-5), name
