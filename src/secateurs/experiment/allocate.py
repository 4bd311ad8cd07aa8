"""Allocation and verified delivery inside a ``prune`` run.

Before training: build the :class:`~secateurs.allocation.AllocationProblem` (dense costs, a budget that
cannot be met at the minimum keep is a usage error now), run the allocator (its result is kept in
``allocation.json``, so a resumed run does not search again) and hand the per-key sparsities to the
method. After training: measure the delivered model (shrunk for filter runs) against every budget;
on a miss, tighten the allocation on the trained weights (magnitude inside each key), re-estimate
batch-norm statistics and measure again; a budget still missed is said in the report and the log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.allocation import ALLOCATORS, Allocation, AllocationProblem
from secateurs.budget import BudgetResult, Subject, measure_budgets
from secateurs.core.masks import MaskSet
from secateurs.experiment.config import RunConfig
from secateurs.utils.io import save_json

__all__ = ["PlannedAllocation", "deliver", "plan_allocation"]

log = logging.getLogger(__name__)

ALLOCATION = "allocation.json"
#: Calibration images of a search allocator's reward (training data) unless the run says otherwise.
CALIBRATION_SAMPLES = 1024
#: Repair attempts after a measured miss.
REPAIR_ATTEMPTS = 3


#: Dense warm-up epochs before a search allocator's search when the run starts from scratch.
WARMUP_EPOCHS = 1
WARMUP_WEIGHTS = "warmup.safetensors"


@dataclass
class PlannedAllocation:
    """The problem and the chosen allocation of a run.

    Attributes:
        pretrained: Whether the model was trained densely before the search (the method then
            prunes at once, as from a trained model).
    """

    problem: AllocationProblem
    allocation: Allocation
    allocator: str
    pretrained: bool = False


def _warm_up(config: RunConfig, model: nn.Module, data: Any, out: Path, *, resume: bool,
             show_progress: bool) -> None:
    """Train the dense model for ``warmup_epochs`` (a search scores masks of a trained network; on
    random weights every allocation scores chance). Kept in ``warmup.safetensors`` for resuming."""
    from dataclasses import replace

    from secateurs.train import fit
    from secateurs.utils.io import load_safetensors

    saved = out / WARMUP_WEIGHTS
    if resume and saved.exists():
        model.load_state_dict(load_safetensors(saved))
        return
    epochs = int(config.allocation_options.get("warmup_epochs", WARMUP_EPOCHS))
    if epochs < 1:
        return
    log.info("dense warm-up: %d epoch(s) before the allocation search", epochs)
    out.mkdir(parents=True, exist_ok=True)
    fit(model, data.train, config=replace(config.train, epochs=epochs), method=None, eval_loader=None,
        run_dir=out / "warmup", resume=resume, show_progress=show_progress)
    from secateurs.experiment.run import save_weights

    save_weights(model, saved)


def _reward(config: RunConfig, model: nn.Module, data: Any) -> Any:
    from secateurs.allocation.reward import CalibrationReward, calibration_split

    opts = config.allocation_options
    samples = int(opts.get("calibration_samples", CALIBRATION_SAMPLES))
    x, y = calibration_split(data.train.x, data.train.y, samples, config.seed)
    steps = int(opts.get("finetune_steps", 0))
    return CalibrationReward(model, x, y, finetune_steps=steps, train=(data.train.x, data.train.y))


def _calibration(config: RunConfig, data: Any) -> torch.Tensor:
    from secateurs.allocation.reward import calibration_split

    samples = int(config.allocation_options.get("calibration", CALIBRATION_SAMPLES))
    return calibration_split(data.train.x, data.train.y, samples, config.seed)[0]


def plan_allocation(config: RunConfig, model: nn.Module, data: Any, targets: list[Any], groups: list[Any] | None,
                    out: Path, *, resume: bool, show_progress: bool = False) -> PlannedAllocation | None:
    """The run's allocation (None for a plain sparsity run without an allocator)."""
    name = config.allocator
    if name is None:
        return None
    cls = ALLOCATORS.get(name)
    method_config = config.method_config()
    pretrained = bool(config.from_checkpoint)
    saved = out / ALLOCATION
    if not resume:  # a fresh run (the directory holds no finished or resumable run): no stale search state
        for stale in (ALLOCATION, WARMUP_WEIGHTS, "crl_search.pt"):
            (out / stale).unlink(missing_ok=True)
    if cls.needs_reward and not pretrained and not (resume and saved.exists()):
        # Check the budgets on the dense model first: an unmeetable one must fail before any training.
        AllocationProblem(model, targets, method_config.granularity,
                          torch.zeros(1, *data.input_shape, device=next(model.parameters()).device),
                          groups=groups, budgets=config.budgets, round_to=config.round_to,
                          sparsity=None if config.budgets else method_config.sparsity).check_meetable()
        _warm_up(config, model, data, out, resume=resume, show_progress=show_progress)
        pretrained = True
    elif cls.needs_reward and not pretrained:
        from secateurs.utils.io import load_safetensors

        if (out / WARMUP_WEIGHTS).exists():
            model.load_state_dict(load_safetensors(out / WARMUP_WEIGHTS))
            pretrained = True
    example = torch.zeros(1, *data.input_shape, device=next(model.parameters()).device)
    problem = AllocationProblem(
        model, targets, method_config.granularity, example, groups=groups, budgets=config.budgets,
        sparsity=None if config.budgets else method_config.sparsity,
        reward=_reward(config, model, data) if cls.needs_reward else None,
        options=config.allocation_options, run_dir=out, seed=config.seed, show_progress=show_progress,
        calibration=_calibration(config, data) if cls.needs_calibration else None, round_to=config.round_to,
    )
    problem.check_meetable()
    if resume and saved.exists():
        raw = json.loads(saved.read_text())
        allocation = Allocation({k: float(v) for k, v in raw["sparsities"].items()}, search=raw.get("search", {}))
        if raw.get("units") is not None:
            allocation.units = {k: torch.tensor(v, dtype=torch.bool) for k, v in raw["units"].items()}
    else:
        allocation = cls().allocate(problem)
        out.mkdir(parents=True, exist_ok=True)
        uniform = ALLOCATORS.get("uniform")().solve(problem).sparsities
        save_json({
            "allocator": name, "sparsities": allocation.sparsities, "uniform": uniform,
            "search": allocation.search,
            "units": None if allocation.units is None else {k: v.tolist() for k, v in allocation.units.items()},
        }, saved)
        _plots(problem, allocation, uniform, name, out)
    return PlannedAllocation(problem, allocation, name, pretrained=pretrained and not config.from_checkpoint)


def _plots(problem: AllocationProblem, allocation: Allocation, uniform: dict[str, float], name: str, out: Path) -> None:
    """``allocation.png`` (keep ratios beside uniform) and, for a search, ``search.png`` (reward, cost, ν)."""
    from secateurs.allocation.plots import plot_allocation, plot_search

    keep = {k: 1.0 - s for k, s in allocation.sparsities.items()}
    plot_allocation(keep, {k: 1.0 - s for k, s in uniform.items()}, out / "allocation.png", f"{name} allocation")
    trace = allocation.search.get("trace")
    if trace:
        limits = [limit for _, limit in problem.usage(problem.min_keep())]
        plot_search(trace, limits, problem.constraint_names(), out / "search.png")


#: Measurements of a noisy cost (latency) whose median decides a budget of the delivered model.
NOISY_REPEATS = 3


def _measure(planned: PlannedAllocation, model: nn.Module, masks: MaskSet) -> list[BudgetResult]:
    """Every budget on the delivered model; a noisy cost (timing) is the median of a few measurements,
    so one slow sample on a busy machine does not trigger a repair."""
    from dataclasses import replace
    from statistics import median

    from secateurs.budget.costs import resolve_cost

    problem = planned.problem
    subject = Subject(model, masks, problem.example_input, groups=problem.groups, round_to=problem.round_to)
    results = measure_budgets(problem.budgets, subject, dense=problem.dense)
    for i, (budget, result) in enumerate(zip(problem.budgets, results, strict=True)):
        cost = resolve_cost(budget.cost, budget.option_dict())
        if cost.noisy:
            value = median([result.achieved] + [cost.measure(subject) for _ in range(NOISY_REPEATS - 1)])
            results[i] = replace(result, achieved=value, met=value <= result.limit)
    return results


def deliver(planned: PlannedAllocation, model: nn.Module, masks: MaskSet, data: Any,
            config: RunConfig) -> tuple[list[BudgetResult], MaskSet, int]:
    """Measure the delivered model; repair a miss. Returns the results, the final masks and the
    number of repair rounds that changed the model (its weights are changed in place)."""
    from secateurs.train.recalibrate import recalibrate_batch_norm_

    problem = planned.problem
    if not problem.budgets:
        return [], masks, 0
    results = _measure(planned, model, masks)
    repairs = 0
    while not all(r.met for r in results) and repairs < REPAIR_ATTEMPTS:
        missed = [r for r in results if not r.met]
        log.warning("budget %s missed on the delivered model (%.6g > %.6g); tightening",
                    missed[0].name, missed[0].achieved, missed[0].limit)
        problem.rescore_(model)
        # What the search measured and what the delivered model measures differ (timing noise,
        # rounding): ask the allocation for the ratio it missed by, with a little more.
        problem.margin = min(r.limit / r.achieved for r in missed) * 0.98 * problem.margin
        tighter = problem.tighten(problem.sparsities_of(masks))
        units = problem.unit_masks(tighter)
        problem.apply_(model, units)
        masks = problem.masks_from_units(units)
        data.train.set_epoch(config.train.epochs)
        recalibrate_batch_norm_(model, data.train, 50)
        repairs += 1
        results = _measure(planned, model, masks)
    for r in results:
        if not r.met:
            log.warning("budget %s is NOT met by the delivered model: %.6g > %.6g", r.name, r.achieved, r.limit)
    return results, masks, repairs


def report_fields(planned: PlannedAllocation, results: list[BudgetResult], repairs: int, out: Path) -> dict[str, Any]:
    """``budgets``, ``allocation`` (allocator and search cost) and the per-key table for the report."""
    problem = planned.problem
    saved = json.loads((out / ALLOCATION).read_text()) if (out / ALLOCATION).exists() else {}
    uniform = saved.get("uniform", {})
    layers = {
        k.name: {"units": k.units, "keep": round(1.0 - planned.allocation.sparsities[k.name], 4),
                 "uniform_keep": round(1.0 - float(uniform.get(k.name, float("nan"))), 4)}
        for k in problem.keys
    }
    search = {key: value for key, value in planned.allocation.search.items() if not isinstance(value, (list, dict))}
    fields: dict[str, Any] = {
        "allocation": {"allocator": planned.allocator, **search},
        "allocation_layers": layers,
        "target_sparsity": round(1.0 - problem.density(planned.allocation.sparsities), 6),
    }
    if problem.budgets:
        fields["budgets"] = [r.to_dict() for r in results]
        fields["budgets_met"] = all(r.met for r in results)
        fields["budget_repairs"] = repairs
    return fields
