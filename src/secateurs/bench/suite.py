"""Benchmark suites: a YAML file that names a grid of runs, parsed and validated before anything runs.

A suite (every key not listed here is an error that names the known ones)::

    name: fashion-lenet5            # default: the file name
    description: one paragraph      # optional, shown at the top of the report
    base:                           # RunConfig fields shared by every cell (also model/data defaults)
      data: fashion-mnist
      train: {epochs: 10, batch_size: 128, lr: 0.1}
    grid:                           # a mapping, or a list of mappings each expanded on its own
      model: [lenet5]
      method: [dense, all]          # "all": every registered method; "dense": the dense reference
      granularity: [unstructured]
      sparsity: [0.9, 0.95, 0.98]   # and/or macs: [0.5, 0.25] (fraction of the dense MACs kept)
      scope: [tensor]               # optional
      seed: [0, 1, 2]
    method_options:                 # per-method options; targets, granularity, scope, seed are axes
      lottery: {rounds: 2}
    pretrain:                       # optional: train a dense model per (model, data, seed) first and
      train: {epochs: 20}           # start every cell, dense ones included, from it

The equal-budget rule is structural: every cell trains for ``base.train.epochs`` (after the same
pretraining, when there is one); neither the grid nor ``method_options`` can change a budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from secateurs.bench.grid import Cell, expand_grid
from secateurs.config_validation import build_config, yaml_load
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.methods import METHODS

__all__ = ["AXES", "Suite", "load_suite", "parse_suite"]

TOP_KEYS = ("name", "description", "base", "grid", "method_options", "pretrain")
#: Grid axes; each takes a list (or one scalar).
AXES = ("model", "data", "method", "granularity", "scope", "sparsity", "macs", "seed")
#: RunConfig fields a cell sets itself, so ``base`` may not.
_CELL_FIELDS = ("method", "method_options", "from_checkpoint", "seed")
#: Method config fields that are grid axes, so ``method_options`` may not set them.
_AXIS_OPTIONS = ("sparsity", "granularity", "scope", "seed")


@dataclass(frozen=True)
class Suite:
    """A parsed, validated suite.

    Attributes:
        name: the suite's name (report title).
        description: free text for the report.
        cells: every run, pretraining runs first; ``cell.id`` is unique and is its run directory.
        not_applicable: ``(cell id, reason)`` for combinations from ``method: all`` that a method
            rejects (e.g. a granularity it does not support); they are reported, not run.
        source: the suite as read (saved next to the results for the record).
    """

    name: str
    description: str
    cells: list[Cell]
    not_applicable: list[tuple[str, str]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrain_cells(self) -> list[Cell]:
        """The dense pretraining runs."""
        return [c for c in self.cells if c.role == "pretrain"]


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file (UsageError with one clear line on any problem)."""
    path = Path(path)
    try:
        raw = yaml_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no suite file at {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a suite file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text (YAML) file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_suite(raw, default_name=path.stem, where=str(path))


def parse_suite(raw: Any, *, default_name: str = "suite", where: str = "suite") -> Suite:
    """Validate a suite mapping (see the module docstring) and expand its grid into cells."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: a suite is a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(raw, TOP_KEYS, f"{where}: unknown key {{!r}} at the top level")
    base = _mapping(raw.get("base"), f"{where}: base")
    for key in _CELL_FIELDS:
        if key in base:
            raise UsageError(f"{where}: base may not set {key!r}; {_why_not_in_base(key)}")
    _check_run_fields(base, f"{where}: base")
    options = _method_options(raw.get("method_options"), where)
    pretrain = _pretrain(raw.get("pretrain"), where) if raw.get("pretrain") is not None else None
    grids = raw.get("grid")
    if grids is None:
        raise UsageError(f"{where}: the suite needs a grid (lists over {', '.join(AXES)})")
    grids = grids if isinstance(grids, list) else [grids]
    cells: list[Cell] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, grid in enumerate(grids):
        label = f"{where}: grid" if len(grids) == 1 else f"{where}: grid[{index}]"
        grid = _mapping(grid, label)
        _check_keys(grid, AXES, f"{label}: unknown axis {{!r}}")
        new, na = expand_grid(grid, base=base, method_options=options, pretrain=pretrain, where=label)
        for cell in new:
            if cell.id not in seen:
                seen.add(cell.id)
                cells.append(cell)
        skipped += [item for item in na if item[0] not in seen]
    if not any(c.role == "run" for c in cells):
        raise UsageError(f"{where}: the grid has no runnable cell")
    # Stable: pretraining first, then seed-major over all grids (a partial run holds whole comparisons).
    cells.sort(key=lambda c: (c.role != "pretrain", c.seed))
    name = str(raw.get("name") or default_name)
    return Suite(name=name, description=str(raw.get("description") or ""), cells=cells,
                 not_applicable=skipped, source=raw)


def _why_not_in_base(key: str) -> str:
    return {
        "method": "list methods in grid.method",
        "method_options": "use the top-level method_options: {METHOD: {...}}",
        "from_checkpoint": "use pretrain: to start every cell from the same dense model",
        "seed": "list seeds in grid.seed",
    }[key]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping")
    return dict(value)


def _check_keys(mapping: dict[str, Any], known: tuple[str, ...] | list[str], message: str) -> None:
    unknown = sorted(set(map(str, mapping)) - set(known))
    if unknown:
        raise UsageError(message.format(unknown[0]) + f"; known: {', '.join(known)}")


def _check_run_fields(section: dict[str, Any], where: str) -> None:
    from secateurs.train.config import TrainConfig

    known = [f.name for f in fields(RunConfig) if not f.metadata.get("internal")]
    _check_keys(section, known, f"{where}: unknown key {{!r}}")
    train = section.get("train")
    if train is not None:
        train = _mapping(train, f"{where}.train")
        _check_keys(train, [f.name for f in fields(TrainConfig)], f"{where}.train: unknown key {{!r}}")
        build_config(TrainConfig, train, where=f"{where}.train")  # a bad value is named here, not per cell


def _method_options(value: Any, where: str) -> dict[str, dict[str, Any]]:
    options = _mapping(value, f"{where}: method_options")
    out: dict[str, dict[str, Any]] = {}
    for name, opts in options.items():
        label = f"{where}: method_options.{name}"
        if name == "dense":
            raise UsageError(f"{label}: the dense reference has no method options")
        try:
            canonical = METHODS.canonical(str(name))
        except UsageError as exc:
            raise UsageError(f"{label}: {exc}") from None
        opts = _mapping(opts, label)
        for key in _AXIS_OPTIONS:
            if key in opts:
                raise UsageError(f"{label}: {key!r} is a grid axis; set it in grid.{key}")
        known = [f.name for f in fields(METHODS.get(canonical).Config) if f.name not in _AXIS_OPTIONS]
        _check_keys(opts, known, f"{label}: unknown option {{!r}}")
        out[canonical] = {**out.get(canonical, {}), **opts}
    return out


def _pretrain(value: Any, where: str) -> dict[str, Any]:
    section = _mapping(value, f"{where}: pretrain")
    for key in (*_CELL_FIELDS, "model", "data"):
        if key in section:
            raise UsageError(f"{where}: pretrain may not set {key!r}; it trains each grid model densely")
    _check_run_fields(section, f"{where}: pretrain")
    return section
