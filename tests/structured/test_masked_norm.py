"""Masked LayerNorms: the embedding dimension of a transformer shrinks exactly.

A transformer's residual stream runs through LayerNorms, so zeroing stream channels is not removing
them unless the masked model normalises over the kept channels only. These tests hold the masked
model (masks active, as methods train it), the finalised model and the shrunk model to each other.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.metrics import count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink
from secateurs.structured.masked_norm import MaskedNorm, install_masked_norms_, masked_layer_norm

from ._helpers import group_masks, outputs, randomize_, squash_

timm = pytest.importorskip("timm")

def tiny_vit(seed: int = 0) -> nn.Module:
    """Two blocks, 24-dim embedding, 2 heads, 4 patches + class token: a ViT in miniature."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=8, in_chans=3, num_classes=5, embed_dim=24, depth=2,
                             num_heads=2)


def test_masked_layer_norm_with_a_zero_one_gate_is_layer_norm_over_the_kept_channels():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 5, 8), torch.randn(8), torch.randn(8)
    kept = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    y = masked_layer_norm(x, kept, w * kept, b * kept, 1e-5)
    expected = F.layer_norm(x[..., kept], (5,), w[kept], b[kept], 1e-5)
    torch.testing.assert_close(y[..., kept], expected, rtol=0, atol=1e-6)
    assert torch.equal(y[..., ~kept], torch.zeros(3, 5, 3))
    # the removed channels' inputs do not matter
    x2 = x.clone()
    x2[..., ~kept] = 100.0
    torch.testing.assert_close(masked_layer_norm(x2, kept, w * kept, b * kept, 1e-5), y, rtol=0, atol=1e-5)


def test_the_embedding_dimension_is_one_group_through_pos_embed_class_token_and_norms():
    model = tiny_vit().eval()
    groups = coupled_channel_groups(model, torch.randn(1, 3, 16, 16))
    stream = next(g for g in groups if any(m.param == "pos_embed" for m in g.members))
    assert stream.removable and stream.exact and stream.channels == 24
    assert set(stream.norms) == {"blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2", "norm"}
    free = {m.param: m for m in stream.members if m.param in ("pos_embed", "cls_token")}
    assert set(free) == {"pos_embed", "cls_token"} and not any(m.producer for m in free.values())


def test_shrunk_vit_equals_the_masked_reference_and_loses_its_embedding_channels():
    model = randomize_(tiny_vit())
    x = torch.randn(2, 3, 16, 16)
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.4)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups, round_to=8)
    stream = next(p for p in result.plan.groups if p.root == "blocks.1.mlp.fc2")
    assert stream.removed == stream.dead  # not rounded: a channel kept as zero would enter the statistics
    kept = result.model.pos_embed.shape[-1]
    assert kept == 24 - len(stream.dead) < 24
    assert result.model.norm.normalized_shape == (kept,) and result.model.cls_token.shape[-1] == kept
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after
    # the plain model (LayerNorms over every channel) is not what the shrunk model computes
    assert (outputs(model, x) - expected).abs().max() > 1e-3


def test_fixed_hooks_replace_each_other_and_leave_unmasked_norms_alone():
    norm = nn.LayerNorm(4)
    x = torch.randn(2, 4)
    plain = norm(x)
    install_masked_norms_(nn.ModuleDict({"n": norm}), {"n": None})  # live, but no mask on the weight
    torch.testing.assert_close(norm(x), plain)
    install_masked_norms_(nn.ModuleDict({"n": norm}), {"n": torch.tensor([True, True, False, True])})
    assert sum(isinstance(h, MaskedNorm) for h in norm._forward_hooks.values()) == 1
    assert not torch.allclose(norm(x), plain)
