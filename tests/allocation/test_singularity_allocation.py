"""``--allocation singularity``: per-group sparsities that never cross the effective-filter caps, for
any mask method, and budgets met within them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from secateurs.allocation import ALLOCATORS, AllocationProblem
from secateurs.budget import parse_budgets
from secateurs.cli.main import main
from secateurs.core.granularity import Filter, Unstructured
from secateurs.core.targets import select_targets
from secateurs.errors import UsageError
from secateurs.models import build_model
from secateurs.structured import coupled_channel_groups


def _problem(budgets=(), sparsity=None, options=None, granularity=None):
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1, num_classes=4, image_size=8).eval()
    example = torch.zeros(1, 1, 8, 8)
    images = torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    groups = coupled_channel_groups(model, example)
    return AllocationProblem(model, select_targets(model, include_first=True), granularity or Filter(), example,
                             groups=groups, budgets=parse_budgets(budgets), sparsity=sparsity,
                             options=options or {}, calibration=images)


def _removed(problem, sparsities):
    return {k.name: k.units - max(1, round(k.units * (1 - sparsities[k.name]))) for k in problem.keys}


def test_allocation_stays_within_the_caps_and_flags_a_target_beyond():
    problem = _problem(sparsity=0.9)
    allocation = ALLOCATORS.get("singularity")().allocate(problem)
    search = allocation.search
    assert search["target_beyond_estimate"] and search["alpha"] == 1.0
    removed = _removed(problem, allocation.sparsities)
    assert removed == search["caps"]  # every group at its cap, none past it
    for key in problem.keys:
        if key.name in search["effective"]:
            floor = max(1, math.ceil(0.1 * key.units))
            assert search["caps"][key.name] == min(key.units - search["effective"][key.name], key.units - floor)
    # Past the caps only when asked.
    forced = ALLOCATORS.get("singularity")().allocate(_problem(sparsity=0.9, options={"exceed_caps": True}))
    assert sum(_removed(problem, forced.sparsities).values()) > sum(removed.values())


def test_sparsity_and_budget_within_the_estimate_are_met():
    problem = _problem(sparsity=0.05)
    allocation = ALLOCATORS.get("singularity")().allocate(problem)
    assert not allocation.search["target_beyond_estimate"]
    assert 1 - problem.density(allocation.sparsities) >= 0.05
    removed = _removed(problem, allocation.sparsities)
    assert all(removed[k] <= cap for k, cap in allocation.search["caps"].items())
    reduction = allocation.search["max_macs_reduction"]
    budget = f"macs<={100 * (1 - reduction / 2):.1f}%"  # half the estimated maximum: reachable
    problem = _problem([budget])
    allocation = ALLOCATORS.get("singularity")().allocate(problem)
    assert problem.feasible(allocation.sparsities) and not allocation.search["target_beyond_estimate"]


def test_needs_filter_granularity_and_calibration():
    with pytest.raises(UsageError, match="filter"):
        ALLOCATORS.get("singularity")().allocate(_problem(sparsity=0.5, granularity=Unstructured()))


def test_any_method_trains_to_the_singularity_caps(tmp_path):
    quick = ["--data", "synthetic", "--limit-train", "96", "--limit-test", "32", "--batch-size", "32",
             "--epochs", "1", "--device", "cpu"]
    dense = tmp_path / "dense"
    assert main(["train", "--model", "lenet5", *quick, "--out", str(dense)]) == 0
    run = tmp_path / "gmp"
    assert main(["prune", "--model", "lenet5", *quick, "--method", "gmp", "--granularity", "filter", "--sparsity",
                 "0.95", "--allocation", "singularity", "--allocation-option", "calibration=64", "--from", str(dense),
                 "--out", str(run)]) == 0
    saved = json.loads((run / "allocation.json").read_text())
    assert saved["allocator"] == "singularity" and saved["search"]["target_beyond_estimate"]
    masks = {k: v for k, v in json.loads((run / "report.json").read_text()).items() if k == "layers"}["layers"]
    by_name = {layer["name"]: layer for layer in masks}
    for key, cap in saved["search"]["caps"].items():
        units = by_name[key]["shape"][0]
        assert round(by_name[key]["sparsity"] * units) <= cap  # never past the cap
