"""Grid expansion: one suite grid -> the cells (runs) it names, each with a validated RunConfig.

Cells are ordered seed-major (every method at seed 0 before any at seed 1), so an interrupted or
half-finished grid already holds a complete one-seed comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secateurs.core.granularity import parse_granularity
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.methods import METHODS

__all__ = ["ALL", "DENSE", "Cell", "expand_grid"]

DENSE = "dense"
ALL = "all"
#: Sparsity a ``macs`` cell is validated with; the runner replaces it before the run.
_MACS_PLACEHOLDER = 0.5


@dataclass(frozen=True, eq=False)
class Cell:
    """One run of the grid.

    Attributes:
        id: unique name, also the run directory relative to the bench directory.
        role: ``"pretrain"`` (dense model the other cells start from) or ``"run"``.
        model / data / seed: the grid point.
        method: canonical method name, or ``"dense"``.
        granularity / scope: resolved method settings (None for dense runs).
        target_kind: ``"sparsity"``, ``"macs"`` (fraction of dense MACs kept), ``"implied"`` (N:M)
            or ``"none"`` (dense).
        target_value: the target (for ``implied`` the implied sparsity).
        config: the validated run config (a ``macs`` cell's sparsity is resolved by the runner).
        pretrain: id of the pretraining cell this one starts from.
        pretrain_epochs: epochs of that pretraining (0 without one).
    """

    id: str
    role: str
    model: str
    data: str
    method: str
    granularity: str | None
    scope: str | None
    target_kind: str
    target_value: float | None
    seed: int
    config: RunConfig
    pretrain: str | None = None
    pretrain_epochs: int = 0

    def keys(self) -> dict[str, Any]:
        """The grid point as plain values (the leading fields of each line of ``results.jsonl``)."""
        return {
            "cell": self.id, "role": self.role, "model": self.model, "dataset": self.data, "method": self.method,
            "granularity": self.granularity, "scope": self.scope, "target_kind": self.target_kind,
            "target_value": self.target_value, "seed": self.seed, "epochs": self.config.train.epochs,
            "pretrain_epochs": self.pretrain_epochs,
        }


def expand_grid(
    grid: dict[str, Any],
    *,
    base: dict[str, Any],
    method_options: dict[str, dict[str, Any]],
    pretrain: dict[str, Any] | None,
    where: str,
) -> tuple[list[Cell], list[tuple[str, str]]]:
    """Expand one grid mapping into cells.

    Returns:
        The cells (pretraining cells included) and ``(cell id, reason)`` for each combination that a
        method reached through ``all`` rejects. A combination named explicitly that is invalid
        raises UsageError instead.
    """
    models = [str(m) for m in _axis(grid, base, "model", None, where)]
    datas = [str(d) for d in _axis(grid, base, "data", None, where)]
    seeds = [_int(s, f"{where}.seed") for s in _axis(grid, {}, "seed", 0, where)]
    methods = _methods(_axis(grid, {}, "method", None, where), where)
    grans = [str(g) for g in _axis(grid, {}, "granularity", "unstructured", where)]
    scopes = _axis(grid, {}, "scope", None, where)
    targets = [("sparsity", _fraction(v, f"{where}.sparsity", upper_open=True)) for v in _list(grid.get("sparsity"))]
    targets += [("macs", _fraction(v, f"{where}.macs", upper_open=False)) for v in _list(grid.get("macs"))]
    cells: list[Cell] = []
    skipped: list[tuple[str, str]] = []
    for seed in seeds:
        for model in models:
            for data in datas:
                point = {"model": model, "data": data, "seed": seed}
                pre = _pretrain_cell(point, base, pretrain, where) if pretrain is not None else None
                if pre is not None:
                    cells.append(pre)
                for method, from_all in methods.items():
                    cells += _method_cells(point, method, from_all, grans, scopes, targets, base, method_options,
                                           pre, skipped, where)
    return cells, skipped


def _method_cells(point: dict[str, Any], method: str, from_all: bool, grans: list[str], scopes: list[Any],
                  targets: list[tuple[str, float]], base: dict[str, Any], method_options: dict[str, dict[str, Any]],
                  pre: Cell | None, skipped: list[tuple[str, str]], where: str) -> list[Cell]:
    prefix = f"runs/{_slug(point['model'])}/{_slug(point['data'])}/{method}"
    link = {"pretrain": pre.id if pre else None, "pretrain_epochs": pre.config.train.epochs if pre else 0}
    if method == DENSE:
        config = _config(_merge(base, point), f"{where}: dense")
        return [Cell(f"{prefix}/seed{point['seed']}", "run", point["model"], point["data"], DENSE, None, None, "none",
                     None, point["seed"], config, **link)]
    out = []
    for gran in grans:
        fixed = parse_granularity(gran).fixed_density
        cell_targets = [("implied", 1.0 - fixed)] if fixed is not None else targets
        if not cell_targets:
            raise UsageError(f"{where}: pruning methods need grid.sparsity or grid.macs")
        for scope in scopes:
            for kind, value in cell_targets:
                options = {**method_options.get(method, {}), "granularity": gran, "seed": point["seed"]}
                if scope is not None:
                    options["scope"] = str(scope)
                if kind != "implied":
                    options["sparsity"] = value if kind == "sparsity" else _MACS_PLACEHOLDER
                parts = [gran, *([str(scope)] if scope is not None else []), _target_slug(kind, value)]
                cell_id = f"{prefix}/{_slug('-'.join(p for p in parts if p))}/seed{point['seed']}"
                raw = {**_merge(base, point), "method": method, "method_options": options}
                try:
                    config = RunConfig.from_dict(raw)
                except UsageError as exc:
                    if from_all:
                        skipped.append((cell_id, str(exc)))
                        continue
                    raise UsageError(f"{where}: {method} at {gran} {kind} {value:g}: {exc}") from None
                resolved = config.method_config()
                out.append(Cell(cell_id, "run", point["model"], point["data"], method, str(resolved.granularity),
                                resolved.scope, kind, value, point["seed"], config, **link))
    return out


def _pretrain_cell(point: dict[str, Any], base: dict[str, Any], pretrain: dict[str, Any], where: str) -> Cell:
    config = _config(_merge(_merge(base, pretrain), point), f"{where}: pretrain")
    cell_id = f"pretrain/{_slug(point['model'])}/{_slug(point['data'])}/seed{point['seed']}"
    return Cell(cell_id, "pretrain", point["model"], point["data"], DENSE, None, None, "none", None, point["seed"],
                config)


def _config(raw: dict[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig.from_dict(raw)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **over}
    if isinstance(base.get("train"), dict) and isinstance(over.get("train"), dict):
        out["train"] = {**base["train"], **over["train"]}
    return out


def _methods(values: list[Any], where: str) -> dict[str, bool]:
    """Canonical method names -> whether they came only through ``all`` (registration order kept)."""
    out: dict[str, bool] = {}
    for value in values:
        name = str(value)
        if name == ALL:
            for registered in METHODS.names():
                out.setdefault(registered, True)
        elif name == DENSE:
            out[DENSE] = False
        else:
            try:
                out[METHODS.canonical(name)] = False
            except UsageError as exc:
                raise UsageError(f"{where}.method: {exc} (or dense, all)") from None
    return out


def _axis(grid: dict[str, Any], base: dict[str, Any], name: str, default: Any, where: str) -> list[Any]:
    value = grid.get(name, base.get(name, default))
    if value is None and default is None and name != "scope":
        raise UsageError(f"{where}: the grid needs {name} (a list, or a default in base)")
    values = _list(value)
    if not values and name != "scope":
        raise UsageError(f"{where}.{name} is empty")
    return values or [None]


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: seeds are integers, got {value!r}")
    return value


def _fraction(value: Any, where: str, *, upper_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where}: targets are numbers, got {value!r}")
    value = float(value)
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 < value <= 1.0
    if not ok:
        raise UsageError(f"{where}: {value:g} is outside {'[0, 1)' if upper_open else '(0, 1]'}")
    return value


def _target_slug(kind: str, value: float) -> str:
    return {"sparsity": f"s{value:g}", "macs": f"macs{value:g}", "implied": ""}[kind]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
