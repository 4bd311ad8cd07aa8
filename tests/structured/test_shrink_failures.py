"""Shrinking models whose operations the dependency graph misreads: never a raw exception.

A group whose removal breaks the model (a split with fixed sizes) is found, left in place as zeros
and reported; the rest still shrinks, equal to the masked model and to the predicted size. Gated
(GLU) halves are removed in pairs; tracing leaves a model's own caches alone.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.metrics import count_macs, count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink

from ._helpers import group_masks, outputs, randomize_, squash_


class FixedSplit(nn.Module):
    """A stem whose output is split at sizes fixed at construction (as MixNet's mixed convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.splits = [4, 4]
        self.left = nn.Conv2d(4, 6, 3, padding=1)
        self.right = nn.Conv2d(4, 6, 1)
        self.mix = nn.Conv2d(12, 10, 1)
        self.head = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(F.relu(self.stem(x)), self.splits, dim=1)
        x = torch.cat([F.relu(self.left(a)), F.relu(self.right(b))], dim=1)
        return self.head(F.relu(self.mix(x)).mean((2, 3)))


class GatedMlp(nn.Module):
    """fc1 -> (a, b) halves -> a * gelu(b) -> fc2: each position of fc2 reads two fc1 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 6)
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.head(x + self.fc2(a * F.gelu(b)))


class CachedBias(nn.Module):
    """Memoises a tensor derived from a parameter in eval mode, as LeViT's attention biases."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bias_table = nn.Parameter(torch.randn(4))
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            if "bias" not in self.cache:
                self.cache["bias"] = self.bias_table * 2
            return self.conv(x) + self.cache["bias"].view(1, -1, 1, 1)
        return self.conv(x) + (self.bias_table * 2).view(1, -1, 1, 1)


def _shrink_with_group_masks(model: nn.Module, x: torch.Tensor):
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.4)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    reference = reference_model(model, result.groups, result.plan)
    return result, reference


def test_a_group_whose_removal_breaks_the_model_stays_and_the_rest_shrinks():
    torch.manual_seed(0)
    model = randomize_(FixedSplit())
    x = torch.randn(3, 3, 8, 8)
    result, reference = _shrink_with_group_masks(model, x)
    # The fixed split reads the stem's channels at other positions than the trace says: the check
    # that zeroing a group's readers changes nothing (or else the removal itself) refuses it.
    assert set(result.refused) == {"stem"}
    assert "misreads" in result.refused["stem"] or "split" in result.refused["stem"]
    stem_plan = result.plan.by_root()["stem"]
    assert not stem_plan.removed and stem_plan.masked > 0 and stem_plan.note == result.refused["stem"]
    assert result.model.stem.out_channels == 8  # kept whole, its pruned channels zero
    assert result.plan.removed_channels > 0  # left, right (and mix) still lost channels
    assert result.model.left.out_channels < 6 and result.model.right.out_channels < 6
    expected = outputs(reference, x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-5
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after
    assert [g.root for g in result.spec.groups] == [g.root for g in result.plan.groups if g.removed]


def test_gated_halves_are_removed_in_pairs_and_the_size_is_as_predicted():
    torch.manual_seed(0)
    model = randomize_(GatedMlp())
    x = torch.randn(5, 5)
    group = next(g for g in coupled_channel_groups(model, x[:1]) if g.root == "fc1")
    assert group.removable and group.chunks == 2
    result, reference = _shrink_with_group_masks(model, x)
    assert not result.refused
    kept = result.model.fc2.in_features
    assert kept < 8 and result.model.fc1.out_features == 2 * kept
    assert (outputs(result.model, x) - outputs(reference, x)).abs().max() <= 1e-5
    assert count_params(result.model) == result.prediction.params_after


def test_tracing_leaves_the_model_caches_alone_so_it_can_still_be_copied():
    model = CachedBias().eval()
    coupled_channel_groups(model, torch.randn(1, 3, 4, 4))
    assert model.cache == {}
    copy.deepcopy(model)  # would fail on a non-leaf tensor left in the cache


def test_macs_count_on_a_model_passing_a_parameter_into_a_submodule():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.randn(1, 4))
            self.mix = nn.Sequential(nn.Identity())
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x, token = self.mix((x, self.token))  # a tuple with the bare parameter (PiT, CaiT)
            return self.fc(x + token)

    assert count_macs(Tokens(), torch.randn(3, 4)).dense == 3 * 4 * 2


def test_the_run_report_gives_the_size_shrink_delivers_with_refused_groups_kept():
    from secateurs.experiment.report import _shrunk_size

    torch.manual_seed(0)
    model = randomize_(FixedSplit())
    x = torch.randn(1, 3, 8, 8)
    groups = coupled_channel_groups(model, x)
    masks = group_masks(model, groups, prune=0.4)
    squash_(model, masks)
    sizes = _shrunk_size(model, masks, x, groups)
    delivered = shrink(model, masks, x, groups=groups).model
    assert sizes["params_shrunk"] == count_params(delivered)
    assert sizes["macs_shrunk"] == count_macs(delivered, x).dense
    assert sizes["shrink_refused_groups"] == ["stem"]
