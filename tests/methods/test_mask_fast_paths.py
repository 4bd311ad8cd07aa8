"""Fast paths of the mask parametrizations give exactly (bit for bit) what the plain formulas give."""

from __future__ import annotations

import pytest
import torch

from secateurs.core.granularity import Kernel, Unstructured
from secateurs.core.gumbel import k_hot
from secateurs.methods import Horizon, build_method
from secateurs.methods._cs_gate import CSGate, _ScaleGrad, pruned_fraction


def _reference_topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    idx = torch.sort(logits.detach(), dim=1, descending=True, stable=True).indices[:, :k]
    return k_hot(idx, logits.shape[1])


def test_dpp_hard_mask_is_reused_only_while_the_logits_and_k_stay_the_same(make_cnn):
    model = make_cnn()
    method = build_method("dpp", sparsity=0.5)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=3))
    _, mask, _ = next(iter(method.layers()))
    first = mask.grouped_hard()
    assert torch.equal(first, _reference_topk(mask.logits, mask.k))
    assert mask.grouped_hard() is first  # nothing changed: the same tensor
    with torch.no_grad():
        mask.logits.copy_(-mask.logits)  # an in-place change (an optimizer step, a loaded state)
    assert torch.equal(mask.grouped_hard(), _reference_topk(mask.logits, mask.k))
    mask.k -= 1
    assert torch.equal(mask.grouped_hard(), _reference_topk(mask.logits, mask.k))
    assert int(mask.grouped_hard().sum(1).unique()) == mask.k


def test_dpp_fixed_stretch_trains_at_the_top_k_of_the_logits_with_identical_outputs(make_cnn, make_image_batches):
    model = make_cnn()
    method = build_method("dpp", sparsity=0.5, fix_fraction=0.4)
    method.attach(model, horizon=Horizon(epochs=1, steps_per_epoch=5))
    method.on_epoch_start(0)
    x, _ = make_image_batches(n_batches=1)[0]
    method.on_step(method.fix_step)  # the masks are fixed from here on
    for _, mask, weight in method.layers():
        assert mask.noise_scale == 0 and not mask.logits.requires_grad
        sampled = mask.unit_mask(weight)  # training mode
        expected = mask.grouping.from_groups(_reference_topk(mask.logits, mask.k))
        assert torch.equal(sampled, expected)
    out = model(x)
    for _, mask, _ in method.layers():
        mask.train(False)
    assert torch.equal(out, model(x))  # the fixed training mask is the evaluation mask


def _where_gate(gate: CSGate, weight: torch.Tensor) -> torch.Tensor:
    """CSGate's gate written the portable way: both branches and a torch.where."""
    fixed = gate.fixed.to(weight.dtype) * gate.scale
    live = gate.soft_gate() if gate.training else gate.sign_mask().to(weight.dtype) * gate.scale
    return torch.where(gate.frozen, fixed, live)


@pytest.mark.parametrize("granularity", [Unstructured(), Kernel()])
@pytest.mark.parametrize("grad_scale", [1.0, 0.1])
@pytest.mark.parametrize("state", ["training", "eval", "frozen", "frozen-with-grad"])
def test_cs_gate_values_and_gradients_equal_the_where_formula(granularity, grad_scale, state):
    shape = torch.Size((6, 4, 3, 3))
    g = torch.Generator().manual_seed(0)
    start = torch.randn(shape, generator=g)
    weights = [start.clone().requires_grad_() for _ in range(2)]
    gates = []
    for _ in range(2):
        gate = CSGate(granularity, shape, s0=0.0, lam=1e-3, grad_scale=grad_scale)
        with torch.no_grad():
            gate.scores.copy_(torch.randn(gate.scores.shape, generator=torch.Generator().manual_seed(1)))
            gate.beta.fill_(7.0)
        if state.startswith("frozen"):
            gate.freeze_(gate.scores.detach() > 0.3)
            gate.scores.requires_grad_(state == "frozen-with-grad")
        gate.train(state != "eval")
        gates.append(gate)
    upstream = torch.randn(shape, generator=g)
    fast = gates[0](weights[0])
    plain = weights[1] * granularity.broadcastable(_where_gate(gates[1], weights[1]), shape)
    assert torch.equal(fast, plain)
    (fast * upstream).sum().backward()
    (plain * upstream).sum().backward()
    assert torch.equal(weights[0].grad, weights[1].grad)
    a, b = gates[0].scores.grad, gates[1].scores.grad
    assert (a is None and b is None) or torch.equal(a, b)


def _plain_soft_gate(gate: CSGate) -> torch.Tensor:
    scores = gate.scores if gate.grad_scale == 1.0 else _ScaleGrad.apply(gate.scores, gate.grad_scale)
    return torch.sigmoid(gate.beta * scores) * gate.scale


@pytest.mark.parametrize("granularity", [Unstructured(), Kernel()])
@pytest.mark.parametrize("grad_scale", [1.0, 0.1])
def test_cs_penalty_reusing_the_forward_gate_has_the_gradient_of_a_recomputed_gate(granularity, grad_scale):
    shape = torch.Size((5, 3, 3, 3))
    g = torch.Generator().manual_seed(2)
    start, upstream = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    scores = torch.randn(granularity.unit_shape(shape), generator=g)
    grads = []
    for reuse in (True, False):
        gate = CSGate(granularity, shape, s0=0.0, lam=1e-3, grad_scale=grad_scale)
        with torch.no_grad():
            gate.scores.copy_(scores)
            gate.beta.fill_(3.0)
        weight = start.clone().requires_grad_()
        out = gate(weight)
        l1 = gate.l1() if reuse else _plain_soft_gate(gate).sum() * gate.unit_size
        assert gate._step_gate is None or not reuse  # used once, then dropped
        ((out * upstream).sum() + 0.37 * l1).backward()
        grads.append((out.detach(), l1.detach(), weight.grad, gate.scores.grad))
    for fast, plain in zip(*grads, strict=True):
        assert torch.equal(fast, plain)


def test_cs_penalty_recomputes_the_gate_when_the_state_changed_since_the_forward_pass():
    gate = CSGate(Unstructured(), torch.Size((4, 6)), s0=0.0, lam=1e-3)
    gate(torch.randn(4, 6))
    with torch.no_grad():
        gate.beta.fill_(9.0)  # the method pushed a new β after the forward pass
    assert torch.equal(gate.l1(), _plain_soft_gate(gate).sum() * gate.unit_size)


@pytest.mark.parametrize("size", [1, 7, 1000, 50_001])
def test_pruned_fraction_equals_the_mean_of_the_float_mask(size):
    g = torch.Generator().manual_seed(size)
    for shift in (-1.0, 0.0, 0.3, 2.0):
        scores = torch.randn(size, generator=g) + shift
        scores[: size // 3] = 0.0
        scores[size // 3: size // 2] = -0.0
        expected = (scores <= 0).float().mean()
        got = pruned_fraction(scores)
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@pytest.mark.parametrize("state", ["live", "frozen", "frozen-with-grad"])
def test_cs_penalty_term_equals_the_where_formula(state):
    gate = CSGate(Unstructured(), torch.Size((4, 6)), s0=0.0, lam=1e-3)
    if state != "live":
        gate.freeze_(torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) > 0.5)
        gate.scores.requires_grad_(state == "frozen-with-grad")
    got = gate.penalty_term()
    expected = torch.where(gate.frozen, 0.0, gate.log_lam.exp() * (_plain_soft_gate(gate).sum() * gate.unit_size))
    assert got.dtype == expected.dtype and torch.equal(got, expected)
    assert got.requires_grad == expected.requires_grad
