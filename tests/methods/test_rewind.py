"""The shared round schedule and snapshot/rewind of the ticket-searching methods."""

from __future__ import annotations

import pytest
import torch

from secateurs.methods import Horizon, build_method
from secateurs.methods.rewind import rewind_, round_sparsity, snapshot


@pytest.mark.parametrize("rounds", [1, 3, 5])
def test_round_sparsity_removes_the_same_fraction_of_what_is_left(rounds):
    values = [round_sparsity(0.9, r, rounds) for r in range(rounds + 1)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.9, abs=1e-12)
    kept = [1.0 - v for v in values]
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert ratios == pytest.approx([ratios[0]] * rounds)


def test_rewind_restores_weights_and_buffers_but_keeps_the_masks(make_cnn):
    model = make_cnn(0)
    method = build_method("magnitude", sparsity=0.5)
    method.attach(model, horizon=Horizon(epochs=1, steps_per_epoch=1))
    saved = snapshot(model)
    assert saved and not any(".0.mask" in k for k in saved)  # mask buffers are left out
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.bn1.running_mean.add_(1.0)
    method.on_phase_start(0)  # one-shot magnitude prunes here: the masks change
    masks = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".0.mask")}
    rewind_(model, saved)
    after = model.state_dict()
    for k, v in saved.items():
        assert torch.equal(after[k], before[k]), k
    for k, v in masks.items():
        assert torch.equal(after[k], v), k
    assert any(not torch.equal(v, before[k]) for k, v in masks.items())
