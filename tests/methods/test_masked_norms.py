"""Every method trains a transformer whose masked model the shrunk one equals, embedding dimension
included: LayerNorms normalise over the kept channels while masks are active (and after finalize)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateurs.core.targets import select_targets
from secateurs.methods import METHODS, build_method
from secateurs.structured import coupled_channel_groups, shrink

from ._loop import run
from .test_contract import WHOLE_NETWORK

pytest.importorskip("timm")

METHOD_KWARGS: dict[str, dict] = {
    "magnitude": {"prune_at": 0.5},
    "lottery": {"rounds": 2, "rewind_fraction": 0.0},
    "gmp": {"end": 0.75},
    "dpp": {"metric_samples": 8},
}


def tiny_vit(seed: int = 0) -> nn.Module:
    """Two blocks, 24-dim embedding, 2 heads, 4 patches + class token: a ViT in miniature."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=8, in_chans=3, num_classes=5, embed_dim=24, depth=2,
                             num_heads=2)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("name", [m for m in METHODS.names() if m not in WHOLE_NETWORK])
def test_every_method_trains_a_masked_vit_that_the_shrunk_one_equals(name):
    net = tiny_vit()
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(2)]
    method = build_method(name, **{**METHOD_KWARGS.get(name, {}), "sparsity": 0.5, "granularity": "filter",
                                   "seed": 0})
    run(method, net, batches, 3, pretrained=True, targets=select_targets(net, include_first=True),
        channel_groups=coupled_channel_groups(net, torch.zeros(1, 3, 16, 16)))
    x = torch.randn(4, 3, 16, 16)
    net.eval()
    masked = outputs(net, x)
    copied = outputs(copy.deepcopy(net), x)  # a copy carries its masked norms
    masks = method.finalize()
    squashed = outputs(net, x)  # the finalised model keeps normalising over the kept channels
    torch.testing.assert_close(copied, masked, rtol=0, atol=1e-6)
    torch.testing.assert_close(squashed, masked, rtol=0, atol=1e-5)
    result = shrink(net, masks, x[:1])
    assert result.model.pos_embed.shape[-1] < 24, "the embedding dimension shrinks"
    torch.testing.assert_close(outputs(result.model, x), masked, rtol=0, atol=1e-4)


