"""Coupled channel groups: residual adds, concatenation, grouped and depthwise convolutions."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateurs.core.masks import MaskSet
from secateurs.structured import coupled_channel_groups, group_filter_masks, plan_removal


def _by_root(groups):
    return {g.root: g for g in groups}


def test_residual_add_couples_the_stem_and_the_block_output(tiny_cnn):
    groups = _by_root(coupled_channel_groups(tiny_cnn, torch.randn(1, 3, 8, 8)))
    stream = groups["stem"]
    params = set(stream.params)
    # stem and conv2 produce the channels added together; bn0, bn2 follow; conv1, conv3 read them.
    assert {("stem.weight", 0), ("conv2.weight", 0), ("bn0.weight", 0), ("bn2.bias", 0),
            ("conv1.weight", 1), ("conv3.weight", 1)} <= params
    assert {m.param for m in stream.producers} == {"stem.weight", "conv2.weight"}
    assert stream.channels == 8 and stream.removable
    inner = groups["conv1"]
    assert set(inner.params) == {("conv1.weight", 0), ("bn1.weight", 0), ("bn1.bias", 0), ("conv2.weight", 1)}
    assert [m.role for m in inner.members if m.param == "conv2.weight"] == ["in"]


def test_the_classifier_output_cannot_be_removed(tiny_cnn):
    groups = _by_root(coupled_channel_groups(tiny_cnn, torch.randn(1, 3, 8, 8)))
    assert not groups["fc"].removable and "output" in groups["fc"].blocker
    assert groups["fc1"].removable  # hidden linear: its outputs feed fc's inputs


def test_building_groups_leaves_the_model_untouched(tiny_cnn):
    tiny_cnn.train()
    before = copy.deepcopy(tiny_cnn.state_dict())
    coupled_channel_groups(tiny_cnn, torch.randn(1, 3, 8, 8))
    assert tiny_cnn.training and all(m.training for m in tiny_cnn.modules())
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())


class ConcatNet(nn.Module):
    """Two branches concatenated; the consumer reads branch b at an offset of 4 channels."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(10, 5, 1)
        self.fc = nn.Linear(5 * 4 * 4, 2)

    def forward(self, x):
        y = torch.relu(self.c(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.fc(torch.flatten(y, 1))


def test_concatenation_offsets_and_flatten_positions():
    groups = _by_root(coupled_channel_groups(ConcatNet(), torch.randn(1, 3, 4, 4)))
    reader = next(m for m in groups["b"].members if m.param == "c.weight")
    assert reader.dim == 1 and reader.index == tuple(range(4, 10)) and reader.channel == tuple(range(6))
    flat = next(m for m in groups["c"].members if m.param == "fc.weight")
    # Channel k of conv c becomes the 16 features k*16 .. k*16+15 of the linear layer.
    assert flat.dim == 1 and len(flat.index) == 5 * 16
    assert all(i // 16 == ch for i, ch in zip(flat.index, flat.channel, strict=True))


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(3, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.depthwise(self.grouped(self.expand(x)))).mean(dim=(2, 3))


def test_grouped_convolutions_are_chunked_and_depthwise_ones_are_coupled():
    groups = coupled_channel_groups(GroupedNet(), torch.randn(1, 3, 6, 6))
    assert _by_root(groups)["expand"].chunks == 2  # read by a 2-group convolution
    out = next(g for g in groups if "grouped.weight" in {m.param for m in g.producers})
    assert out.chunks == 2 and out.removable
    assert {"grouped.weight", "depthwise.weight"} <= {m.param for m in out.producers}


def test_removal_is_balanced_across_conv_groups():
    model = GroupedNet()
    groups = coupled_channel_groups(model, torch.randn(1, 3, 6, 6))
    keep = torch.ones(8, dtype=torch.bool)
    keep[[1, 2, 5]] = False  # offset 1 is pruned in both chunks, offset 2 only in the first
    plan = plan_removal(groups, group_filter_masks(model, groups, {"expand": keep}))
    decided = plan.by_root()["expand"]
    assert decided.removed == (1, 5)
    assert decided.masked == 1 and decided.note


def test_group_masks_prune_every_producer_the_same_way(tiny_cnn):
    groups = coupled_channel_groups(tiny_cnn, torch.randn(1, 3, 8, 8))
    keep = torch.tensor([True, False, True, True, False, True, True, True])
    masks = group_filter_masks(tiny_cnn, groups, {"stem": keep})
    assert set(masks) == {"stem.weight", "conv2.weight"}
    assert all(torch.equal(masks[n].mask, keep) for n in masks)
    assert plan_removal(groups, masks).by_root()["stem"].removed == (1, 4)


def test_plan_rejects_non_filter_masks_and_bad_round_to(tiny_cnn):
    from secateurs.core.granularity import Unstructured
    from secateurs.errors import UsageError

    groups = coupled_channel_groups(tiny_cnn, torch.randn(1, 3, 8, 8))
    weight = tiny_cnn.conv1.weight
    masks = MaskSet.from_masks({"conv1.weight": weight != 0}, Unstructured(), {"conv1.weight": weight.shape})
    with pytest.raises(UsageError, match="filter"):
        plan_removal(groups, masks)
    with pytest.raises(UsageError, match="round_to"):
        plan_removal(groups, MaskSet(), round_to=0)


def test_groups_are_the_same_while_masks_are_attached(tiny_cnn):
    from secateurs.core.granularity import Filter
    from secateurs.core.parametrize import FixedMask, attach_

    x = torch.randn(1, 3, 8, 8)
    plain = coupled_channel_groups(tiny_cnn, x)
    attach_(tiny_cnn, "conv1.weight", FixedMask(Filter(), tiny_cnn.conv1.weight.shape))
    assert coupled_channel_groups(tiny_cnn, x) == plain


class ShuffleNet(nn.Module):
    """A channel shuffle (view, transpose, view) between two convolutions, then a plain pair."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.inner = nn.Conv2d(8, 6, 1)
        self.outer = nn.Conv2d(6, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.outer(torch.relu(self.inner(y)))).mean(dim=(2, 3))


def test_a_channel_shuffle_blocks_its_group_and_spares_the_others():
    from secateurs.structured import reference_model, shrink

    model = ShuffleNet().eval()
    x = torch.randn(2, 3, 5, 5)
    groups = _by_root(coupled_channel_groups(model, x[:1]))
    assert not groups["a"].removable and "reshape" in groups["a"].blocker
    assert groups["inner"].removable
    keep = {"a": torch.tensor([True, False] * 4), "inner": torch.tensor([True, False, True, True, False, True])}
    masks = group_filter_masks(model, list(groups.values()), keep)
    with torch.no_grad():
        for name, entry in masks.items():
            model.get_parameter(name).mul_(entry.full())
        model.inner.bias.fill_(0.5)  # a pruned channel still carries relu(bias): removal drops it
    result = shrink(model, masks, x[:1])
    assert result.model.a.out_channels == 8 and result.model.inner.out_channels == 4
    assert result.plan.masked_channels == 4  # the shuffled channels stay as zeros
    reference = reference_model(model, result.groups, result.plan)
    with torch.no_grad():
        assert (result.model(x) - reference(x)).abs().max() <= 1e-5
        assert (result.model(x) - model(x)).abs().max() > 1e-3
