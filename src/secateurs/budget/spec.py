"""Budget text ``NAME<=VALUE`` parsed once, at the command-line / config edge, into a typed :class:`Budget`.

VALUE is absolute (``params<=20000``), a percentage of the dense model (``macs<=25%``) or a multiple
of it (``latency_ms<=0.5x``). A cost may take options in brackets, e.g.
``latency_ms[batch=64,threads=1]<=0.5x``. Unknown costs, malformed text and impossible values are
:class:`~secateurs.errors.UsageError` (exit 2), never a traceback.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from secateurs.errors import UsageError

__all__ = ["Budget", "parse_budget", "parse_budgets"]

_PATTERN = re.compile(
    r"^\s*(?P<cost>[A-Za-z_][\w.]*(?::[A-Za-z_][\w.]*)?)\s*(?:\[(?P<opts>[^\]]*)\])?\s*<=\s*"
    r"(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>%|x)?\s*$"
)


@dataclass(frozen=True)
class Budget:
    """An upper bound on one cost of the delivered model.

    Attributes:
        cost: Cost name (``params``, ``macs``, ``latency_ms``, ``bytes``) or ``module:function``.
        value: The number as written (``25`` for ``25%``).
        relative: Whether ``value`` is relative to the dense model (``%`` or ``x``).
        options: Cost options from the brackets (``batch``, ``threads``, ``device``, ...).
        text: The budget as the user wrote it (normalised), for reports.
    """

    cost: str
    value: float
    relative: bool
    options: tuple[tuple[str, Any], ...] = field(default=())
    text: str = ""

    @property
    def fraction(self) -> float | None:
        """The limit as a fraction of the dense cost (None for absolute budgets)."""
        return self.value if self.relative else None

    def limit(self, dense: float) -> float:
        """The absolute limit, given the dense model's cost."""
        return self.value * dense if self.relative else self.value

    def option_dict(self) -> dict[str, Any]:
        """The cost options as a mapping."""
        return dict(self.options)

    def __str__(self) -> str:
        return self.text


def _parse_value(raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw


def parse_budget(text: str | Budget) -> Budget:
    """Parse ``NAME<=VALUE`` (see the module docstring); a Budget passes through unchanged.

    Raises:
        UsageError: Malformed text, an unknown cost, bad options or a value that is not positive.
    """
    if isinstance(text, Budget):
        return text
    if not isinstance(text, str):
        raise UsageError(f"a budget is text like 'macs<=25%', got {text!r}")
    match = _PATTERN.match(text)
    if match is None:
        raise UsageError(f"bad budget {text!r}: write NAME<=VALUE, VALUE absolute, N% or Nx of the dense model "
                         "(e.g. 'macs<=25%', 'latency_ms<=0.5x', 'params<=20000')")
    from secateurs.budget.costs import resolve_cost

    cost = match["cost"]
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (match["opts"] or "").split(","))):
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad budget {text!r}: cost options are KEY=VALUE, got {part!r}")
        options[key.strip()] = _parse_value(raw.strip())
    resolve_cost(cost, options)  # unknown cost or option: UsageError now, not after training
    value = float(match["value"])
    unit = match["unit"]
    relative = unit is not None
    if unit == "%":
        value /= 100.0
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"bad budget {text!r}: the limit must be positive")
    opts = "" if not options else "[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]"
    written = match["value"] + (unit or "")
    return Budget(cost, value, relative, tuple(options.items()), f"{cost}{opts}<={written}")


def parse_budgets(texts: Any) -> tuple[Budget, ...]:
    """Parse a list of budget texts (or one text); several budgets on one cost are allowed."""
    if texts is None:
        return ()
    if isinstance(texts, (str, Budget)):
        texts = [texts]
    return tuple(parse_budget(t) for t in texts)
