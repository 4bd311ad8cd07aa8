"""What ``secateurs --help`` and ``secateurs list ...`` print, without importing torch.

The registries (methods, models, datasets, granularities, allocators, costs) and the config
dataclasses whose fields document the run settings and each method's options live in modules that
import torch, which takes seconds to load. The command line only needs their names and help text
to answer ``--help``, ``list`` and argument errors, so that text is generated once from the code into
``catalogue.json`` next to this file, and the CLI reads it from there.

The file cannot drift silently: ``tests/cli/test_cli_startup.py`` compares it with
:func:`build_catalogue` (what the code says now) and fails with the command that rewrites it::

    python -m secateurs.cli.catalogue        # regenerate after changing a method, option or setting
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from secateurs.errors import UsageError

__all__ = ["CATALOGUE_FILE", "build_catalogue", "catalogue", "method_entry", "setting_help", "write_catalogue"]

#: The generated file (package data).
CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")

_REGENERATE = "python -m secateurs.cli.catalogue"


def build_catalogue() -> dict[str, Any]:
    """The catalogue as the code defines it now (imports torch and every registry)."""
    from secateurs.allocation import ALLOCATORS
    from secateurs.budget import COSTS
    from secateurs.config_validation import describe_fields
    from secateurs.core.granularity import list_granularities
    from secateurs.data import describe_datasets
    from secateurs.experiment.config import RunConfig
    from secateurs.methods import METHODS
    from secateurs.models import list_models
    from secateurs.train.config import TrainConfig

    methods = [{"name": name, "aliases": METHODS.aliases_of(name), "description": METHODS.describe(name),
                "options": describe_fields(METHODS.get(name).Config)} for name in METHODS.names()]
    costs = [(name, (cls.__doc__ or "").strip().splitlines()[0]) for name, cls in COSTS.items()]
    catalogue = {
        "methods": methods,
        "models": list_models(),
        "datasets": list(describe_datasets().items()),
        "granularities": list_granularities(),
        "allocators": [(name, ALLOCATORS.describe(name)) for name in ALLOCATORS.names()],
        "costs": costs,
        "settings": {"run": [r for r in describe_fields(RunConfig) if r[0] != "train"],
                     "train": describe_fields(TrainConfig)},
    }
    return json.loads(json.dumps(catalogue))  # tuples become lists, as read back from the file


def write_catalogue(path: Path = CATALOGUE_FILE) -> None:
    """Regenerate the catalogue file from the code."""
    path.write_text(json.dumps(build_catalogue(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@cache
def catalogue() -> dict[str, Any]:
    """The generated catalogue, read from the package (no torch import)."""
    try:
        return json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a broken installation, not a user error
        raise RuntimeError(f"{CATALOGUE_FILE} is missing or damaged ({exc}); regenerate it: {_REGENERATE}") from exc


def method_entry(name: str) -> dict[str, Any]:
    """The catalogue entry of the method ``name`` or one of its aliases; UsageError when unknown.

    The message is the registry's (:meth:`~secateurs.methods.registry.Registry.canonical`).
    """
    methods = catalogue()["methods"]
    for entry in methods:
        if name == entry["name"] or name in entry["aliases"]:
            return entry
    if "secateurs.methods" in sys.modules:  # loaded already: a method registered from Python is known there
        from secateurs.config_validation import describe_fields
        from secateurs.methods import METHODS

        canonical = METHODS.canonical(name)  # UsageError listing the live names when unknown
        return {"name": canonical, "aliases": METHODS.aliases_of(canonical), "description": METHODS.describe(canonical),
                "options": describe_fields(METHODS.get(canonical).Config)}
    raise UsageError(f"unknown method {name!r}; known: {', '.join(e['name'] for e in methods)}")


def setting_help(name: str) -> str | None:
    """The one-line help of a run or training setting (a field of RunConfig or TrainConfig)."""
    settings = catalogue()["settings"]
    for row in (*settings["run"], *settings["train"]):
        if row[0] == name:
            return row[3] or None
    return None


if __name__ == "__main__":
    write_catalogue()
    sys.stdout.write(f"wrote {CATALOGUE_FILE}\n")
