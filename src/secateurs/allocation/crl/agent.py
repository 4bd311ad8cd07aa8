"""PPO-Lagrangian with separate actor, reward critic and one cost critic per budget (spec §A.4-A.5).

- Actor: MLP [32, 32] Tanh -> Gaussian mean; a state-independent log-std (initialised to 0).
  Actions are sampled unclipped (the stored log-probability is the unclipped sample's); the
  environment clips them. ``action_mask`` drops unused action dimensions from the log-probability
  (the fine variant's fixed-width action; the official code counts them: spec §A.9.5).
- Critics: V_R and one V_C per cost channel, MLP [32, 32] Tanh; orthogonal initialisation.
- One Adam (lr 3e-4) for actor and critics, gradient norm clipped at 0.5, 10 epochs of minibatches
  of 64, early stop when the mean approximate KL passes 1.5 x ``target_kl``.
- Advantages: GAE(0.99, 0.95) for the reward, GAE(0.99, 1.0) for costs (Monte-Carlo, the README's).
  The reward advantage is standardised per minibatch, cost advantages only centred.
- Loss: ``(L_clip + Σ_k ν_k mean(ρ Â_Ck)) / (1 + Σ_k ν_k) + 0.5 MSE(V_R) + 0.5 Σ_k MSE(V_Ck)``; the
  cost term uses the unclipped ratio, as released.
- Multipliers: ``ν_k = softplus(ξ_k)``, each step of its own Adam on ``-ν_k (Ĵ_Ck - B_k)`` from the raw
  mean episode cost, ``ξ`` clamped so that ``ν >= ν_min``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["AgentConfig", "PPOLagrangian", "gae"]


@dataclass(frozen=True)
class AgentConfig:
    """Hyper-parameters (defaults: the README's coarse-grained command, spec §A.6)."""

    lr: float = 3e-4
    hidden: int = 32
    epochs: int = 10
    minibatch: int = 64
    clip: float = 0.2
    max_grad_norm: float = 0.5
    target_kl: float | None = 0.1
    gamma: float = 0.99
    lam: float = 0.95
    cost_gamma: float = 0.99
    cost_lam: float = 1.0
    nu_init: float = 1.0
    nu_lr: float = 1.0
    nu_min: float = 0.0
    log_std_init: float = 0.0
    #: Initial mean action (the actor's output bias); the official code starts at 0.
    action_init: float = 0.0


def gae(rewards: Tensor, values: Tensor, dones: Tensor, gamma: float, lam: float,
        last_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over one rollout (time along dim 0).

    ``dones[t]`` marks that step ``t`` ended its episode (no bootstrap across it). Returns the
    advantages and the returns (advantages + values).
    """
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    next_value = torch.full_like(rewards[0], float(last_value))
    for t in reversed(range(rewards.shape[0])):
        live = 1.0 - dones[t].to(rewards.dtype)
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        adv[t] = running
        next_value = values[t]
    return adv, adv + values


def _mlp(inputs: int, hidden: int, outputs: int, gain: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                        nn.Linear(hidden, outputs))
    for i, layer in enumerate(l for l in net if isinstance(l, nn.Linear)):
        nn.init.orthogonal_(layer.weight, gain=math.sqrt(2) if i < 2 else gain)
        nn.init.zeros_(layer.bias)
    return net


def _softplus_inverse(value: float) -> float:
    return math.log(math.expm1(value)) if value > 0 else math.log(1e-8)


class PPOLagrangian(nn.Module):
    """The agent. ``act`` samples; ``update`` runs PPO on a rollout; ``update_multipliers`` steps ν."""

    def __init__(self, obs_dim: int, act_dim: int, costs: int, config: AgentConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.config = config
        self.generator = generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.actor = _mlp(obs_dim, config.hidden, act_dim, 0.01)
            nn.init.constant_(self.actor[-1].bias, config.action_init)
            self.reward_critic = _mlp(obs_dim, config.hidden, 1, 1.0)
            self.cost_critics = nn.ModuleList(_mlp(obs_dim, config.hidden, 1, 1.0) for _ in range(costs))
        self.log_std = nn.Parameter(torch.full((act_dim,), config.log_std_init))
        self.xi = torch.full((costs,), _softplus_inverse(config.nu_init), requires_grad=True)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)
        self.nu_optimizer = torch.optim.Adam([self.xi], lr=config.nu_lr)

    @property
    def nu(self) -> Tensor:
        """The Lagrange multipliers ν = softplus(ξ)."""
        return nn.functional.softplus(self.xi.detach())

    def _log_prob(self, obs: Tensor, actions: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        dist = torch.distributions.Normal(self.actor(obs), self.log_std.exp())
        logp = dist.log_prob(actions)
        entropy = dist.entropy()
        if mask is not None:
            logp, entropy = logp * mask, entropy * mask
        return logp.sum(-1), entropy.sum(-1)

    @torch.no_grad()
    def act(self, obs: Tensor, mask: Tensor | None = None, *, deterministic: bool = False) -> dict[str, Tensor]:
        """One action for one (normalised) observation, with its log-probability and the values."""
        mean = self.actor(obs)
        noise = torch.randn(mean.shape, generator=self.generator)
        action = mean if deterministic else mean + self.log_std.exp() * noise
        logp, _ = self._log_prob(obs, action, mask)
        costs = torch.stack([c(obs).squeeze(-1) for c in self.cost_critics]) if len(self.cost_critics) else torch.zeros(0)
        return {"action": action, "logp": logp, "value": self.reward_critic(obs).squeeze(-1), "cost_values": costs}

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """PPO epochs on a rollout: ``obs, actions, logp, adv, ret, cost_adv (n, K), cost_ret (n, K), mask``."""
        cfg = self.config
        n = batch["obs"].shape[0]
        nu = self.nu
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "approx_kl": 0.0}
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            kls = []
            for start in range(0, n, cfg.minibatch):
                idx = order[start:start + cfg.minibatch]
                mask = batch["mask"][idx] if batch.get("mask") is not None else None
                logp, _ = self._log_prob(batch["obs"][idx], batch["actions"][idx], mask)
                ratio = torch.exp(logp - batch["logp"][idx])
                adv = batch["adv"][idx]
                adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8) if adv.numel() > 1 else adv * 0
                clipped = torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip)
                loss_clip = -torch.min(ratio * adv, clipped * adv).mean()
                cost_adv = batch["cost_adv"][idx]
                cost_adv = cost_adv - cost_adv.mean(0, keepdim=True)
                cost_term = (nu[None, :] * (ratio[:, None] * cost_adv)).mean(0).sum()
                policy_loss = (loss_clip + cost_term) / (1.0 + float(nu.sum()))
                value_loss = 0.5 * (self.reward_critic(batch["obs"][idx]).squeeze(-1) - batch["ret"][idx]).square().mean()
                for k, critic in enumerate(self.cost_critics):
                    value_loss = value_loss + 0.5 * (critic(batch["obs"][idx]).squeeze(-1)
                                                     - batch["cost_ret"][idx, k]).square().mean()
                self.optimizer.zero_grad(set_to_none=True)
                (policy_loss + value_loss).backward()
                nn.utils.clip_grad_norm_(self.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    kls.append(float((batch["logp"][idx] - logp).mean()))
                stats["policy_loss"], stats["value_loss"] = float(policy_loss.detach()), float(value_loss.detach())
            stats["approx_kl"] = sum(kls) / max(len(kls), 1)
            if cfg.target_kl is not None and stats["approx_kl"] > 1.5 * cfg.target_kl:
                break
        return stats

    def update_multipliers(self, mean_costs: Tensor, budgets: Tensor) -> Tensor:
        """One Adam step per multiplier on ``-ν (Ĵ_C - B)``: ν rises while the cost is over budget."""
        loss = -(nn.functional.softplus(self.xi) * (mean_costs.detach() - budgets)).sum()
        self.nu_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.nu_optimizer.step()
        floor = math.log(max(math.expm1(self.config.nu_min), 1e-8))
        with torch.no_grad():
            self.xi.clamp_(min=floor)
        return self.nu

    def full_state(self) -> dict[str, Any]:
        """Everything to resume: weights, log-std, ξ, both optimizers, the generator."""
        return {"net": self.state_dict(), "xi": self.xi.detach().clone(), "opt": self.optimizer.state_dict(),
                "nu_opt": self.nu_optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_full_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`full_state`."""
        self.load_state_dict(state["net"])
        with torch.no_grad():
            self.xi.copy_(state["xi"])
        self.optimizer.load_state_dict(state["opt"])
        self.nu_optimizer.load_state_dict(state["nu_opt"])
        self.generator.set_state(state["generator"])
