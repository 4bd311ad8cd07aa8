"""The CI subset of the architecture sweep: torchvision classifiers at small inputs.

Each model: trace groups, prune 30 % of the channels of every exactly removable group (the same
channels in every producer, as a group-aware method would), shrink, and check that the shrunk model
equals the masked one and has the predicted size. The full sweep over every torchvision classifier
is ``benchmarks/structured/coverage.py``.
"""

from __future__ import annotations

import pytest
import torch

from secateurs.metrics import count_macs, count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink

from ._helpers import group_masks, outputs, randomize_, squash_

torchvision = pytest.importorskip("torchvision")

SUBSET = ["resnet18", "mobilenet_v2", "efficientnet_b0", "googlenet"]


def _tiny(name):
    """Small instances of the torchvision classes behind densenet121, regnet_y_400mf, convnext_tiny
    and vit_b_16: the same layers and couplings at a fraction of the cost (the sweep runs the real ones)."""
    m = torchvision.models
    if name == "densenet-tiny":  # concatenation everywhere
        return m.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)
    if name == "regnet-tiny":  # grouped convolutions + squeeze-excitation
        params = m.regnet.BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8,
                                                       se_ratio=0.25)
        return m.RegNet(params, num_classes=10)
    if name == "convnext-tiny":  # LayerNorm2d, layer scale, depthwise 7x7
        cfg = m.convnext.CNBlockConfig
        return m.ConvNeXt([cfg(16, 32, 2), cfg(32, None, 2)], num_classes=10)
    return m.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                               mlp_dim=64, num_classes=10)


def _build(name):
    if name.endswith("-tiny"):
        return _tiny(name)
    return torchvision.models.get_model(name, weights=None, num_classes=10)


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
@pytest.mark.parametrize("name", [*SUBSET, "densenet-tiny", "regnet-tiny", "convnext-tiny", "vit-tiny"])
def test_torchvision_model_shrinks_to_an_equal_smaller_model(name):
    torch.manual_seed(0)
    model = randomize_(_build(name))
    x = torch.randn(2, 3, 32, 32)
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.3)
    squash_(model, masks)
    result = shrink(model, masks, x[:1])
    assert result.plan.removed_channels > 0
    assert result.plan.masked_channels == 0  # group masks leave nothing behind
    reference = reference_model(model, result.groups, result.plan)
    expected = outputs(reference, x)
    assert expected.std() > 1e-3  # outputs that depend on the input: the comparison means something
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
@pytest.mark.parametrize(("name", "method"), [("resnet18", "gmp"), ("mobilenet_v2", "dpp"), ("densenet-tiny", "cs"),
                                              ("regnet-tiny", "gibbs"), ("googlenet", "magnitude")])
def test_a_method_on_coupled_groups_gives_a_masked_model_equal_to_its_shrunk_model(name, method):
    """The method's own masks (one per group, norms and biases included): the finalized model itself
    is the reference, no zeroing of dead channels needed."""
    from secateurs.core.targets import select_targets
    from secateurs.methods import Horizon, build_method

    torch.manual_seed(0)
    model = randomize_(_build(name)).eval()
    x = torch.randn(2, 3, 32, 32)
    # Gibbs from a trained model ramps its pruned share up from 0 (ramp_end); finalized before any
    # step it would prune nothing, so this test of the shrink path takes the target at once.
    options = {"ramp_end": 0.0} if method == "gibbs" else {}
    pruner = build_method(method, sparsity=0.3, granularity="filter", **options)
    pruner.attach(model, select_targets(model, include_first=True), Horizon(10, 10, pretrained=True),
                  channel_groups=coupled_channel_groups(model, x[:1]))
    assert pruner.shared_groups
    if method in ("gmp", "magnitude"):
        pruner.prune_to(0.3)  # what their schedules reach by the end
    masks = pruner.finalize()
    expected = outputs(model, x)
    result = shrink(model, masks, x[:1])
    assert result.plan.removed_channels > 0 and result.plan.masked_channels == 0
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
