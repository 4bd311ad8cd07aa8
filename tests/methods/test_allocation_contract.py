"""Every registered mask method trains each key to its own allocated sparsity (the allocation axis)."""

from __future__ import annotations

import pytest

from secateurs.errors import UsageError
from secateurs.methods import build_method

from ._loop import run
from .test_contract import EPOCHS, METHOD_KWARGS, NAMES, STEPS

ALLOCATION = {"conv1.weight": 0.25, "conv2.weight": 0.5, "conv3.weight": 0.75}  # fc1 keeps the config's 0.6


@pytest.mark.parametrize("granularity", ["unstructured", "filter"])
@pytest.mark.parametrize("name", NAMES)
def test_each_key_reaches_its_allocated_sparsity(name, granularity, make_cnn, make_image_batches):
    method = build_method(name, **dict(METHOD_KWARGS.get(name, {}), granularity=granularity, sparsity=0.6))
    method.use_allocation(ALLOCATION)
    model = make_cnn(0)
    run(method, model, make_image_batches(STEPS), EPOCHS)
    masks = method.finalize()
    for key, entry in masks.items():
        want = ALLOCATION.get(key, 0.6)
        units = entry.mask.numel()
        if method.config.scope == "group":  # k of n per group (dpp): rounding per group of a row
            units = max(units // entry.weight_shape[0], 1) if units > entry.weight_shape[0] else units
        assert abs(entry.sparsity - want) <= 1 / (2 * units) + 1e-12, (key, entry.sparsity, want)


def test_allocation_refuses_global_scope_and_unknown_keys(make_cnn):
    method = build_method("magnitude", sparsity=0.5, scope="global")
    with pytest.raises(UsageError, match="global"):
        method.use_allocation(ALLOCATION)
    method = build_method("magnitude", sparsity=0.5)
    method.use_allocation({"nope.weight": 0.5})
    with pytest.raises(UsageError, match="nope.weight"):
        method.attach(make_cnn(0))
