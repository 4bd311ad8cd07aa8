from __future__ import annotations

import pytest
import torch

from secateurs.data import (
    DatasetSpec,
    ImageSplits,
    build_data,
    describe_datasets,
    list_datasets,
    make_synthetic,
    registry,
)
from secateurs.errors import UsageError

EXPECTED = ["fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic"]


def test_registry_names_and_descriptions():
    assert set(EXPECTED) <= set(list_datasets())
    descriptions = describe_datasets()
    assert all(descriptions[n] and "\n" not in descriptions[n] for n in EXPECTED)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UsageError) as info:
        build_data("imagenet-9000")
    assert all(name in str(info.value) for name in EXPECTED)


@pytest.fixture
def indexed(monkeypatch):
    """A registered dataset whose image i stores i in its first two pixels (mean 0, std 1)."""

    def load(*, data_dir=None, download=False, n_train=100, n_test=40):
        def images(n):
            x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
            x[:, 0, 0, 0] = torch.arange(n) % 256
            x[:, 0, 0, 1] = torch.arange(n) // 256
            return x

        return ImageSplits(images(n_train), torch.arange(n_train) % 3, images(n_test), torch.arange(n_test) % 3, 3)

    spec = DatasetSpec("indexed", "test data", load, mean=(0.0,), std=(1.0,), crop_padding=1, flip=True,
                       options=("n_train", "n_test"))  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, "indexed", spec)
    return spec


def _ids(x: torch.Tensor) -> list[int]:
    pixels = (x[:, 0, 0, :2] * 255).round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def test_val_split_is_disjoint_seeded_and_sized(indexed):
    bundle = build_data("indexed", val_fraction=0.2, seed=4, augment=False, options={"n_train": 300})
    train, val = _ids(bundle.train.x), _ids(bundle.val.x)
    assert len(train) == 240 and len(val) == 60
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(300))
    again = build_data("indexed", val_fraction=0.2, seed=4, options={"n_train": 300})
    assert _ids(again.val.x) == val
    other = build_data("indexed", val_fraction=0.2, seed=5, options={"n_train": 300})
    assert _ids(other.val.x) != val
    assert build_data("indexed").val is None


def test_limits_take_seeded_subsets(indexed):
    bundle = build_data("indexed", limit_train=30, limit_test=10, val_fraction=0.1, seed=1)
    assert bundle.train.num_samples == 27 and bundle.val.num_samples == 3 and bundle.test.num_samples == 10
    assert _ids(bundle.test.x) == sorted(_ids(bundle.test.x)) and _ids(bundle.test.x) != list(range(10))
    assert build_data("indexed", limit_test=10_000).test.num_samples == 40


def test_test_and_val_never_shuffle_nor_augment(indexed):
    bundle = build_data("indexed", val_fraction=0.25, batch_size=10, eval_batch_size=7)
    assert bundle.train.shuffle and bundle.train.augment is not None
    for loader in (bundle.test, bundle.val):
        assert not loader.shuffle and loader.augment is None and loader.batch_size == 7
        loader.set_epoch(3)
        assert torch.equal(torch.cat([x for x, _ in loader]), loader.x)
    assert build_data("indexed", augment=False).train.augment is None


def test_augmentation_pads_with_black(indexed):
    bundle = build_data("indexed", batch_size=100)
    assert bundle.train.augment.fill == (0.0,)  # -mean/std with mean 0: a black pixel


@pytest.mark.parametrize(
    "kwargs",
    [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"batch_size": 0}, {"limit_train": 0},
     {"limit_test": -3}, {"options": {"colour": 1}}],
)  # fmt: skip
def test_bad_arguments_are_usage_errors(indexed, kwargs):
    with pytest.raises(UsageError):
        build_data("indexed", **kwargs)


def test_synthetic_is_seeded():
    a, b, c = make_synthetic(seed=1, n_train=64), make_synthetic(seed=1, n_train=64), make_synthetic(seed=2, n_train=64)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    shaped = make_synthetic(channels=3, size=32, num_classes=4, n_train=8, n_test=4)
    assert shaped.x_train.shape == (8, 3, 32, 32) and int(shaped.y_train.max()) < 4


def test_synthetic_bundle_shapes_and_options():
    bundle = build_data("synthetic", batch_size=32, options={"channels": 3, "size": 16, "num_classes": 5})
    assert bundle.input_shape == (3, 16, 16) and bundle.num_classes == 5 and len(bundle.train) == 64
    x = bundle.train.x
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05  # normalised with its own stats


def test_synthetic_is_learnable_in_a_few_steps():
    bundle = build_data("synthetic", batch_size=64, seed=0)
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(28 * 28, 10)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=gen) * 0.01)
    for epoch in range(2):
        bundle.train.set_epoch(epoch)
        for x, y in bundle.train:
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
            with torch.no_grad():  # plain SGD by hand: torch.optim's first use costs seconds of imports
                for p in model.parameters():
                    p -= 0.05 * p.grad
    with torch.no_grad():
        correct = sum((model(x.flatten(1)).argmax(1) == y).sum().item() for x, y in bundle.test)
    assert correct / bundle.test.num_samples > 0.9
