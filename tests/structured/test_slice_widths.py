"""Blocks that slice a tensor at a width fixed at construction follow their channels when cut.

ReXNet adds the shortcut to the first ``in_channels`` channels of its output only
(``cat([x[:, :in_channels] + shortcut, x[:, in_channels:]])``); FasterNet's partial convolution
splits its input at ``[dim_conv3, dim_untouched]``. Once the concatenations and splits are mapped
(torch-pruning fixes 4 and 9), these groups trace as removable, and the stored widths must follow a
removal or the shrunk model fails. Tiny instances of the timm classes (DPN: ``test_dual_path.py``).
"""

from __future__ import annotations

import pytest

from ._helpers import shrink_and_check

pytest.importorskip("timm")


def _shrunk(model):
    model, groups, result = shrink_and_check(model)
    return model, result


def test_rexnet_partial_residual_width_follows_its_channels():
    from timm.models.rexnet import RexNet

    model, result = _shrunk(RexNet(width_mult=0.5, depth_mult=0.3, num_classes=10))
    assert not result.refused
    blocks = [n for n, m in model.named_modules() if getattr(m, "use_shortcut", False)]
    assert blocks and all(result.model.get_submodule(n).in_channels < model.get_submodule(n).in_channels
                          for n in blocks)


def test_fasternet_partial_convolution_split_follows_the_residual_stream():
    from timm.models.fasternet import FasterNet

    model, result = _shrunk(FasterNet(embed_dim=16, depths=(1, 2), feature_dim=32, num_classes=10))
    assert not [root for root in result.refused if root.endswith("mlp.3")]  # the residual stream shrinks
    for name, block in result.model.named_modules():
        if hasattr(block, "spatial_mixing"):
            mixing = block.spatial_mixing
            assert mixing.dim_conv3 == mixing.partial_conv3.in_channels
            # the split covers the residual stream the block reads (and its last layer writes)
            assert mixing.dim_conv3 + mixing.dim_untouched == block.mlp[-1].out_channels < \
                model.get_submodule(name).mlp[-1].out_channels
