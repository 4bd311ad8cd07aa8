"""Data-parallel training (``torchrun``, gloo, 2 CPU processes) against one process.

One ``torchrun`` launch (``ddp_worker.py``) trains gmp, cs, dpp, gibbs and random on two processes,
checking inside that both processes' masks agree at every forward pass, then runs ``secateurs
prune`` and is killed mid-run. The tests compare with one-process runs of the same global batch: the
same masks, the same weights within float tolerance, and the killed run resumed by one process ends
where an uninterrupted run ends, in one run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import secateurs
from secateurs.cli.main import main
from secateurs.data import TensorLoader
from secateurs.data.loader import ShardBatch
from secateurs.train.distributed import World
from secateurs.utils.io import load_safetensors

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402 - the processes' own code, to train the one-process reference alike

#: Optimizer step (0-based) at which both processes of the command-line run are killed: epoch 2 of 3
#: has begun (3 steps an epoch), epoch 1's checkpoint is on disk.
KILL_STEP = 4
CLI = ["prune", "--model", "mlp", "--data", "synthetic", "--limit-train", "91", "--limit-test", "41",
       "--batch-size", "30", "--epochs", "3", "--method", "gibbs", "--sparsity", "0.75", "--lr", "0.05",
       "--device", "cpu", "--seed", "5"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The worker's two processes, run once for the module: their files and their exit."""
    out = tmp_path_factory.mktemp("ddp")
    (out / "methods").mkdir()
    (out / "cwd").mkdir()
    src = str(Path(secateurs.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(ddp_worker.__file__).resolve()), str(out / "methods"), str(KILL_STEP),
               *CLI, "--out", "run"]
    done = subprocess.run(command, cwd=out / "cwd", env=env, capture_output=True, text=True, timeout=300)
    return out, done


def _log(done: subprocess.CompletedProcess) -> str:
    return (done.stdout + done.stderr)[-3000:]


@pytest.mark.parametrize("name", list(ddp_worker.METHODS))
def test_two_processes_end_as_one_with_the_same_global_batch(launched, name):
    out, done = launched
    saved_path = out / "methods" / f"{name}.pt"
    assert saved_path.exists(), f"the two-process run of {name} did not finish:\n{_log(done)}"
    saved = torch.load(saved_path, weights_only=True)
    assert saved["checks"] > 0  # the processes compared masks of every forward pass (see the worker)
    net, method, result = ddp_worker.train(name, World())
    masks = {k: e.mask for k, e in method.hard_masks().items()}
    assert masks.keys() == saved["masks"].keys()
    for key, mask in masks.items():
        assert torch.equal(mask, saved["masks"][key]), key
    state = net.state_dict()
    assert state.keys() == saved["state"].keys()
    for key, value in state.items():
        # CS fits its inverse temperature to the scores, so it inherits their rounding, amplified.
        torch.testing.assert_close(saved["state"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert saved["final"] == pytest.approx(result.final, rel=1e-5)  # evaluation summed over both processes
    assert saved["losses"] == pytest.approx([r["train_loss"] for r in result.history], rel=1e-5)


def test_processes_that_draw_different_masks_stop_at_the_first_epoch(launched):
    out, done = launched
    message = (out / "methods" / "diverged.txt")
    assert message.exists(), _log(done)
    assert "the 2 processes disagree after epoch 1" in message.read_text()


def test_a_killed_two_process_run_resumes_in_one_process(launched, tmp_path):
    out, done = launched
    assert done.returncode != 0, f"the command-line run was not killed:\n{_log(done)}"
    cwd = out / "cwd"
    assert sorted(p.name for p in cwd.iterdir()) == ["run"], "only rank 0 writes, into the one run directory"
    run = cwd / "run"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epochs_done"] == 1 and not (run / "report.json").exists()
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((run / "run.json").read_text())["environment"]["processes"] == 2

    assert main([*CLI, "--out", str(run), "--resume"]) == 0  # one process continues the two's run
    assert main([*CLI, "--out", str(tmp_path / "alone")]) == 0  # one process throughout
    for name in ("masks.safetensors", "model.safetensors"):
        resumed, alone = load_safetensors(run / name), load_safetensors(tmp_path / "alone" / name)
        assert resumed.keys() == alone.keys()
        for key, value in alone.items():
            if name.startswith("masks"):
                assert torch.equal(resumed[key], value), key
            else:
                torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-6, msg=key)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_shard_is_its_part_of_every_batch_and_they_add_up_to_the_batch():
    x = torch.arange(31.0).reshape(31, 1)
    loader = TensorLoader(x, torch.arange(31), batch_size=10, shuffle=True, seed=1)
    loader.set_epoch(2)
    whole = list(loader)
    shards = [loader.shard(rank, 3) for rank in range(3)]
    for shard in shards:
        shard.set_epoch(2)
        assert len(shard) == len(loader)
    for batch, parts in zip(whole, zip(*shards, strict=True), strict=True):
        assert all(isinstance(p, ShardBatch) and p.global_size == len(batch[1]) for p in parts)
        assert [len(p[1]) for p in parts] == ([4, 3, 3] if len(batch[1]) == 10 else [1, 0, 0])
        assert torch.equal(torch.cat([p[0] for p in parts]), batch[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), batch[1])


def test_other_commands_refuse_to_run_once_per_process(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["list", "methods"]) == 2
    assert "runs in one process; torchrun started 2" in capsys.readouterr().err
