"""The contract every registered method keeps, on the tiny CNN, at every granularity it supports.

A new method is tested here the day it registers. Give it the knobs it needs for a 3-epoch,
2-steps-per-epoch budget in ``METHOD_KWARGS``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from secateurs.core.granularity import NofM, parse_granularity
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import find_parametrizations
from secateurs.errors import UsageError
from secateurs.methods import METHODS, Horizon, PruningMethod, build_method, method_config_class

from ._loop import run

EPOCHS = 3
STEPS = 2
SPARSITY = 0.6
GRANULARITIES = ["unstructured", "kernel", "filter", "2:4"]

#: Method-specific config so that every method reaches its final mask within the tiny budget.
METHOD_KWARGS: dict[str, dict] = {
    "magnitude": {"prune_at": 0.5},
    "lottery": {"rounds": 2, "rewind_fraction": 0.0},
    "gmp": {"end": 0.75},
    "dpp": {"metric_samples": 8},
}

#: Whole-network procedures that need coupled channel groups and calibration data (filter granularity
#: only), so the per-tensor mask contract below does not apply; their own modules test them
#: (tests/methods/test_singularity.py).
WHOLE_NETWORK = {"singularity", "crl"}  # crl: a search on calibration data (tests/allocation/test_crl.py)
NAMES = [m for m in METHODS.names() if m not in WHOLE_NETWORK]


def declares(name: str, granularity: str) -> bool:
    """Whether method ``name`` declares support for ``granularity`` (its class's ``granularities``)."""
    return isinstance(parse_granularity(granularity), METHODS.get(name).granularities)


#: Every method at every granularity it declares: a refusal of one of these fails, it is never skipped.
CASES = [(m, g) for m in NAMES for g in GRANULARITIES if declares(m, g)]


def config_kwargs(name: str, granularity: str, seed: int = 0, sparsity: float | None = SPARSITY) -> dict:
    kwargs = dict(METHOD_KWARGS.get(name, {}), granularity=granularity, seed=seed)
    if parse_granularity(granularity).fixed_density is None:
        kwargs["sparsity"] = sparsity
    return kwargs


def build(name: str, granularity: str, seed: int = 0) -> PruningMethod:
    return build_method(name, **config_kwargs(name, granularity, seed))


@pytest.mark.parametrize("name", METHODS.names())
def test_each_method_declares_its_granularities(name):
    declared = vars(METHODS.get(name)).get("granularities")
    assert declared, f"{name} must declare the granularities it supports (class attribute granularities)"


@pytest.mark.parametrize(("name", "granularity"),
                         [(m, g) for m in METHODS.names() for g in GRANULARITIES if not declares(m, g)])
def test_an_undeclared_granularity_is_refused_up_front(name, granularity):
    with pytest.raises(UsageError, match="granularit"):
        build(name, granularity)


def trained(name, granularity, make_cnn, batches, *, seed=0, model_seed=0, **kwargs):
    method = build(name, granularity, seed)
    model = make_cnn(model_seed)
    run(method, model, batches, EPOCHS, **kwargs)
    return method, model


def target_sparsity(method: PruningMethod) -> float:
    return float(method.config.sparsity)


def assert_masks_equal(a: MaskSet, b: MaskSet) -> None:
    assert list(a) == list(b)
    for n in a:
        assert a[n].granularity == b[n].granularity and a[n].weight_shape == b[n].weight_shape
        assert torch.equal(a[n].mask, b[n].mask), n


@pytest.fixture
def batches(make_image_batches):
    return make_image_batches(STEPS)


# --------------------------------------------------------------------------- final masks


@pytest.mark.parametrize("name, granularity", CASES)
def test_finalize_reaches_target_and_squashes(name, granularity, make_cnn, batches, cnn_targets):
    method, model = trained(name, granularity, make_cnn, batches)
    gran = parse_granularity(granularity)
    s = target_sparsity(method)

    # Before finalize: eval-mode forward is deterministic and applies the hard masks.
    model.eval()
    x = batches[0][0]
    with torch.no_grad():
        out1, out2 = model(x), model(x)
    assert torch.equal(out1, out2)
    hard = method.hard_masks()
    for n, entry in hard.items():
        module_name, _, param = n.rpartition(".")
        effective = getattr(model.get_submodule(module_name), param)
        assert torch.all(effective[~entry.full()] == 0), n

    masks = method.finalize()
    assert isinstance(masks, MaskSet)
    assert list(masks) == cnn_targets
    assert_masks_equal(masks, hard)
    for n, entry in masks.items():
        assert entry.mask.dtype == torch.bool
        assert entry.granularity == gran
        assert entry.mask.shape == gran.unit_shape(entry.weight_shape)
        if method.config.scope == "group":
            # Exactly k of n in every group of the granularity (N:M, and methods such as dpp).
            rows = gran.group_view(entry.mask)
            n_in_group = rows.shape[1]
            assert torch.all(rows.sum(1) == n_in_group - round(s * n_in_group)), n
            assert abs(entry.sparsity - s) <= 1 / (2 * n_in_group) + 1e-12, (n, entry.sparsity)
        elif granularity == "unstructured":
            assert int((~entry.mask).sum()) == round(s * entry.numel), n
        else:
            assert abs(entry.sparsity - s) <= 1 / (2 * entry.mask.numel()) + 1e-12, (n, entry.sparsity)
        if isinstance(gran, NofM):
            assert torch.all(gran.group_view(entry.mask).sum(1) == gran.n), n

    # Squashed: plain keys, pruned weights exactly zero, kept weights untouched.
    assert list(find_parametrizations(model)) == []
    assert sorted(model.state_dict()) == sorted(make_cnn(0).state_dict())
    for n, entry in masks.items():
        w = model.get_parameter(n)
        full = entry.full()
        assert torch.all(w[~full] == 0), n
        assert int((w == 0).sum()) == entry.numel - entry.kept, n  # kept weights are not zero
    with torch.no_grad():
        torch.testing.assert_close(model(x), out1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_finalize_without_squash_keeps_parametrizations(name, make_cnn, batches, cnn_targets):
    method, model = trained(name, "unstructured", make_cnn, batches)
    masks = method.finalize(squash=False)
    assert sorted(n for n, _ in find_parametrizations(model)) == sorted(cnn_targets)
    assert_masks_equal(masks, method.hard_masks())


# --------------------------------------------------------------------------- state, seeds, resume


@pytest.mark.parametrize("name, granularity", CASES)
def test_checkpoint_reproduces_hard_masks(name, granularity, make_cnn, batches, tmp_path):
    method, model = trained(name, granularity, make_cnn, batches)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "method": method.state_dict()}, path)
    state = torch.load(path, weights_only=True)  # checkpoints hold tensors and plain containers only

    fresh_method = build(name, granularity)
    fresh_model = make_cnn(99)  # different initial weights
    fresh_method.attach(fresh_model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    fresh_model.load_state_dict(state["model"])
    fresh_method.load_state_dict(state["method"])
    assert_masks_equal(fresh_method.hard_masks(), method.hard_masks())
    model.eval()
    fresh_model.eval()
    x = batches[0][0]
    with torch.no_grad():
        assert torch.equal(fresh_model(x), model(x))
    assert_masks_equal(fresh_method.finalize(), method.finalize())


@pytest.mark.parametrize("name, granularity", CASES)
def test_same_seed_same_weights_and_masks(name, granularity, make_cnn, batches):
    m1, model1 = trained(name, granularity, make_cnn, batches, seed=3)
    m2, model2 = trained(name, granularity, make_cnn, batches, seed=3)
    assert_masks_equal(m1.finalize(), m2.finalize())
    s1, s2 = model1.state_dict(), model2.state_dict()
    assert list(s1) == list(s2)
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


@pytest.mark.parametrize("stop", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_resume_matches_uninterrupted_run(name, stop, make_cnn, batches):
    granularity = "unstructured"
    full_method, full_model = trained(name, granularity, make_cnn, batches)

    first = build(name, granularity)
    model = make_cnn(0)
    run(first, model, batches, EPOCHS, stop_epoch=stop)
    state = copy.deepcopy({"model": model.state_dict(), "method": first.state_dict()})

    resumed = build(name, granularity)
    resumed_model = make_cnn(7)
    resumed.attach(resumed_model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    resumed_model.load_state_dict(state["model"])
    resumed.load_state_dict(state["method"])
    run(resumed, resumed_model, batches, EPOCHS, attach=False, start_epoch=stop)

    assert_masks_equal(resumed.hard_masks(), full_method.hard_masks())
    a, b = resumed_model.state_dict(), full_model.state_dict()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, -1.0, float("nan")])
@pytest.mark.parametrize("name", NAMES)
def test_sparsity_outside_unit_interval_is_a_usage_error(name, bad):
    with pytest.raises(UsageError):
        build_method(name, **dict(METHOD_KWARGS.get(name, {}), sparsity=bad))


@pytest.mark.parametrize("name", NAMES)
def test_missing_sparsity_is_a_usage_error_unless_implied(name):
    kwargs = dict(METHOD_KWARGS.get(name, {}))
    with pytest.raises(UsageError):
        build_method(name, **kwargs)
    method = build_method(name, granularity="2:4", **kwargs)
    assert method.config.sparsity == pytest.approx(0.5) and method.config.scope == "group"
    with pytest.raises(UsageError):
        build_method(name, granularity="2:4", sparsity=0.7, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_scope_and_granularity_are_usage_errors(name):
    kwargs = dict(METHOD_KWARGS.get(name, {}), sparsity=0.5)
    with pytest.raises(UsageError):
        build_method(name, scope="layer", **kwargs)
    with pytest.raises(UsageError):
        build_method(name, granularity="channelwise", **kwargs)


def test_unknown_method_is_a_usage_error():
    with pytest.raises(UsageError, match="known"):
        build_method("no-such-method", sparsity=0.5)
    with pytest.raises(UsageError):
        method_config_class("no-such-method")


@pytest.mark.parametrize("name, granularity", CASES)
def test_config_round_trips_through_plain_dict(name, granularity):
    method = build(name, granularity)
    plain = method.config.to_dict()
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in plain.values())
    assert plain["granularity"] == granularity
    again = build_method(name, **plain)
    assert again.config == method.config
    assert type(again) is type(method) and again.registry_name == name


def test_aliases_resolve_to_the_same_method():
    for name in METHODS.names():
        for alias in METHODS.aliases_of(name):
            assert type(build_method(alias, **dict(METHOD_KWARGS.get(name, {}), sparsity=0.5))) is METHODS.get(name)


# --------------------------------------------------------------------------- attach


@pytest.mark.parametrize("name", NAMES)
def test_attach_twice_raises(name, make_cnn):
    method = build(name, "unstructured")
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    with pytest.raises(RuntimeError):
        method.attach(make_cnn(1), horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))


@pytest.mark.parametrize("name", NAMES)
def test_attach_rejects_unsupported_shapes_without_touching_the_model(name):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6), torch.nn.Linear(6, 2))
    method = build_method(name, granularity="2:4", **METHOD_KWARGS.get(name, {}))
    with pytest.raises(UsageError, match="0.weight"):
        method.attach(model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))  # 0.weight: 6 inputs
    assert list(find_parametrizations(model)) == []


@pytest.mark.parametrize("name", NAMES)
def test_attach_with_explicit_targets(name, make_cnn):
    from secateurs.core.targets import select_targets

    model = make_cnn(0)
    targets = select_targets(model, include=["conv2.weight", "fc.weight"])
    method = build(name, "unstructured")
    method.attach(model, targets=targets, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    assert sorted(n for n, _ in find_parametrizations(model)) == ["conv2.weight", "fc.weight"]
    assert sorted(method.hard_masks()) == ["conv2.weight", "fc.weight"]


@pytest.mark.parametrize("name", NAMES)
def test_mask_param_groups_cover_mask_parameters(name, make_cnn):
    method = build(name, "unstructured")
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    in_groups = [id(p) for g in method.mask_param_groups() for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in method.mask_parameters())
    model_params = {id(p) for p in model.parameters()}
    assert all(i in model_params for i in in_groups)  # learned mask state lives in the model


@pytest.mark.parametrize("name", NAMES)
def test_an_allocated_config_needs_no_sparsity_but_an_allocation(name):
    kwargs = dict(METHOD_KWARGS.get(name, {}))
    method = build_method(name, allocated=True, **kwargs)
    assert method.config.sparsity is None
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    with pytest.raises(UsageError, match="allocation"):
        method.attach(model)
