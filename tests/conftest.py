"""Shared tiny fixtures: small models and synthetic tensors that keep the suite fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# Tiny tensors gain nothing from intra-op threads, and spinning OpenMP workers slow the suite badly
# when the 2 cores are shared with other processes.
torch.set_num_threads(1)


class TinyMLP(nn.Module):
    """fc1 -> relu -> fc2 -> relu -> fc3 (the classifier)."""

    def __init__(self, in_features: int = 16, hidden: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class TinyCNN(nn.Module):
    """A stem conv, a residual block (conv1: 8->12, conv2: 12->8, added to its input), a strided conv,
    a hidden linear and a classifier. Every conv is followed by BatchNorm.

    Default targets: conv1, conv2, conv3 and fc1 (the stem and the classifier are excluded). All of
    them allow 2:4 (their flattened input sizes are multiples of 4), and conv1/conv2 have
    ``C_in != C_out``.
    """

    def __init__(self, in_channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16, 12)
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(h)) + x)  # residual add
        x = torch.relu(self.bn3(self.conv3(x)))
        x = x.mean(dim=(2, 3))
        return self.fc(torch.relu(self.fc1(x)))


def _make_cnn(seed: int = 0, **kwargs) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(**kwargs)


def _make_mlp(seed: int = 0, **kwargs) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(**kwargs)


def _image_batches(n_batches: int = 3, batch: int = 8, classes: int = 5, size: int = 8, seed: int = 123):
    """Synthetic (x, y) batches for TinyCNN, from a private generator."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def _vector_batches(n_batches: int = 3, batch: int = 8, features: int = 16, classes: int = 4, seed: int = 123):
    """Synthetic (x, y) batches for TinyMLP."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, features, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


# Fixtures only (tests never import this module): factories for fresh, seeded models and data.


@pytest.fixture
def make_cnn():
    """``make_cnn(seed=0) -> TinyCNN`` (seeded init). Default targets: conv1, conv2, conv3, fc1."""
    return _make_cnn


@pytest.fixture
def make_mlp():
    """``make_mlp(seed=0) -> TinyMLP``. Default targets: fc1, fc2."""
    return _make_mlp


@pytest.fixture
def make_image_batches():
    """``make_image_batches(n_batches=3, batch=8, classes=5, size=8, seed=123)``."""
    return _image_batches


@pytest.fixture
def make_vector_batches():
    """``make_vector_batches(n_batches=3, batch=8, features=16, classes=4, seed=123)``."""
    return _vector_batches


@pytest.fixture
def cnn_targets() -> list[str]:
    """The default target names of TinyCNN."""
    return ["conv1.weight", "conv2.weight", "conv3.weight", "fc1.weight"]


@pytest.fixture
def tiny_mlp() -> TinyMLP:
    return _make_mlp()


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    return _make_cnn()


@pytest.fixture
def image_data():
    return _image_batches()


@pytest.fixture
def vector_data():
    return _vector_batches()


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded generator for synthetic tensors."""
    return torch.Generator().manual_seed(1234)
