"""RunConfig: everything that defines a ``train`` or ``prune`` run, as one typed, YAML-round-tripping value.

The command line, recipe files (``--config recipe.yaml``) and the benchmarks all build a RunConfig;
the run directory keeps the resolved one as ``config.yaml``. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from secateurs.config_validation import ConfigValueError, build_config, validate_fields, yaml_load
from secateurs.budget import Budget, parse_budgets
from secateurs.core.granularity import Filter
from secateurs.core.targets import Target, select_targets
from secateurs.errors import UsageError
from secateurs.methods import METHODS, MethodConfig, PruningMethod
from secateurs.train.config import TrainConfig

__all__ = ["RunConfig", "load_recipe"]


def _path_text(value: Any) -> str:
    """Paths may come as ``pathlib.Path`` from Python; the config keeps text."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[return-value]
    raise ConfigValueError("", value, "a path (a string)")


def _path(help_text: str) -> Any:
    return field(default=None, metadata={"help": help_text, "parse": _path_text})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A run: model, data, optional pruning method and training budget.

    Every field is checked on construction against its type and the range in its metadata
    (:mod:`secateurs.config_validation`), whatever built it: flags, a recipe, a suite or Python.

    Attributes:
        model: model registry name (``secateurs list models``).
        data: dataset registry name (``secateurs list datasets``).
        method: pruning method name, or None for dense training (an alias becomes the canonical name).
        method_options: the method's typed config (its ``Config`` class: sparsity, granularity,
            scope, seed and its own settings). A mapping is accepted and built into it once, here.
        train: optimizer, learning rate, epochs (a mapping is accepted).
        seed: the one seed of the run: data order, augmentation, model initialisation and the method's
            own generator (unless ``method_options`` sets ``seed``, an explicit override).
        deterministic: ask torch for deterministic algorithms (and cuDNN's deterministic settings);
            slower on GPUs, an error where an operation has no deterministic version.
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (CUDA when available).
        from_checkpoint: start from these trained dense weights (a run directory or weights file).
        include / exclude: glob patterns over weight names choosing the pruned weights.
        data_dir: where to look for dataset files first.
        val_fraction: carve a validation split from train and evaluate on it each epoch.
        limit_train / limit_test: use only this many samples (quick runs and tests).
        augment: training augmentation (random crop, flip where it makes sense).
        download: fetch missing datasets with torchvision (needs internet and torchvision).
        declared_options: bookkeeping, not a setting: the method options given explicitly (the
            rest are the method's defaults), so a benchmark cell's identity follows what its suite
            declared. Filled in from ``method_options``; never written to ``config.yaml``.
        budgets: upper bounds on costs of the delivered model (``macs<=25%``; parsed into
            :class:`~secateurs.budget.Budget`); they replace ``sparsity``.
        allocation: allocator of per-layer / per-group sparsities (``secateurs list allocators``);
            default with budgets: the method's own (``crl`` for ``--method crl``) or ``uniform``.
        allocation_options: the allocator's settings (``episodes``, ``minutes``, ...).
        round_to: filter runs: the shrunk model's channel counts are multiples of this (or the
            dense width); an allocation (``--budget``) rounds kept counts when it chooses the masks,
            so the budget holds after rounding, and ``secateurs shrink`` rounds up a plain
            ``--sparsity`` run (the channels it gives back stay zero). 1 keeps exact counts.
    """

    model: str = field(metadata={"help": "model registry name (secateurs list models)"})
    data: str = field(metadata={"help": "dataset registry name (secateurs list datasets)"})
    method: str | None = field(default=None, metadata={"help": "pruning method; null trains densely"})
    method_options: MethodConfig | None = field(default=None, metadata={
        "help": "the method's options (secateurs list methods NAME)", "allowed": "a mapping of the method's options"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training settings"})
    seed: int = field(default=0, metadata={
        "help": "the one seed of the run: initialisation, data order, augmentation, the method's sampler", "ge": 0})
    deterministic: bool = field(default=False, metadata={"help": "deterministic torch algorithms and cuDNN settings"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    from_checkpoint: str | None = _path("start from a trained run directory or weights file")
    include: tuple[str, ...] = field(default=(), metadata={"help": "globs of weight names to prune"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "globs of weight names to keep dense"})
    data_dir: str | None = _path("where to look for dataset files first")
    val_fraction: float = field(default=0.0, metadata={"help": "validation split carved from train",
                                                       "ge": 0.0, "lt": 1.0})
    limit_train: int | None = field(default=None, metadata={"help": "use only this many training samples", "ge": 1})
    limit_test: int | None = field(default=None, metadata={"help": "use only this many test samples", "ge": 1})
    augment: bool = field(default=True, metadata={"help": "training augmentation"})
    download: bool = field(default=False, metadata={"help": "download a missing dataset with torchvision"})
    budgets: tuple[Budget, ...] = field(default=(), metadata={
        "help": "cost bounds on the delivered model, e.g. macs<=25% (replace sparsity)", "parse": parse_budgets})
    allocation: str | None = field(default=None, metadata={"help": "per-layer allocator (secateurs list allocators)"})
    allocation_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the allocator's settings (episodes, minutes, ...)"})
    round_to: int = field(default=8, metadata={
        "help": "filter runs: shrunk channel counts are multiples of this (faster kernels); 1: exact counts",
        "ge": 1})
    declared_options: frozenset[str] = field(default=frozenset(), compare=False, repr=False,
                                             metadata={"internal": True})

    def __post_init__(self) -> None:
        validate_fields(self, skip=("method_options",))
        for key in ("model", "data"):
            if not getattr(self, key).strip():
                raise UsageError(f"the run needs a {key} (--{key} NAME)")
        _check_device(self.device)
        self._check_allocation()
        if self.method is not None:
            object.__setattr__(self, "method", METHODS.canonical(self.method))
        typed, declared = self._typed_method_options()
        object.__setattr__(self, "method_options", typed)
        object.__setattr__(self, "declared_options", frozenset(declared))
        # What the method runs with: the run's seed where the options set none (one seed for everything).
        object.__setattr__(self, "_resolved_method", typed.with_run_seed(self.seed) if typed is not None else None)

    def _check_allocation(self) -> None:
        from secateurs.allocation import ALLOCATORS

        if (self.budgets or self.allocation) and self.method is None:
            raise UsageError("budgets and allocations need a pruning method (secateurs prune --method NAME)")
        if self.allocation is not None:
            object.__setattr__(self, "allocation", ALLOCATORS.canonical(self.allocation))
        if not isinstance(self.allocation_options, Mapping):
            raise ConfigValueError("allocation_options", self.allocation_options, "a mapping of allocator settings")
        object.__setattr__(self, "allocation_options", dict(self.allocation_options))

    def _typed_method_options(self) -> tuple[MethodConfig | None, set[str]]:
        """The method options as the method's config (built once, here) and the names given explicitly."""
        options: Any = self.method_options
        declared = set(self.declared_options)
        if self.method is None:
            if options is None or (isinstance(options, Mapping) and not options):
                return None, set()
            raise UsageError("method_options are set, but the run has no method (prune with --method NAME)")
        cls = METHODS.get(self.method).Config
        if options is None:
            options = {}
        if isinstance(options, Mapping):
            known = [f.name for f in fields(cls)]
            unknown = sorted(str(k) for k in options if k not in known)
            if unknown:
                raise UsageError(f"method {self.method} has no option {unknown[0]!r}; options: {', '.join(known)}")
            built = dict(options)
            if self.budgets:
                if built.get("sparsity") is not None:
                    raise UsageError("give a sparsity or budgets, not both (a budget sets the sparsity of every layer)")
                built["allocated"] = True
            typed = build_config(cls, built, where="method_options")
            declared |= {str(k) for k in options}
        elif isinstance(options, cls):
            typed = options
            if not declared:  # a typed config from Python: what differs from the defaults counts as given
                defaults = cls.__dataclass_fields__
                declared = {f.name for f in fields(options) if getattr(options, f.name) != defaults[f.name].default}
        else:
            raise ConfigValueError("method_options", options, f"a mapping of {self.method} options or a {cls.__name__}")
        return typed, declared

    def method_config(self) -> MethodConfig:
        """The method's typed config as the method runs it (the run's seed filled in where the
        options set none); UsageError for a dense run."""
        resolved: MethodConfig | None = self.__dict__["_resolved_method"]
        if resolved is None:
            raise UsageError("this run has no pruning method")
        return resolved

    def build_method(self) -> PruningMethod | None:
        """A fresh method object for this run, or None for dense training."""
        if self.method is None or self.method_options is None:
            return None
        return METHODS.get(self.method)(self.method_config())

    @property
    def couples_channels(self) -> bool:
        """Whether the method prunes filters by coupled channel groups (filter granularity, ``coupled``)."""
        if self.method is None or self.method_options is None:
            return False
        cfg = self.method_config()
        # The method may decline (DPP with joint quantization keeps one scale per tensor).
        return isinstance(cfg.granularity, Filter) and cfg.coupled and METHODS.get(self.method).supports_coupling(cfg)

    def select_targets(self, model: nn.Module) -> list[Target]:
        """The run's target weights: the default choice (with the stem when channel groups are
        pruned: its output channels are ordinary coupled channels), or ``include``/``exclude``."""
        return select_targets(model, self.include or None, self.exclude or None,
                              include_first=self.couples_channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``config.yaml`` (method options resolved to the full config)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            if f.name == "train":
                value = self.train.to_dict()
            elif f.name == "method_options":
                value = self.method_config().to_dict() if self.method_options is not None else {}
            elif isinstance(value, tuple):
                value = list(value)
            if f.name == "budgets":
                value = [b.text for b in self.budgets]
            out[f.name] = value
        return out

    @property
    def allocator(self) -> str | None:
        """The allocator this run uses: the one asked for, else the method's own when it has one
        (``--method crl``), else ``uniform`` when budgets are given; None for plain sparsity runs."""
        if self.allocation is not None:
            return self.allocation
        own = getattr(METHODS.get(self.method), "default_allocation", None) if self.method else None
        if own is not None:
            return own
        return "uniform" if self.budgets else None

    @classmethod
    def from_dict(cls, raw: Any) -> RunConfig:
        """Build from a mapping such as a recipe file; unknown keys and bad values raise UsageError."""
        if not isinstance(raw, Mapping):
            raise ConfigValueError("the config", raw, "a mapping of run settings")
        known = [f.name for f in fields(cls) if not f.metadata.get("internal")]
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise UsageError(f"unknown config key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        for key in ("model", "data"):
            if not raw.get(key):
                raise UsageError(f"the run needs a {key} (--{key} NAME)")
        return build_config(cls, {k: v for k, v in raw.items() if not (k == "train" and v is None)})

    def with_overrides(self, **changes: Any) -> RunConfig:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def with_method_options(self, **changes: Any) -> RunConfig:
        """A copy whose method options change as given (validated again; they count as given)."""
        current = self.method_config()
        cls = type(current)
        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise UsageError(f"method {self.method} has no option {unknown[0]!r}")
        typed = build_config(cls, {**current.to_dict(), **changes}, where="method_options")
        return replace(self, method_options=typed, declared_options=self.declared_options | set(changes))

    def save(self, path: str | Path) -> None:
        """Write ``config.yaml`` atomically."""
        from secateurs.utils.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _check_device(name: str) -> None:
    """A device string torch understands, or ``auto`` (whether it is present is checked at run time)."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigValueError("device", name, "cpu, cuda, cuda:N, mps or auto") from None


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML file as a mapping (UsageError when missing or malformed)."""
    try:
        data = yaml_load(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"no config file at {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text (YAML) file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of config keys")
    return data
