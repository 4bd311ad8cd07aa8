"""Evaluation computes each masked weight once, with results identical to recomputing it per batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.core.parametrize import find_parametrizations
from secateurs.methods import Horizon, build_method
from secateurs.train.evaluate import evaluate


def _reference_evaluate(model: nn.Module, batches) -> dict[str, float]:
    """The straightforward loop: every batch recomputes the parametrized weights."""
    model.eval()
    loss_sum, correct, count = torch.zeros((), dtype=torch.float64), 0, 0
    with torch.no_grad():
        for x, y in batches:
            out = model(x)
            loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum").double()
            correct += int((out.argmax(1) == y).sum())
            count += y.numel()
    model.train()
    return {"loss": float(loss_sum) / count, "accuracy": 100.0 * correct / count}


@pytest.mark.parametrize(("name", "options"), [
    ("dpp", {}), ("gibbs", {}), ("gibbs", {"granularity": "filter"}), ("cs", {}), ("gmp", {}),
])
def test_cached_evaluation_equals_per_batch_recomputation(name, options, make_cnn, make_image_batches):
    model = make_cnn()
    batches = make_image_batches(n_batches=4)
    method = build_method(name, sparsity=0.5, **options)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=4))
    optimizer = torch.optim.SGD(method.param_groups(), lr=0.05)
    for step, (x, y) in enumerate(batches[:3], start=1):  # move weights and mask state off their start
        loss = nn.functional.cross_entropy(model(x), y)
        if (extra := method.penalty()) is not None:
            loss = loss + extra
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.on_step(step)

    calls = []
    hooks = [p.register_forward_hook(lambda *_: calls.append(1)) for _, p in find_parametrizations(model)]
    got = evaluate(model, batches, amp=False)
    for h in hooks:
        h.remove()
    assert len(calls) == len(hooks)  # once per masked tensor, not once per batch
    assert got == _reference_evaluate(model, batches)
    assert model.training  # the previous mode is restored
