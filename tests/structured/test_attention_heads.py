"""Per-head dimensions of timm attention: q, k, v and proj shrink together, exactly, at the predicted size."""

from __future__ import annotations

import pytest
import torch

from secateurs.metrics import count_macs, count_params
from secateurs.models import build_model
from secateurs.structured import coupled_channel_groups, group_filter_masks, reference_model, shrink

from ._helpers import outputs, randomize_, squash_

pytest.importorskip("timm")


def _tiny_vit():
    import timm

    return timm.models.VisionTransformer(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3,
                                         num_classes=5)


@pytest.mark.parametrize("fused", [True, False])
def test_head_dimensions_shrink_exactly_with_the_attention_scale_kept(fused):
    torch.manual_seed(0)
    model = randomize_(_tiny_vit())
    for block in model.blocks:
        block.attn.fused_attn = fused  # the fused kernel scales by the new head width, the other by .scale
    x = torch.randn(3, 3, 16, 16)
    groups = coupled_channel_groups(model, x[:1])
    heads = next(g for g in groups if g.root == "blocks.0.attn.qkv")
    assert heads.removable and heads.exact and heads.channels == 72 and heads.chunks == 9
    keep = {}
    for group in groups:
        if group.root.endswith("attn.qkv"):
            per_head = torch.tensor([True, False, True, True, False, True, True, False])  # 3 of 8 go
            keep[group.root] = per_head.repeat(group.chunks)
    masks = group_filter_masks(model, groups, keep)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    attn = result.model.blocks[0].attn
    assert attn.head_dim == 5 and attn.qkv.out_features == 3 * 3 * 5 and attn.proj.in_features == 15
    reference = reference_model(model, result.groups, result.plan)
    expected = outputs(reference, x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-5
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after  # q·k and weights·v shrink too


def test_a_shrunk_vit_reloads_from_its_spec(tmp_path):
    from secateurs.structured import load_shrunk, save_shrunk

    torch.manual_seed(0)
    model = randomize_(build_model("timm:vit_tiny_patch16_224", in_channels=1, num_classes=10, image_size=32))
    x = torch.randn(2, 1, 32, 32)
    groups = coupled_channel_groups(model, x[:1])
    keep = {g.root: torch.rand(g.channels // g.chunks).ge(0.3).index_fill(0, torch.tensor([0]), True).repeat(g.chunks)
            for g in groups if g.removable and g.exact}
    masks = group_filter_masks(model, groups, keep)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups,
                    model_info={"name": "timm:vit_tiny_patch16_224", "in_channels": 1, "num_classes": 10,
                                "image_size": [32, 32]})
    save_shrunk(result.model, result.spec, tmp_path)
    loaded = load_shrunk(tmp_path)
    assert loaded.blocks[0].attn.head_dim == result.model.blocks[0].attn.head_dim < 64
    assert torch.allclose(outputs(loaded, x), outputs(result.model, x), atol=1e-6)
