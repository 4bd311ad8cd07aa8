"""Schedules: pure functions of an explicitly passed step (or epoch).

No schedule keeps a hidden counter: a value depends only on the step given, so a resumed run
recomputes exactly what an uninterrupted one had. Each factory returns ``Callable[[int], float]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["Schedule", "constant", "cosine", "exponential", "linear", "piecewise", "polynomial"]

Schedule = Callable[[int], float]


def _progress(step: int, start: int, end: int) -> float:
    """Fraction of the way from ``start`` to ``end``, clamped to [0, 1]."""
    if end <= start:
        return 1.0 if step >= end else 0.0
    return min(max((step - start) / (end - start), 0.0), 1.0)


def constant(value: float) -> Schedule:
    """Always ``value``."""
    return lambda step: value


def linear(start: int, end: int, v0: float, v1: float) -> Schedule:
    """``v0`` until ``start``, straight line to ``v1`` at ``end``, ``v1`` afterwards."""
    return lambda step: v0 + (v1 - v0) * _progress(step, start, end)


def polynomial(start: int, end: int, v0: float, v1: float, power: float = 3.0) -> Schedule:
    """Zhu & Gupta's gradual schedule: ``v1 + (v0 - v1) * (1 - t)**power`` with t in [0, 1].

    With ``v0 = 0`` and ``v1`` the final sparsity and ``power = 3`` this is the cubic sparsity schedule
    of "To prune, or not to prune" (2017): fast pruning early, while the network can recover, slow
    at the end.
    """
    return lambda step: v1 + (v0 - v1) * (1.0 - _progress(step, start, end)) ** power


def exponential(start: int, end: int, v0: float, v1: float) -> Schedule:
    """Geometric interpolation from ``v0`` to ``v1`` (both > 0): ``v0 * (v1/v0)**t``."""
    if v0 <= 0 or v1 <= 0:
        raise ValueError("exponential schedules need positive endpoints")
    return lambda step: v0 * (v1 / v0) ** _progress(step, start, end)


def cosine(start: int, end: int, v0: float, v1: float) -> Schedule:
    """Half-cosine from ``v0`` to ``v1``."""
    return lambda step: v1 + (v0 - v1) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, start, end)))


def piecewise(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``values[i]`` for ``boundaries[i-1] <= step < boundaries[i]`` (``len(values) == len(boundaries)+1``)."""
    if len(values) != len(boundaries) + 1:
        raise ValueError("piecewise needs one more value than boundaries")
    bounds = list(boundaries)

    def value(step: int) -> float:
        i = sum(1 for b in bounds if step >= b)
        return values[i]

    return value
