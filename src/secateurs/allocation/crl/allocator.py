"""``crl``: the constrained-RL allocator (Malik et al., ICPR 2022) on an :class:`AllocationProblem`.

Keys are the layers (or coupled channel groups for ``--granularity filter``) in forward order; the
reward is the calibration accuracy of :class:`~secateurs.allocation.reward.CalibrationReward`; one
cost channel and one multiplier per budget (spec §A.2 [PROPOSAL]: cost = % of the dense model's
value). Options (``--allocation-option KEY=VALUE`` / ``--search-episodes`` / ``--search-minutes``):
``episodes`` (96), ``minutes``, ``episodes_per_update`` (8), ``variant`` (``coarse`` or ``fine``),
``clip_init`` (0.9) / ``clip_growth`` (0.05), ``nu_lr`` (1.0), ``nu_init`` (1.0), ``target_kl`` (0.1),
``action_std`` (0.3), ``start`` (``uniform``: the coarse actor's initial mean is the uniform allocation's
prune fraction; ``zero``: as released). The last two are deviations for short CPU searches
(docs/methods/crl.md).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.allocation.base import ALLOCATORS, Allocation, Allocator
from secateurs.allocation.crl.agent import AgentConfig
from secateurs.allocation.crl.cmdp import AllocationCMDP, Outcome
from secateurs.allocation.crl.search import SearchConfig, run_search
from secateurs.allocation.problem import AllocationProblem
from secateurs.errors import UsageError

__all__ = ["CHECKPOINT", "CRLAllocator", "key_features"]

log = logging.getLogger(__name__)

#: The search checkpoint in the run directory.
CHECKPOINT = "crl_search.pt"
_VARIANTS = ("coarse", "fine")


def key_features(problem: AllocationProblem) -> Tensor:
    """``(T, 9)``: ordinal, C_in, C_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w of each key's layer."""
    rows = []
    for t, key in enumerate(problem.keys):
        module = problem.model.get_submodule(key.module) if key.module else problem.model
        if isinstance(module, nn.modules.conv._ConvNd):
            k = tuple(module.kernel_size) + (1,) * (2 - len(module.kernel_size))
            s = tuple(module.stride) + (1,) * (2 - len(module.stride))
            p = module.padding if isinstance(module.padding, tuple) else (0, 0)
            p = tuple(p) + (0,) * (2 - len(p))
            rows.append([t, module.in_channels, module.out_channels, k[0], k[1], s[0], s[1], p[0], p[1]])
        else:
            weight = problem.model.get_parameter(key.tie.producers[0].param if key.tie is not None else key.name)
            rows.append([t, weight.shape[1] if weight.dim() > 1 else 1, weight.shape[0], 1, 1, 1, 1, 0, 0])
    return torch.tensor(rows, dtype=torch.float32)


def _option(problem: AllocationProblem, name: str, default: Any, cast: type) -> Any:
    value = problem.options.get(name, default)
    try:
        return None if value is None else cast(value)
    except (TypeError, ValueError):
        raise UsageError(f"crl option {name} must be a {cast.__name__}, got {value!r}") from None


@ALLOCATORS.register("crl", description="constrained RL (PPO-Lagrangian) over per-layer keep ratios (Malik et al.)")
class CRLAllocator(Allocator):
    """PPO-Lagrangian search over per-key prune fractions (coarse) or per-unit keeps (fine)."""

    needs_reward = True
    options = ("episodes", "minutes", "episodes_per_update", "variant", "clip_init", "clip_growth", "nu_lr",
               "nu_init", "target_kl", "calibration_samples", "finetune_steps", "action_std", "start", "warmup_epochs")

    def solve(self, problem: AllocationProblem) -> Allocation:
        unknown = sorted(set(problem.options) - set(self.options))
        if unknown:
            raise UsageError(f"crl has no option {unknown[0]!r}; options: {', '.join(self.options)}")
        variant = _option(problem, "variant", "coarse", str)
        if variant not in _VARIANTS:
            raise UsageError(f"crl variant must be coarse or fine, got {variant!r}")
        fine = variant == "fine"
        episodes = _option(problem, "episodes", 96, int)
        per_update = _option(problem, "episodes_per_update", 8, int)
        if episodes < 1 or per_update < 1:
            raise UsageError("crl needs episodes >= 1 and episodes_per_update >= 1")
        start = _option(problem, "start", "uniform", str)
        if start not in ("uniform", "zero"):
            raise UsageError(f"crl start must be uniform or zero, got {start!r}")
        std = _option(problem, "action_std", 0.3, float)
        if not std > 0:
            raise UsageError(f"crl action_std must be positive, got {std}")
        init = 0.0
        if start == "uniform":
            from secateurs.allocation.uniform import UniformAllocator

            uniform = UniformAllocator().solve(problem).sparsities
            # Coarse: the uniform prune fraction; fine: a keep value of 1 - that (>= 0.5 keeps a unit).
            mean = sum(uniform.values()) / len(uniform)
            init = mean if not fine else 0.5 + (0.5 - mean)
        agent = AgentConfig(nu_lr=_option(problem, "nu_lr", 1.0, float), nu_init=_option(problem, "nu_init", 1.0, float),
                            target_kl=_option(problem, "target_kl", 0.1, float), log_std_init=math.log(std),
                            action_init=init)
        config = SearchConfig(episodes=episodes, minutes=_option(problem, "minutes", None, float),
                              episodes_per_update=per_update, seed=problem.seed, agent=agent)
        limits = torch.tensor([limit for _, limit in problem.usage(problem.min_keep())], dtype=torch.float32)

        def evaluate(decisions: list) -> Outcome:
            units = self._units(problem, decisions, fine)
            return Outcome(problem.reward(units), tuple(a for a, _ in problem.usage(units=units)))

        env = AllocationCMDP(key_features(problem), [k.units for k in problem.keys], evaluate, fine=fine,
                             clip_init=_option(problem, "clip_init", 1.0 if fine else 0.9, float),
                             clip_growth=_option(problem, "clip_growth", 0.0 if fine else 0.05, float))
        checkpoint = Path(problem.run_dir) / CHECKPOINT if problem.run_dir is not None else None
        bar = _Progress(episodes) if problem.show_progress else None
        try:
            result = run_search(env, limits, config, checkpoint=checkpoint, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        units = self._units(problem, result.decisions, fine)
        sparsities = {k.name: 1.0 - float(units[k.name].sum()) / k.units for k in problem.keys}
        chosen_units: dict[str, Tensor] | None = units if fine else None
        repaired = filled = False
        if result.feasible and not fine:
            # The chosen allocation may sit well under the budget (a short search's best feasible
            # samples are the cheap ones): spend what is left by scaling every key's density by one
            # factor up to the constraint (costs only, no reward evaluation). [PROPOSAL], see the docs.
            from secateurs.allocation.random_search import fit_densities

            loosened = fit_densities(problem, {k: 1.0 - v for k, v in sparsities.items()})
            filled = any(loosened[k] < sparsities[k] - 1e-9 for k in sparsities)
            if filled:
                sparsities = {k: min(loosened[k], sparsities[k]) for k in sparsities}
        if not result.feasible:
            log.warning("crl: the searched allocation misses a constraint; tightening it")
            sparsities = problem.tighten(sparsities)
            chosen_units, repaired = None, True
        search = {"variant": variant, "episodes": result.episodes, "seconds_search": round(result.seconds, 3),
                  "search_reward": result.outcome.reward, "chosen_from": result.source, "tightened": repaired, "filled_to_budget": filled,
                  "nu_final": result.history[-1]["nu"] if result.history else None, "trace": result.history}
        return Allocation(sparsities, units=chosen_units, search=search)

    @staticmethod
    def _units(problem: AllocationProblem, decisions: list, fine: bool) -> dict[str, Tensor]:
        if fine:
            return {k.name: torch.as_tensor(d, dtype=torch.bool) for k, d in zip(problem.keys, decisions, strict=True)}
        fractions = {k.name: min(float(d), k.max_sparsity) for k, d in zip(problem.keys, decisions, strict=True)}
        return problem.unit_masks(fractions)


class _Progress:
    """A progress bar over episodes whose label shows the last rollout's reward, cost and ν."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=True)
        self._task = self._progress.add_task("crl search", total=total)
        self._progress.start()

    def update(self, record: dict[str, Any]) -> None:
        costs = "/".join(f"{c:.1f}" for c in record["costs"])
        nu = "/".join(f"{n:.2f}" for n in record["nu"])
        self._progress.update(self._task, completed=record["episodes"],
                              description=f"crl reward {record['reward']:.1f} cost {costs} ν {nu}")

    def close(self) -> None:
        self._progress.stop()
