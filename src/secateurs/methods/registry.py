"""A small generic registry: ``@REGISTRY.register("name", aliases=(...))`` on a class or factory.

Shared code looks methods up by name here and never names a method itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from secateurs.errors import UsageError

if TYPE_CHECKING:
    from secateurs.methods.base import PruningMethod

__all__ = ["METHODS", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with aliases and one-line descriptions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), description: str = "") -> Callable[[T], T]:
        """Class decorator that registers the decorated object under ``name`` and its aliases."""

        def decorate(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items or key in self._aliases:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[name] = obj
            self._descriptions[name] = description or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            for alias in aliases:
                self._aliases[alias] = name
            if isinstance(obj, type):
                obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorate

    def canonical(self, name: str) -> str:
        """Resolve an alias; raise UsageError listing the known names when unknown."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UsageError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        """The object registered under ``name`` or one of its aliases."""
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Canonical names in registration order."""
        return list(self._items)

    def aliases_of(self, name: str) -> list[str]:
        """Aliases of a canonical name."""
        return [a for a, n in self._aliases.items() if n == name]

    def describe(self, name: str) -> str:
        """One-line description."""
        return self._descriptions[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases


#: Every pruning method, by canonical name (aliases resolve too).
METHODS: Registry[type[PruningMethod]] = Registry("method")
