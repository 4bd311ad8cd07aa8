"""Dynamic Probabilistic Pruning: exact k-of-n groups, gradients, schedules, quantization, artifacts."""

from __future__ import annotations

import json

import pytest
import torch

import secateurs.methods.dpp  # noqa: F401  (registration)
from secateurs.core.granularity import parse_granularity
from secateurs.core.parametrize import find_parametrizations
from secateurs.core.selection import keep_count, select_per_group
from secateurs.errors import UsageError
from secateurs.methods import Horizon, build_method
from secateurs.methods.dpp_layers import DPPMask
from secateurs.quant import QuantConfig, quantize_to_int

from ._loop import run

EPOCHS, STEPS, S = 3, 3, 0.6


def attached(make_cnn, seed=0, epochs=EPOCHS, pretrained=False, **kwargs):
    kwargs.setdefault("sparsity", S)
    method = build_method("dpp", **kwargs)
    model = make_cnn(seed)
    method.attach(model, horizon=Horizon(epochs=epochs, steps_per_epoch=STEPS, pretrained=pretrained))
    return method, model


def kept_per_group(mask: DPPMask, unit_mask: torch.Tensor) -> torch.Tensor:
    return mask.grouping.to_groups(unit_mask.float()).sum(1)


@pytest.mark.parametrize(
    "options",
    [
        {"granularity": "unstructured"},
        {"granularity": "kernel"},
        {"granularity": "filter"},
        {"granularity": "2:4", "sparsity": None},
        {"granularity": "unstructured", "tile": 4},
        {"granularity": "kernel", "tile": 4},
        {"granularity": "unstructured", "weight_groups": "fan-out"},
        {"granularity": "unstructured", "noise_scale": 0.0, "relax_order": "index"},
    ],
)
def test_every_group_keeps_exactly_k_at_every_training_step_and_at_the_end(options, make_cnn, make_image_batches):
    options = {k: v for k, v in options.items() if v is not None}
    if options["granularity"] == "2:4":
        method = build_method("dpp", **options)
        model = make_cnn(0)
        method.attach(model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    else:
        method, model = attached(make_cnn, **options)
    gran = method.config.granularity
    seen = []

    def check(module, inputs, output):  # the masked weight of this very forward pass
        kept = gran.reduce((output != 0).float(), how="sum") > 0
        seen.append(bool((kept_per_group(module, kept) == module.k).all()))

    for p in method.parametrizations.values():
        p.register_forward_hook(check)
    run(method, model, make_image_batches(STEPS), EPOCHS, attach=False)
    assert len(seen) == EPOCHS * STEPS * len(method.parametrizations) and all(seen)
    for name, entry in method.finalize().items():
        p_groups = method.grouping(entry.weight_shape)
        kept = p_groups.to_groups(entry.mask.float()).sum(1)
        assert torch.all(kept == keep_count(p_groups.n, float(method.config.sparsity))), name


def test_groups_follow_the_papers_definitions_when_c_in_differs_from_c_out(make_cnn):
    # TinyCNN conv1: 8 -> 12 and conv2: 12 -> 8 channels, 3x3 kernels.
    for gran, check in [
        ("unstructured", lambda full, w: full.reshape(w[0], -1).sum(1) == keep_count(w[1] * 9, S) * 1),
        ("kernel", lambda full, w: full.all(-1).all(-1).sum(1) == keep_count(w[1], S)),
    ]:
        method, _ = attached(make_cnn, granularity=gran)
        for name in ("conv1.weight", "conv2.weight"):
            entry = method.hard_masks()[name]
            full = entry.full()
            shape = entry.weight_shape
            assert torch.all(check(full, shape)), (gran, name)
            if gran == "kernel":  # every kernel is kept or removed whole
                assert torch.all(full.all(-1).all(-1) == full.any(-1).any(-1))
    method, _ = attached(make_cnn, granularity="unstructured", weight_groups="fan-out")
    full = method.hard_masks()["conv1.weight"].full()  # k of the 12 filters for every input element
    assert torch.all(full.reshape(12, -1).sum(0) == keep_count(12, S))


def test_tiles_keep_k_each_and_a_tile_that_does_not_divide_is_a_usage_error(make_cnn):
    method, _ = attached(make_cnn, granularity="unstructured", tile=4)
    full = method.hard_masks()["conv1.weight"].full()
    assert torch.all(full.reshape(12, 72 // 4, 4).sum(-1) == keep_count(4, S))
    model = make_cnn(0)
    bad = build_method("dpp", sparsity=S, tile=5)
    with pytest.raises(UsageError, match="tile 5 does not divide the group size 72 of conv1.weight"):
        bad.attach(model, horizon=Horizon(epochs=EPOCHS, steps_per_epoch=STEPS))
    assert list(find_parametrizations(model)) == []


def test_gradients_reach_every_layers_logits(make_cnn, make_image_batches):
    method, model = attached(make_cnn, noise_scale=0.1)
    model.train()
    x, y = make_image_batches(1)[0]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in method.parametrizations.items():
        assert p.logits.grad is not None and torch.isfinite(p.logits.grad).all(), name
        assert p.logits.grad.abs().sum() > 0, name


def test_evaluation_masks_are_the_deterministic_top_k_and_training_masks_vary(make_cnn):
    method, model = attached(make_cnn, noise_scale=1.0)
    p = method.parametrizations["conv2.weight"]
    w = model.conv2.parametrizations.weight.original
    model.eval()
    first, second = p.unit_mask(w), p.unit_mask(w)
    assert torch.equal(first, second) and torch.equal(first.bool(), p.hard_mask(w))
    top = torch.zeros_like(p.logits, dtype=torch.bool).scatter_(1, p.logits.topk(p.k, 1).indices, True)
    assert torch.equal(p.grouping.from_groups(top), p.hard_mask(w))
    model.train()
    draws = torch.stack([p.unit_mask(w).detach() for _ in range(4)])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])


def test_temperature_falls_linearly_per_epoch_or_per_step(make_cnn):
    method, _ = attached(make_cnn, epochs=5)
    assert [method.temperature_at(e, 0) for e in range(5)] == pytest.approx([5.0, 3.875, 2.75, 1.625, 0.5])
    method.on_epoch_start(2)
    assert all(float(p.temperature) == pytest.approx(2.75) for p in method.parametrizations.values())
    per_step, _ = attached(make_cnn, epochs=5, temperature_every="step")
    total = 5 * STEPS
    assert per_step.temperature_at(0, 0) == 5.0 and per_step.temperature_at(4, total) == pytest.approx(0.5)
    per_step.on_step(total // 3)
    expected = 5.0 - 4.5 * (total // 3) / total
    assert all(float(p.temperature) == pytest.approx(expected) for p in per_step.parametrizations.values())


def test_entropy_penalty(make_cnn):
    method, _ = attached(make_cnn, granularity="kernel", entropy_weight=0.01)
    penalty = method.penalty()
    expected = 0.01 * sum(float(p.entropy().detach().sum()) for p in method.parametrizations.values())
    assert float(penalty.detach()) == pytest.approx(expected)
    penalty.backward()
    assert all(p.logits.grad.abs().sum() > 0 for p in method.parametrizations.values())
    none, _ = attached(make_cnn, entropy_weight=0.0)
    assert none.penalty() is None
    default, _ = attached(make_cnn, granularity="filter")
    assert float(default.penalty().detach()) == pytest.approx(
        5e-3 * sum(float(p.entropy().detach().sum()) for p in default.parametrizations.values()))


def test_logits_are_stepped_by_the_methods_adam_or_by_the_shared_optimizer(make_cnn, make_image_batches):
    method, model = attached(make_cnn)
    assert all(g["lr"] == 0.0 for g in method.mask_param_groups())
    before = [p.logits.detach().clone() for p in method.parametrizations.values()]
    run(method, model, make_image_batches(STEPS), EPOCHS, attach=False)
    assert all(not torch.equal(b, p.logits) for b, p in zip(before, method.parametrizations.values()))
    assert all(p.logits.grad is None for p in method.parametrizations.values())
    shared, _ = attached(make_cnn, logit_optimizer="shared", logit_lr=0.5)
    assert [g["lr"] for g in shared.mask_param_groups()] == [0.5]
    assert "logit_optimizer" not in shared.extra_state()


def test_magnitude_initialisation_starts_from_the_per_group_magnitude_mask(make_cnn):
    method, model = attached(make_cnn, granularity="kernel", pretrained=True)  # logit_init="auto"
    gran = parse_granularity("kernel")
    for name, entry in method.hard_masks().items():
        w = model.get_submodule(name.rpartition(".")[0]).parametrizations.weight.original
        assert torch.equal(entry.mask, select_per_group(gran.reduce(w, "l2"), gran, S)), name


def test_fan_in_correction_of_the_initial_weights_from_scratch_only(make_cnn):
    reference = make_cnn(0)
    _, scratch = attached(make_cnn, granularity="kernel")
    _, pretrained = attached(make_cnn, granularity="kernel", pretrained=True)
    _, off = attached(make_cnn, granularity="kernel", rescale_init=False)
    _, filters = attached(make_cnn, granularity="filter")
    for name in ("conv1", "conv2", "fc1"):
        ref = getattr(reference, name).weight
        n = ref.shape[1]
        factor = (n / keep_count(n, S)) ** 0.5
        torch.testing.assert_close(getattr(scratch, name).parametrizations.weight.original, ref * factor)
        for model in (pretrained, off, filters):  # kept filters read all their inputs: no correction
            assert torch.equal(getattr(model, name).parametrizations.weight.original, ref)


def test_joint_quantization_is_baked_in_by_finalize(make_cnn, make_image_batches):
    method, model = attached(make_cnn, quant_bits=4, quant_scale="channel")
    batches = make_image_batches(STEPS)
    run(method, model, batches, EPOCHS, attach=False)
    model.eval()
    x = batches[0][0]
    with torch.no_grad():
        before = model(x)
        effective = model.conv2.weight
    codes, scale = quantize_to_int(effective, QuantConfig(4, "channel"))
    torch.testing.assert_close(effective, codes.float() * scale)  # on the grid of its scale
    masks = method.finalize()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)
    w = model.conv2.weight
    assert torch.all(w[~masks["conv2.weight"].full()] == 0)
    codes, scale = quantize_to_int(w, QuantConfig(4, "channel"))
    torch.testing.assert_close(w, codes.float() * scale)


def test_report_fields_and_resumable_history(make_cnn, make_image_batches, tmp_path):
    method, model = attached(make_cnn, quant_bits=4, granularity="unstructured")
    run(method, model, make_image_batches(STEPS), EPOCHS, attach=False)
    logs = method.on_epoch_end(EPOCHS)
    for metric in ("confidence", "diversity", "mutual_information", "inclusion_confidence"):
        assert 0.0 <= logs[f"dpp/{metric}/conv1.weight"] <= 1.0 and f"dpp/{metric}/mean" in logs
    assert logs["dpp/temperature"] == pytest.approx(0.5)
    assert len(method.history["dpp/confidence/fc1.weight"]) == EPOCHS + 1

    extras = method.report_extras()
    json.dumps(extras)  # report.json must be able to hold it
    assert extras["quant_bits"] == 4
    assert extras["size_bytes"] < extras["size_bytes_dense_fp32"] and extras["compression_ratio"] > 1
    assert extras["size_bytes_pruned_layers"] < extras["size_bytes_pruned_layers_dense_fp32"] / 8
    assert all(layer["exactly_k"] for layer in extras["dpp_layers"].values())

    state = torch.load(_saved(method.state_dict(), tmp_path), weights_only=True)
    fresh, _ = attached(make_cnn)
    fresh.load_state_dict(state)
    assert fresh.history == method.history


def _saved(obj, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(obj, path)
    return path


def test_config_validation_and_round_trip():
    cfg = build_method("dpp", sparsity=0.5, quant_bits=2, tile=4, weight_groups="fan-out").config
    assert cfg.scope == "group"
    assert build_method("dpp", **cfg.to_dict()).config == cfg
    for bad in [
        {"scope": "global"}, {"quant_bits": 0}, {"quant_bits": 3.5}, {"quant_scale": "row"}, {"tile": 0},
        {"noise_scale": -1.0}, {"temperature_end": 0.0}, {"temperature_every": "batch"},
        {"relax_order": "random"}, {"logit_optimizer": "sgd"}, {"logit_init": "zeros"},
        {"weight_groups": "fan-out", "granularity": "filter"}, {"logit_lr": 0.0},
    ]:
        with pytest.raises(UsageError):
            build_method("dpp", sparsity=0.5, **bad)


def test_cli_prune_with_quant_bits_writes_sizes_plots_export_and_inspect_shows_them(tmp_path, capsys):
    from safetensors import safe_open

    from secateurs.cli.main import main
    from secateurs.core.masks import MaskSet

    out = tmp_path / "run"
    quick = ["--data", "synthetic", "--limit-train", "128", "--limit-test", "64", "--batch-size", "64",
             "--device", "cpu"]
    assert main(["prune", "--model", "lenet5", *quick, "--epochs", "2", "--method", "dpp", "--granularity",
                 "unstructured", "--sparsity", "0.9", "--quant-bits", "4", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method_options"]["quant_bits"] == 4
    assert 0 < report["size_bytes"] < report["size_bytes_dense_fp32"]
    masks = MaskSet.load(out / "masks.safetensors")
    for name, entry in masks.items():  # every output neuron keeps exactly k of its n inputs
        rows = entry.mask.reshape(entry.weight_shape[0], -1)
        assert torch.all(rows.sum(1) == keep_count(rows.shape[1], 0.9)), name
    with safe_open(str(out / "dpp_kofn.safetensors"), framework="pt") as f:
        assert f.get_tensor("fc1.weight.values").dtype == torch.int8
    pytest.importorskip("matplotlib")
    for layer in ("conv2.weight", "fc1.weight", "fc2.weight", "mean"):  # one PNG per pruned layer
        assert (out / "dpp_plots" / f"{layer}.png").read_bytes()[:4] == b"\x89PNG"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and "dpp/confidence/fc1.weight" in lines[-1]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "size_bytes" in shown and "compression_ratio" in shown and "exactly_k" in shown
    assert main(["prune", "--model", "lenet5", *quick, "--method", "gmp", "--sparsity", "0.5", "--quant-bits", "4",
                 "--out", str(tmp_path / "gmp")]) == 2
    assert "quant_bits" in capsys.readouterr().err


# --------------------------------------------------------------------------- schedule of the masks


def test_mask_is_fixed_and_equal_to_the_top_k_of_the_logits_over_the_final_stretch(make_cnn, make_image_batches):
    method, model = attached(make_cnn, epochs=4, fix_fraction=0.25)  # 12 steps, fixed from step 9
    assert method.fix_step == 9
    # Noise falls linearly to 0 over the 3 steps before the fix.
    assert [method.noise_at(s) for s in (0, 6, 7, 9, 12)] == pytest.approx([0.1, 0.1, 0.1 * 2 / 3, 0.0, 0.0])
    seen: dict[int, list[torch.Tensor]] = {}

    def record(step: int) -> None:
        model.train()
        seen[step] = []
        for p in method._masks():
            train_mask = p.unit_mask(None)  # a training-mode draw
            assert torch.equal(train_mask > 0.5, p.hard_mask(None)), step  # the top-k of the logits
            seen[step].append(p.logits.detach().clone())

    run(method, model, make_image_batches(STEPS), 4, attach=False,
        on_step=lambda s: record(s) if method.fixed_at(s) else None)
    assert sorted(seen) == [9, 10, 11, 12]
    for step in (10, 11, 12):
        assert all(torch.equal(a, b) for a, b in zip(seen[step], seen[9]))  # logits frozen, mask fixed
    assert method.penalty() is None and all(not p.logits.requires_grad for p in method._masks())


@pytest.mark.parametrize("granularity", ["unstructured", "filter"])
def test_from_a_trained_model_k_ramps_from_n_to_the_target_with_exactly_k_of_n_at_every_step(
        granularity, make_cnn, make_image_batches):
    method, model = attached(make_cnn, epochs=4, pretrained=True, granularity=granularity, ramp_end=0.5)
    assert method.ramp_steps == 6  # half of 12 steps
    step = [0]
    counts: dict[str, list[int]] = {}
    exact = []

    def check(module, inputs, output):  # the masked weight of this very forward pass
        kept = kept_per_group(module, granularity_of(method).reduce((output != 0).float(), how="sum") > 0)
        exact.append(bool((kept == module.k).all()))
        assert module.k == method.kept_at(module.grouping.n, module.k_final, step[0])
        counts.setdefault(id(module), []).append(module.k)

    for p in method.parametrizations.values():
        p.register_forward_hook(check)
    run(method, model, make_image_batches(STEPS), 4, pretrained=True, attach=False,
        on_step=lambda s: step.__setitem__(0, s))
    assert len(exact) == 12 * len(method.parametrizations) and all(exact)
    for p in method._masks():
        ks = counts[id(p)]
        assert ks[0] == p.grouping.n and all(a >= b for a, b in zip(ks, ks[1:]))  # dense start, never back
        assert ks[6:] == [p.k_final] * 6 and ks[3] > p.k_final  # the target exactly from the ramp's end
    for name, entry in method.finalize().items():
        grouping = method.grouping(entry.weight_shape)
        assert torch.all(grouping.to_groups(entry.mask.float()).sum(1) == keep_count(grouping.n, S)), name


def granularity_of(method):
    return method.config.granularity


def test_ramp_follows_gmps_cubic_and_the_default_cuts_to_k_at_once(make_cnn):
    method, _ = attached(make_cnn, epochs=4, pretrained=True, ramp_end=0.5)
    n, k = 100, 10  # 90 pruned: cubic 90 * (1 - (1 - t)^3) over 6 steps
    expected = [n - round(90 * (1 - (1 - t / 6) ** 3)) for t in range(7)]
    assert [method.kept_at(n, k, t) for t in range(9)] == expected + [k, k]
    for paper in (attached(make_cnn, epochs=4, pretrained=True)[0],  # the default (the paper's)
                  attached(make_cnn, epochs=4, pretrained=False)[0]):
        assert paper.ramp_steps == 0 and paper.kept_at(n, k, 0) == k
        assert all(p.k == p.k_final for p in paper._masks())
    with pytest.raises(UsageError, match="ramp_end"):
        build_method("dpp", sparsity=S, ramp_end=0.9, fix_fraction=0.2)


def test_a_trained_model_trains_at_the_deterministic_top_k_by_default_and_the_noise_is_one_option_away(make_cnn):
    from_trained, _ = attached(make_cnn, pretrained=True)
    scratch, _ = attached(make_cnn)
    noisy, _ = attached(make_cnn, pretrained=True, noise_scale=0.1)
    assert from_trained.noise_at(0) == 0.0 and all(p.noise_scale == 0.0 for p in from_trained._masks())
    assert scratch.noise_at(0) == noisy.noise_at(0) == pytest.approx(0.1)
    for method in (from_trained, scratch):  # at noise 0 a training draw is the top-k of the logits
        method.model.train()
        for p in method._masks():
            assert torch.equal(p.unit_mask(None) > 0.5, p.hard_mask(None)) == (method is from_trained)


def test_paper_schedule_samples_to_the_end(make_cnn, make_image_batches):
    method, model = attached(make_cnn, fix_fraction=0.0)
    assert method.fix_step is None and method.noise_at(10**6) == pytest.approx(0.1)
    run(method, model, make_image_batches(STEPS), EPOCHS, attach=False)
    assert all(p.logits.requires_grad for p in method._masks())


@pytest.mark.parametrize(("schedule", "expected"), [("run", 0.25e-3), ("constant", 1e-3)])
def test_logit_learning_rate_follows_the_runs_schedule(make_cnn, schedule, expected):
    method, model = attached(make_cnn, logit_lr_schedule=schedule)
    for p in method._masks():
        p.logits.grad = torch.ones_like(p.logits)
    method.lr_scale = 0.25  # what the training loop sets before each step
    method.on_step(1)
    assert method._logit_optimizer is not None
    assert method._logit_optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_fit_hands_the_learning_rate_multiplier_to_the_method(make_cnn, make_image_batches):
    from secateurs.train import TrainConfig, fit

    method = build_method("dpp", sparsity=S, metric_samples=0)
    model = make_cnn(0)
    loader = _Loader(make_image_batches(STEPS))
    result = fit(model, loader, config=TrainConfig(epochs=3, lr=0.05), method=method)
    lrs = [r["dpp_logit_lr"] for r in result.history]
    assert lrs[0] < 1e-3 and lrs[-1] < lrs[0]  # cosine decay reaches the logits' Adam
    assert method.lr_scale == pytest.approx(result.history[-1]["lr"] / 0.05)


class _Loader:
    """A list of batches with the ``set_epoch`` the training loop calls."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass
