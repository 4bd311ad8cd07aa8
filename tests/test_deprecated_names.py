"""Old public names still work, with a DeprecationWarning that names the new one."""

from __future__ import annotations

import pytest

import secateurs
from secateurs.methods import Horizon, build_method
from secateurs.structured import coupled_masks


def test_secateurs_load_is_load_shrunk():
    with pytest.warns(DeprecationWarning, match="load_shrunk"):
        assert secateurs.load is secateurs.load_shrunk
    with pytest.raises(AttributeError):
        secateurs.no_such_name  # noqa: B018


def test_method_ties_is_shared_groups(make_mlp):
    method = build_method("magnitude", sparsity=0.5)
    method.attach(make_mlp(0), horizon=Horizon(epochs=1, steps_per_epoch=1))
    with pytest.warns(DeprecationWarning, match="shared_groups"):
        assert method.ties is method.shared_groups


def test_old_coupled_mask_names_are_the_new_classes():
    assert coupled_masks.TiedGroup is coupled_masks.SharedGroup
    assert coupled_masks.CoupledFilterMask is coupled_masks.SharedGateMask
    assert coupled_masks.plan_ties is coupled_masks.plan_shared_groups
