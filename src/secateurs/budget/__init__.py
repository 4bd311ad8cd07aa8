"""Budgets on costs of the delivered model: ``params``, ``macs``, ``latency_ms``, ``bytes`` or a user function.

Example::

    from secateurs.budget import parse_budget, measure_budgets, Subject
    budget = parse_budget("macs<=25%")
    results = measure_budgets([budget], Subject(pruned, masks, x), dense=Subject(model, None, x))
"""

from secateurs.budget.costs import COSTS, Cost, Subject, resolve_cost
from secateurs.budget.spec import Budget, parse_budget, parse_budgets
from secateurs.budget.verify import BudgetResult, dense_costs, measure_budgets

__all__ = [
    "COSTS", "Budget", "BudgetResult", "Cost", "Subject", "dense_costs", "measure_budgets", "parse_budget",
    "parse_budgets", "resolve_cost",
]
