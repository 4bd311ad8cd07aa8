from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch
from _data_helpers import write_cifar

from secateurs.data import build_data, load_cifar10, load_cifar100
from secateurs.errors import DataNotFoundError, UsageError


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_reads_torchvision_batches(tmp_path, protocol):
    written = write_cifar(tmp_path, "cifar10", protocol=protocol)
    splits = load_cifar10(data_dir=tmp_path)
    assert splits.x_train.shape == (30, 3, 32, 32) and splits.x_test.shape == (5, 3, 32, 32)
    assert splits.num_classes == 10 and splits.class_names == tuple(f"c{i}" for i in range(10))
    # Batches in order 1..5; each row holds the R, G, B planes, row-major.
    data2, labels2 = written["data_batch_2"]
    k, c, i, j = 1, 2, 5, 7
    assert splits.x_train[6 + k, c, i, j].item() == data2[k, c * 1024 + i * 32 + j]
    assert splits.y_train[6:12].tolist() == labels2
    assert torch.equal(splits.x_test.reshape(5, -1), torch.from_numpy(written["test_batch"][0]))


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar(tmp_path, "cifar100", per_batch=9)
    splits = load_cifar100(data_dir=tmp_path / "cifar-100-python")  # the batch folder itself also works
    assert splits.x_train.shape == (9, 3, 32, 32) and splits.num_classes == 100
    assert splits.y_train.tolist() == written["train"][1]
    assert len(splits.class_names) == 100 and splits.class_names[3] == "f3"


def test_cifar_via_build_data(tmp_path):
    write_cifar(tmp_path, "cifar10")
    bundle = build_data("cifar10", data_dir=tmp_path, batch_size=8)
    assert bundle.in_channels == 3 and bundle.image_size == 32 and bundle.num_classes == 10
    x, y = next(iter(bundle.train))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_is_one_line(tmp_path, name):
    with pytest.raises(DataNotFoundError) as info:
        build_data(name, data_dir=tmp_path)
    assert "\n" not in str(info.value) and "--data-dir" in str(info.value)


def test_foreign_pickle_is_refused(tmp_path):
    write_cifar(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(collections.OrderedDict(data=np.zeros((1, 3072), np.uint8)), f)
    with pytest.raises(UsageError, match="not a CIFAR batch"):
        load_cifar10(data_dir=tmp_path)


def test_files_naming_numpy_core_still_load(tmp_path):
    # The real CIFAR files were pickled by numpy 1.x, whose globals live in numpy.core (numpy 2: numpy._core).
    written = write_cifar(tmp_path, "cifar10", protocol=2)
    for path in (tmp_path / "cifar-10-batches-py").iterdir():
        path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    splits = load_cifar10(data_dir=tmp_path)
    assert torch.equal(splits.x_test.reshape(5, -1), torch.from_numpy(written["test_batch"][0]))
