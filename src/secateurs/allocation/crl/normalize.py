"""Running normalisation of observations, rewards and costs (spec §A.4, ``VecNormalizeWithCost``).

Observations: running mean/std, clipped to ±10. Rewards and each cost channel: divided by the running
standard deviation of their discounted return (γ = 0.99), clipped to ±10. The raw costs stay
available for the multiplier update. State is plain tensors, for checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["ReturnScaler", "RunningMeanStd"]

CLIP = 10.0
EPS = 1e-8


class RunningMeanStd:
    """Mean and variance over every value seen (parallel-update formula), per feature."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = torch.tensor(1e-4, dtype=torch.float64)

    def update(self, x: Tensor) -> None:
        """Add a batch ``(n, *shape)``."""
        x = x.to(torch.float64).reshape(-1, *self.mean.shape)
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta.square() * self.count * n / total) / total
        self.count = total

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std``, clipped to ±10."""
        out = (x.to(torch.float64) - self.mean) / torch.sqrt(self.var + EPS)
        return out.clamp(-CLIP, CLIP).to(torch.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


class ReturnScaler:
    """Scales a reward-like signal by the running std of its discounted return (no centring)."""

    def __init__(self, channels: int = 1, gamma: float = 0.99) -> None:
        self.gamma = gamma
        self.returns = torch.zeros(channels, dtype=torch.float64)
        self.stats = RunningMeanStd((channels,))

    def __call__(self, value: Tensor, done: bool, *, update: bool = True) -> Tensor:
        """The scaled value of one step (all channels); ``done`` ends the discounted return."""
        value = value.to(torch.float64).reshape(-1)
        if update:
            self.returns = self.returns * self.gamma + value
            self.stats.update(self.returns[None])
        out = (value / torch.sqrt(self.stats.var + EPS)).clamp(-CLIP, CLIP).to(torch.float32)
        if done:
            self.returns = torch.zeros_like(self.returns)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns, "stats": self.stats.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = state["returns"]
        self.stats.load_state_dict(state["stats"])
