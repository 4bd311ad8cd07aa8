"""Which weights are pruned: defaults, include/exclude patterns, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.core.granularity import Unstructured
from secateurs.core.parametrize import FixedMask, attach_
from secateurs.core.targets import Target, default_target_names, select_targets
from secateurs.errors import UsageError


def names(targets: list[Target]) -> list[str]:
    return [t.name for t in targets]


def test_default_targets_of_cnn_exclude_stem_and_classifier(tiny_cnn, cnn_targets):
    assert default_target_names(tiny_cnn) == cnn_targets
    targets = select_targets(tiny_cnn)
    assert names(targets) == cnn_targets
    assert "stem.weight" not in names(targets) and "fc.weight" not in names(targets)
    for t in targets:
        assert t.shape == tiny_cnn.get_parameter(t.name).shape
        assert isinstance(t.shape, torch.Size)


def test_default_targets_of_mlp_exclude_only_last_linear(tiny_mlp):
    assert names(select_targets(tiny_mlp)) == ["fc1.weight", "fc2.weight"]


def test_default_targets_never_include_biases_or_batchnorm(tiny_cnn):
    for t in select_targets(tiny_cnn):
        assert t.name.endswith(".weight") and len(t.shape) >= 2
        assert not isinstance(tiny_cnn.get_submodule(t.module_name), nn.BatchNorm2d)


def test_single_layer_model_is_pruned_anyway():
    model = nn.Sequential(nn.Linear(8, 4))
    assert names(select_targets(model)) == ["0.weight"]
    bare = nn.Linear(8, 4)
    assert names(select_targets(bare)) == ["weight"]


def test_sequential_convnet_defaults():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2)
    )
    assert names(select_targets(model)) == ["2.weight", "3.weight", "5.weight"]


def test_include_patterns_replace_the_default(tiny_cnn):
    assert names(select_targets(tiny_cnn, include=["stem.weight"])) == ["stem.weight"]
    assert names(select_targets(tiny_cnn, include=["conv*.weight"])) == ["conv1.weight", "conv2.weight", "conv3.weight"]
    # Several patterns, overlapping: no duplicates, order of first match.
    got = names(select_targets(tiny_cnn, include=["fc*.weight", "fc.weight", "stem.*"]))
    assert got == ["fc1.weight", "fc.weight", "stem.weight"]
    assert len(got) == len(set(got))


def test_include_only_matches_weights_of_two_or_more_dims(tiny_cnn):
    with pytest.raises(UsageError, match="bn1"):
        select_targets(tiny_cnn, include=["bn1.*"])  # BatchNorm weight and bias are 1-D
    assert names(select_targets(tiny_cnn, include=["fc1.*"])) == ["fc1.weight"]  # the bias is skipped


def test_exclude_patterns(tiny_cnn):
    assert names(select_targets(tiny_cnn, exclude=["fc1.weight"])) == ["conv1.weight", "conv2.weight", "conv3.weight"]
    assert names(select_targets(tiny_cnn, exclude=["conv[12].weight"])) == ["conv3.weight", "fc1.weight"]
    got = names(select_targets(tiny_cnn, include=["*.weight"], exclude=["stem.weight"]))
    assert got == ["conv1.weight", "conv2.weight", "conv3.weight", "fc1.weight", "fc.weight"]


@pytest.mark.parametrize(
    "include, exclude",
    [
        (["nothing*"], None),
        (["conv1.weight", "conv7.weight"], None),
        (None, ["stem.weight"]),  # not a default target
        (None, ["nope"]),
    ],
)
def test_pattern_matching_nothing_is_a_usage_error(tiny_cnn, include, exclude):
    with pytest.raises(UsageError):
        select_targets(tiny_cnn, include=include, exclude=exclude)


def test_excluding_everything_is_a_usage_error(tiny_cnn):
    with pytest.raises(UsageError):
        select_targets(tiny_cnn, exclude=["*"])


def test_targets_of_a_parametrized_model_use_original_names(tiny_cnn, cnn_targets):
    attach_(tiny_cnn, "conv2.weight", FixedMask(Unstructured(), tiny_cnn.conv2.weight.shape))
    assert names(select_targets(tiny_cnn)) == cnn_targets
    assert names(select_targets(tiny_cnn, include=["conv2.*"])) == ["conv2.weight"]


def test_target_module_name():
    assert Target("layer1.0.conv1.weight", torch.Size((4, 4, 3, 3))).module_name == "layer1.0.conv1"
    assert Target("weight", torch.Size((4, 4))).module_name == ""
