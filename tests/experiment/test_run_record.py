"""One seed for everything, and the run record (``run.json``) that says what produced a run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from secateurs._version import __version__
from secateurs.cli.main import main
from secateurs.train.config import TrainConfig
from secateurs.train.optim import build_optimizer, decay_split

QUICK = ["--model", "mlp", "--data", "synthetic", "--limit-train", "96", "--limit-test", "32", "--batch-size", "32",
         "--device", "cpu"]


def _prune(out: Path, method: str, *extra: str, epochs: int = 2) -> Path:
    argv = ["prune", *QUICK, "--method", method, "--sparsity", "0.7", "--epochs", str(epochs), *extra, "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    return out


# Options that keep each method's run to two short epochs.
_FAST = {"random": [], "gibbs": [], "dpp": ["-o", "metric_samples=4"], "cs": ["-o", "rounds=1"]}


@pytest.mark.parametrize("method", list(_FAST))
def test_same_seed_twice_gives_byte_identical_masks_and_metrics(tmp_path, method, capsys):
    a = _prune(tmp_path / "a", method, *_FAST[method], "--seed", "5")
    b = _prune(tmp_path / "b", method, *_FAST[method], "--seed", "5")
    assert (a / "masks.safetensors").read_bytes() == (b / "masks.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()

    def metrics(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert metrics(a) == metrics(b)


def test_seed_reaches_the_method_and_an_explicit_method_seed_overrides_it(tmp_path, dense, capsys):
    def masks(name: str, *flags: str) -> bytes:
        run = _prune(tmp_path / name, "random", "--from", str(dense), *flags, epochs=1)
        return (run / "masks.safetensors").read_bytes()

    assert masks("s3", "--seed", "3") != masks("s4", "--seed", "4")
    # -o seed=N is the method's own generator: the same masks whatever the run's seed.
    assert masks("s3o", "--seed", "3", "-o", "seed=7") == masks("s4o", "--seed", "4", "-o", "seed=7")
    saved = json.loads((tmp_path / "s4o" / "run.json").read_text())["settings"]
    assert saved["method_options.seed"] == {"value": 7, "source": "-o"}
    assert json.loads((tmp_path / "s4" / "run.json").read_text())["settings"]["method_options.seed"] == {
        "value": 4, "source": "run seed"}


def test_record_holds_argv_versions_sources_and_the_data_fingerprint(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  lr: 0.05\n")
    run = _prune(tmp_path / "run", "magnitude", "--config", str(recipe), "--seed", "2", "-o", "scope=global")
    record = json.loads((run / "run.json").read_text())
    assert record["argv"][:2] == ["secateurs", "prune"] and "--seed" in record["argv"]
    env = record["environment"]
    assert env["secateurs"] == __version__ and env["torch"] == torch.__version__
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads() and env["deterministic"] is False
    settings = record["settings"]
    assert settings["train.lr"] == {"value": 0.05, "source": "recipe"}
    assert settings["seed"] == {"value": 2, "source": "flag"}
    assert settings["method_options.scope"] == {"value": "global", "source": "-o"}
    assert settings["train.momentum"]["source"] == "default"
    assert record["data"]["generator"]["name"] == "secateurs.data.make_synthetic"
    assert record["started"] <= record["finished"]
    capsys.readouterr()
    assert main(["inspect", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "run record" in shown and "train.lr=0.05 (recipe)" in shown and f"torch {torch.__version__}" in shown


def test_record_fingerprints_data_files(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from _data_helpers import write_mnist_like

    write_mnist_like(tmp_path / "mnist", n_train=40, n_test=20)
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp", "--data", "mnist", "--data-dir", str(tmp_path / "mnist"), "--epochs", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    data = json.loads((out / "run.json").read_text())["data"]
    names = sorted(f["name"] for f in data["files"])
    assert names == sorted(p.name for p in (tmp_path / "mnist").iterdir())
    first = (tmp_path / "mnist" / data["files"][0]["name"])
    import hashlib

    assert data["files"][0]["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert data["files"][0]["size"] == first.stat().st_size


def test_deterministic_flag_is_recorded_and_restored(tmp_path, capsys):
    before = torch.are_deterministic_algorithms_enabled()
    assert main(["train", *QUICK, "--epochs", "1", "--deterministic", "--out", str(tmp_path / "d")]) == 0
    assert torch.are_deterministic_algorithms_enabled() == before  # one run does not change the next
    record = json.loads((tmp_path / "d" / "run.json").read_text())
    assert record["environment"]["deterministic"] is True and record["settings"]["deterministic"]["value"] is True


def test_weight_decay_exclusion_leaves_biases_and_norm_weights_undecayed(tiny_cnn):
    model = tiny_cnn
    decayed, kept = decay_split(model)
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    assert norms and biases
    assert {id(p) for p in kept} == norms | biases
    assert {id(p) for p in decayed} == {id(p) for n, p in model.named_parameters() if p.ndim > 1}
    groups = build_optimizer(model, TrainConfig(decay_bias_norm=False, weight_decay=1e-3)).param_groups
    assert [({id(p) for p in g["params"]}, g["weight_decay"]) for g in groups] == [
        ({id(p) for p in decayed}, 1e-3), (norms | biases, 0.0)]
    (only,) = build_optimizer(model, TrainConfig(decay_bias_norm=True, weight_decay=1e-3)).param_groups
    assert len(only["params"]) == len(list(model.parameters())) and only["weight_decay"] == 1e-3
