"""Mask state moved into its own optimizer groups after the optimizer and its schedulers were built."""

from __future__ import annotations

import pytest
import torch

from secateurs.integrations.optimizer_groups import add_mask_groups
from secateurs.methods import Horizon, build_method


def _attached(make_mlp, name="continuous-sparsification", **options):
    model = make_mlp(0)
    method = build_method(name, sparsity=0.5, **options)
    method.attach(model, horizon=Horizon(epochs=4, steps_per_epoch=2))
    return model, method


def _ids(params):
    return {id(p) for p in params}


def test_scores_leave_the_decayed_group_for_one_of_their_own(make_mlp):
    model, method = _attached(make_mlp)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert add_mask_groups(optimizer, method.mask_param_groups()) == 1
    weights, scores = optimizer.param_groups
    assert _ids(scores["params"]) == _ids(method.mask_parameters())
    assert not _ids(weights["params"]) & _ids(method.mask_parameters())
    assert _ids(weights["params"]) | _ids(scores["params"]) == _ids(model.parameters())
    assert scores["weight_decay"] == 0.0 and scores["momentum"] == 0.9 and scores["lr"] == 0.1
    assert add_mask_groups(optimizer, method.mask_param_groups()) == 0  # already in place


def test_groups_built_with_param_groups_are_left_alone(make_mlp):
    model, method = _attached(make_mlp)
    optimizer = torch.optim.SGD(method.param_groups(weight_decay=5e-4), lr=0.1)
    layout = [_ids(g["params"]) for g in optimizer.param_groups]
    assert add_mask_groups(optimizer, method.mask_param_groups()) == 0
    assert [_ids(g["params"]) for g in optimizer.param_groups] == layout


def test_a_group_with_its_own_rate_gets_it_and_schedulers_follow(make_mlp):
    model, method = _attached(make_mlp)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    halve = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    wanted = [{**g, "lr": 0.0} for g in method.mask_param_groups()]  # e.g. DPP's logits under their own Adam
    add_mask_groups(optimizer, wanted, [halve, cosine])
    assert halve.base_lrs == [0.1, 0.0] and len(halve.lr_lambdas) == 2 and cosine.base_lrs == [0.1, 0.0]
    for _ in range(3):
        optimizer.step()
        halve.step()
        cosine.step()
    weights, masks = optimizer.param_groups
    assert masks["lr"] == 0.0 and weights["lr"] < 0.1


def test_one_cycle_reads_the_copied_group_keys(make_mlp):
    model, method = _attached(make_mlp)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    add_mask_groups(optimizer, method.mask_param_groups(), [one_cycle])
    for _ in range(4):
        optimizer.step()
        one_cycle.step()
    weights, masks = optimizer.param_groups
    assert masks["lr"] == pytest.approx(weights["lr"]) and masks["momentum"] == pytest.approx(weights["momentum"])


def test_a_method_without_mask_state_changes_nothing(make_mlp):
    model, method = _attached(make_mlp, "gmp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)
    assert add_mask_groups(optimizer, method.mask_param_groups()) == 0
    assert len(optimizer.param_groups) == 1
