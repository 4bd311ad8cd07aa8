"""The command line, called in-process through ``main(argv)``."""

from __future__ import annotations

import json

import pytest

from secateurs.cli.main import main
from secateurs.methods import METHODS

QUICK = ["--data", "synthetic", "--limit-train", "256", "--limit-test", "128", "--batch-size", "64", "--device", "cpu"]


def test_list_methods_names_every_registered_method(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert name in out


@pytest.mark.parametrize("what", ["models", "datasets", "granularities"])
def test_list_other_registries(capsys, what):
    assert main(["list", what]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 4


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["prune", "--method", "nope", "--model", "mlp"], "unknown method"),
        (["prune", "--method", "gmp", "--sparsity", "1.0", "--model", "mlp"], "sparsity"),
        (["prune", "--method", "gmp", "--sparsity", "-0.1", "--model", "mlp"], "sparsity"),
        (["prune", "--method", "gmp", "--sparsity", "0.5", "--model", "nope"], "unknown model"),
        (["prune", "--method", "gmp", "--sparsity", "0.5", "--model", "mlp", "--granularity", "hexagon"], "granularity"),
        (["prune", "--method", "lottery", "--sparsity", "0.5", "--model", "mlp", "--epochs", "2", "-o", "rounds=4"],
         "epochs"),
        (["prune", "--method", "gmp", "--sparsity", "0.5", "--model", "mlp", "-o", "bogus=1"], "no option"),
        (["prune", "--sparsity", "0.5", "--model", "mlp"], "needs a method"),
        (["train", "--model", "mlp", "--epochs", "0"], "epochs"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code = main([*argv, *QUICK, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert needle in err
    assert "Traceback" not in err


def test_unknown_dataset_and_missing_data(tmp_path, capsys):
    code = main(["train", "--model", "mlp", "--data", "mnist", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "mnist" in err.lower()


def test_train_then_prune_from_it_then_inspect(tmp_path, capsys):
    dense = tmp_path / "dense"
    assert main(["train", "--model", "lenet5", *QUICK, "--epochs", "1", "--out", str(dense)]) == 0
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", "lenet5", *QUICK, "--epochs", "1", "--method", "magnitude",
                 "--sparsity", "0.75", "--from", str(dense), "--out", str(pruned)]) == 0
    report = json.loads((pruned / "report.json").read_text())
    required = {"method", "model", "dataset", "granularity", "target_sparsity", "achieved_sparsity",
                "params_total", "params_nonzero", "macs_dense", "macs_effective", "accuracy", "dense_accuracy",
                "epochs", "train_seconds", "layers"}
    assert required <= report.keys()
    assert report["achieved_sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert report["dense_accuracy"] == json.loads((dense / "report.json").read_text())["accuracy"]
    assert report["macs_effective"] < report["macs_dense"]
    assert all({"name", "shape", "sparsity"} <= row.keys() for row in report["layers"])
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "masks.safetensors", "model.safetensors"):
        assert (pruned / name).exists(), name
    capsys.readouterr()
    assert main(["inspect", str(pruned)]) == 0
    out = capsys.readouterr().out
    assert "sparsity" in out and report["layers"][0]["name"] in out


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "mlp", *QUICK, "--epochs", "1", "--out", str(out)]
    assert main(args) == 0
    before = (out / "report.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == before
    # Resuming a finished run is a no-op that succeeds.
    assert main([*args, "--resume"]) == 0


def test_checkpoint_that_does_not_match_the_model(tmp_path, capsys):
    dense = tmp_path / "dense"
    assert main(["train", "--model", "mlp", *QUICK, "--epochs", "1", "--out", str(dense)]) == 0
    capsys.readouterr()
    code = main(["prune", "--model", "lenet5", *QUICK, "--method", "gmp", "--sparsity", "0.5", "--from", str(dense),
                 "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "does not match" in err and len(err.strip().splitlines()) == 1


def test_recipe_file_with_flag_override(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model: mlp\ndata: synthetic\nmethod: gmp\nlimit_train: 256\nlimit_test: 128\n"
        "method_options: {sparsity: 0.5, granularity: filter}\ntrain: {epochs: 1, batch_size: 64}\n"
    )
    out = tmp_path / "run"
    assert main(["prune", "--config", str(recipe), "--sparsity", "0.25", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["granularity"] == "filter"
    assert report["target_sparsity"] == 0.25


def test_recipe_with_unknown_key_is_rejected(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: mlp\ndata: synthetic\nlearning_rate: 3\n")
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "r")]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_a_model_that_cannot_take_the_inputs_is_one_clear_line(tmp_path, capsys):
    """An ImageNet network on 28x28 images pools its feature map to nothing: said before training."""
    out = tmp_path / "run"
    code = main(["train", "--model", "torchvision:densenet121", *QUICK, "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "does not run on inputs of shape (1, 28, 28)" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
