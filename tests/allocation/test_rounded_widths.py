"""Speed-friendly widths: kept channel counts rounded to multiples, with the MACs target still met.

The model has widths that are not multiples of 8 (20, 36, 52) and a residual addition, so rounding
meets the dense-width cap and coupled channel groups.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from secateurs.allocation import AllocationProblem, sparsity_for_shrunk_macs
from secateurs.allocation.uniform import UniformAllocator
from secateurs.budget import parse_budgets
from secateurs.core.granularity import Filter
from secateurs.core.selection import keep_count, rounded_keep
from secateurs.core.targets import select_targets
from secateurs.metrics import count_macs
from secateurs.structured import coupled_channel_groups, group_filter_masks, shrink, zero_dead_channels_


class _OddWidths(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def unit(cin: int, cout: int, k: int = 3) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout))

        self.stem, self.a, self.b, self.skip, self.c = unit(3, 20), unit(20, 36), unit(36, 36), unit(20, 36, 1), unit(36, 52)
        self.fc = nn.Linear(52, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.b(torch.relu(self.a(x))) + self.skip(x))
        x = torch.relu(self.c(x))
        return self.fc(x.mean(dim=(2, 3)))


def _setup():
    torch.manual_seed(0)
    model = _OddWidths().eval()
    with torch.no_grad():  # non-trivial normalisation, so that a wrongly cut channel shows in the outputs
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
    x = torch.zeros(1, 3, 12, 12)
    return model, x, coupled_channel_groups(model, x), select_targets(model, include_first=True)


def _problem(model, x, groups, targets, budget: str, round_to: int) -> AllocationProblem:
    return AllocationProblem(model, targets, Filter(), x, groups=groups, budgets=parse_budgets([budget]),
                             round_to=round_to)


def _masked_and_shrunk(model, masks, x, round_to):
    """(the masked model with its dead channels zeroed in every coupled tensor, BN shifts included:
    what removal computes; the shrink result)."""
    with torch.no_grad():
        for name, entry in masks.items():
            model.get_parameter(name).mul_(entry.full())
    result = shrink(model, masks, x, round_to=round_to)
    return zero_dead_channels_(copy.deepcopy(model), coupled_channel_groups(model, x), result.plan), result


@given(st.integers(0, 300), st.integers(1, 300), st.integers(1, 64))
def test_rounded_keep_is_a_multiple_or_the_width_and_never_zero(kept, n, multiple):
    kept = min(kept, n)
    rounded = rounded_keep(kept, n, multiple)
    assert 1 <= rounded <= n and rounded >= kept
    assert rounded % multiple == 0 or rounded == n
    assert rounded - max(kept, 1) < multiple  # the smallest such count


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_allocation_rounds_every_width_and_meets_the_macs_target(fraction):
    model, x, groups, targets = _setup()
    problem = _problem(model, x, groups, targets, f"macs<={fraction:.0%}", 8)
    problem.check_meetable()
    assert problem.round_to == 8
    allocation = UniformAllocator().allocate(problem)
    counts = problem.keep_counts(allocation.sparsities)
    units = {k.name: k.units for k in problem.keys}
    assert all(c % 8 == 0 or c == units[name] for name, c in counts.items()), counts
    # a method handed these sparsities keeps exactly the rounded counts (rounding at mask selection)
    assert {name: keep_count(units[name], s) for name, s in allocation.sparsities.items()} == counts
    masks = problem.masks(allocation.sparsities)
    dense_macs = count_macs(model, x).dense
    masked, result = _masked_and_shrunk(model, masks, x, 8)
    assert result.plan.masked_channels == 0 and result.plan.removed_channels > 0  # shrink gives nothing back
    for group in result.plan.groups:
        assert len(group.keep) % 8 == 0 or len(group.keep) == group.channels
    assert count_macs(result.model, x).dense <= fraction * dense_macs
    batch = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(result.model(batch), masked(batch), rtol=1e-4, atol=1e-5)


def test_rounded_allocation_uses_the_budget_the_rounding_left():
    model, x, groups, targets = _setup()
    exact = _problem(model, x, groups, targets, "macs<=40%", 1)
    rounded = _problem(model, x, groups, targets, "macs<=40%", 8)
    used, chosen = {}, {}
    for name, problem in (("exact", exact), ("rounded", rounded)):
        chosen[name] = UniformAllocator().allocate(problem).sparsities
        [(achieved, limit)] = problem.usage(chosen[name])
        assert achieved <= limit + 1e-9
        used[name] = achieved
    # the rounded allocation is filled: no key could take one more multiple without breaking the budget
    counts = rounded.keep_counts(chosen["rounded"])
    for key in rounded.keys:
        if counts[key.name] < key.units:
            more = {**counts, key.name: min(key.units, counts[key.name] + 8)}
            assert not rounded.feasible({k.name: 1 - more[k.name] / k.units for k in rounded.keys})
    assert used["rounded"] > 0.9 * used["exact"]  # rounding costs little of the budget


def test_macs_solver_counts_the_rounding_of_shrink():
    model, x, groups, targets = _setup()
    dense_macs = count_macs(model, x).dense
    sparsity = sparsity_for_shrunk_macs(model, targets, x, 0.45, round_to=8)
    keep = {}
    for group in groups:
        if group.removable and group.exact:
            keep[group.root] = torch.arange(group.channels) < keep_count(group.channels, sparsity)
    masks = group_filter_masks(model, groups, keep)
    masked, result = _masked_and_shrunk(model, masks, x, 8)
    assert count_macs(result.model, x).dense <= 0.45 * dense_macs  # after shrink rounded the widths up
    for group in result.plan.groups:
        assert len(group.keep) % 8 == 0 or len(group.keep) == group.channels
    batch = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(result.model(batch), masked(batch), rtol=1e-4, atol=1e-5)


def test_rounding_is_dropped_when_only_exact_counts_meet_the_budget():
    model, x, groups, targets = _setup()
    floors = {}
    for round_to in (1, 8):
        problem = _problem(model, x, groups, targets, "macs<=100%", round_to)
        [(achieved, _)] = problem.usage(problem.min_keep())
        floors[round_to] = achieved
    assert floors[1] < floors[8]
    between = (floors[1] + floors[8]) / 2
    problem = _problem(model, x, groups, targets, f"macs<={between:.4f}%", 8)
    problem.check_meetable()
    assert problem.round_to == 1 and problem.rounding_dropped == 8
    below = _problem(model, x, groups, targets, f"macs<={floors[1] / 2:.4f}%", 8)
    with pytest.raises(Exception, match="cannot be met: even keeping one unit"):
        below.check_meetable()
