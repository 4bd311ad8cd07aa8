"""The CI subset of the timm sweep: a few small families at tiny inputs.

As in ``test_zoo.py``: prune 30 % of the channels of every exactly removable group, shrink, and hold
the shrunk model to the masked one (equal outputs) and to the predicted size. Each family brings
something the torchvision models do not: CSP's concatenation of slices, NF-Net's weight-standardized
convolutions with a per-channel gain, MixNet's mixed convolutions (a split at fixed sizes of a
concatenation), LeViT's channels-last subsampling and cached attention biases, ConvNeXt-V2's
channels-first LayerNorms (masked) and global response normalisation. The full sweep is
``benchmarks/structured/timm_coverage.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from secateurs.metrics import count_macs, count_params
from secateurs.models import build_model
from secateurs.structured import coupled_channel_groups, reference_model, shrink

from ._helpers import group_masks, outputs, randomize_, squash_

pytest.importorskip("timm")


@pytest.mark.parametrize("name", ["resnet10t", "cs3darknet_focus_s", "nf_regnet_b0", "mixnet_s", "levit_128s",
                                  "convnextv2_atto"])
def test_timm_model_shrinks_to_an_equal_smaller_model_of_the_predicted_size(name):
    torch.manual_seed(0)
    model = randomize_(build_model(f"timm:{name}", in_channels=3, num_classes=10, image_size=32))
    x = torch.randn(2, 3, 32, 32)
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.3)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert result.plan.removed_channels > 0 and not result.refused  # mixed convolutions' splits follow
    reference = reference_model(model, result.groups, result.plan)
    expected = outputs(reference, x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after


def test_weight_standardized_convolutions_lose_their_gain_with_their_filters():
    torch.manual_seed(0)
    model = randomize_(build_model("timm:nf_regnet_b0", in_channels=3, num_classes=10, image_size=32))
    x = torch.randn(1, 3, 32, 32)
    groups = coupled_channel_groups(model, x)
    # The weight's own standardization no longer reads as a regrouping reshape.
    assert not any(g.blocker and "reshape" in g.blocker for g in groups)
    masks = group_masks(model, groups, prune=0.3)
    squash_(model, masks)
    result = shrink(model, masks, x, groups=groups)
    cut = [m for n, m in result.model.named_modules() if hasattr(m, "gain")
           and m.out_channels < model.get_submodule(n).out_channels]
    assert cut and all(m.gain.shape[0] == m.weight.shape[0] for m in cut)


def test_tracing_leaves_levit_copyable_and_its_macs_countable():
    model = build_model("timm:levit_128s", in_channels=3, num_classes=10, image_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    groups = coupled_channel_groups(model, x)
    assert any(g.removable for g in groups)
    clone = copy.deepcopy(model)  # a non-leaf tensor left in its attention-bias cache would fail here
    assert count_macs(clone, x).dense == count_macs(model, x).dense > 0
