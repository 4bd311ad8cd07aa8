"""Baselines: gradual magnitude (gmp), lottery tickets (IMP with rewinding), one-shot magnitude, random."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from secateurs.core.granularity import Filter, Kernel, Unstructured
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import original_name
from secateurs.core.schedules import polynomial
from secateurs.core.targets import select_targets
from secateurs.errors import UsageError
from secateurs.methods import Horizon, build_method

from ._loop import run

FAST = settings(max_examples=30, deadline=None)


def assert_monotone(history: list[MaskSet]) -> None:
    """A unit pruned at some point is pruned ever after."""
    for before, after in zip(history, history[1:]):
        for n in before:
            revived = after[n].mask & ~before[n].mask
            assert not revived.any(), f"{n}: {int(revived.sum())} pruned units came back"


def per_tensor_zeros(masks: MaskSet) -> dict[str, int]:
    return {n: int((~e.full()).sum()) for n, e in masks.items()}


# =========================================================================== gmp


@pytest.mark.parametrize("pretrained", [False, True])
def test_gmp_sparsity_at_follows_the_cubic_schedule(make_cnn, pretrained):
    method = build_method("gmp", sparsity=0.8)
    method.attach(make_cnn(0), horizon=Horizon(epochs=10, steps_per_epoch=10, pretrained=pretrained))
    start, end = (0 if pretrained else 10), 70  # default start 10 % from scratch, 0 from a trained model; end 70 %
    values = [method.sparsity_at(s) for s in range(0, 121)]
    for step, v in enumerate(values):
        if step <= start:
            assert v == 0.0
        elif step >= end:
            assert v == pytest.approx(0.8, abs=1e-12)
        else:
            t = (step - start) / (end - start)
            assert v == pytest.approx(0.8 - 0.8 * (1 - t) ** 3, abs=1e-12)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert 0.0 < values[start + 1] < values[(start + end) // 2] < 0.8


def test_gmp_custom_ramp_and_initial_sparsity(make_cnn):
    method = build_method("gmp", sparsity=0.9, start=0.2, end=0.5, initial_sparsity=0.3, power=2.0)
    method.attach(make_cnn(0), horizon=Horizon(epochs=10, steps_per_epoch=10))
    f = polynomial(20, 50, 0.3, 0.9, 2.0)
    for step in (0, 20, 25, 35, 49, 50, 99):
        assert method.sparsity_at(step) == pytest.approx(f(step))
    assert method.sparsity_at(0) == pytest.approx(0.3) and method.sparsity_at(50) == pytest.approx(0.9)


def test_gmp_masks_follow_the_schedule_at_update_steps(make_cnn, make_image_batches):
    # 4 epochs x 5 steps = 20 steps: ramp from step 2 to step 14, updates every (14 - 2) // 4 = 3 steps.
    batches = make_image_batches(5)
    method = build_method("gmp", sparsity=0.75, updates=4)
    model = make_cnn(0)
    history: dict[int, MaskSet] = {}
    run(method, model, batches, 4, on_step=lambda step: history.__setitem__(step, method.hard_masks()),
        on_phase_start=lambda i, step: history.__setitem__(step, method.hard_masks()))
    update_steps = [2, 5, 8, 11, 14]
    numels = {n: e.numel for n, e in history[0].items()}
    last = 0
    for step in range(0, 21):
        if step in update_steps:
            last = step
        expected = method.sparsity_at(last) if step >= 2 else 0.0
        for n, zeros in per_tensor_zeros(history[step]).items():
            assert zeros == round(expected * numels[n]), (step, n)
    assert history[20].sparsity() == pytest.approx(0.75, abs=1e-3)
    assert_monotone([history[s] for s in range(21)])


@pytest.mark.parametrize("scope", ["tensor", "global", "group"])
@pytest.mark.parametrize("granularity", ["unstructured", "kernel", "filter"])
def test_gmp_masks_are_monotone_along_training(make_cnn, make_image_batches, granularity, scope):
    batches = make_image_batches(4)
    method = build_method("gmp", sparsity=0.7, granularity=granularity, scope=scope, start=0.0, end=0.8)
    model = make_cnn(0)
    history = []
    run(method, model, batches, 4, lr=0.2, on_step=lambda step: history.append(method.hard_masks()))
    assert len(history) == 16
    assert_monotone(history)
    assert history[0].sparsity() < history[-1].sparsity()
    assert history[-1].sparsity() == pytest.approx(0.7, abs=0.1)


def test_gmp_two_four_ramps_to_exactly_two_of_four(make_cnn, make_image_batches):
    method = build_method("gmp", granularity="2:4", start=0.0, end=0.5)
    model = make_cnn(0)
    history = []
    run(method, model, make_image_batches(3), 4, on_step=lambda s: history.append(method.hard_masks()))
    assert_monotone(history)
    for e in history[-1].values():
        assert torch.all(e.granularity.group_view(e.mask).sum(1) == 2)


def test_gmp_too_short_a_budget_is_a_usage_error(make_cnn):
    method = build_method("gmp", sparsity=0.5)
    with pytest.raises(UsageError):
        method.attach(make_cnn(0), horizon=Horizon(epochs=1, steps_per_epoch=1))


@pytest.mark.parametrize(
    "kwargs", [{"end": 0.0}, {"end": 1.5}, {"start": 0.8, "end": 0.7}, {"start": -0.1}, {"updates": 0}]
)
def test_gmp_config_validation(kwargs):
    with pytest.raises(UsageError):
        build_method("gmp", sparsity=0.5, **kwargs)


# =========================================================================== lottery


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights and buffers, without the mask state of parametrizations."""
    out = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        if "parametrizations" in parts and parts[-1] != "original":
            continue
        out[k] = v.detach().clone()
    return out


def assert_states_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("rewind_fraction", [0.0, 0.5])
def test_lottery_rewinds_weights_and_batchnorm_buffers(make_cnn, make_image_batches, rewind_fraction):
    batches = make_image_batches(4)
    method = build_method("lottery", sparsity=0.75, rounds=2, rewind_fraction=rewind_fraction)
    model = make_cnn(0)
    rewind_step = int(rewind_fraction * 1 * len(batches))  # first phase: 1 epoch
    snapshots: dict[str, dict] = {}
    phase_states: dict[int, dict] = {}
    masks_at_phase: dict[int, MaskSet] = {}

    def at_step(step):
        if step == rewind_step:
            snapshots["rewind"] = model_state(model)
        if step == len(batches):
            snapshots["end_of_phase0"] = model_state(model)

    def at_phase(i, step):
        if i == 0 and rewind_step == 0:
            snapshots["rewind"] = model_state(model)
        phase_states[i] = model_state(model)
        masks_at_phase[i] = method.hard_masks()

    run(method, model, batches, 3, on_step=at_step, on_phase_start=at_phase)
    assert [p.epochs for p in method.phases()] == [1, 1, 1]
    rewind = snapshots["rewind"]
    assert any(k.endswith("running_mean") for k in rewind)
    # Training moved weights and BatchNorm statistics away from the rewind point ...
    moved = snapshots["end_of_phase0"]
    assert any(not torch.equal(moved[k], rewind[k]) for k in rewind if "running_mean" in k)
    assert any(not torch.equal(moved[k], rewind[k]) for k in rewind if k.endswith("original"))
    # ... and every later phase starts from exactly the rewind point (weights, BN buffers, counters).
    for i in (1, 2):
        assert_states_equal(phase_states[i], rewind)
    # Masks tighten round by round: 1 - 0.25 ** (r / 2).
    assert masks_at_phase[0].sparsity() == 0.0
    for i in (1, 2):
        expected = 1 - 0.25 ** (i / 2)
        for n, zeros in per_tensor_zeros(masks_at_phase[i]).items():
            assert zeros == round(expected * masks_at_phase[i][n].numel), (i, n)
    assert_monotone([masks_at_phase[0], masks_at_phase[1], masks_at_phase[2], method.hard_masks()])


def test_lottery_prunes_by_trained_magnitude_not_rewound_weights(make_cnn, make_image_batches):
    batches = make_image_batches(3)
    method = build_method("lottery", sparsity=0.5, rounds=1, rewind_fraction=0.0)
    model = make_cnn(0)
    trained: dict[str, torch.Tensor] = {}

    def at_step(step):
        if step == len(batches):  # end of the dense phase
            for t in method.targets:
                w = model.get_submodule(t.module_name).parametrizations.weight.original
                trained[t.name] = w.detach().clone()

    masks_after_prune = {}
    run(method, model, batches, 2, on_step=at_step,
        on_phase_start=lambda i, s: masks_after_prune.update(method.hard_masks()) if i == 1 else None)
    for n, w in trained.items():
        keep = masks_after_prune[n].mask
        assert w.abs()[keep].min() >= w.abs()[~keep].max()


@FAST
@given(epochs=st.integers(1, 40), rounds=st.integers(1, 8), pretrained=st.booleans())
def test_lottery_phases_sum_to_the_budget(epochs, rounds, pretrained):
    method = build_method("lottery", sparsity=0.8, rounds=rounds)
    method.horizon = Horizon(epochs=epochs, steps_per_epoch=2, pretrained=pretrained)
    n = rounds + (0 if pretrained else 1)
    if epochs < n:
        with pytest.raises(UsageError):
            method.phases()
        return
    phases = method.phases()
    assert len(phases) == n
    assert sum(p.epochs for p in phases) == epochs
    assert all(p.epochs >= 1 for p in phases)
    assert phases[-1].epochs == max(p.epochs for p in phases)  # the final ticket trains longest
    assert len({p.name for p in phases}) == n


@pytest.mark.parametrize("pretrained, epochs", [(False, 3), (True, 2)])
def test_lottery_with_too_few_epochs_is_a_usage_error(make_cnn, pretrained, epochs):
    method = build_method("lottery", sparsity=0.8, rounds=3)
    model = make_cnn(0)
    with pytest.raises(UsageError, match="epochs"):
        method.attach(model, horizon=Horizon(epochs=epochs, steps_per_epoch=2, pretrained=pretrained))
    assert not any("parametrizations" in k for k in model.state_dict())


def test_lottery_from_pretrained_prunes_first_and_rewinds_to_the_trained_model(make_cnn, make_image_batches):
    batches = make_image_batches(3)
    method = build_method("lottery", sparsity=0.75, rounds=2)
    model = make_cnn(0)
    start_state = model_state(model)  # parameter names change once attached; compare by position
    states, masks = {}, {}

    def at_phase(i, step):
        states[i] = model_state(model)
        masks[i] = method.hard_masks()

    run(method, model, batches, 2, pretrained=True, on_phase_start=at_phase)
    assert [p.epochs for p in method.phases()] == [1, 1]
    assert masks[0].sparsity() == pytest.approx(0.5, abs=1e-3)  # pruned at the first phase start
    assert method.hard_masks().sparsity() == pytest.approx(0.75, abs=1e-3)
    # The rewind point is the trained model itself: both phases start from the weights it came with.
    as_plain = {original_name(k): v for k, v in states[0].items()}
    assert_states_equal(as_plain, start_state)
    assert_states_equal(states[1], states[0])


def test_lottery_round_sparsity():
    method = build_method("lottery", sparsity=0.936, rounds=3)
    assert method.round_sparsity(3) == pytest.approx(0.936)
    assert method.round_sparsity(1) == pytest.approx(1 - 0.064 ** (1 / 3))
    # Each round removes the same fraction of what is left.
    d = [1 - method.round_sparsity(r) for r in range(4)]
    assert d[1] / d[0] == pytest.approx(d[2] / d[1]) == pytest.approx(d[3] / d[2])


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"rewind_fraction": 1.0}, {"rewind_fraction": -0.1}])
def test_lottery_config_validation(kwargs):
    with pytest.raises(UsageError):
        build_method("lottery", sparsity=0.5, **kwargs)


def test_imp_alias():
    assert type(build_method("imp", sparsity=0.5)) is type(build_method("lottery", sparsity=0.5))


# =========================================================================== magnitude


def assert_magnitude_choice(method, granularity_obj) -> None:
    for name, p, w in method.weights():
        keep = p.mask
        units = granularity_obj.reduce(w.detach())
        if keep.any() and (~keep).any():
            assert units[keep].min() >= units[~keep].max(), name


@pytest.mark.parametrize("granularity", ["unstructured", "kernel", "filter"])
def test_magnitude_from_pretrained_prunes_at_phase_start(make_cnn, make_image_batches, granularity):
    method = build_method("magnitude", sparsity=0.5, granularity=granularity)
    model = make_cnn(0)
    seen = {}

    def at_phase(i, step):
        seen["masks"] = method.hard_masks()
        assert_magnitude_choice(method, method.config.granularity)

    run(method, model, make_image_batches(2), 2, pretrained=True, on_phase_start=at_phase)
    assert method.prune_step == 0
    for n, e in seen["masks"].items():
        assert abs(e.sparsity - 0.5) <= 1 / (2 * e.mask.numel()) + 1e-12, n
    assert_monotone([seen["masks"], method.hard_masks()])
    assert torch.equal(seen["masks"]["conv1.weight"].mask, method.hard_masks()["conv1.weight"].mask)


@pytest.mark.parametrize("epochs, prune_epoch", [(4, 2), (6, 3), (2, 1), (1, 0)])
def test_magnitude_from_scratch_prunes_at_half_the_budget(make_cnn, make_image_batches, epochs, prune_epoch):
    batches = make_image_batches(2)
    method = build_method("magnitude", sparsity=0.6)
    model = make_cnn(0)
    history = {}

    def at_step(step):
        history[step] = method.hard_masks()
        if step == prune_epoch * len(batches):
            assert_magnitude_choice(method, Unstructured())

    run(method, model, batches, epochs, on_step=at_step,
        on_phase_start=lambda i, s: history.__setitem__(0, method.hard_masks()))
    assert method.prune_step == prune_epoch * len(batches)
    for step, masks in history.items():
        if step < method.prune_step:
            assert masks.sparsity() == 0.0, step
        else:
            for n, zeros in per_tensor_zeros(masks).items():
                assert zeros == round(0.6 * masks[n].numel), (step, n)
    # Pruned once: the mask never changes after the prune.
    after = [history[s] for s in sorted(history) if s >= method.prune_step]
    for m in after[1:]:
        assert all(torch.equal(m[n].mask, after[0][n].mask) for n in m)


def test_magnitude_prune_at_and_validation(make_cnn):
    method = build_method("magnitude", sparsity=0.5, prune_at=0.25)
    method.attach(make_cnn(0), horizon=Horizon(epochs=8, steps_per_epoch=5))
    assert method.prune_step == 10
    late = build_method("magnitude", sparsity=0.5, prune_at=0.99)
    late.attach(make_cnn(0), horizon=Horizon(epochs=8, steps_per_epoch=5))
    assert late.prune_step == 35  # at least one epoch is left to fine-tune
    for bad in (-0.1, 1.0):
        with pytest.raises(UsageError):
            build_method("magnitude", sparsity=0.5, prune_at=bad)


def test_magnitude_group_scope_keeps_k_of_every_row(make_cnn):
    method = build_method("magnitude", sparsity=0.75, scope="group", prune_at=0.0)
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=1))
    method.on_phase_start(0)
    for n, e in method.hard_masks().items():
        rows = e.mask.reshape(e.mask.shape[0], -1)
        k = rows.shape[1] - round(0.75 * rows.shape[1])
        assert torch.all(rows.sum(1) == k), n


# =========================================================================== global scope


@pytest.mark.parametrize("name", ["magnitude", "gmp", "random"])
def test_global_scope_exact_overall_count_with_uneven_layers(make_cnn, make_image_batches, name):
    model = make_cnn(0)
    with torch.no_grad():
        model.conv1.weight.mul_(10.0)  # one layer of much larger weights survives better
        model.fc1.weight.mul_(0.1)
    kwargs = {"magnitude": {"prune_at": 0.0}, "gmp": {"start": 0.0, "end": 0.5}, "random": {}}[name]
    method = build_method(name, sparsity=0.5, scope="global", **kwargs)
    run(method, model, make_image_batches(2), 2, lr=0.0, pretrained=True)
    masks = method.hard_masks()
    total = sum(e.numel for e in masks.values())
    zeros = per_tensor_zeros(masks)
    assert sum(zeros.values()) == round(0.5 * total)
    per_layer = {n: masks.sparsity(n) for n in masks}
    assert len({round(s, 3) for s in per_layer.values()}) > 1  # not the same per layer
    if name != "random":
        assert per_layer["conv1.weight"] < 0.5 < per_layer["fc1.weight"]
        originals = {n: w.detach().abs() for n, _, w in method.weights()}
        kept = torch.cat([originals[n][e.full()] for n, e in masks.items()])
        dropped = torch.cat([originals[n][~e.full()] for n, e in masks.items()])
        assert dropped.max() <= kept.min()


@pytest.mark.parametrize("granularity", ["kernel", "filter"])
def test_global_structured_scope_within_one_unit(make_cnn, granularity):
    method = build_method("magnitude", sparsity=0.4, scope="global", granularity=granularity, prune_at=0.0)
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=1, pretrained=True))
    method.on_phase_start(0)
    masks = method.hard_masks()
    gran = method.config.granularity
    total = sum(e.numel for e in masks.values())
    removed = sum(e.numel - e.kept for e in masks.values())
    biggest = max(gran.unit_size(e.weight_shape) for e in masks.values())
    assert round(0.4 * total) <= removed < round(0.4 * total) + biggest


def test_monotone_prune_never_revives_units_in_global_structured_scope():
    """Units of different sizes: a global re-ranking once revived a pruned unit (see report)."""
    model = nn.Sequential(nn.Linear(10, 2), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight[0] = 0.1  # unit of 10 elements, norm 0.32
        model[0].weight[1] = 1.0
        model[1].weight[:, 0] = torch.tensor([0.01, 5.0])  # unit of 1 element, the weakest
    method = build_method("gmp", sparsity=0.5, granularity="filter", scope="global", start=0.0)
    method.attach(model, targets=select_targets(model, include=["*.weight"]), horizon=Horizon(4, 4, pretrained=True))
    method.prune_to(2 / 22)  # removes the 1-element unit, then the 10-element one (11 elements)
    first = method.hard_masks()
    assert first["0.weight"].mask.tolist() == [False, True] and first["1.weight"].mask.tolist() == [False, True]
    method.prune_to(3 / 22)  # a higher target: nothing may come back
    assert_monotone([first, method.hard_masks()])


@settings(max_examples=25, deadline=None)
@given(
    ins=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    steps=st.lists(st.floats(0.0, 0.95), min_size=2, max_size=6).map(sorted),
    granularity=st.sampled_from(["filter", "kernel", "unstructured"]),
    seed=st.integers(0, 10_000),
)
def test_monotone_prune_property_global_scope(ins, steps, granularity, seed):
    """Increasing targets with a global ranking over layers of different unit sizes: never a revival,
    and the removed elements stay within one unit of each target."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(i, 3, 1 + (j % 2), bias=False) for j, i in enumerate(ins)]
    model = nn.ModuleList(layers)
    method = build_method("gmp", sparsity=0.95, granularity=granularity, scope="global", start=0.0)
    targets = select_targets(model, include=["*.weight"])
    method.attach(model, targets=targets, horizon=Horizon(4, 4, pretrained=True))
    history = []
    for s in steps:
        method.prune_to(s)
        masks = method.hard_masks()
        history.append(masks)
        total = sum(e.numel for e in masks.values())
        removed = sum(e.numel - e.kept for e in masks.values())
        biggest = max(e.granularity.unit_size(e.weight_shape) for e in masks.values())
        assert round(s * total) <= removed < round(s * total) + biggest
    assert_monotone(history)


# =========================================================================== random


def random_masks(make_cnn, seed, granularity="unstructured", sparsity=0.5):
    method = build_method("random", sparsity=sparsity, seed=seed, granularity=granularity)
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=2))
    method.on_phase_start(0)
    return method.hard_masks()


@pytest.mark.parametrize("granularity", ["unstructured", "kernel", "filter"])
def test_random_is_seeded(make_cnn, granularity):
    a, b, c = (random_masks(make_cnn, s, granularity) for s in (1, 1, 2))
    for n in a:
        assert torch.equal(a[n].mask, b[n].mask)
        assert abs(a[n].sparsity - 0.5) <= 1 / (2 * a[n].mask.numel()) + 1e-12
    assert any(not torch.equal(a[n].mask, c[n].mask) for n in a)


def test_random_does_not_depend_on_weights_or_global_rng(make_cnn):
    a = random_masks(make_cnn, 5)
    torch.manual_seed(12345)
    torch.rand(10)
    method = build_method("random", sparsity=0.5, seed=5)
    model = make_cnn(42)  # different weights
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=2))
    method.on_phase_start(0)
    b = method.hard_masks()
    assert all(torch.equal(a[n].mask, b[n].mask) for n in a)


def test_random_masks_are_spread_over_positions(make_cnn):
    # Over many seeds every position of a tensor is pruned sometimes and kept sometimes.
    counts = None
    for seed in range(30):
        m = random_masks(make_cnn, seed)["fc1.weight"].mask.float()
        counts = m if counts is None else counts + m
    assert counts.min() > 0 and counts.max() < 30
    assert counts.mean().item() == pytest.approx(15.0, abs=0.01)  # exactly half kept each time


def test_random_prunes_once_at_the_start(make_cnn, make_image_batches):
    method = build_method("random", sparsity=0.3, seed=0)
    model = make_cnn(0)
    history = []
    run(method, model, make_image_batches(2), 2, on_step=lambda s: history.append(method.hard_masks()))
    for m in history[1:]:
        assert all(torch.equal(m[n].mask, history[0][n].mask) for n in m)
    for n, zeros in per_tensor_zeros(history[0]).items():
        assert zeros == round(0.3 * history[0][n].numel)


# =========================================================================== shared scoring


@pytest.mark.parametrize("gran", [Unstructured(), Kernel(), Filter()], ids=str)
def test_scores_use_the_effective_weight(make_cnn, gran):
    """Re-pruning ranks masked weights as zero, so a second prune at the same target changes nothing."""
    method = build_method("magnitude", sparsity=0.5, granularity=gran.spec, prune_at=0.0)
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=1, pretrained=True))
    method.prune_to(0.5)
    first = method.hard_masks()
    method.prune_to(0.5, monotone=False)
    second = method.hard_masks()
    assert all(torch.equal(first[n].mask, second[n].mask) for n in first)
    assert math.isclose(first.sparsity(), second.sparsity())
