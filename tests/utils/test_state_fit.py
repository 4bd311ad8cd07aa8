"""load_fitting_state: an exact fit loads; any mismatch is one UsageError and changes nothing."""

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.utils.state_fit import load_fitting_state


def test_exact_fit_loads_every_tensor():
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    load_fitting_state(target, source.state_dict(), mismatch="m")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected extra"),
    (lambda s: s.pop("bias"), "missing bias"),
    (lambda s: s.update(weight=torch.zeros(2, 4)), "weight is (2, 4), the model has (2, 3)"),
])
def test_mismatch_is_one_line_and_leaves_the_model_untouched(edit, problem):
    target = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = {k: torch.ones_like(v) for k, v in target.state_dict().items()}
    edit(state)
    with pytest.raises(UsageError) as caught:
        load_fitting_state(target, state, mismatch="the weights in F do not fit")
    assert str(caught.value) == f"the weights in F do not fit ({problem})"
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
