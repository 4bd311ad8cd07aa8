"""The method interface: a small object with hooks that never owns a training loop.

Lifecycle, driven by :func:`secateurs.train.fit` or by a user's own loop::

    method = build_method("gmp", sparsity=0.9)
    horizon = Horizon(epochs=30, steps_per_epoch=len(loader))
    method.attach(model, horizon=horizon)                 # parametrizations on the target weights
    for phase_index, phase in enumerate(method.phases()):  # most methods have one phase
        method.on_phase_start(phase_index)                 # fresh optimizer + LR schedule per phase
        for epoch in phase epochs:
            method.on_epoch_start(epoch)
            for batch:  loss = task_loss + method.penalty(); ...; optimizer.step()
                        method.on_step(step)               # step = optimizer steps done so far
                        # (a loop with a learning-rate schedule also sets method.lr_scale first)
            logs = method.on_epoch_end(epoch)
    masks = method.finalize()                              # hard masks baked in, plain state dict

All randomness comes from ``self.generator`` (seeded from the config, saved in ``state_dict``).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from secateurs.core.granularity import Filter, Granularity, Kernel, NofM, Unstructured, parse_granularity
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import MaskParametrization
from secateurs.core.selection import SCOPES
from secateurs.core.targets import Target, select_targets
from secateurs.core.weight_groups import weight_groups
from secateurs.config_validation import validate_fields
from secateurs.errors import UsageError
from secateurs.methods.ticket import TicketSearch
from secateurs.structured.coupled_masks import SharedGate, SharedGroup
from secateurs.structured.groups import ChannelGroup
from secateurs.structured.mask_binder import MaskBinder

if TYPE_CHECKING:
    from secateurs.data.registry import DataBundle

__all__ = ["Horizon", "MethodConfig", "Phase", "PruningMethod"]


@dataclass(frozen=True)
class Horizon:
    """The training budget a method fits its schedules into.

    Attributes:
        epochs: total epochs of the run (all phases together).
        steps_per_epoch: optimizer steps per epoch.
        pretrained: whether training starts from a trained dense model (``prune --from``).
    """

    epochs: int
    steps_per_epoch: int
    pretrained: bool = False

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole run."""
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own fresh optimizer and learning-rate schedule."""

    name: str
    epochs: int


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Settings every method shares. Subclass per method (frozen, keyword-only, validated).

    Attributes:
        sparsity: fraction of target weight elements to remove, in [0, 1). For an ``N:M``
            granularity it is implied (``1 - N/M``) and may be left unset.
        granularity: unit of removal; a string (``"unstructured"``, ``"kernel"``, ``"filter"``,
            ``"2:4"``) is parsed on construction.
        scope: ``"tensor"`` (each tensor at the target), ``"global"`` (one ranking across tensors) or
            ``"group"`` (exactly k of n in every group of the granularity).
        seed: seed of the method's own random generator. Unset (None) means: in a run, the run's
            ``--seed`` (one seed for everything); a method built on its own, 0. Setting it is an
            explicit override of the run's seed.
        coupled: with the filter granularity, when channel groups are given to :meth:`attach`, keep
            one mask per coupled group (see :mod:`secateurs.methods.coupling`); False keeps one
            mask per layer.
    """

    sparsity: float | None = field(default=None, metadata={
        "help": "fraction of weights removed, in [0, 1)", "ge": 0.0, "lt": 1.0})
    granularity: Granularity = field(default="unstructured", metadata={  # type: ignore[assignment]
        "help": "unit of removal", "parse": parse_granularity,
        "allowed": "unstructured, kernel, filter or N:M (e.g. 2:4)"})
    scope: str = field(default="tensor", metadata={"help": "tensor, global or group quota", "choices": SCOPES})
    seed: int | None = field(default=None, metadata={
        "help": "seed of the method's random generator; unset = the run's --seed (setting it overrides that)",
        "ge": 0})
    coupled: bool = field(default=True, metadata={"help": "filter granularity: prune coupled channel groups together"})
    allocated: bool = field(default=False, metadata={
        "help": "every layer's target comes from an allocation (--budget), so no single sparsity is given"})

    def __post_init__(self) -> None:
        # Types and declared ranges of every field (subclasses' too), from the fields themselves.
        validate_fields(self)
        gran = parse_granularity(self.granularity)  # again: a subclass may redeclare the field without "parse"
        object.__setattr__(self, "granularity", gran)
        if gran.fixed_density is not None:
            if gran.fixed_density >= 1.0:
                raise UsageError(f"granularity {gran} keeps every weight; N:M needs N < M (e.g. 2:4)")
            implied = 1.0 - gran.fixed_density
            if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
                raise UsageError(f"granularity {gran} implies sparsity {implied:g}, not {self.sparsity:g}")
            object.__setattr__(self, "sparsity", implied)
            object.__setattr__(self, "scope", "group")
        if self.sparsity is None and self.needs_sparsity():
            raise UsageError("a sparsity is required (--sparsity S with 0 <= S < 1)")

    def needs_sparsity(self) -> bool:
        """Whether this config must carry one sparsity: yes, unless an allocation gives every key its
        own (subclasses add their own reasons: CS's free mode)."""
        return not self.allocated

    def with_run_seed(self, seed: int) -> MethodConfig:
        """This config with the run's seed filled in where no seed of its own was given."""
        return self if self.seed is not None else replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-friendly values (granularities as their spec strings)."""
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Granularity) else v) for f in fields(self)}


class PruningMethod(ABC):
    """Base class of every pruning method. Subclasses override a few hooks.

    Required: :meth:`make_parametrization`. Optional: :meth:`phases`, :meth:`on_phase_start`,
    :meth:`on_epoch_start`, :meth:`on_step`, :meth:`on_epoch_end`, :meth:`penalty`,
    :meth:`extra_state` / :meth:`load_extra_state`.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    registry_name: ClassVar[str] = ""
    #: Whether training draws a new mask at every step (batch-norm statistics then average over many
    #: masks, and runs re-estimate them for the final one by default: ``TrainConfig.bn_recalibration``).
    samples_masks: ClassVar[bool] = False
    #: How the method searches lottery tickets over several settings in one data pass
    #: (:func:`secateurs.experiment.search_tickets`); None: it cannot.
    ticket_search: ClassVar[TicketSearch | None] = None
    #: The granularity kinds this method supports; a config with another is refused. Every method
    #: declares its own, and the contract tests run each declared one (an unexpected refusal fails).
    granularities: ClassVar[tuple[type[Granularity], ...]] = (Unstructured, Kernel, Filter, NofM)

    def __init__(self, config: MethodConfig) -> None:
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        if not isinstance(config.granularity, self.granularities):
            kinds = ", ".join(g.kind for g in self.granularities)
            raise UsageError(f"{self.registry_name or type(self).__name__} supports the granularities {kinds}, "
                             f"not {config.granularity}")
        self.config = config.with_run_seed(0)  # a method built on its own: seed 0 unless given
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.model: nn.Module | None = None
        self.targets: list[Target] = []
        self.horizon = Horizon(epochs=1, steps_per_epoch=1)
        #: The run's current learning-rate multiplier (warm-up and decay; 1 = the base rate), set by
        #: the training loop before each optimizer step, for mask state that a method steps itself.
        self.lr_scale = 1.0
        #: Where the masks live on the model (one per target, or one per shared group).
        self.binder = MaskBinder()
        #: Per-key target sparsities from an allocator (:meth:`use_allocation`); keys not in it use
        #: ``config.sparsity``.
        self.allocation: dict[str, float] = {}
        self.allocated_units: dict[str, Tensor] = {}

    # ----------------------------------------------------------------- per-key targets
    def use_allocation(self, sparsities: Mapping[str, float] | None,
                       units: Mapping[str, Tensor] | None = None) -> None:
        """Train each key (a target weight, or a shared group's root weight) to its own sparsity.

        Call before :meth:`attach`. An allocation is per tensor / per group by nature, so it does
        not combine with ``scope="global"`` (the ``global`` allocator is the one-threshold variant).
        ``units`` are unit masks an allocator chose itself (the fine ``crl`` variant): methods that
        apply an allocation as it is (``crl``) use them; the others choose their own units.
        """
        self.allocated_units = {k: v.to(torch.bool) for k, v in (units or {}).items()}
        if self.model is not None:
            raise RuntimeError("give the allocation before attaching the method")
        if sparsities and self.config.scope == "global":
            raise UsageError("an allocation sets per-tensor targets; it does not combine with scope global")
        for key, value in (sparsities or {}).items():
            if not 0.0 <= float(value) < 1.0:
                raise UsageError(f"allocated sparsity of {key} must lie in [0, 1), got {value}")
        self.allocation = {k: float(v) for k, v in (sparsities or {}).items()}

    def sparsity_of(self, key: str) -> float:
        """The final target sparsity of ``key``: its allocation, else the config's sparsity."""
        return self.allocation.get(key, float(self.config.sparsity or 0.0))

    def sparsity_targets(self, transform: Callable[[float], float] | None = None) -> float | dict[str, float]:
        """The targets to select at: one float without an allocation (every scope works), else a
        per-key mapping. ``transform(final_target)`` maps each final target to the value wanted now
        (a schedule's point on the way to it)."""
        fn = transform or float
        if not self.allocation:
            return float(fn(float(self.config.sparsity or 0.0)))
        return {k: float(fn(self.sparsity_of(k))) for k in self.parametrizations}

    # ----------------------------------------------------------------- setup
    def phases(self) -> list[Phase]:
        """The phases of the run (default: one). Raise UsageError if the budget is too short."""
        return [Phase("train", self.horizon.epochs)]

    def attach(
        self,
        model: nn.Module,
        targets: list[Target] | None = None,
        horizon: Horizon | None = None,
        *,
        channel_groups: Sequence[ChannelGroup] | None = None,
    ) -> None:
        """Put a parametrization on every target weight of ``model``.

        Args:
            model: the network (on its final device already, so mask state is created there).
            targets: the weights to prune; default :func:`secateurs.core.targets.select_targets`.
            horizon: the training budget for the method's schedules.
            channel_groups: channel groups of the model (:func:`secateurs.structured.coupled_channel_groups`).
                With the filter granularity (and ``config.coupled``), every group whose producers
                are all targets gets one mask over its channels, shared by all its tensors.
        """
        if self.model is not None:
            raise RuntimeError("this method is already attached to a model")
        if self.config.allocated and not self.allocation:
            raise UsageError("this method's config is for an allocation (allocated=true): give one with "
                             "use_allocation(), or a sparsity")
        self.horizon = horizon or self.horizon
        targets = list(targets) if targets is not None else select_targets(model)
        gran = self.config.granularity
        couple = isinstance(gran, Filter) and self.config.coupled and self.supports_coupling(self.config)
        shared, own = self.binder.plan(model, targets, channel_groups if couple else None)
        for t in own:
            if not gran.supports(t.shape):
                raise UsageError(f"{t.name} with shape {tuple(t.shape)} cannot be pruned at granularity {gran}")
        self.phases()  # validates the budget before anything is changed
        device = next(iter(model.parameters())).device
        self.generator = torch.Generator(device=device).manual_seed(self.config.seed)
        self.model = model
        self.binder.bind(model, shared, own, self.make_parametrization)
        unknown = sorted(set(self.allocation) - set(self.parametrizations))
        if unknown:
            raise UsageError(f"the allocation names {unknown[0]!r}, which this method does not prune")
        self.targets = targets

    #: The allocator this method's own procedure uses when the run names none (``crl``: ``crl``).
    default_allocation: ClassVar[str | None] = None

    @classmethod
    def supports_coupling(cls, config: MethodConfig) -> bool:
        """Whether this method, configured by ``config``, can share one mask across a coupled channel
        group (asked of the class, so a run decides its targets without building a method)."""
        return True

    @abstractmethod
    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        """Create the parametrization (with its mask state) for one target weight."""

    # ----------------------------------------------------------------- hooks
    def bind_data(self, data: DataBundle) -> None:
        """Called before :meth:`attach` by runs that have a dataset: methods that analyse the network
        on training images (calibration) or validate between rounds keep what they need (default:
        nothing)."""

    def on_phase_start(self, phase_index: int) -> None:
        """Called before the first epoch of each phase (after the optimizer is built)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (``epoch`` counts from 0 over the whole run)."""

    def on_step(self, step: int) -> None:
        """Called after each optimizer step; ``step`` = optimizer steps done so far (1 after the first)."""

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Called after each epoch; returns extra values to log (default none)."""
        return {}

    def save_artifacts(self, run_dir: Path) -> list[Path]:
        """Write method-specific files (plots, exports) into the run directory before finalizing.

        Called once by :func:`secateurs.experiment.execute` while the parametrizations are still
        attached; returns the paths written (default: none).
        """
        return []

    def report_extras(self) -> dict[str, Any]:
        """Extra fields for ``report.json`` (default: none); called after :meth:`save_artifacts`."""
        return {}

    def penalty(self) -> Tensor | None:
        """Extra loss term added to the task loss (default: none)."""
        return None

    def ticket_fields(self) -> dict[str, Any]:
        """Values a ticket search reports for this method's ticket beside its sparsity and accuracy
        (default none; see :attr:`ticket_search`)."""
        return {}

    # ----------------------------------------------------------------- masks
    def mask_parameters(self) -> list[nn.Parameter]:
        """Learned mask state (scores, logits), for an optimizer group without weight decay."""
        return [p for par in self.parametrizations.values() for p in par.parameters()]

    def param_groups(self, model: nn.Module | None = None, *, weight_decay: float = 0.0,
                     decay_bias_norm: bool = False) -> list[dict[str, Any]]:
        """Every optimizer parameter group a training loop needs, in one call.

        The model's weights (without the learned mask state, which ``model.parameters()`` also
        yields and which may sit in one group only) with ``weight_decay`` (not on biases and
        normalisation parameters unless ``decay_bias_norm=True``), then :meth:`mask_param_groups`.
        ``model`` defaults to the attached one (pass the wrapper you train,
        e.g. a ``DistributedDataParallel``, when it differs)::

            optimizer = torch.optim.SGD(method.param_groups(weight_decay=5e-4), lr=0.1, momentum=0.9)
        """
        model = model if model is not None else self.model
        if model is None:
            raise RuntimeError("attach the method to a model first, or pass the model")
        return [*weight_groups(model, weight_decay, decay_bias_norm=decay_bias_norm), *self.mask_param_groups()]

    def mask_param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups for :meth:`mask_parameters` (override to set a learning rate)."""
        params = self.mask_parameters()
        return [{"params": params, "weight_decay": 0.0}] if params else []

    @property
    def parametrizations(self) -> dict[str, MaskParametrization]:
        """The method's masks by key: a target weight's name, or a shared group's (its root weight)."""
        return self.binder.parametrizations

    @property
    def shared_groups(self) -> dict[str, tuple[SharedGroup, SharedGate]]:
        """Channel groups whose channels share one mask, by key, with their shared gates (see :class:`MaskBinder`)."""
        return self.binder.shared_groups

    @property
    def ties(self) -> dict[str, tuple[SharedGroup, SharedGate]]:
        """Deprecated name of :attr:`shared_groups`."""
        warnings.warn("PruningMethod.ties is now shared_groups", DeprecationWarning, stacklevel=2)
        return self.binder.shared_groups

    def weights(self) -> Iterator[tuple[str, MaskParametrization, Tensor]]:
        """``(key, parametrization, weight)``: the original weight, or a shared group's group weight.

        A group weight is a fresh tensor: change weights in place through :meth:`scale_weights_`.
        """
        return self.binder.weights()

    def scale_weights_(self, name: str, factor: Tensor | float) -> None:
        """Multiply the weights behind key ``name`` by ``factor`` in place (every filter bank of a shared group)."""
        self.binder.scale_weights_(name, factor)

    def hard_masks(self) -> MaskSet:
        """Deterministic boolean masks of every target in the current state.

        A shared group's mask is written onto each of its filter banks (the targets), at the positions
        of its channels.
        """
        return self.binder.hard_masks(self.config.granularity, self.targets)

    def finalize(self, squash: bool = True) -> MaskSet:
        """Return the final hard masks; with ``squash`` bake them in and remove the parametrizations."""
        masks = self.hard_masks()
        if squash:
            self.binder.squash()
        return masks

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Method state that the model's state dict does not hold (generator, snapshots, ...)."""
        return {"generator": self.generator.get_state(), "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu") else state["generator"])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Subclass state for checkpoints: tensors and plain containers only (weights-only loading)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

