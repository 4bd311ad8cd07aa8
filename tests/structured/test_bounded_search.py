"""The bounded group search over arrays finds the groups torch-pruning's own search finds, doing less work."""

from __future__ import annotations

import contextlib
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.structured import coupled_channel_groups
from secateurs.structured.tp_unflatten import PeriodicIndexMapping

tp = pytest.importorskip("torch_pruning")
MAPPING = tp.dependency.index_mapping


class PartialResiduals(nn.Module):
    """ReXNet-style blocks: each adds its output to the first channels of a wider input, so every
    channel range is reached along many paths of slices and concatenations."""

    def __init__(self, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.ModuleList(nn.Conv2d(8 + 2 * i, 8 + 2 * (i + 1), 1) for i in range(blocks))
        self.head = nn.Linear(8 + 2 * blocks, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for conv in self.expand:
            y = conv(x)
            width = x.shape[1]
            x = torch.cat([y[:, :width] + x, y[:, width:]], dim=1)
        return self.head(x.mean((2, 3)))


class TwiceConcatenated(nn.Module):
    """A layer's output concatenated with a longer path from itself: the search follows the
    concatenation from one path, then reaches it again from the other with the other positions."""

    def __init__(self, order: int = 0) -> None:
        super().__init__()
        self.order = order
        self.a = nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        parts = [y, F.relu(self.bn(self.dw(y)))]
        z = torch.cat(parts[::-1] if self.order else parts, 1)
        return self.head(self.b(z).mean((2, 3)))


class FlattenHeads(nn.Module):
    """Feature maps flattened into linear layers (torch-pruning maps each channel to H*W features):
    by ``flatten``, by ``view`` after a concatenation, and by ``reshape`` of a slice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 16, 8)
        self.fc2 = nn.Linear(3 * 16, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, 4)  # 4x4
        y = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        first = self.fc1(y.view(y.shape[0], -1))
        second = self.fc2(y[:, :3].reshape(y.shape[0], -1))
        return self.out(F.relu(first + torch.flatten(second, 1)))


class CascadedHeads(nn.Module):
    """EfficientViT's attention in small: per head a convolution makes q, k and v, viewed and split,
    flattened over positions for the attention products, and viewed back into a feature map; the
    heads are concatenated into a projection. Torch-pruning maps these reshapes with strides that
    send channels round and past the layers' ends (the groups are then refused)."""

    def __init__(self, dim: int = 8, heads: int = 2, key_dim: int = 2) -> None:
        super().__init__()
        self.key_dim, self.val_dim = key_dim, dim // heads
        self.qkvs = nn.ModuleList(nn.Conv2d(dim // heads, 2 * key_dim + self.val_dim, 1) for _ in range(heads))
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.stem(x), 4)
        b, _, h, w = x.shape
        outs = []
        for feat, qkv in zip(x.chunk(len(self.qkvs), 1), self.qkvs, strict=True):
            q, k, v = qkv(feat).view(b, -1, h, w).split([self.key_dim, self.key_dim, self.val_dim], 1)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = (q.transpose(-2, -1) @ k).softmax(-1)
            outs.append((v @ attn.transpose(-2, -1)).view(b, self.val_dim, h, w))
        y = self.proj(torch.cat(outs, 1)) + x
        return self.head(y.mean((2, 3)))


def _twice_concatenated_the_other_way():
    return TwiceConcatenated(order=1)


def _densenet():
    torchvision = pytest.importorskip("torchvision")  # concatenation everywhere
    return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)


def _normalised(groups):
    # Which root channel a position reached from several keeps depends on the order of the search,
    # and so does the order of a member's positions: compared as sets of (position, channel) pairs.
    # Where the indices do not fit the layers (positions past a layer's end), the group is refused
    # either way, and compared by root and blocker only.
    return [(g.root, g.blocker) if g.blocker and "do not fit" in g.blocker else
            (g.root, g.channels, g.blocker, g.exact, g.chunks,
             sorted((m.param, m.dim, m.role, m.producer, m.chunks, tuple(sorted(zip(m.index, m.channel, strict=True))))
                    for m in g.members)) for g in groups]


def _shipped_search(monkeypatch) -> None:
    """Trace with torch-pruning's own group search (its index-mapping fixes kept), mappings re-derived per group."""
    import secateurs.structured.graph as graph
    from secateurs.structured import tp_compat

    monkeypatch.setattr(tp_compat, "search_patches", lambda tp, charge: {})
    monkeypatch.setattr(graph, "index_mappings_once", lambda tp: contextlib.nullcontext())


@pytest.mark.parametrize("build", [PartialResiduals, TwiceConcatenated, _twice_concatenated_the_other_way,
                                   FlattenHeads, CascadedHeads, _densenet])
def test_the_bounded_search_finds_the_groups_torch_pruning_finds(monkeypatch, build):
    from secateurs.structured import tp_speedups

    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(1, 3, 16, 16)
    steps = {"ours": 0, "shipped": 0}
    walk_add, shipped_add = tp_speedups._Walk.add, tp.dependency.group.Group.add_dep

    def ours_counting(self, dep, pos):
        steps["ours"] += 1
        return walk_add(self, dep, pos)

    def shipped_counting(self, dep, idxs):
        steps["shipped"] += 1
        return shipped_add(self, dep, idxs)

    monkeypatch.setattr(tp_speedups._Walk, "add", ours_counting)
    monkeypatch.setattr(tp.dependency.group.Group, "add_dep", shipped_counting)
    ours = coupled_channel_groups(model, x)
    _shipped_search(monkeypatch)
    shipped = coupled_channel_groups(model, x)
    assert steps["ours"] > 0 and steps["shipped"] > 0  # each search ran, and only its own
    assert _normalised(ours) == _normalised(shipped)
    assert len(ours) >= 2
    if build is PartialResiduals:  # many paths to the same channels: far fewer steps
        assert steps["ours"] < steps["shipped"] / 2
    else:
        assert steps["ours"] <= steps["shipped"] and any(g.removable for g in ours)
    if build is FlattenHeads:  # the flatten mappings were followed: 16 features per channel
        readers = {(g.root, m.param): m for g in ours for m in g.members if m.role == "in"}
        assert sorted(readers[("a", "fc1.weight")].index) == list(range(4 * 16))
        assert sorted(readers[("b", "fc1.weight")].index) == list(range(4 * 16, 6 * 16))
        assert ("b", "fc2.weight") not in readers  # b's channels are not in the slice fc2 reads


def _random_positions(rng: random.Random, n: int, high: int) -> list:
    hybrid = tp._helpers._HybridIndex
    return [hybrid(idx=rng.randrange(high), root_idx=rng.randrange(8)) for _ in range(n)]


@pytest.mark.parametrize("mapping", [
    MAPPING._FlattenIndexMapping(stride=3), MAPPING._FlattenIndexMapping(stride=3, reverse=True),
    MAPPING._FlattenIndexMapping(stride=0),
    MAPPING._ConcatIndexMapping(offset=[4, 9]), MAPPING._ConcatIndexMapping(offset=[4, 9], reverse=True),
    MAPPING._SplitIndexMapping(offset=[2, 7]), MAPPING._SplitIndexMapping(offset=[2, 7], reverse=True),
    MAPPING._SliceIndexMapping(dim=1, start=1, step=3, end=14),
    MAPPING._SliceIndexMapping(dim=1, start=1, step=3, end=14, reverse=True),
    MAPPING._SliceIndexMapping(dim=1, start=2**64 - 3, step=1, end=2**63 - 1),
    MAPPING._GQAIndexMapping(repeat=2, head_dim=3), MAPPING._GQAIndexMapping(repeat=2, head_dim=3, reverse=True),
    PeriodicIndexMapping(period=3, parts=2), PeriodicIndexMapping(period=3, parts=2, reverse=True),
], ids=lambda m: f"{type(m).__name__}-{'reverse' if m.reverse else 'forward'}")
def test_array_mappings_give_the_pairs_of_torch_pruning_mappings(mapping):
    from secateurs.structured.tp_index_arrays import NO_ROOT, Positions, map_positions

    charged = []
    for seed in range(5):
        listed = _random_positions(random.Random(seed), 12, 20)
        expected = [(i.idx, i.root_idx) for i in mapping(listed)]
        positions = Positions.of([i.idx for i in listed], [i.root_idx for i in listed])
        got = map_positions(mapping, positions, tp, charged.append)
        pairs = list(zip(got.idx.tolist(), [None if r == NO_ROOT else r for r in got.root.tolist()], strict=True))
        if isinstance(mapping, MAPPING._FlattenIndexMapping) and mapping.reverse:  # deduplicated through a set
            assert sorted(pairs) == sorted(expected) and len(set(pairs)) == len(pairs)
        else:
            assert pairs == expected  # the same pairs in the same order
    if isinstance(mapping, MAPPING._FlattenIndexMapping) and mapping._stride:
        assert charged == [12 * (1 if mapping.reverse else 3)] * 5  # what the index-explosion guard counts


class HugeFlatten(nn.Module):
    """One channel of 520x520 flattened into a linear layer: 270,400 features for one channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 1, 1), nn.Linear(520 * 520, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_the_index_explosion_guard_still_bounds_the_search():
    groups = coupled_channel_groups(HugeFlatten(), torch.randn(1, 1, 520, 520))
    (conv,) = [g for g in groups if g.root == "conv"]
    assert conv.blocker == "torch-pruning cannot follow these channels (IndexExplosionError)"
