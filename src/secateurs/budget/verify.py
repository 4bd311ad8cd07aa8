"""Measure a subject against budgets: ``{name, limit, achieved, met}`` per budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from secateurs.budget.costs import Subject, resolve_cost
from secateurs.budget.spec import Budget

__all__ = ["BudgetResult", "dense_costs", "measure_budgets"]


@dataclass(frozen=True)
class BudgetResult:
    """One budget measured on a model.

    Attributes:
        name: The budget as written (``macs<=25%``).
        cost: The cost name.
        limit: The absolute limit.
        achieved: The measured cost.
        dense: The dense model's cost.
        met: ``achieved <= limit``.
    """

    name: str
    cost: str
    limit: float
    achieved: float
    dense: float
    met: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``report.json``."""
        return asdict(self)


def dense_costs(budgets: Sequence[Budget], dense: Subject) -> list[float]:
    """The dense model's cost for each budget."""
    return [resolve_cost(b.cost, b.option_dict()).measure(dense) for b in budgets]


def measure_budgets(budgets: Sequence[Budget], subject: Subject, *, dense: Sequence[float]) -> list[BudgetResult]:
    """Measure every budget's cost on ``subject``; ``dense`` are the dense costs (for relative limits)."""
    out = []
    for budget, base in zip(budgets, dense, strict=True):
        achieved = resolve_cost(budget.cost, budget.option_dict()).measure(subject)
        limit = budget.limit(base)
        out.append(BudgetResult(budget.text, budget.cost, limit, achieved, base, achieved <= limit))
    return out
