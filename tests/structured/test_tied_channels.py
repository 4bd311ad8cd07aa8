"""Channels that share tensor positions, and slices fixed at construction: SKNet and GhostNet blocks.

* GhostNet's module concatenates a convolution with a depthwise convolution of itself: channels ``c``
  and ``C/2 + c`` of the sum come from one filter (tied halves).
* SKNet's selective-kernel convolution splits its input into equal slices of a width it fixed at
  construction, and weighs its paths with one convolution of ``paths * C`` outputs viewed as
  ``(B, paths, C, 1, 1)`` (torch-pruning read that view as ``i -> i // paths``: tp_compat fix 10).

Each shrinks with no group refused, equal to the masked model and of the predicted size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.metrics import count_macs, count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink
from secateurs.structured.groups import GroupMember
from secateurs.structured.tied_channels import tied_chunks

from ._helpers import group_masks, outputs, randomize_, squash_


def _shrinks_exactly(model: nn.Module, x: torch.Tensor):
    model = randomize_(model)
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.4)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert result.refused == {}
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after
    return groups, result


class Ghost(nn.Module):
    """A ghost module (cat of a 1x1 convolution and a depthwise convolution of it) plus a shortcut
    convolution, as GhostNet's bottleneck: the shortcut's channels ``c`` and ``4 + c`` are tied."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.primary = nn.Conv2d(6, 4, 1)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.shortcut = nn.Conv2d(6, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = F.relu(self.primary(x))
        x = self.shortcut(x) + torch.cat([y, F.relu(self.cheap(y))], dim=1)
        return self.head(x.mean((2, 3)))


def test_a_ghost_module_ties_the_halves_of_the_sum_it_joins():
    torch.manual_seed(0)
    groups, result = _shrinks_exactly(Ghost(), torch.randn(2, 3, 8, 8))
    (stream,) = [g for g in groups if any(m.param == "shortcut.weight" and m.role == "out" for m in g.members)]
    # numbered by the shortcut: its channels c and 4 + c share row c of `primary`
    assert stream.root == "shortcut" and stream.removable and stream.chunks == 2
    assert result.model.shortcut.out_channels == 2 * result.model.primary.out_channels < 8


def test_selective_kernel_paths_and_their_attention_rows_go_together():
    layers = pytest.importorskip("timm.layers")

    class SkBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.sk = layers.SelectiveKernel(16, 12, split_input=True, rd_divisor=4)
            self.head = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.sk(F.relu(self.stem(x))).mean((2, 3)))

    torch.manual_seed(0)
    groups, result = _shrinks_exactly(SkBlock(), torch.randn(2, 3, 8, 8))
    by_root = {g.root: g for g in groups}
    # the stem's channels are split into two equal slices, one per path: equal cuts from both
    assert by_root["stem"].removable and by_root["stem"].chunks == 2
    sk = result.model.sk
    assert sk.in_channels == result.model.stem.out_channels < 16
    # the paths' outputs and the two rows of `fc_select` weighing each of them: one group
    (paths,) = [g for g in groups if any(m.param == "sk.attn.fc_select.weight" and m.role == "out" for m in g.members)]
    assert paths.removable and paths.chunks % 2 == 0
    width = sk.paths[0].conv.out_channels
    assert width < 12 and sk.paths[1].conv.out_channels == width and sk.attn.fc_select.out_channels == 2 * width


def _member(index, channel):
    return GroupMember("w", 0, "out", True, tuple(index), tuple(channel))


def test_tied_chunks_reads_the_pattern_of_shared_positions():
    sizes = {("w", 0): 4}
    assert tied_chunks([_member(range(4), range(4))], 4, sizes) == 1
    # channels c and c + 4 at position c: two chunks
    assert tied_chunks([_member([0, 1, 2, 3, 0, 1, 2, 3], range(8))], 8, sizes) == 2
    # neighbours sharing a position (a misread reshape) is no chunk pattern
    assert tied_chunks([_member([0, 0, 1, 1, 2, 2, 3, 3], range(8))], 8, sizes) is None


class VectorGate(nn.Module):
    """A per-channel gate computed as ``(B, C, 1)`` and viewed as ``(B, C, 1, 1)``: an unsqueeze,
    which has the shapes of ``C`` parts of one channel but ties nothing (as in CSATv2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        gate = torch.sigmoid(y.flatten(2).mean(-1, keepdim=True)).view(y.shape[0], y.shape[1], 1, 1)
        return self.head((y * gate).mean((2, 3)))


def test_a_per_channel_vector_viewed_with_unit_dimensions_ties_no_channels():
    torch.manual_seed(0)
    groups, _ = _shrinks_exactly(VectorGate(), torch.randn(2, 3, 8, 8))
    (stem,) = [g for g in groups if g.root == "stem"]
    assert stem.removable and stem.chunks == 1
