"""Transformer variants of the timm sweep whose attention or MLP the generic trace misread.

Tiny instances of the real timm classes (one or two blocks, 32x32 input), pruned as the sweep
prunes them (30 % of every exactly removable group), then held to the masked model and the
predicted size:

* PVT-v2: its MLP views the hidden tokens as an image for a depthwise convolution, and the second
  linear layer then reads a non-contiguous input (a matrix product and a view inside the layer);
  its attention reshapes to the width of its input, so the embedding dimension and the spatial
  reduction's channels cannot go: refused, one line each, and the MLPs still shrink.
* EVA-02: a SwiGLU MLP (``fc1(x).chunk(2, dim=-1)``, the halves multiplied): paired halves go
  together, behind a position embedding that turns torch-pruning's split mapping off.
* DINOv3-style EVA: rotary embeddings that rotate half of each head (a split torch-pruning cannot
  size) must not break the cut of the other groups.
"""

from __future__ import annotations

import pytest

from ._helpers import shrink_and_check

timm = pytest.importorskip("timm")


def _pvt_v2():
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

    return PyramidVisionTransformerV2(depths=(1, 1), embed_dims=(16, 32), num_heads=(1, 2), sr_ratios=(2, 1),
                                      mlp_ratios=(4, 4), num_classes=10)


def _eva02_swiglu():
    from timm.models.eva import Eva

    return Eva(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_ratio=4 * 2 / 3, swiglu_mlp=True,
               use_rot_pos_emb=True, ref_feat_shape=(4, 4), num_classes=10)


def _dinov3():
    from timm.models.eva import Eva

    return Eva(img_size=32, patch_size=8, dynamic_img_size=True, embed_dim=32, depth=1, num_heads=2, qkv_bias=True,
               init_values=1e-5, rope_type="dinov3", rope_temperature=100, rope_rotate_half=True,
               use_rot_pos_emb=True, use_abs_pos_emb=False, num_reg_tokens=4, use_fc_norm=False, num_classes=10)


def _shrunk(model):
    model, groups, result = shrink_and_check(model)
    return model, groups, result


def test_pvt_v2_mlps_shrink_and_the_groups_its_attention_reshapes_are_refused():
    model, groups, result = _shrunk(_pvt_v2())
    hidden = [g for g in groups if g.root.endswith("mlp.dwconv")]
    assert len(hidden) == 2 and all(g.removable for g in hidden)  # the layer's own view is not a regrouping
    for name in ("stages.0.blocks.0.mlp", "stages.1.blocks.0.mlp"):
        before, after = model.get_submodule(name), result.model.get_submodule(name)
        assert after.fc1.out_features == after.dwconv.out_channels == after.fc2.in_features < before.fc1.out_features
    # the attention reshapes to its input's width: the residual stream and the reduction's channels stay
    assert "stages.0.blocks.0.attn.sr" in result.refused
    assert all("\n" not in why for why in result.refused.values())


def test_eva02_swiglu_halves_are_removed_in_pairs():
    model, groups, result = _shrunk(_eva02_swiglu())
    (glu,) = [g for g in groups if g.root == "blocks.0.mlp.fc1"]
    assert glu.removable and glu.chunks == 2 and not result.refused
    before, after = model.blocks[0].mlp, result.model.blocks[0].mlp
    assert after.fc1.out_features == 2 * after.fc2.in_features < before.fc1.out_features


def test_dinov3_rotary_embeddings_leave_the_mlp_removable():
    _, _, result = _shrunk(_dinov3())
    assert result.plan.removed_channels > 0 and not result.refused
