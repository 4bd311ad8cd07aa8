"""Gibbs pruning: schedules, sampled training masks, exact final masks, scopes and the CLI path.

The registry-wide contract (tests/methods/test_contract.py) covers finalize/state/seed/resume at every
granularity; these tests check what is specific to Gibbs pruning.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import secateurs.methods.gibbs  # noqa: F401  (registration)
from secateurs.core.granularity import parse_granularity
from secateurs.core.parametrize import find_parametrizations
from secateurs.core.selection import keep_count
from secateurs.errors import UsageError
from secateurs.methods import Horizon, build_method
from secateurs.methods.gibbs import GibbsMask, GibbsPruning

from ._loop import run


def _attached(make_cnn, granularity="unstructured", epochs=4, seed=0, **kwargs) -> tuple[GibbsPruning, torch.nn.Module]:
    method = build_method("gibbs", sparsity=kwargs.pop("sparsity", 0.75), granularity=granularity, seed=seed, **kwargs)
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=epochs, steps_per_epoch=3))
    assert isinstance(method, GibbsPruning)
    return method, model


#: The reference's schedule: per-epoch β on absolute fields, never a fixed mask.
PAPER = {"beta_every": "epoch", "beta_scale": "absolute", "anneal_end": 127 / 199, "fix_mask": False}


def _masks(model) -> dict[str, GibbsMask]:
    return {n: p for n, p in find_parametrizations(model) if isinstance(p, GibbsMask)}


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(("granularity", "low", "high"), [("unstructured", 0.0, 4.0), ("kernel", 0.0, 4.0),
                                                         ("filter", -2.5, 0.0)])
def test_beta_schedule_reproduces_the_reference_on_its_200_epochs(make_cnn, granularity, low, high):
    method, _ = _attached(make_cnn, granularity, epochs=200, **PAPER)
    reference = list(np.logspace(low, high, 128)) + [10**high] * 72  # example.py's GibbsPruningAnnealer
    ours = [method.beta_at(e) for e in range(200)]
    np.testing.assert_allclose(ours, reference, rtol=1e-9)
    # The per-epoch annealer holds β through each epoch.
    steps = [method.beta_for_step(s) for s in range(0, 600, 3)]
    np.testing.assert_allclose(steps, reference, rtol=1e-9)


@pytest.mark.parametrize("anneal_end", [0.5, 0.75, 1.0])
def test_per_step_beta_reaches_its_end_value_at_the_planned_step(make_cnn, anneal_end):
    method, model = _attached(make_cnn, epochs=4, anneal_end=anneal_end)  # 12 steps
    planned = round(anneal_end * 12)
    assert method.anneal_steps == planned
    betas = [method.beta_for_step(s) for s in range(13)]
    start, end = method.beta_range
    assert betas[0] == pytest.approx(start) and betas[planned] == pytest.approx(end)
    assert all(b < end for b in betas[:planned]) and all(b == pytest.approx(end) for b in betas[planned:])
    ratios = [b / a for a, b in zip(betas[:planned], betas[1 : planned + 1])]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)  # log-spaced, a new value at every step
    for step in (1, 5, planned):
        method.on_step(step)
        for p in _masks(model).values():
            assert float(p.beta) == pytest.approx(betas[step], rel=1e-6)


@pytest.mark.parametrize(("scale", "same"), [("layer", True), ("absolute", False)])
def test_layer_scale_makes_beta_mean_the_same_whatever_the_weights_scale(make_cnn, scale, same):
    """Scaling a layer's weights by 10 leaves its keep probabilities unchanged with beta_scale=layer."""
    method, model = _attached(make_cnn, epochs=3, beta_start=3.0, beta_scale=scale)
    p = next(iter(_masks(model).values()))
    w = torch.randn(p.weight_shape, generator=torch.Generator().manual_seed(1)) * 0.05
    freq = {}
    for factor in (1.0, 10.0):
        p.generator = torch.Generator().manual_seed(3)
        freq[factor] = torch.stack([p.sample(w * factor) for _ in range(200)]).float().mean(0)
    gap = float((freq[1.0] - freq[10.0]).abs().max())
    assert (gap < 0.02) if same else (gap > 0.3)


def test_pretrained_start_is_inside_the_informative_window(make_cnn):
    scratch = build_method("gibbs", sparsity=0.9)
    trained = build_method("gibbs", sparsity=0.9)
    scratch.attach(make_cnn(0), horizon=Horizon(epochs=3, steps_per_epoch=2))
    trained.attach(make_cnn(0), horizon=Horizon(epochs=3, steps_per_epoch=2, pretrained=True))
    assert scratch.beta_for_step(0) == pytest.approx(1.0)
    assert trained.beta_for_step(0) == pytest.approx(10.0)
    assert scratch.beta_range[1] == trained.beta_range[1] == pytest.approx(1e3)


def test_mask_is_fixed_at_the_anneal_end_and_training_then_uses_it(make_cnn, make_image_batches):
    method = build_method("gibbs", sparsity=0.7, anneal_end=0.5)
    model = make_cnn(0)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def record(step: int) -> None:
        seen[step] = {n: p.hard_mask(w).clone() for n, p, w in method.weights()}

    run(method, model, make_image_batches(2), 4, on_step=record)  # 8 steps, fixed after step 4
    assert method.anneal_steps == 4 and method.fixed
    for step in range(5, 9):
        for name, mask in seen[step].items():
            assert torch.equal(mask, seen[4][name]), (step, name)
    model.train()
    for name, p, w in method.weights():
        assert torch.equal(p(w) != 0, p.granularity.expand(seen[4][name], w.shape) & (w != 0))
        assert not p.frozen.requires_grad and bool(p.frozen)
    assert method.hard_masks().sparsity() == pytest.approx(0.7, abs=0.02)


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_from_a_trained_model_the_pruned_share_ramps_to_the_target_at_the_ramps_end(
        scope, make_cnn, make_image_batches):
    method = build_method("gibbs", sparsity=0.8, scope=scope)
    model = make_cnn(0)
    ramp = 6  # the default 0.5 of 12 steps with --from
    seen: dict[int, float] = {}

    def record(step: int) -> None:  # the ground state's pruned share after each step
        seen[step] = method.hard_masks().sparsity()

    run(method, model, make_image_batches(3), 4, pretrained=True, on_step=record)
    assert method.ramp_steps == ramp
    for step in range(1, ramp):
        expected = 0.8 * (1 - (1 - step / ramp) ** 3)
        assert seen[step] == pytest.approx(expected, abs=0.02), step  # rounded per layer
        assert seen[step] < seen[step + 1]
    assert all(seen[s] == pytest.approx(0.8, abs=0.01) for s in range(ramp, 13))
    final = method.hard_masks()
    if scope == "global":  # one quota over all layers, exact
        assert sum(e.numel - e.kept for e in final.values()) == round(0.8 * sum(e.numel for e in final.values()))
    else:
        for name, p, _ in method.weights():
            assert int(p.fixed.sum()) == keep_count(p.fixed.numel(), 0.8), name  # exact at the end


def test_paper_option_and_a_start_from_scratch_prune_the_target_from_the_first_step(make_cnn):
    for kwargs, pretrained in (({"ramp_end": 0.0}, True), ({}, False)):
        method = build_method("gibbs", sparsity=0.8, **kwargs)
        method.attach(make_cnn(0), horizon=Horizon(epochs=4, steps_per_epoch=3, pretrained=pretrained))
        assert method.ramp_steps == 0 and method.sparsity_at(0, 0.8) == 0.8
        assert all(p.sparsity == 0.8 for p in _masks(method.model).values())
    with pytest.raises(UsageError, match="ramp_end"):
        build_method("gibbs", sparsity=0.8, ramp_end=0.9, anneal_end=0.75)


def test_paper_mode_never_fixes_the_mask(make_cnn, make_image_batches):
    method = build_method("gibbs", sparsity=0.7, **PAPER)
    run(method, make_cnn(0), make_image_batches(2), 3)
    assert not method.fixed


@pytest.mark.parametrize("epochs", [1, 2, 3, 10, 37])
def test_beta_schedule_is_fitted_to_the_budget(make_cnn, epochs):
    method, _ = _attached(make_cnn, epochs=epochs, beta_start=2.0, beta_end=500.0, anneal_end=127 / 199)
    betas = [method.beta_at(e) for e in range(epochs)]
    assert all(a <= b for a, b in zip(betas, betas[1:]))
    assert betas[-1] == pytest.approx(500.0)
    if epochs > 1:
        assert betas[0] == pytest.approx(2.0)
        ratios = [b / a for a, b in zip(betas, betas[1:]) if b > a]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)  # log-spaced while annealing


def test_epoch_start_pushes_beta_into_every_parametrization(make_cnn):
    method, model = _attached(make_cnn, epochs=5, beta_every="epoch")
    for epoch in range(5):
        method.on_epoch_start(epoch)
        for p in _masks(model).values():
            assert float(p.beta) == pytest.approx(method.beta_at(epoch), rel=1e-6)


# --------------------------------------------------------------------------- training masks


def test_unstructured_keep_frequencies_match_the_closed_form(make_cnn):
    method, model = _attached(make_cnn, sparsity=0.6, epochs=3)
    method.on_step(2)
    assert 1.0 < float(_masks(model)["conv2.weight"].beta) < 10.0
    model.train()
    conv = model.get_submodule("conv2")
    p = _masks(model)["conv2.weight"]
    w2 = conv.parametrizations.weight.original.detach().square()
    q = torch.quantile(w2.flatten(), 0.6)
    expected = torch.sigmoid(p.beta * (w2 - q) / w2.mean()).double()  # fields in units of the mean w²
    draws = 1500
    kept = torch.zeros_like(w2, dtype=torch.float64)
    for _ in range(draws):
        kept += (conv.weight != 0).double()  # each access of the weight draws a fresh mask
    margin = 5 * torch.sqrt(expected * (1 - expected) / draws) + 1e-3
    assert bool(((kept / draws - expected).abs() <= margin).all())


@pytest.mark.parametrize("granularity", ["unstructured", "kernel", "filter", "2:4"])
def test_training_resamples_eval_applies_the_hard_mask_and_no_gradient_reaches_the_mask(make_cnn, granularity,
                                                                                         make_image_batches):
    method, model = _attached(make_cnn, granularity, sparsity=None if granularity == "2:4" else 0.5)
    method.on_epoch_start(0)
    conv = model.get_submodule("conv1")
    model.train()
    first, second = conv.weight.detach().clone(), conv.weight.detach().clone()
    assert not torch.equal(first, second)  # a fresh mask per forward pass
    x, y = make_image_batches(1)[0]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    original = conv.parametrizations.weight.original
    pruned = _masks(model)["conv1.weight"].last_keep.logical_not()
    assert pruned.any()
    assert torch.all(original.grad[pruned] == 0)  # W ⊙ m: pruned weights get no task gradient
    model.eval()
    with torch.no_grad():
        hard = method.hard_masks()["conv1.weight"].full()
        assert torch.equal(conv.weight, original * hard)


def test_kernel_mode_works_on_5x5_kernels():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 5),
                                torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(1, 3, 12, 12))
    method = build_method("gibbs", sparsity=0.5, granularity="kernel")
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=1))
    method.on_epoch_start(1)
    model.train()
    weight = model.get_submodule("2").weight
    assert weight.shape == (6, 8, 5, 5) and (weight == 0).any()
    assert method.finalize()["2.weight"].sparsity == pytest.approx(0.5)


# --------------------------------------------------------------------------- final masks


@pytest.mark.parametrize("granularity", ["unstructured", "kernel", "filter"])
@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_final_masks_prune_exactly_p_of_units_per_layer(make_cnn, make_image_batches, granularity, sparsity):
    method = build_method("gibbs", sparsity=sparsity, granularity=granularity, sweeps=3, fix_mask=False)
    model = make_cnn(0)
    run(method, model, make_image_batches(2), 2)
    gran = parse_granularity(granularity)
    for name, entry in method.hard_masks().items():
        units = gran.unit_shape(entry.weight_shape).numel()
        assert int(entry.mask.sum()) == keep_count(units, sparsity), name
        original = model.get_submodule(name.rpartition(".")[0]).parametrizations.weight.original
        scores = gran.reduce(original.detach().square(), how="mean")
        # The ground state keeps the units of largest mean squared weight.
        assert scores[entry.mask].min() > scores[~entry.mask].max(), name


def test_group_scope_keeps_exactly_k_per_group_and_uses_per_group_thresholds(make_cnn):
    method, model = _attached(make_cnn, "kernel", scope="group", sparsity=0.5)
    p = _masks(model)["conv1.weight"]
    weight = model.get_submodule("conv1").parametrizations.weight.original
    scores = p.unit_scores(weight)
    q = p.unit_threshold(scores)
    torch.testing.assert_close(q[:, 0], torch.quantile(scores, 0.5, dim=1))
    assert torch.all(q == q[:, :1])
    assert torch.all(method.hard_masks()["conv1.weight"].mask.sum(1) == 4)  # 4 of the 8 kernels per filter


def test_n_of_m_keeps_exactly_n_in_every_block(make_cnn, make_image_batches):
    method = build_method("gibbs", granularity="2:4")
    model = make_cnn(0)
    run(method, model, make_image_batches(2), 2)
    for name, entry in method.finalize().items():
        assert torch.all(entry.granularity.group_view(entry.mask).sum(1) == 2), name


def test_global_scope_shares_one_threshold_and_meets_the_total_exactly(make_cnn, make_image_batches):
    method = build_method("gibbs", sparsity=0.8, scope="global")
    model = make_cnn(0)
    method.attach(model, horizon=Horizon(epochs=2, steps_per_epoch=2))
    assert not any(math.isnan(float(p.threshold)) for p in _masks(model).values())  # valid before any hook
    model = make_cnn(0)
    method = build_method("gibbs", sparsity=0.8, scope="global")
    run(method, model, make_image_batches(2), 2)
    thresholds = {float(p.threshold) for p in _masks(model).values()}
    assert len(thresholds) == 1 and not math.isnan(thresholds.pop())
    masks = method.hard_masks()
    total = sum(e.numel for e in masks.values())
    removed = sum(e.numel - e.kept for e in masks.values())
    assert removed == round(0.8 * total)
    assert len({round(e.sparsity, 3) for e in masks.values()}) > 1  # layers differ
    per_layer = method.finalize()
    assert sum(e.numel - e.kept for e in per_layer.values()) == removed


# --------------------------------------------------------------------------- config, logs, resume


@pytest.mark.parametrize(
    "kwargs", [{"coupling": -0.1}, {"beta_start": 0.0}, {"beta_end": -1.0}, {"sweeps": 0}, {"anneal_end": 0.0},
               {"anneal_end": 1.5}, {"beta_every": "batch"}, {"beta_scale": "tensor"}],
)
def test_bad_options_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        build_method("gibbs", sparsity=0.5, **kwargs)


def test_defaults_follow_the_reference_per_granularity():
    kernel = build_method("gibbs", sparsity=0.5, granularity="kernel", beta_scale="absolute").config
    filt = build_method("gibbs", sparsity=0.5, granularity="filter", beta_scale="absolute").config
    assert kernel.resolved_coupling == 0.01 and kernel.beta_range == (1.0, 1e4)
    assert filt.resolved_coupling == 1.0 and filt.beta_range == pytest.approx((10**-2.5, 1.0))
    assert build_method("gibbs", sparsity=0.5, granularity="filter", coupling=0.5).config.resolved_coupling == 0.5


def test_epoch_logs_and_report_extras(make_cnn, make_image_batches):
    method = build_method("gibbs", sparsity=0.7, beta_end=1e6, fix_mask=False, anneal_end=0.5)
    model = make_cnn(0)
    run(method, model, make_image_batches(2), 3)
    logs = method.on_epoch_end(2)
    assert logs["gibbs_beta"] == pytest.approx(1e6)
    assert 0.0 <= logs["gibbs_sampled_sparsity"] <= 1.0
    extras = method.report_extras()
    assert extras["gibbs_final_beta"] == pytest.approx(1e6)
    assert extras["gibbs_sample_agreement"] > 0.9  # at the final beta the samples sit near the ground state


@pytest.mark.parametrize("granularity", ["kernel", "filter"])
def test_structured_resume_matches_an_uninterrupted_run(make_cnn, make_image_batches, granularity):
    batches = make_image_batches(2)
    full = build_method("gibbs", sparsity=0.5, granularity=granularity, sweeps=4)
    full_model = make_cnn(0)
    run(full, full_model, batches, 3)
    first = build_method("gibbs", sparsity=0.5, granularity=granularity, sweeps=4)
    model = make_cnn(0)
    run(first, model, batches, 3, stop_epoch=2)
    resumed = build_method("gibbs", sparsity=0.5, granularity=granularity, sweeps=4)
    resumed_model = make_cnn(5)
    resumed.attach(resumed_model, horizon=Horizon(epochs=3, steps_per_epoch=2))
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(first.state_dict())
    run(resumed, resumed_model, batches, 3, attach=False, start_epoch=2)
    for key, value in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def test_cli_prune_reports_exact_sparsity_for_5x5_kernels(tmp_path):
    from secateurs.cli.main import main

    out = tmp_path / "run"
    code = main(["prune", "--model", "lenet5", "--data", "synthetic", "--limit-train", "128", "--limit-test", "64",
                 "--batch-size", "64", "--device", "cpu", "--epochs", "2", "--method", "gibbs",
                 "--granularity", "kernel", "--sparsity", "0.75", "-o", "coupling=0.02", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["achieved_sparsity"] == pytest.approx(0.75, abs=1e-9)
    assert "gibbs_sample_agreement" in report


def test_filter_samples_whole_filters_that_vary_at_the_first_beta_and_settle_at_the_last():
    """In layer units the filter chain's start is drawn: low β samples filters, high β is the ground state.

    With the paper's absolute fields and c = 1 the chain never leaves its deterministic first guess.
    """
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3) * 0.05 * torch.linspace(0.5, 1.5, 32)[:, None, None, None]

    def filter_draws(beta: float, **options) -> tuple[torch.Tensor, torch.Tensor]:
        config = build_method("gibbs", sparsity=0.5, granularity="filter", **options).config
        p = GibbsMask(config, w.shape, torch.Generator().manual_seed(0), beta=beta)
        draws = torch.stack([p.sample(w).float().mean((1, 2, 3)) for _ in range(40)])  # kept share per filter
        return draws, p.ground_state(w).float()

    low, ground = filter_draws(1.0)
    assert float(((low == 0) | (low == 1)).float().mean()) > 0.9  # whole filters
    assert float((low.round() != ground).float().mean()) > 0.2  # ...drawn, not the ground state
    high, ground = filter_draws(1e3)
    assert float((high.round() != ground).float().mean()) < 0.05  # only filters at the threshold flip
    paper, ground = filter_draws(1.0, beta_scale="absolute")
    assert torch.equal(paper.round(), ground.expand_as(paper))  # frozen at the first guess
