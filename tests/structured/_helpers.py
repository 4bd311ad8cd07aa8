"""Shared helpers of the structural-compaction tests: random masks, squashing, perturbed weights."""

from __future__ import annotations

import torch
from torch import nn

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet
from secateurs.core.targets import select_targets
from secateurs.structured import ChannelGroup, group_filter_masks


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and norm statistic non-trivial values (BN shifts, means, variances too),
    so that a wrongly cut channel shows up in the outputs. Scales keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in) ** 0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def random_filter_masks(model: nn.Module, keep: float = 0.5, seed: int = 0) -> MaskSet:
    """Independent random filter masks on the default targets (every conv/linear but stem and
    classifier), like a per-layer method would produce."""
    g = torch.Generator().manual_seed(seed)
    masks, shapes = {}, {}
    for target in select_targets(model):
        rows = target.shape[0]
        unit = torch.rand(rows, generator=g) < keep
        unit[torch.randint(rows, (1,), generator=g)] = True  # never an empty layer
        masks[target.name], shapes[target.name] = unit, target.shape
    return MaskSet.from_masks(masks, Filter(), shapes)


def group_masks(model: nn.Module, groups: list[ChannelGroup], prune: float = 0.3, seed: int = 0) -> MaskSet:
    """Random masks that prune the same channels in every producer of each removable group."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for group in groups:
        if group.removable and group.exact:
            per_chunk = torch.rand(group.channels // group.chunks, generator=g) >= prune
            per_chunk[0] = True
            keep[group.root] = per_chunk.repeat(group.chunks)
    return group_filter_masks(model, groups, keep)


@torch.no_grad()
def squash_(model: nn.Module, masks: MaskSet) -> nn.Module:
    """Zero the pruned filters in place, as a finalised run leaves them."""
    for name, entry in masks.items():
        model.get_parameter(name).mul_(entry.full().to(model.get_parameter(name).dtype))
    return model


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def shrink_and_check(model: nn.Module, size: int = 32):
    """Randomize ``model``, prune 30 % of every exact group, shrink, and assert what every structured
    test needs: shrunk == masked reference on a non-constant output, params and MACs as predicted and
    fewer params. Returns ``(model, groups, result)``."""
    from secateurs.metrics import count_macs, count_params
    from secateurs.structured import coupled_channel_groups, reference_model, shrink

    torch.manual_seed(0)
    model = randomize_(model.eval())
    x = torch.randn(2, 3, size, size)
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.3)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after
    return model, groups, result
