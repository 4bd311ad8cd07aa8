"""The PPO-Lagrangian search loop (spec §A.7) with checkpoints that resume to the same result.

Rollouts are whole episodes (``episodes_per_update`` of them); after each rollout: GAE, PPO epochs,
one multiplier step per budget from the raw mean episode cost, a checkpoint (written atomically), a
line of progress. The search stops after ``episodes`` episodes or ``minutes`` minutes. A checkpoint
holds the agent, its optimizers and generator, the normalisers and the trace, so a killed search
resumed from it continues exactly as an uninterrupted one would (the reward is deterministic).

Extraction (spec §A.8, [PROPOSAL] over the released stochastic rollout): the deterministic (mean)
allocation with frozen normalisation, and the best feasible episode seen; the better feasible one by
reward wins. When neither is feasible, the caller tightens the deterministic allocation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from secateurs.allocation.crl.agent import AgentConfig, PPOLagrangian, gae
from secateurs.allocation.crl.cmdp import AllocationCMDP, Outcome
from secateurs.allocation.crl.normalize import ReturnScaler, RunningMeanStd

__all__ = ["SearchConfig", "SearchResult", "run_search"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """Search budget and schedule.

    Attributes:
        episodes: Episodes (= reward evaluations) in the whole search.
        minutes: Stop after this many minutes (None: no time limit).
        episodes_per_update: Episodes per rollout (the official 128 steps are ~10 VGG-16 episodes).
        seed: Seed of the agent's initialisation and sampling.
    """

    episodes: int = 96
    minutes: float | None = None
    episodes_per_update: int = 8
    seed: int = 0
    agent: AgentConfig = field(default_factory=AgentConfig)


@dataclass
class SearchResult:
    """What the search found and what it cost."""

    decisions: list
    outcome: Outcome
    feasible: bool
    episodes: int
    seconds: float
    history: list[dict[str, Any]]
    source: str


def _feasible(outcome: Outcome, budgets: Tensor) -> bool:
    return all(c <= float(b) + 1e-9 for c, b in zip(outcome.costs, budgets.tolist(), strict=True))


def run_search(env: AllocationCMDP, budgets: Tensor, config: SearchConfig, *, checkpoint: Path | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Search with PPO-Lagrangian; ``budgets`` are the limits of the cost channels (same units)."""
    costs_n = budgets.numel()
    agent = PPOLagrangian(env.obs_dim, env.act_dim, costs_n, config.agent,
                          torch.Generator().manual_seed(config.seed))
    obs_stats = RunningMeanStd((env.obs_dim,))
    reward_scale = ReturnScaler(1, config.agent.gamma)
    cost_scale = ReturnScaler(costs_n, config.agent.cost_gamma)
    state: dict[str, Any] = {"episodes": 0, "seconds": 0.0, "history": [], "best": None}
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        agent.load_full_state(saved["agent"])
        obs_stats.load_state_dict(saved["obs"])
        reward_scale.load_state_dict(saved["reward"])
        cost_scale.load_state_dict(saved["cost"])
        state = saved["state"]
        log.info("crl: resuming the search after %d episodes", state["episodes"])
    started = time.perf_counter() - float(state["seconds"])

    def out_of_time() -> bool:
        return config.minutes is not None and time.perf_counter() - started > 60.0 * config.minutes

    while state["episodes"] < config.episodes and not out_of_time():
        rows: dict[str, list[Tensor]] = {k: [] for k in ("obs", "actions", "logp", "value", "cost_values",
                                                          "reward", "cost", "done", "mask")}
        raw_costs, rewards = [], []
        for _ in range(min(config.episodes_per_update, config.episodes - state["episodes"])):
            env.progress = state["episodes"] / max(config.episodes, 1)
            obs = env.reset()
            while True:
                obs_stats.update(obs[None])
                norm = obs_stats.normalize(obs)
                mask = env.action_mask(env.t)
                out = agent.act(norm, mask)
                next_obs, outcome = env.step(out["action"])
                done = outcome is not None
                reward = torch.tensor([outcome.reward if done else 0.0])
                # The cost arrives at the last step as T x the episode cost, so its per-step mean
                # over the rollout is the mean episode cost (spec §A.2).
                cost = torch.tensor(outcome.costs if done else [0.0] * costs_n) * (env.steps if done else 1)
                for key, value in (("obs", norm), ("actions", out["action"]), ("logp", out["logp"]),
                                   ("value", out["value"]), ("cost_values", out["cost_values"]),
                                   ("reward", reward_scale(reward, done)), ("cost", cost_scale(cost, done)),
                                   ("done", torch.tensor(float(done))),
                                   ("mask", mask if mask is not None else torch.ones(env.act_dim))):
                    rows[key].append(value)
                if done:
                    break
                obs = next_obs
            assert outcome is not None
            state["episodes"] += 1
            raw_costs.append(outcome.costs)
            rewards.append(outcome.reward)
            if _feasible(outcome, budgets) and (state["best"] is None or outcome.reward > state["best"]["reward"]):
                state["best"] = {"reward": outcome.reward, "costs": list(outcome.costs),
                                 "decisions": [d if isinstance(d, float) else d.tolist() for d in env._decisions]}
        batch = {k: torch.stack(v) for k, v in rows.items()}
        dones = batch["done"]
        adv, ret = gae(batch["reward"].reshape(-1), batch["value"], dones, agent.config.gamma, agent.config.lam)
        cost_adv, cost_ret = gae(batch["cost"], batch["cost_values"], dones[:, None].expand_as(batch["cost"]),
                                 agent.config.cost_gamma, agent.config.cost_lam)
        stats = agent.update({"obs": batch["obs"], "actions": batch["actions"], "logp": batch["logp"], "adv": adv,
                              "ret": ret, "cost_adv": cost_adv, "cost_ret": cost_ret,
                              "mask": batch["mask"] if env.fine else None})
        mean_costs = torch.tensor(raw_costs, dtype=torch.float32).mean(0)
        nu = agent.update_multipliers(mean_costs, budgets)
        record = {"episodes": state["episodes"], "reward": sum(rewards) / len(rewards),
                  "costs": mean_costs.tolist(), "nu": nu.tolist(), **stats}
        state["history"].append(record)
        state["seconds"] = time.perf_counter() - started
        if checkpoint is not None:
            _save(checkpoint, agent, obs_stats, reward_scale, cost_scale, state)
        if progress is not None:
            progress(record)
    return _extract(env, agent, obs_stats, budgets, state)


def _save(path: Path, agent: PPOLagrangian, obs: RunningMeanStd, reward: ReturnScaler, cost: ReturnScaler,
          state: dict[str, Any]) -> None:
    from secateurs.utils.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"agent": agent.full_state(), "obs": obs.state_dict(), "reward": reward.state_dict(),
                    "cost": cost.state_dict(), "state": state}, tmp)


def _extract(env: AllocationCMDP, agent: PPOLagrangian, obs_stats: RunningMeanStd, budgets: Tensor,
             state: dict[str, Any]) -> SearchResult:
    env.progress = 1.0
    obs = env.reset()
    while True:
        out = agent.act(obs_stats.normalize(obs), env.action_mask(env.t), deterministic=True)
        obs, outcome = env.step(out["action"])
        if outcome is not None:
            break
    decisions = list(env._decisions)
    chosen = SearchResult(decisions, outcome, _feasible(outcome, budgets), state["episodes"], state["seconds"],
                          state["history"], "deterministic")
    best = state["best"]
    if best is not None and (not chosen.feasible or best["reward"] > outcome.reward):
        restored = [d if isinstance(d, float) else torch.tensor(d, dtype=torch.bool) for d in best["decisions"]]
        chosen = SearchResult(restored, Outcome(best["reward"], tuple(best["costs"])), True, state["episodes"],
                              state["seconds"], state["history"], "best sampled episode")
    return chosen
