"""The bounded group search finds the groups torch-pruning's own search finds, doing linear work."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.structured import coupled_channel_groups


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


def _normalised(groups):
    # Where torch-pruning's indices do not fit the layers (a position reached as several channels),
    # which channel number it keeps depends on the order of the search: such groups are blocked either
    # way, and compared by root and blocker only.
    return [(g.root, g.blocker) if g.blocker and "do not fit" in g.blocker else
            (g.root, g.channels, g.blocker, g.exact, g.chunks,
             sorted((m.param, m.dim, m.role, m.producer, m.chunks, tuple(sorted(zip(m.index, m.channel, strict=True))))
                    for m in g.members)) for g in groups]


def _densenet():
    import torchvision  # concatenation everywhere

    return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)


@pytest.mark.parametrize("build", [PartialResiduals, _densenet])
def test_bounded_search_finds_the_same_groups_with_no_more_steps(monkeypatch, build):
    import torch_pruning as tp

    from secateurs.structured import tp_compat

    if build is _densenet:
        pytest.importorskip("torchvision")
    model = build().eval()
    x = torch.randn(1, 3, 16, 16)
    group_class = tp.dependency.group.Group
    steps = {"n": 0}
    shipped_add = group_class.add_dep

    def counting(self, dep, idxs):  # the bounded search wraps whatever add_dep it finds
        steps["n"] += 1
        return shipped_add(self, dep, idxs)

    monkeypatch.setattr(group_class, "add_dep", counting)
    bounded = coupled_channel_groups(model, x)
    bounded_steps = steps["n"]
    assert group_class.add_dep is counting  # restored after tracing
    monkeypatch.setattr(tp_compat, "bounded_search_patches", lambda tp: {})  # torch-pruning's own search
    steps["n"] = 0
    shipped = coupled_channel_groups(model, x)
    assert _normalised(bounded) == _normalised(shipped)
    assert len(bounded) >= 2
    if build is PartialResiduals:  # many paths to the same channels: far fewer steps
        assert bounded_steps < steps["n"] / 2
    else:
        assert any(g.removable for g in bounded) and bounded_steps <= steps["n"]
