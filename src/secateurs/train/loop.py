"""The one training loop. Methods plug in through hooks; the loop never names a method.

Per phase (see :class:`secateurs.methods.Phase`) a fresh optimizer and learning-rate schedule are
built; per step the method's penalty joins the task loss and ``method.on_step`` follows the
optimizer step; per epoch the model is evaluated, a line goes to ``metrics.jsonl`` and a checkpoint
is written atomically, so ``resume=True`` continues a killed run to the same final weights.

:func:`fit_replicas` trains several replicas (a model and its method each) on the *same* batches:
one data pass (loading, shuffling, augmentation) for K networks, each with its own optimizer, the
phases of their methods in lock step. :func:`fit` is the one-replica case. The replicas take their
steps one after another within each batch, so a replica's training is that of a run of its own.

A run that diverges (a non-finite loss, weight or mask state) stops with a :class:`DivergedError`
before anything of the bad epoch is logged or saved: the last checkpoint stays the last good one.

Given a :class:`~secateurs.train.distributed.World` of several processes (``torchrun``), each
process trains on its share of every batch with DistributedDataParallel and only rank 0 writes;
:mod:`secateurs.train.distributed` says what the processes share and how.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from secateurs.core.targets import Target
from secateurs.data.loader import ShardBatch
from secateurs.errors import DivergedError, UsageError
from secateurs.methods.base import Horizon, Phase, PruningMethod
from secateurs.train.checkpoint import load_checkpoint, load_model_weights, restore_rng, save_checkpoint
from secateurs.train.config import TrainConfig
from secateurs.train.distributed import World
from secateurs.train.evaluate import autocast_for, evaluate
from secateurs.train.optim import build_optimizer, lr_factor
from secateurs.train.progress import progress_bar
from secateurs.train.speed import accelerate, to_memory_format
from secateurs.utils.io import append_jsonl, remove_stale_temporaries, trim_jsonl

if TYPE_CHECKING:
    from secateurs.structured.groups import ChannelGroup

__all__ = ["Callback", "FitResult", "Replica", "fit", "fit_replicas"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
#: Steps between checks for a non-finite loss (each check is one host synchronisation).
DIVERGENCE_CHECK_STEPS = 50


class EpochLoader(Protocol):
    """What ``fit`` needs of a training loader: batches, a length, and a per-epoch reshuffle."""

    def __iter__(self) -> Any: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


class Callback(Protocol):
    """Observer of training progress (progress bars, custom logging)."""

    def on_epoch_end(self, record: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    """What ``fit`` returns: the per-epoch records and the final evaluation."""

    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Replica:
    """One network of :func:`fit_replicas`.

    Attributes:
        model: the network, on its device.
        method: its pruning method, already attached to ``model`` (None: dense training).
        tags: fields added to each of its records in ``metrics.jsonl`` (e.g. ``{"replica": 0}``).
    """

    model: nn.Module
    method: PruningMethod | None = None
    tags: dict[str, Any] = field(default_factory=dict)


class _Objective(nn.Module):
    """What a training step differentiates: the network's output and the method's penalty, in one
    forward pass, so that DistributedDataParallel sees every parameter the loss reads (the penalty
    reads mask state outside the network). The penalty is computed without autocast."""

    def __init__(self, net: nn.Module, method: PruningMethod | None) -> None:
        super().__init__()
        self.net = net
        self.method = method  # not a module: its state lives in the network's parametrizations

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.net(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            extra = self.method.penalty() if self.method is not None else None
        return out, extra


class _Lane:
    """A replica in training: its compiled module, optimizer, history and the running epoch's sums."""

    def __init__(self, replica: Replica, config: TrainConfig, world: World) -> None:
        self.model, self.method, self.tags = replica.model, replica.method, replica.tags
        # The module for forward passes (compiled or not); ``model`` itself is what gets saved.
        self.net = accelerate(replica.model, compile_mode=config.compile, channels_last=config.channels_last)
        # What training steps call: network and penalty, inside DDP when several processes train.
        self.objective = world.wrap(_Objective(self.net, replica.method),
                                    may_freeze=replica.method is not None and bool(replica.method.mask_parameters()))
        self.world = world
        self.config = config
        self.optimizer: torch.optim.Optimizer | None = None
        self.history: list[dict[str, Any]] = []
        self.device = next(replica.model.parameters()).device

    def phases(self) -> list[Phase]:
        return self.method.phases() if self.method is not None else [Phase("train", self.config.epochs)]

    def start_phase(self, index: int) -> None:
        self.optimizer = build_optimizer(self.model, self.config, self.method)
        if self.method is not None:
            self.method.on_phase_start(index)

    def start_epoch(self, epoch: int) -> None:
        if self.method is not None:
            self.method.on_epoch_start(epoch)
        self.net.train()
        # Sums stay on the device: no host synchronisation inside the step loop.
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.first_bad = torch.full((), -1, device=self.device, dtype=torch.long)

    def step(self, x: Tensor, y: Tensor, step: int, scale: float, global_size: int | None = None) -> None:
        """One optimizer step on the batch; ``step`` counts the steps done before it.

        ``global_size``: the batch is this process's share of a batch of that many samples.
        """
        assert self.optimizer is not None
        config, method = self.config, self.method
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * scale
        if method is not None:
            method.lr_scale = scale
        with autocast_for(self.device, config.amp):
            out, extra = self.objective(x)
            if global_size is None:
                loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=config.label_smoothing)
                total, seen = loss, loss.detach() * y.numel()
            else:
                # DDP averages over the processes: W/N times each share's summed loss averages to the
                # mean over the whole batch, however unevenly it was split (a share may be empty).
                summed = nn.functional.cross_entropy(out.float(), y, label_smoothing=config.label_smoothing,
                                                     reduction="sum")
                total, seen = summed * (self.world.size / global_size), summed.detach()
        if extra is not None:
            total = total + extra
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(total.detach()), step + 1, self.first_bad)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], config.grad_clip)
        self.optimizer.step()
        if method is not None:
            method.on_step(step + 1)
        self.loss_sum += seen
        self.correct += (out.detach().argmax(1) == y).sum()

    def settle(self, epoch: int) -> None:
        """Bring the processes' epoch sums together and check that they hold the same state."""
        self.world.sum_(self.loss_sum, self.correct)
        self.world.earliest_(self.first_bad)
        self.world.settle(self.model, self.method, epoch=epoch + 1, tags=self.tags)

    def divergence(self) -> tuple[str, int | None] | None:
        """What went non-finite in this epoch (and the first bad step), or None."""
        bad = int(self.first_bad)
        if bad >= 0:
            return "the loss is not finite", bad
        name = _non_finite_tensor(self.model)
        return (f"{name} is not finite", None) if name is not None else None

    def record(self, epoch: int, phase: str, step: int, count: int, eval_loader: Any) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (without ``seconds``)."""
        assert self.optimizer is not None
        record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase, **self.tags, "step": step,
                                  "train_loss": float(self.loss_sum) / max(count, 1),
                                  "train_accuracy": 100.0 * float(self.correct) / max(count, 1),
                                  "lr": self.optimizer.param_groups[0]["lr"]}
        if self.method is not None:
            record["sparsity"] = self.method.hard_masks().sparsity()
            record.update(self.method.on_epoch_end(epoch))
        if eval_loader is not None:
            scores = evaluate(self.net, eval_loader, amp=self.config.amp, channels_last=self.config.channels_last,
                              world=self.world)
            record.update({f"eval_{k}": v for k, v in scores.items()})
        return record

    def result(self) -> FitResult:
        last = self.history[-1] if self.history else {}
        final = {"loss": last["eval_loss"], "accuracy": last["eval_accuracy"]} if "eval_accuracy" in last else {}
        return FitResult(history=self.history, final=final, seconds=last.get("seconds", 0.0))


def _phase_bounds(phases: Sequence[Phase]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for p in phases:
        bounds.append((start, start + p.epochs))
        start += p.epochs
    return bounds


def _train_epoch(lanes: list[_Lane], loader: EpochLoader, config: TrainConfig, *, step: int, phase_step0: int,
                 factor: Any, progress: Any) -> tuple[int, int]:
    """One epoch of every lane on the same batches; returns the step count and the samples seen."""
    device, world = lanes[0].device, lanes[0].world
    count = 0
    for batch in loader:
        x, y = batch
        global_size = batch.global_size if isinstance(batch, ShardBatch) else None
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = to_memory_format(x, config.channels_last)
        scale = factor(step - phase_step0)
        for lane in lanes:
            lane.step(x, y, step, scale, global_size)
        step += 1
        count += y.numel()
        if progress is not None:
            progress()
        if step % DIVERGENCE_CHECK_STEPS == 0 and world.any(any(int(lane.first_bad) >= 0 for lane in lanes), device):
            break  # the rest of the epoch would train on NaN (every process stops alike)
    return step, count


def _non_finite_tensor(model: nn.Module) -> str | None:
    """The name of the first weight, buffer or mask state of ``model`` holding NaN or infinity."""
    floats = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    if not floats:
        return None
    finite = torch.stack([torch.isfinite(v).all() for _, v in floats]).tolist()  # one synchronisation
    return next((k for (k, _), ok in zip(floats, finite, strict=True) if not ok), None)


def _non_finite_value(record: dict[str, Any]) -> str | None:
    """The key of the first logged number that is NaN or infinite (metrics.jsonl stays strict JSON)."""
    return next((k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)), None)


def _diverged(what: str, lane: _Lane, epoch: int, step: int | None, run_path: Path | None,
              epochs_done: int) -> DivergedError:
    """One line: where training diverged, which checkpoint is the last good one, what to try."""
    detail = ([f"step {step}"] if step is not None else []) + [f"{k}={v}" for k, v in lane.tags.items()]
    where = f"epoch {epoch}" + (f" ({', '.join(detail)})" if detail else "")
    if run_path is not None and epochs_done > 0 and (run_path / CHECKPOINT).exists():
        kept = f"the last good checkpoint is {run_path / CHECKPOINT} (epoch {epochs_done})"
    else:
        kept = "no good checkpoint was written"
    return DivergedError(f"training diverged in {where}: {what}; {kept}; "
                         "try a lower learning rate (--lr) or a warm-up (--warmup-epochs)")


def _shared_phases(lanes: list[_Lane]) -> list[Phase]:
    layouts = {tuple(lane.phases()) for lane in lanes}
    if len(layouts) != 1:
        raise UsageError("the replicas' methods split training into different phases; "
                         "replicas must share one pass over the data")
    return lanes[0].phases()


class _Training:
    """The state of one ``fit_replicas`` call: its lanes, counters and run directory."""

    def __init__(self, lanes: list[_Lane], loader: EpochLoader, config: TrainConfig, eval_loader: Any,
                 run_path: Path | None, callbacks: Sequence[Callback], world: World) -> None:
        self.lanes, self.loader, self.config, self.eval_loader = lanes, loader, config, eval_loader
        self.run_path, self.callbacks, self.world = run_path, callbacks, world
        # Only rank 0 writes the run directory; every rank reads its checkpoint when resuming.
        self.write_path = run_path if world.is_main else None
        self.phases = _shared_phases(lanes)
        self.bounds = _phase_bounds(self.phases)
        self.steps = len(loader)
        self.epochs_done, self.step = 0, 0
        self.start_time = time.perf_counter()

    def prepare(self, resume: bool) -> None:
        """Clean the run directory of a killed run's leftovers; load the checkpoint when resuming."""
        if self.run_path is None:
            return
        if self.write_path is not None:
            remove_stale_temporaries(self.write_path)
        if resume and (self.run_path / CHECKPOINT).exists():
            self._restore(self.run_path / CHECKPOINT)
        if self.write_path is not None:
            # Lines of epochs after the checkpoint (a kill between the two writes) are dropped.
            trim_jsonl(self.write_path / METRICS, lambda record: record.get("epoch", 0) <= self.epochs_done)

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path, self.lanes[0].device)
        if len(state["replicas"]) != len(self.lanes):
            raise UsageError(f"{path} holds {len(state['replicas'])} replicas, not {len(self.lanes)}")
        self.epochs_done, self.step = state["epochs_done"], state["step"]
        # Mid-phase the phase's optimizer state continues; at a phase boundary a fresh one is built.
        mid_phase = any(a < self.epochs_done < b for a, b in self.bounds)
        for lane, saved in zip(self.lanes, state["replicas"], strict=True):
            load_model_weights(lane.model, saved["model"], str(path))
            if lane.method is not None:
                lane.method.load_state_dict(saved["method"])
            lane.history = list(saved["history"])
            if mid_phase:
                lane.optimizer = build_optimizer(lane.model, self.config, lane.method)
                lane.optimizer.load_state_dict(saved["optimizer"])
        restore_rng(state)
        history = self.lanes[0].history
        self.start_time = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)

    def run(self, progress: Any) -> None:
        """Train the remaining epochs of every phase."""
        for index, (phase, (first, last)) in enumerate(zip(self.phases, self.bounds, strict=True)):
            if self.epochs_done >= last:
                continue
            if self.epochs_done == first:
                for lane in self.lanes:
                    lane.start_phase(index)
            factor = lr_factor(self.config, phase.epochs * self.steps, self.steps)
            for epoch in range(self.epochs_done, last):
                records = self._epoch(epoch, phase.name, first * self.steps, factor, progress)
                self._commit(records)

    def _epoch(self, epoch: int, phase: str, phase_step0: int, factor: Any, progress: Any) -> list[dict[str, Any]]:
        """Train one epoch; check every lane before anything of it is written; return its records."""
        self.loader.set_epoch(epoch)
        for lane in self.lanes:
            lane.start_epoch(epoch)
        self.step, count = _train_epoch(self.lanes, self.loader, self.config, step=self.step,
                                        phase_step0=phase_step0, factor=factor, progress=progress)
        count = self.world.total(count, self.lanes[0].device)
        for lane in self.lanes:
            lane.settle(epoch)
        for lane in self.lanes:
            if (bad := lane.divergence()) is not None:
                raise _diverged(bad[0], lane, epoch + 1, bad[1], self.run_path, self.epochs_done)
        records = [lane.record(epoch, phase, self.step, count, self.eval_loader) for lane in self.lanes]
        seconds = time.perf_counter() - self.start_time
        for lane, record in zip(self.lanes, records, strict=True):
            record["seconds"] = seconds
            if (key := _non_finite_value(record)) is not None:
                raise _diverged(f"{key} is {record[key]}", lane, epoch + 1, None, self.run_path, self.epochs_done)
        return records

    def _commit(self, records: list[dict[str, Any]]) -> None:
        """Log the epoch's records, write the checkpoint, tell the callbacks."""
        for lane, record in zip(self.lanes, records, strict=True):
            lane.history.append(record)
        self.epochs_done = records[0]["epoch"]
        if self.write_path is not None:
            for record in records:
                append_jsonl(record, self.write_path / METRICS)
            save_checkpoint(self.write_path / CHECKPOINT, replicas=[
                {"model": lane.model, "optimizer": lane.optimizer, "method": lane.method, "history": lane.history}
                for lane in self.lanes
            ], epochs_done=self.epochs_done, step=self.step)
        for record in records:
            for cb in self.callbacks:
                cb.on_epoch_end(record)


def fit_replicas(
    replicas: Sequence[Replica],
    train_loader: EpochLoader,
    *,
    config: TrainConfig,
    eval_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    show_progress: bool = False,
    world: World | None = None,
) -> list[FitResult]:
    """Train every replica for ``config.epochs`` epochs on the same batches (one data pass).

    Methods must be attached (:meth:`PruningMethod.attach`) and split training into the same phases.
    Arguments as in :func:`fit`; ``metrics.jsonl`` gets one line per epoch and replica (with the
    replica's tags) and the checkpoint holds every replica. Returns one result per replica.
    """
    if not replicas:
        raise ValueError("fit_replicas needs at least one replica")
    world = world or World()
    train_loader, eval_loader = world.shard(train_loader), world.shard(eval_loader)
    lanes = [_Lane(r, config, world) for r in replicas]
    training = _Training(lanes, train_loader, config, eval_loader, Path(run_dir) if run_dir is not None else None,
                         callbacks, world)
    training.prepare(resume)
    steps = len(train_loader)
    bar = progress_bar(show_progress and world.is_main, total=config.epochs * steps, done=training.epochs_done * steps)
    try:
        training.run(bar.advance if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    results = [lane.result() for lane in lanes]
    for lane, result in zip(lanes, results, strict=True):
        if not result.final and eval_loader is not None:
            result.final = evaluate(lane.net, eval_loader, amp=config.amp, channels_last=config.channels_last,
                                    world=world)
    return results


def fit(
    model: nn.Module,
    train_loader: EpochLoader,
    *,
    config: TrainConfig,
    method: PruningMethod | None = None,
    targets: list[Target] | None = None,
    eval_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    pretrained: bool = False,
    callbacks: Sequence[Callback] = (),
    show_progress: bool = False,
    channel_groups: Sequence[ChannelGroup] | None = None,
    world: World | None = None,
) -> FitResult:
    """Train ``model`` (pruning it with ``method`` if given) for ``config.epochs`` epochs.

    Args:
        model: the network, already on its device.
        train_loader: yields ``(x, y)`` batches; ``set_epoch(e)`` fixes epoch e's order and augmentation.
        config: optimizer, learning-rate schedule and epoch budget.
        method: a pruning method; attached here (to ``targets``) unless already attached.
        targets: weights to prune (default: the method's default selection).
        eval_loader: evaluated after each epoch (test or validation split).
        run_dir: where ``metrics.jsonl`` and ``checkpoint.pt`` go; None keeps nothing on disk.
        resume: continue from ``run_dir/checkpoint.pt`` (finished runs return at once).
        pretrained: whether ``model`` holds trained weights (methods adapt their schedules).
        callbacks: observers called with each epoch's record.
        show_progress: draw a progress bar on the terminal.
        channel_groups: the model's channel groups, for a filter-granularity method to prune coupled
            channels together (see :meth:`PruningMethod.attach`).
        world: the processes training together (``World.current()`` under ``torchrun``, after
            ``torch.distributed.init_process_group``); default one process. Each process passes the
            whole loaders: it trains and evaluates on its share (``--batch-size`` is the global
            batch), and only rank 0 writes into ``run_dir``. See :mod:`secateurs.train.distributed`.

    Returns:
        The history of epoch records and the final evaluation.

    Raises:
        DivergedError: the loss, a weight or the mask state became non-finite (the checkpoint of
            the last good epoch stays in ``run_dir``).
    """
    if method is not None and method.model is None:
        horizon = Horizon(config.epochs, len(train_loader), pretrained=pretrained)
        method.attach(model, targets, horizon, channel_groups=channel_groups)
    return fit_replicas([Replica(model, method)], train_loader, config=config, eval_loader=eval_loader,
                        run_dir=run_dir, resume=resume, callbacks=callbacks, show_progress=show_progress,
                        world=world)[0]
