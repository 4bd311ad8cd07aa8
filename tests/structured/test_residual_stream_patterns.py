"""Residual streams of hierarchical transformers and modern convnets shrink exactly.

Each test builds a tiny plain-PyTorch model with one pattern that used to block (or refuse) the
residual-stream group of a timm family, and holds the shrunk model to the masked reference: equal
outputs, the predicted size, and the stream's channels actually gone.
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.metrics import count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink

from ._helpers import group_masks, outputs, randomize_, squash_


def _shrunk_equals_reference(model: nn.Module, x: torch.Tensor, stream_param: str) -> tuple:
    """Prune 40 % of every removable group, shrink, check equality and size; return (result, stream group)."""
    groups = coupled_channel_groups(model, x[:1])
    stream = next(g for g in groups if any(m.param == stream_param for m in g.members))
    assert stream.removable and stream.exact, stream.blocker
    masks = group_masks(model, groups, prune=0.4)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert not result.refused, result.refused
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after
    removed = next(p for p in result.plan.groups if p.root == stream.root).removed
    assert removed
    return result, stream, removed


class _LayerScaleBlock(nn.Module):
    """ConvNeXt / MetaFormer style: the branch is scaled per channel by ``gamma.reshape(1, -1, 1, 1)``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.fc1, self.fc2 = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, c, 1)
        self.gamma = nn.Parameter(torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.dw(x)))) * self.gamma.reshape(1, -1, 1, 1)


class _LayerScaleNet(nn.Module):
    def __init__(self, c: int = 12) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(_LayerScaleBlock(c), _LayerScaleBlock(c))
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_layer_scale_reshaped_for_broadcasting_is_cut_with_the_stream():
    torch.manual_seed(0)
    model = randomize_(_LayerScaleNet())
    result, stream, removed = _shrunk_equals_reference(model, torch.randn(2, 3, 8, 8), "blocks.0.gamma")
    assert {m.param for m in stream.members} >= {"blocks.0.gamma", "blocks.1.gamma", "stem.weight"}
    assert result.model.blocks[1].gamma.shape == (12 - len(removed),) == (result.model.stem.out_channels,)
