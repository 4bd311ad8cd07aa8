"""Typed validation of configuration values, generated from the config dataclasses themselves.

Every setting of a run lives in a frozen dataclass (:class:`~secateurs.experiment.config.RunConfig`,
:class:`~secateurs.train.config.TrainConfig`, each method's
:class:`~secateurs.methods.base.MethodConfig`). Whatever the source of a value (a flag, a recipe
file, a benchmark suite, ``-o KEY=VALUE``, a Python call), it reaches the dataclass constructor, and
the constructor checks it here against the field's annotation and the field's metadata. So a new
setting is validated the moment it is declared, with no check to write per command::

    epochs: int = field(default=10, metadata={"help": "total epochs", "ge": 1})

Metadata keys understood (all optional):

- ``help``: one line shown by ``secateurs list methods NAME`` and in error messages' context;
- ``ge`` / ``gt`` / ``le`` / ``lt``: bounds of a number (inclusive / exclusive);
- ``choices``: the allowed strings;
- ``parse``: a callable turning a plain value (e.g. the string ``"2:4"``) into the field's type;
  it raises UsageError on a bad value;
- ``finite``: False lets a float be ``inf``/``nan`` (by default non-finite numbers are refused:
  a ``nan`` learning rate trains a network of NaNs).

Types understood: ``bool``, ``int``, ``float`` (an int is accepted and converted), ``str``,
``X | None``, ``tuple[X, ...]`` (a list is accepted; a single item means a one-item tuple), nested
config dataclasses (a mapping is accepted and built), and any other class (an instance is required,
unless ``parse`` converts). Strings are never converted to numbers here: a number written as text
(``lr: "0.1"``) is refused, so a typo cannot silently pass; text from the command line is read by
:func:`parse_yaml_value`, which gives numbers for numbers.

A refusal is a :class:`ConfigValueError`: one line naming the key, what is allowed and the value.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

import yaml

from secateurs.errors import UsageError

__all__ = [
    "ConfigValueError", "build_config", "describe_fields", "parse_yaml_value", "validate_fields", "yaml_load",
]

C = TypeVar("C")


class ConfigValueError(UsageError):
    """A configuration value of the wrong type or out of range.

    Attributes:
        key: the setting, dotted for nested ones (``train.lr``, ``method_options.rounds``).
        value: the value given.
        allowed: what the setting takes, in words (``"an integer >= 1"``).
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} must be {allowed}, got {_show(value)}")

    def within(self, prefix: str) -> ConfigValueError:
        """The same error for the setting seen from an enclosing config (``train`` + ``lr``)."""
        key = f"{prefix}.{self.key}" if prefix and self.key else prefix or self.key
        return ConfigValueError(key, self.value, self.allowed)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------- types
@cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (its module's names, so ``from __future__`` strings work)."""
    return typing.get_type_hints(cls)


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return tp, False


def _range_text(meta: Mapping[str, Any]) -> str:
    lo = ("ge", meta["ge"]) if "ge" in meta else ("gt", meta["gt"]) if "gt" in meta else None
    hi = ("le", meta["le"]) if "le" in meta else ("lt", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f" in {'[' if lo[0] == 'ge' else '('}{lo[1]:g}, {hi[1]:g}{']' if hi[0] == 'le' else ')'}"
    if lo:
        return f" {'>=' if lo[0] == 'ge' else '>'} {lo[1]:g}"
    if hi:
        return f" {'<=' if hi[0] == 'le' else '<'} {hi[1]:g}"
    return ""


def describe_type(tp: Any, meta: Mapping[str, Any] | None = None) -> str:
    """What a field of annotation ``tp`` and metadata ``meta`` accepts, in words."""
    meta = meta or {}
    inner, optional = _split_optional(tp)
    if "choices" in meta:
        text = "one of " + ", ".join(map(str, meta["choices"]))
    elif inner is bool:
        text = "true or false"
    elif inner is int:
        text = "an integer" + _range_text(meta)
    elif inner is float:
        text = ("a number" if meta.get("finite", True) is False else "a finite number") + _range_text(meta)
    elif inner is str:
        text = "a string"
    elif typing.get_origin(inner) in (tuple, list):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        text = f"a list of {_plural(args[0]) if args else 'values'}"
    elif dataclasses.is_dataclass(inner):
        text = f"a mapping of {inner.__name__} settings"
    elif "allowed" in meta:
        text = str(meta["allowed"])
    else:
        text = f"a {getattr(inner, '__name__', str(inner))}"
    if "allowed" in meta and "choices" not in meta:
        text = str(meta["allowed"])
    return text + (" or null" if optional else "")


def _plural(tp: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers", bool: "true/false values"}.get(
        tp, f"{getattr(tp, '__name__', tp)} values")


# ------------------------------------------------------------------------------------------ checks
def check_value(key: str, value: Any, tp: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` as the field ``key`` of annotation ``tp`` holds it; ConfigValueError when it does not fit."""
    meta = meta or {}
    inner, optional = _split_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigValueError(key, value, describe_type(tp, meta))
    parse = meta.get("parse")
    if parse is not None and not (isinstance(inner, type) and isinstance(value, inner)):
        try:
            return parse(value)
        except ConfigValueError as exc:
            raise exc.within(key) from None
        except UsageError as exc:
            raise UsageError(f"{key}: {exc}") from None
    out = _check_typed(key, value, inner, tp, meta)
    if "choices" in meta and out not in meta["choices"]:
        raise ConfigValueError(key, value, describe_type(tp, meta))
    return out


def _check_typed(key: str, value: Any, inner: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    def refuse() -> ConfigValueError:
        return ConfigValueError(key, value, describe_type(tp, meta))

    if inner is bool:
        if not isinstance(value, bool):
            raise refuse()
        return value
    if inner is int or inner is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse()
        if inner is int:
            if not isinstance(value, int):
                raise refuse()
        else:
            value = float(value)
            if meta.get("finite", True) and not math.isfinite(value):
                raise refuse()
        if not _in_range(value, meta):
            raise refuse()
        return value
    if inner is str:
        if not isinstance(value, str):
            raise refuse()
        return value
    origin = typing.get_origin(inner)
    if origin in (tuple, list):
        item_tp = next((a for a in typing.get_args(inner) if a is not Ellipsis), Any)
        items = list(value) if isinstance(value, list | tuple) else [value]
        try:
            out = [check_value(key, item, item_tp) if item_tp is not Any else item for item in items]
        except ConfigValueError:
            raise refuse() from None
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        if isinstance(value, inner):
            return value
        if isinstance(value, Mapping):
            return build_config(inner, value, where=key)
        raise refuse()
    if inner is Any or not isinstance(inner, type):
        return value
    if not isinstance(value, inner):
        raise refuse()
    return value


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    if math.isnan(value):  # only reaches here with finite=False; no bound holds for NaN
        return not any(k in meta for k in ("ge", "gt", "le", "lt"))
    return (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
            and ("le" not in meta or value <= meta["le"]) and ("lt" not in meta or value < meta["lt"]))


def validate_fields(config: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Check every field of the dataclass instance ``config``; store the converted values.

    Call it first in ``__post_init__`` (it works on frozen dataclasses); cross-field rules come after.
    """
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        if f.name in skip or not _settable(f):
            continue
        value = getattr(config, f.name)
        checked = check_value(f.name, value, hints[f.name], f.metadata)
        if checked is not value:
            object.__setattr__(config, f.name, checked)


def build_config(cls: type[C], raw: Any, *, where: str = "") -> C:
    """Build the config dataclass ``cls`` from a mapping (a recipe section, ``-o`` options, a suite).

    Unknown keys, a value that is not a mapping and every bad value raise one UsageError line
    naming the key (prefixed with ``where`` for nested sections).
    """
    label = where or cls.__name__
    if not isinstance(raw, Mapping):
        raise ConfigValueError(label, raw, f"a mapping of {cls.__name__} settings")
    known = [f.name for f in dataclasses.fields(cls) if _settable(f)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise UsageError(f"{prefix}unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    try:
        return cls(**raw)
    except ConfigValueError as exc:
        raise exc.within(where) from None


def _settable(f: dataclasses.Field[Any]) -> bool:
    """Whether users set this field (``metadata={"internal": True}`` marks bookkeeping fields)."""
    return f.init and not f.metadata.get("internal", False)


# ------------------------------------------------------------------------------------------ help
def describe_fields(cls: type) -> list[tuple[str, str, str, str]]:
    """``(name, accepted values, default, help)`` for each field of a config dataclass, in order."""
    hints = _hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not _settable(f):
            continue
        if f.default is not dataclasses.MISSING:
            default = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = "(see its settings)" if dataclasses.is_dataclass(hints[f.name]) else _plain(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, describe_type(hints[f.name], f.metadata), default, str(f.metadata.get("help", ""))))
    return rows


def _plain(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


# ------------------------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """YAML as people write numbers: ``1e-3`` and ``5e4`` are numbers (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text (safe: plain values only), reading ``1e-3`` as a number."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)


def parse_yaml_value(text: str) -> Any:
    """A command-line value as YAML reads it (``4`` -> 4, ``1e-3`` -> 0.001, ``true`` -> True), else the text."""
    try:
        value = yaml_load(text)
    except yaml.YAMLError:
        return text
    # Only scalars: "-o include=[a" or a mapping by accident stays the text it was.
    return value if value is None or isinstance(value, bool | int | float | str) else text
