"""Prune inside a Lightning ``Trainer``: any registered method as one ``Callback``.

Install the extra (``pip install 'secateurs[lightning]'``), then::

    from secateurs.integrations.lightning import SecateursPruning

    pruning = SecateursPruning("gmp", sparsity=0.9)          # any name of `secateurs list methods`
    trainer = lightning.pytorch.Trainer(max_epochs=10, callbacks=[pruning])
    trainer.fit(module)                                       # your LightningModule, unchanged
    pruning.masks.save("masks.safetensors")                   # the final masks, baked into the weights

The callback drives the method through the same hooks as :func:`secateurs.fit` and the README's loop:

- ``setup``: builds the method and attaches it to the module (or ``submodule``) before Lightning
  restores a checkpoint, configures the optimizers and wraps the model for DDP. The horizon is the
  trainer's: ``max_epochs`` epochs of ``estimated_stepping_batches / max_epochs`` optimizer steps.
- ``training_step``: the method's penalty is added to the loss your ``training_step`` returns (a
  tensor, or the ``"loss"`` of a dict); with manual optimization add :meth:`SecateursPruning.penalty`
  yourself.
- optimizer: the mask state (scores, logits) is moved into the method's own parameter groups (no
  weight decay, the method's learning rate); your schedulers are extended to drive those groups too
  (see :mod:`secateurs.integrations.optimizer_groups`).
- steps and epochs: ``on_step(trainer.global_step)`` after every optimizer step (so gradient
  accumulation counts optimizer steps, as the schedules expect), the epoch hooks at epoch start/end.
- phases (lottery rounds, CS rounds): at each phase's first epoch the method prunes and rewinds
  (``on_phase_start``); with ``fresh_optimizer_per_phase`` the optimizer's state is cleared and the
  learning-rate schedulers restart from their first step, as ``secateurs.fit`` builds a fresh
  optimizer and schedule per phase.
- checkpoints: the mask state lives in the model's state dict (parametrizations); the method's own
  state (generator, rewind snapshot, schedule state) goes into the callback's state, and the hard masks
  into ``checkpoint["secateurs"]`` (read them with :func:`masks_from_checkpoint`). Resuming with
  ``trainer.fit(module, ckpt_path=...)`` continues to the same masks as an uninterrupted run.
- end of fit: with ``finalize`` the masks are baked into the weights and the parametrizations removed
  (plain state dict keys again); :attr:`SecateursPruning.masks` holds them.

Under Lightning's DDP strategy every process runs the callback on identical weights: the method's
generator is seeded from its config (the same on every rank), so stochastic masks are drawn alike;
magnitude decisions are taken on identical, all-reduced weights; DDP averages the gradients of the
learned mask state with the weights' (the parametrizations exist before DDP wraps the model).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "secateurs.integrations.lightning needs Lightning: pip install 'secateurs[lightning]'"
    ) from exc

from lightning.pytorch.utilities import rank_zero_info

from secateurs.core.granularity import parse_granularity
from secateurs.core.masks import MaskSet
from secateurs.core.targets import select_targets
from secateurs.errors import UsageError
from secateurs.integrations.optimizer_groups import add_mask_groups
from secateurs.methods import METHODS, Horizon, PruningMethod, build_method

__all__ = ["SecateursPruning", "masks_from_checkpoint"]

#: Key of the callback's block in a Lightning checkpoint.
CHECKPOINT_KEY = "secateurs"


class SecateursPruning(pl.Callback):
    """A Lightning callback that prunes the module with a registered secateurs method.

    Args:
        method: a registered method name (``"gmp"``, ``"magnitude"``, ``"cs"``, ``"dpp"``, ...).
        submodule: attribute path of the network to prune inside the LightningModule (e.g.
            ``"model"``); default the whole module. Mask names are relative to it.
        include, exclude: glob patterns over parameter names choosing the weights to prune
            (default: conv and linear weights except the first conv and the classifier).
        pretrained: the module starts from trained weights (``prune --from``): methods adapt their
            schedules (gmp starts at once, lottery rewinds to the trained weights).
        allocation: per-weight target sparsities (an allocator's output) instead of one sparsity.
        channel_groups: coupled channel groups for the filter granularity
            (:func:`secateurs.structured.coupled_channel_groups`).
        fresh_optimizer_per_phase: at each phase after the first, clear the optimizer state and
            restart the learning-rate schedulers (what ``secateurs.fit`` does).
        finalize: at the end of fit bake the masks into the weights and remove the parametrizations.
        log: log the masks' sparsity and the method's epoch values (``pruning/...``) each epoch.
        **options: the method's config fields (``sparsity=0.9``, ``granularity="filter"``,
            ``rounds=3``; ``secateurs list methods NAME`` lists them).

    Attributes:
        method: the attached method (built anew by each ``trainer.fit``).
        masks: the final masks once fit has ended with ``finalize`` (else None).
    """

    def __init__(self, method: str, *, submodule: str | None = None, include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, pretrained: bool = False,
                 allocation: Mapping[str, float] | None = None, channel_groups: Sequence[Any] | None = None,
                 fresh_optimizer_per_phase: bool = True, finalize: bool = True, log: bool = True,
                 **options: Any) -> None:
        self.method_name = METHODS.canonical(method)  # unknown names fail here, not mid-setup
        self.options = dict(options)
        build_method(self.method_name, **self.options)  # validate the options before the trainer starts
        self.submodule, self.include, self.exclude = submodule, include, exclude
        self.pretrained, self.allocation, self.channel_groups = pretrained, allocation, channel_groups
        self.fresh_optimizer_per_phase, self.finalize, self.log = fresh_optimizer_per_phase, finalize, log
        self.method: PruningMethod | None = None
        self.masks: MaskSet | None = None
        self._phase_starts: list[int] = []
        self._phases_started = 0  # phases whose on_phase_start ran (survives a mid-epoch resume)
        self._last_step = 0
        self._scheduler_starts: list[tuple[Any, dict[str, Any]]] = []
        self._base_lr: float | None = None
        self._wrapped: pl.LightningModule | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.method_name)

    # ----------------------------------------------------------------- setup
    def _network(self, pl_module: pl.LightningModule) -> nn.Module:
        if self.submodule is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.submodule)
        except AttributeError as exc:
            raise UsageError(f"the LightningModule has no submodule {self.submodule!r}") from exc

    @staticmethod
    def horizon_of(trainer: pl.Trainer, pretrained: bool = False) -> Horizon:
        """The trainer's budget as a :class:`Horizon`: ``max_epochs`` whole epochs of optimizer steps."""
        total = trainer.estimated_stepping_batches
        epochs = trainer.max_epochs
        if epochs is None or epochs < 1 or not math.isfinite(total):
            raise UsageError("SecateursPruning plans in epochs: give the Trainer max_epochs (and a sized train loader)")
        if total % epochs:
            raise UsageError(f"SecateursPruning plans in whole epochs, but max_steps={trainer.max_steps} stops "
                             f"inside one ({total} steps in {epochs} epochs); leave max_steps unset")
        return Horizon(epochs=epochs, steps_per_epoch=int(total) // epochs, pretrained=pretrained)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        network = self._network(pl_module)
        method = build_method(self.method_name, **self.options)
        if self.allocation:
            method.use_allocation(self.allocation)
        horizon = self.horizon_of(trainer, self.pretrained)
        targets = select_targets(network, self.include, self.exclude)
        method.attach(network, targets, horizon, channel_groups=self.channel_groups)
        self.method, self.masks = method, None
        starts, epoch = [], 0
        for phase in method.phases():
            starts.append(epoch)
            epoch += phase.epochs
        self._phase_starts, self._phases_started, self._last_step = starts, 0, 0
        if pl_module.automatic_optimization:
            self._wrap_training_step(pl_module)
        _find_unused_parameters_for(trainer.strategy, method)

    def _wrap_training_step(self, pl_module: pl.LightningModule) -> None:
        """Add the penalty to the loss ``training_step`` returns (inside DDP's forward, before
        Lightning divides by the accumulation count and scales for mixed precision)."""
        step_fn = pl_module.training_step

        @functools.wraps(step_fn)
        def training_step(*args: Any, **kwargs: Any) -> Any:
            return _add_penalty(step_fn(*args, **kwargs), self.penalty())

        pl_module.training_step = training_step  # type: ignore[method-assign]
        self._wrapped = pl_module

    def _unwrap(self) -> None:
        if self._wrapped is not None:
            self._wrapped.__dict__.pop("training_step", None)
            self._wrapped = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        method = self._attached()
        if len(trainer.optimizers) != 1:
            raise UsageError(f"SecateursPruning needs exactly one optimizer, got {len(trainer.optimizers)}")
        optimizer = trainer.optimizers[0]
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        add_mask_groups(optimizer, method.mask_param_groups(), schedulers)
        first = optimizer.param_groups[0]
        self._base_lr = float(first.get("initial_lr", first["lr"]))
        # A phase restarts the schedules from here (taken before Lightning restores a checkpoint's).
        self._scheduler_starts = [(s, copy.deepcopy(s.state_dict())) for s in schedulers]

    # ----------------------------------------------------------------- training
    def penalty(self) -> Tensor | None:
        """The method's extra loss term now (None if it has none); add it yourself under manual optimization."""
        return self._attached().penalty()

    def _attached(self) -> PruningMethod:
        if self.method is None or self.method.model is None:
            raise RuntimeError("SecateursPruning is not attached: it attaches in Trainer.fit's setup")
        return self.method

    def _fresh_optimizer(self, trainer: pl.Trainer) -> None:
        for optimizer in trainer.optimizers:
            optimizer.state.clear()
        for scheduler, start in self._scheduler_starts:
            scheduler.load_state_dict(copy.deepcopy(start))
            last = start.get("_last_lr")
            if last is not None:
                for group, lr in zip(scheduler.optimizer.param_groups, last, strict=False):
                    group["lr"] = lr

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        method = self._attached()
        epoch = trainer.current_epoch
        if epoch in self._phase_starts:
            index = self._phase_starts.index(epoch)
            if index >= self._phases_started:  # not again when resuming inside this epoch
                if index > 0 and self.fresh_optimizer_per_phase:
                    self._fresh_optimizer(trainer)
                method.on_phase_start(index)
                self._phases_started = index + 1
        method.on_epoch_start(epoch)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        # The learning rate of this step relative to the base rate: methods that step their own mask
        # state (DPP's logit optimizer) follow the run's warm-up and decay with it.
        if self._base_lr:
            self._attached().lr_scale = optimizer.param_groups[0]["lr"] / self._base_lr

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step != self._last_step:  # an optimizer step happened (not an accumulation batch)
            self._last_step = step
            self._attached().on_step(step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        method = self._attached()
        values = {"sparsity": method.hard_masks().sparsity(), **method.on_epoch_end(trainer.current_epoch)}
        if self.log:
            numbers = {f"pruning/{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}
            pl_module.log_dict(numbers, on_step=False, on_epoch=True, sync_dist=True)  # equal on every rank

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._unwrap()
        method = self._attached()
        if trainer.global_step < method.horizon.total_steps:
            warnings.warn(f"fit stopped after {trainer.global_step} of {method.horizon.total_steps} steps: the "
                          "method's schedule did not finish, its masks may not be at their target", stacklevel=2)
        if self.finalize:
            self.masks = method.finalize()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._unwrap()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._unwrap()

    # ----------------------------------------------------------------- checkpoints
    def _identity(self) -> dict[str, Any]:
        return {"method": self.method_name, "config": self._attached().config.to_dict()}

    def state_dict(self) -> dict[str, Any]:
        if self.method is None or self.method.model is None:
            return {}
        return {**self._identity(), "state": self.method.state_dict(), "phases_started": self._phases_started}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        method = self._attached()
        mine = self._identity()
        if state_dict.get("method") != mine["method"] or state_dict.get("config") != mine["config"]:
            raise UsageError(f"the checkpoint was written by {state_dict.get('method')} with "
                             f"{state_dict.get('config')}, not {mine['method']} with {mine['config']}")
        method.load_state_dict(state_dict["state"])
        self._phases_started = int(state_dict["phases_started"])

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # The step counter of the restored run: on_step fires only for steps taken after it.
        self._last_step = int(checkpoint.get("global_step", 0))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        masks = self.masks if self.masks is not None else self._attached().hard_masks()
        checkpoint[CHECKPOINT_KEY] = {
            **self._identity(),
            "masks": {name: entry.mask for name, entry in masks.items()},
            "granularity": {name: str(entry.granularity) for name, entry in masks.items()},
            "weight_shapes": {name: list(entry.weight_shape) for name, entry in masks.items()},
        }


def _find_unused_parameters_for(strategy: pl.strategies.Strategy, method: PruningMethod) -> None:
    """Let DDP accept mask state that stops receiving gradients.

    Learned mask state (CS scores, DPP logits) gets no gradient once a method fixes its mask (the
    fine-tuning at the end), and DDP built without ``find_unused_parameters`` stops at the next step
    with "parameters that were not used in producing the loss". The strategy has not wrapped the
    model yet (that follows ``setup``), so the flag is switched on here.
    """
    if not isinstance(strategy, pl.strategies.DDPStrategy) or not method.mask_parameters():
        return
    options = strategy._ddp_kwargs  # the keywords Lightning passes to DistributedDataParallel
    if not options.get("find_unused_parameters", False):
        options["find_unused_parameters"] = True
        rank_zero_info(f"SecateursPruning: DDP finds unused parameters ({method.registry_name}'s mask state "
                       "stops receiving gradients once its mask is fixed)")


def _add_penalty(output: Any, extra: Tensor | None) -> Any:
    """``training_step``'s output with ``extra`` added to its loss."""
    if extra is None or output is None:
        return output
    if isinstance(output, Tensor):
        return output + extra
    if isinstance(output, Mapping) and "loss" in output:
        return {**output, "loss": output["loss"] + extra}
    raise UsageError("SecateursPruning adds the method's penalty to the loss: training_step must return "
                     "a tensor or a dict with a 'loss'")


def masks_from_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> MaskSet:
    """The hard masks a :class:`SecateursPruning` run stored in a Lightning checkpoint (a path or the
    loaded dictionary)."""
    if not isinstance(checkpoint, Mapping):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    block = checkpoint.get(CHECKPOINT_KEY)
    if block is None:
        raise UsageError("this checkpoint holds no secateurs masks (was SecateursPruning among the callbacks?)")
    grans = {name: parse_granularity(spec) for name, spec in block["granularity"].items()}
    shapes = {name: torch.Size(shape) for name, shape in block["weight_shapes"].items()}
    return MaskSet.from_masks(block["masks"], grans, shapes)
