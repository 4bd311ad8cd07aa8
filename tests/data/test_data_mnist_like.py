from __future__ import annotations

import dataclasses

import pytest
import torch
from _data_helpers import write_mnist_like

from secateurs.data import build_data, load_fashion_mnist, load_mnist, mnist_like
from secateurs.errors import DataNotFoundError


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_found_via_data_dir(tmp_path, gz):
    arrays = write_mnist_like(tmp_path, gz=gz)
    splits = load_fashion_mnist(data_dir=tmp_path)
    assert splits.x_train.shape == (30, 1, 28, 28) and splits.x_test.shape == (12, 1, 28, 28)
    assert torch.equal(splits.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(splits.y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    assert splits.y_train.dtype == torch.int64 and splits.num_classes == 10
    assert splits.class_names[0] == "T-shirt/top"


def test_torchvision_layout_in_data_dir(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw", n_train=20)
    splits = load_mnist(data_dir=tmp_path)
    assert splits.x_train.shape[0] == 20


def test_cache_dir_is_searched(tmp_path, isolated_cache):
    write_mnist_like(isolated_cache / "mnist", n_train=11)
    assert load_mnist().x_train.shape[0] == 11


def _without_system_dir(monkeypatch, tmp_path):
    source = mnist_like._SOURCES["fashion-mnist"]
    monkeypatch.setitem(
        mnist_like._SOURCES, "fashion-mnist", dataclasses.replace(source, system_dir=tmp_path / "nowhere")
    )


def test_missing_fashion_mnist_is_one_line_with_the_fix(tmp_path, monkeypatch):
    _without_system_dir(monkeypatch, tmp_path)
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(data_dir=tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir DIR" in message


def test_missing_mnist_is_one_line(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        build_data("mnist", data_dir=tmp_path)
    assert "\n" not in str(info.value) and "MNIST not found" in str(info.value)


def test_failed_download_is_reported_in_the_same_line(tmp_path, monkeypatch):
    _without_system_dir(monkeypatch, tmp_path)
    calls = []

    def fake_download(class_name, root):
        calls.append((class_name, root))
        return "download failed (no network)"

    monkeypatch.setattr(mnist_like, "torchvision_download", fake_download)
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(download=True)
    assert calls and calls[0][0] == "FashionMNIST"
    assert "no network" in str(info.value) and "\n" not in str(info.value)


def test_download_lands_in_cache_and_is_then_found(tmp_path, monkeypatch, isolated_cache):
    _without_system_dir(monkeypatch, tmp_path)

    def fake_download(class_name, root):
        write_mnist_like(root / class_name / "raw", n_train=13)  # what torchvision leaves behind
        return None

    monkeypatch.setattr(mnist_like, "torchvision_download", fake_download)
    assert load_fashion_mnist(download=True).x_train.shape[0] == 13
    assert (isolated_cache / "fashion-mnist" / "FashionMNIST" / "raw").is_dir()


@pytest.mark.skipif(not mnist_like.FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    splits = load_fashion_mnist()
    assert splits.x_train.shape == (60000, 1, 28, 28) and splits.x_test.shape == (10000, 1, 28, 28)
    assert splits.num_classes == 10
    assert torch.equal(torch.bincount(splits.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(splits.y_test), torch.full((10,), 1000))
    # The published normalisation constants match this data.
    x = splits.x_train.float() / 255
    assert abs(x.mean().item() - 0.2860) < 1e-3 and abs(x.std().item() - 0.3530) < 1e-3
