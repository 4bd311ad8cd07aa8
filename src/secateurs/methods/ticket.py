"""How a method takes part in a parallel lottery-ticket search (``secateurs search-tickets``).

A method that can search a ticket (search a mask, rewind the weights, train the sparse ticket) in
one run declares it with a :class:`TicketSearch` on its class (``PruningMethod.ticket_search``);
the search then never needs to know which method it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TicketSearch"]


@dataclass(frozen=True)
class TicketSearch:
    """A method's declaration of its ticket search.

    Attributes:
        options: method options that make one run a ticket search (set on every replica).
        untargeted: options added when no sparsity is given: the sparsity emerges from the setting
            that is varied (the usual curve of a ticket search).
        targeted: options added when the sparsity itself is varied.
        vary: the option varied by default.
        values: its default values.
        label: the name of the method's tickets in tables and plots.
    """

    options: Mapping[str, Any]
    untargeted: Mapping[str, Any] = field(default_factory=dict)
    targeted: Mapping[str, Any] = field(default_factory=dict)
    vary: str = "sparsity"
    values: tuple[Any, ...] = (0.5, 0.8, 0.9)
    label: str = "tickets"
