"""The constrained-RL allocator: GAE, the dual update, a toy CMDP with a known optimum, resume."""

from __future__ import annotations

import json

import pytest
import torch

from secateurs.allocation.crl import AgentConfig, AllocationCMDP, Outcome, PPOLagrangian, SearchConfig, gae, run_search
from secateurs.cli.main import main


def test_gae_matches_a_hand_computed_example():
    # Two steps then an episode end, then one step of a new episode (bootstrap 0 at the end).
    rewards = torch.tensor([1.0, 0.0, 2.0])
    values = torch.tensor([0.5, 1.0, 0.0])
    dones = torch.tensor([0.0, 1.0, 1.0])
    gamma, lam = 0.9, 0.5
    d1 = 0.0 - 1.0                     # last step of episode 1: r + 0 - V
    d0 = 1.0 + gamma * 1.0 - 0.5       # r + γ V(s1) - V(s0) = 1.4
    d2 = 2.0 - 0.0
    adv, ret = gae(rewards, values, dones, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor([d0 + gamma * lam * d1, d1, d2]))
    torch.testing.assert_close(ret, adv + values)


def test_dual_variable_rises_over_budget_and_falls_under_it():
    agent = PPOLagrangian(3, 1, 2, AgentConfig(nu_lr=0.1), torch.Generator().manual_seed(0))
    start = agent.nu.clone()
    nu = agent.update_multipliers(torch.tensor([30.0, 5.0]), torch.tensor([20.0, 10.0]))
    assert nu[0] > start[0] and nu[1] < start[1]
    for _ in range(200):  # far under budget: ν falls to its floor (ν_min = 0), never below
        nu = agent.update_multipliers(torch.tensor([0.0, 0.0]), torch.tensor([20.0, 10.0]))
    assert torch.all(nu >= 0) and torch.all(nu < 0.05)


REWARD_WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1])


def _toy_env(stop_at: int | None = None) -> AllocationCMDP:
    """Linear costs, separable reward: keep k of layer t earns w_t k; the cost is the mean keep (%)."""
    calls = {"n": 0}

    def evaluate(decisions):
        calls["n"] += 1
        if stop_at is not None and calls["n"] > stop_at:
            raise KeyboardInterrupt  # the process is killed mid-search
        keep = 1.0 - torch.tensor(decisions)
        return Outcome(float(100 * (REWARD_WEIGHTS * keep).sum()), (float(100 * keep.mean()),))

    return AllocationCMDP(torch.eye(4), [10] * 4, evaluate, clip_init=1.0, clip_growth=0.0)


def test_toy_cmdp_converges_to_a_feasible_allocation_near_the_optimum():
    # Budget: half of all weights. The optimum keeps the two most rewarding layers whole: 70.
    result = run_search(_toy_env(), torch.tensor([50.0]), SearchConfig(episodes=240, episodes_per_update=16))
    assert result.feasible and result.outcome.costs[0] <= 50.0 + 1e-6
    assert result.outcome.reward >= 0.97 * 70.0
    assert len(result.history) == 15 and all(len(h["nu"]) == 1 for h in result.history)


def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path):
    config = SearchConfig(episodes=64, episodes_per_update=8)
    whole = run_search(_toy_env(), torch.tensor([50.0]), config)
    path = tmp_path / "search.pt"
    with pytest.raises(KeyboardInterrupt):
        run_search(_toy_env(stop_at=29), torch.tensor([50.0]), config, checkpoint=path)
    assert path.exists()
    resumed = run_search(_toy_env(), torch.tensor([50.0]), config, checkpoint=path)
    assert resumed.decisions == whole.decisions and resumed.outcome == whole.outcome
    strip = [{k: v for k, v in h.items()} for h in whole.history]
    assert [h["nu"] for h in resumed.history] == [h["nu"] for h in strip]
    assert [h["reward"] for h in resumed.history] == [h["reward"] for h in strip]


@pytest.mark.parametrize("variant, granularity", [("coarse", "unstructured"), ("fine", "filter")])
def test_crl_method_meets_its_budget_end_to_end(tmp_path, variant, granularity):
    out = tmp_path / "run"
    code = main(["prune", "--model", "lenet5", "--data", "synthetic", "--method", "crl", "--granularity", granularity,
                 "--budget", "params<=30%", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                 "--search-episodes", "8", "--allocation-option", f"variant={variant}",
                 "--allocation-option", "episodes_per_update=4", "--allocation-option", "calibration_samples=32",
                 "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["budgets_met"] and report["allocation"]["allocator"] == "crl"
    assert report["allocation"]["episodes"] == 8 and report["allocation"]["evaluations"] >= 8
    assert (out / "crl_search.pt").exists() and (out / "warmup.safetensors").exists()


def test_gmp_with_the_crl_allocation(tmp_path):
    out = tmp_path / "run"
    code = main(["prune", "--model", "lenet5", "--data", "synthetic", "--method", "gmp", "--allocation", "crl",
                 "--budget", "macs<=60%", "--epochs", "2", "--limit-train", "64", "--limit-test", "32",
                 "--search-episodes", "4", "--allocation-option", "episodes_per_update=4",
                 "--allocation-option", "calibration_samples=32", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["budgets_met"] and report["method"] == "gmp"
    for name, row in report["allocation_layers"].items():
        layer = next(r for r in report["layers"] if r["name"] == name)
        assert abs((1 - layer["mask_sparsity"]) - row["keep"]) < 1e-3, name
