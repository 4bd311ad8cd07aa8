"""Shrinking: the smaller model equals the masked one, and its size equals the prediction."""

from __future__ import annotations

import copy

import pytest
import torch

from secateurs.errors import UsageError
from secateurs.metrics import count_macs, count_params
from secateurs.models import build_model
from secateurs.structured import (
    coupled_channel_groups,
    plan_removal,
    predict_shrunk_size,
    shrink,
    zero_dead_channels_,
)

from ._helpers import outputs, random_filter_masks, randomize_, squash_

ZOO = [("resnet20", 16), ("vgg16", 32), ("resnet18", 16)]


def _masked_reference(model, masks, x, round_to=1):
    """The masked model with each removed channel zeroed in every coupled tensor (BN shift included)."""
    groups = coupled_channel_groups(model, x)
    plan = plan_removal(groups, masks, round_to=round_to)
    return zero_dead_channels_(copy.deepcopy(model), groups, plan), plan


@pytest.mark.parametrize(("name", "size"), ZOO)
def test_shrunk_zoo_model_equals_masked_model_and_prediction(name, size):
    torch.manual_seed(0)
    model = randomize_(build_model(name, in_channels=3, num_classes=10, image_size=size))
    masks = random_filter_masks(model, keep=0.5)
    squash_(model, masks)
    x = torch.randn(4, 3, size, size)
    result = shrink(model, masks, x[:1])
    reference, plan = _masked_reference(model, masks, x[:1])
    assert result.plan == plan
    assert plan.removed_channels > 0
    assert (outputs(result.model, x) - outputs(reference, x)).abs().max() <= 1e-4
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after < count_macs(model, x[:1]).dense


def test_unshared_channels_are_removed_exactly_as_masked():
    model = randomize_(build_model("resnet20", in_channels=1, num_classes=10, image_size=8))
    masks = random_filter_masks(model, keep=0.5, seed=3)
    squash_(model, masks)
    result = shrink(model, masks, torch.randn(1, 1, 8, 8))
    # conv1 of a block has its own channels: what the mask keeps is exactly what remains.
    for block in ("layer1.0", "layer2.1", "layer3.2"):
        kept = int(masks[f"{block}.conv1.weight"].mask.sum())
        assert result.model.get_submodule(f"{block}.conv1").out_channels == kept
        assert result.model.get_submodule(f"{block}.bn1").num_features == kept


def test_residual_channels_pruned_in_one_partner_only_stay_as_zeros(tiny_cnn):
    randomize_(tiny_cnn)
    x = torch.randn(2, 3, 8, 8)
    from secateurs.core.granularity import Filter
    from secateurs.core.masks import MaskSet

    conv2 = torch.ones(8, dtype=torch.bool)
    conv2[[0, 5]] = False  # the stem (unmasked) keeps these channels alive in the residual stream
    conv1 = torch.ones(12, dtype=torch.bool)
    conv1[[2, 3, 7]] = False
    shapes = {"conv2.weight": tiny_cnn.conv2.weight.shape, "conv1.weight": tiny_cnn.conv1.weight.shape}
    masks = MaskSet.from_masks({"conv2.weight": conv2, "conv1.weight": conv1}, Filter(), shapes)
    squash_(tiny_cnn, masks)
    result = shrink(tiny_cnn, masks, x[:1])
    assert result.model.conv2.out_channels == 8 and result.model.conv1.out_channels == 9
    assert result.plan.masked_channels == 2
    # BN after conv1 is at its identity: the shrunk model equals the run's masked model itself.
    tiny_cnn.bn1.bias.data.zero_()
    tiny_cnn.bn1.running_mean.zero_()
    assert (outputs(shrink(tiny_cnn, masks, x[:1]).model, x) - outputs(tiny_cnn, x)).abs().max() <= 1e-5


def test_round_to_keeps_multiples_and_outputs():
    model = randomize_(build_model("resnet20", in_channels=3, num_classes=10, image_size=8))
    masks = random_filter_masks(model, keep=0.4, seed=1)
    squash_(model, masks)
    x = torch.randn(2, 3, 8, 8)
    result = shrink(model, masks, x[:1], round_to=8)
    for block in ("layer1.0", "layer2.0", "layer3.0"):
        assert result.model.get_submodule(f"{block}.conv1").out_channels % 8 == 0
    reference, _ = _masked_reference(model, masks, x[:1], round_to=8)
    assert (outputs(result.model, x) - outputs(reference, x)).abs().max() <= 1e-4
    assert result.spec.round_to == 8


def test_shrink_leaves_the_input_model_alone():
    model = randomize_(build_model("resnet20", in_channels=3, num_classes=10, image_size=8))
    masks = random_filter_masks(model)
    squash_(model, masks)
    before = copy.deepcopy(model.state_dict())
    shrink(model, masks, torch.randn(1, 3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prediction_without_shrinking_matches_dense_counts_when_nothing_is_pruned(tiny_cnn):
    x = torch.randn(1, 3, 8, 8)
    groups = coupled_channel_groups(tiny_cnn, x)
    from secateurs.core.masks import MaskSet

    size = predict_shrunk_size(tiny_cnn, groups, plan_removal(groups, MaskSet()), x)
    assert size.params_after == size.params_before == count_params(tiny_cnn)
    assert size.macs_after == size.macs_before == count_macs(tiny_cnn, x).dense


def test_bad_inputs_are_usage_errors(tiny_cnn):
    from secateurs.core.granularity import Filter, Kernel
    from secateurs.core.masks import MaskSet
    from secateurs.core.parametrize import FixedMask, attach_

    x = torch.randn(1, 3, 8, 8)
    weight = tiny_cnn.conv1.weight
    kernel = MaskSet.from_masks({"conv1.weight": torch.ones(12, 8, dtype=torch.bool)}, Kernel(),
                                {"conv1.weight": weight.shape})
    with pytest.raises(UsageError, match="filter"):
        shrink(tiny_cnn, kernel, x)
    wrong = MaskSet.from_masks({"conv9.weight": torch.ones(12, dtype=torch.bool)}, Filter(),
                               {"conv9.weight": weight.shape})
    with pytest.raises(UsageError, match="conv9"):
        shrink(tiny_cnn, wrong, x)
    attach_(tiny_cnn, "conv1.weight", FixedMask(Filter(), weight.shape))
    with pytest.raises(UsageError, match="finalised"):
        shrink(tiny_cnn, MaskSet(), x)
