"""RunConfig: everything that defines a ``train`` or ``prune`` run, as one typed, YAML-round-tripping value.

The command line, recipe files (``--config recipe.yaml``) and the benchmarks all build a RunConfig;
the run directory keeps the resolved one as ``config.yaml``. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from secateurs.core.granularity import Filter
from secateurs.core.targets import Target, select_targets
from secateurs.errors import UsageError
from secateurs.methods import METHODS, MethodConfig, PruningMethod
from secateurs.train.config import TrainConfig

__all__ = ["RunConfig", "load_recipe"]


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A run: model, data, optional pruning method and training budget.

    Attributes:
        model: model registry name (``secateurs list models``).
        data: dataset registry name (``secateurs list datasets``).
        method: pruning method name, or None for dense training.
        method_options: the method's config fields (sparsity, granularity, scope, seed and its own).
        train: optimizer, learning rate, epochs.
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
    """

    model: str
    data: str
    method: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    from_checkpoint: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    data_dir: str | None = None
    val_fraction: float = 0.0
    limit_train: int | None = None
    limit_test: int | None = None
    augment: bool = True
    download: bool = False

    def __post_init__(self) -> None:
        if self.method is not None:
            object.__setattr__(self, "method", METHODS.canonical(self.method))
            self.method_config()  # validates the options now, not after the data has loaded
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def method_config(self) -> MethodConfig:
        """The method's typed config built from ``method_options`` (UsageError on unknown keys)."""
        if self.method is None:
            raise UsageError("this run has no pruning method")
        cls = METHODS.get(self.method).Config
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(self.method_options) - known)
        if unknown:
            raise UsageError(f"method {self.method} has no option {unknown[0]!r}; options: {', '.join(sorted(known))}")
        try:
            return cls(**self.method_options).with_run_seed(self.seed)
        except TypeError as exc:
            raise UsageError(f"bad options for method {self.method}: {exc}") from None

    def build_method(self) -> PruningMethod:
        """The run's pruning method, seeded by the run's seed unless its options set their own."""
        config = self.method_config()  # UsageError for a dense run
        return METHODS.get(str(self.method))(config)

    @property
    def couples_channels(self) -> bool:
        """Whether the method prunes filters by coupled channel groups (filter granularity, ``coupled``)."""
        if self.method is None:
            return False
        cfg = self.method_config()
        # The method may decline (DPP with joint quantization keeps one scale per tensor).
        return isinstance(cfg.granularity, Filter) and cfg.coupled and METHODS.get(self.method)(cfg).supports_coupling()

    def select_targets(self, model: nn.Module) -> list[Target]:
        """The run's target weights: the default choice (with the stem when channel groups are
        pruned: its output channels are ordinary coupled channels), or ``include``/``exclude``."""
        return select_targets(model, self.include or None, self.exclude or None,
                              include_first=self.couples_channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``config.yaml`` (method options resolved to the full config)."""
        out = asdict(self)
        out["include"], out["exclude"] = list(self.include), list(self.exclude)
        if self.method is not None:
            out["method_options"] = self.method_config().to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from a mapping such as a recipe file; unknown keys raise UsageError."""
        raw = dict(raw)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UsageError(f"unknown config key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        train_raw = raw.pop("train", None) or {}
        if not isinstance(train_raw, dict):
            raise UsageError("config key 'train' must be a mapping")
        train_known = {f.name for f in fields(TrainConfig)}
        bad = sorted(set(train_raw) - train_known)
        if bad:
            raise UsageError(f"unknown train option {bad[0]!r}; known: {', '.join(sorted(train_known))}")
        for key in ("model", "data"):
            if not raw.get(key):
                raise UsageError(f"the run needs a {key} (--{key} NAME)")
        return cls(train=TrainConfig(**train_raw), **raw)

    def with_overrides(self, **changes: Any) -> RunConfig:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def save(self, path: str | Path) -> None:
        """Write ``config.yaml`` atomically."""
        from secateurs.utils.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML file as a mapping (UsageError when missing or malformed)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"no config file at {path}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of config keys")
    return data
