"""``secateurs shrink`` and ``secateurs inspect --prunability`` through ``main(argv)``."""

from __future__ import annotations

import json

import pytest
import torch

import secateurs
from secateurs.cli.main import main

QUICK = ["--data", "synthetic", "--limit-train", "128", "--limit-test", "64", "--batch-size", "64",
         "--epochs", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    filter_run, sparse_run = root / "filter", root / "unstructured"
    assert main(["prune", "--model", "resnet20", *QUICK, "--method", "magnitude", "--granularity", "filter",
                 "--sparsity", "0.5", "--out", str(filter_run)]) == 0
    assert main(["prune", "--model", "mlp", *QUICK, "--method", "magnitude", "--sparsity", "0.9",
                 "--out", str(sparse_run)]) == 0
    return filter_run, sparse_run


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_shrink_filter_run_writes_a_loadable_smaller_model(runs, tmp_path, capsys):
    filter_run, _ = runs
    out = tmp_path / "shrunk"
    assert main(["shrink", str(filter_run), "--out", str(out), "--round-to", "8", "--onnx"]) == 0
    assert "as predicted: yes" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["prediction_matches"]
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert report["accuracy_shrunk"] == report["accuracy_run"]
    assert report["max_abs_diff_vs_run"] <= 1e-4
    assert report["onnx"]["max_abs_diff"] <= 1e-4
    assert report["bytes_on_disk"] < report["bytes_dense_fp32"]
    model = secateurs.load_shrunk(out)
    assert sum(p.numel() for p in model.parameters()) == report["params_after"]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_filter_run_from_trained_weights_shrinks_to_the_same_outputs(tmp_path, capsys):
    """Pruned from a trained model, batch norms carry shifts: the coupled masks zero them too, and every
    pruned channel (residual partners included) is removed."""
    dense, pruned, out = tmp_path / "dense", tmp_path / "pruned", tmp_path / "shrunk"
    assert main(["train", "--model", "resnet20", *QUICK, "--out", str(dense)]) == 0
    assert main(["prune", "--model", "resnet20", *QUICK, "--method", "gmp", "--granularity", "filter",
                 "--sparsity", "0.5", "--from", str(dense), "--out", str(pruned)]) == 0
    assert main(["shrink", str(pruned), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["channels_masked"] == 0 and report["channels_removed"] > 0
    assert report["max_abs_diff_vs_run"] <= 1e-4 and report["accuracy_shrunk"] == report["accuracy_run"]
    assert report["macs_after"] <= 0.3 * report["macs_before"]  # half the channels of coupled layers: ~1/4
    run_report = json.loads((pruned / "report.json").read_text())
    assert (run_report["params_shrunk"], run_report["macs_shrunk"]) == (report["params_after"], report["macs_after"])


def test_shrinking_an_unstructured_run_is_one_clear_line(runs, tmp_path, capsys):
    _, sparse_run = runs
    err = _one_line_error(capsys, main(["shrink", str(sparse_run), "--out", str(tmp_path / "o")]))
    assert "unstructured" in err and "--sparse-format" in err


@pytest.mark.parametrize("layout", ["bitmask", "csr"])
def test_unstructured_run_exports_compressed(runs, tmp_path, capsys, layout):
    _, sparse_run = runs
    out = tmp_path / layout
    assert main(["shrink", str(sparse_run), "--out", str(out), "--sparse-format", layout]) == 0
    sparse = json.loads((out / "report.json").read_text())["sparse"]
    assert sparse["round_trip_exact"]
    assert sparse["bytes_on_disk"] * 3 < sparse["bytes_dense_fp32"]  # 90 % sparse weights


def test_bad_shrink_arguments_are_usage_errors(runs, tmp_path, capsys):
    filter_run, _ = runs
    err = _one_line_error(capsys, main(["shrink", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]))
    assert "not a finished secateurs run" in err
    err = _one_line_error(capsys, main(["shrink", str(filter_run), "--out", str(filter_run)]))
    assert "--out" in err
    _one_line_error(capsys, main(["shrink", str(filter_run), "--out", str(tmp_path / "o"), "--round-to", "0"]))


def test_inspect_prunability_of_a_model_and_of_a_run(runs, capsys):
    filter_run, _ = runs
    assert main(["inspect", "--prunability", "resnet20", "--image-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "group root" in out and "layer1.0.conv1" in out and "feeds the model output" in out
    assert main(["inspect", "--prunability", str(filter_run)]) == 0
    assert "predicted" in capsys.readouterr().out
    assert main(["inspect", str(filter_run)]) == 0  # the plain form still works
    assert "sparsity" in capsys.readouterr().out
    _one_line_error(capsys, main(["inspect"]))
    _one_line_error(capsys, main(["inspect", "--prunability", "no-such-model"]))


def test_compress_any_run_into_one_small_file_that_reloads_exactly(runs, tmp_path, capsys):
    """`shrink --compress`: an unstructured run as it is, a filter run after physical shrinking."""
    for run, out in zip(runs, (tmp_path / "filter", tmp_path / "unstructured"), strict=True):
        assert main(["shrink", str(run), "--out", str(out), "--compress"]) == 0
        assert "lossless, outputs equal to the saved model: yes" in capsys.readouterr().out
        compressed = json.loads((out / "report.json").read_text())["compressed"]
        assert compressed["weights_exact"] and compressed["outputs_equal"] and compressed["lossless"]
        assert compressed["bytes_on_disk"] == (out / "model.cmp.safetensors").stat().st_size
        assert compressed["bytes_on_disk"] * 3 < compressed["bytes_dense_fp32"]
        x = torch.randn(3, 1, 28, 28)
        reference = secateurs.load_shrunk(out) if (out / "arch.json").exists() else None
        model = secateurs.load_compressed(out)
        if reference is not None:
            assert torch.equal(model(x), reference(x))
        assert main(["inspect", str(out)]) == 0
        assert f"{compressed['bytes_on_disk']:,} on disk" in capsys.readouterr().out


def test_lossy_float_storage_reports_the_accuracy_it_costs(runs, tmp_path, capsys):
    _, sparse_run = runs
    out = tmp_path / "fp16"
    assert main(["shrink", str(sparse_run), "--out", str(out), "--compress", "--float-storage", "fp16",
                 "--codec", "zstd"]) == 0
    assert "LOSSY" in capsys.readouterr().out
    compressed = json.loads((out / "report.json").read_text())["compressed"]
    assert not compressed["lossless"] and compressed["lossy_tensors"] and compressed["codec"] == "zstd"
    assert {"accuracy_run", "accuracy_compressed", "max_abs_diff_vs_run"} <= compressed.keys()


def test_a_vit_filter_run_shrinks_its_embedding_dimension_to_the_run_s_outputs(tmp_path, capsys):
    """The done-when flow of issue 20 (ViT-Tiny at 28x28: one patch and the class token): LayerNorms
    normalised over the kept channels during the run, and again on the loaded run, so the shrunk
    model equals the run."""
    pytest.importorskip("timm")
    run, out = tmp_path / "run", tmp_path / "shrunk"
    assert main(["prune", "--model", "timm:vit_tiny_patch16_224", *QUICK, "--method", "magnitude", "--granularity", "filter",
                 "--sparsity", "0.3", "--out", str(run)]) == 0
    assert main(["shrink", str(run), "--out", str(out), "--round-to", "8"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["prediction_matches"] and not report["refused"]
    assert report["params_after"] <= 0.55 * report["params_before"]  # 30 % of every group, embedding included
    assert report["max_abs_diff_vs_run"] <= 1e-4 and report["accuracy_shrunk"] == report["accuracy_run"]
    model = secateurs.load_shrunk(out)
    assert model.pos_embed.shape[-1] < 192 and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
