"""The one training loop. Methods plug in through hooks; the loop never names a method.

Per phase (see :class:`secateurs.methods.Phase`) a fresh optimizer and learning-rate schedule are
built; per step the method's penalty joins the task loss and ``method.on_step`` follows the
optimizer step; per epoch the model is evaluated, a line goes to ``metrics.jsonl`` and a checkpoint
is written atomically, so ``resume=True`` continues a killed run to the same final weights.

A run that diverges (a non-finite loss, weight or mask state) stops with a :class:`DivergedError`
before anything of the bad epoch is logged or saved: the last checkpoint stays the last good one.
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
from secateurs.errors import DivergedError
from secateurs.methods.base import Horizon, Phase, PruningMethod
from secateurs.train.checkpoint import load_checkpoint, load_model_weights, restore_rng, save_checkpoint
from secateurs.train.config import TrainConfig
from secateurs.train.progress import progress_bar
from secateurs.train.speed import accelerate, to_memory_format

if TYPE_CHECKING:
    from secateurs.structured.groups import ChannelGroup
from secateurs.train.evaluate import autocast_for, evaluate
from secateurs.train.optim import build_optimizer, lr_factor
from secateurs.utils.io import append_jsonl

__all__ = ["Callback", "FitResult", "fit"]

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


def _phase_bounds(phases: Sequence[Phase]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for p in phases:
        bounds.append((start, start + p.epochs))
        start += p.epochs
    return bounds


def _train_epoch(
    model: nn.Module,
    loader: EpochLoader,
    optimizer: torch.optim.Optimizer,
    method: PruningMethod | None,
    config: TrainConfig,
    *,
    step: int,
    phase_step0: int,
    factor: Any,
    progress: Any,
) -> tuple[int, dict[str, float], int | None]:
    """One epoch; returns the step count, the epoch's logs and the first step with a non-finite loss."""
    device = next(model.parameters()).device
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # on the device: no sync per step
    count = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = to_memory_format(x, config.channels_last)
        scale = factor(step - phase_step0)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * scale
        if method is not None:
            method.lr_scale = scale
        with autocast_for(device, config.amp):
            out = model(x)
            loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=config.label_smoothing)
        total = loss
        extra: Tensor | None = method.penalty() if method is not None else None
        if extra is not None:
            total = total + extra
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(total.detach()), step + 1, first_bad)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
        optimizer.step()
        step += 1
        if method is not None:
            method.on_step(step)
        # Accumulate on the device: no host synchronisation inside the step loop.
        loss_sum += loss.detach() * y.numel()
        correct += (out.detach().argmax(1) == y).sum()
        count += y.numel()
        if progress is not None:
            progress()
        if step % DIVERGENCE_CHECK_STEPS == 0 and int(first_bad) >= 0:
            break  # the rest of the epoch would train on NaN
    bad = int(first_bad)
    logs = {"train_loss": float(loss_sum) / max(count, 1), "train_accuracy": 100.0 * float(correct) / max(count, 1)}
    return step, logs, (bad if bad >= 0 else None)


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


def _diverged(what: str, epoch: int, step: int | None, run_path: Path | None, epochs_done: int) -> DivergedError:
    """One line: where training diverged, which checkpoint is the last good one, what to try."""
    where = f"epoch {epoch}" + (f" (step {step})" if step is not None else "")
    if run_path is not None and epochs_done > 0 and (run_path / CHECKPOINT).exists():
        kept = f"the last good checkpoint is {run_path / CHECKPOINT} (epoch {epochs_done})"
    else:
        kept = "no good checkpoint was written"
    return DivergedError(f"training diverged in {where}: {what}; {kept}; "
                         "try a lower learning rate (--lr) or a warm-up (--warmup-epochs)")


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

    Returns:
        The history of epoch records and the final evaluation.
    """
    horizon = Horizon(config.epochs, len(train_loader), pretrained=pretrained)
    if method is not None and method.model is None:
        method.attach(model, targets, horizon, channel_groups=channel_groups)
    # The module for forward passes (compiled or not); ``model`` itself is what gets saved.
    net = accelerate(model, compile_mode=config.compile, channels_last=config.channels_last)
    phases = method.phases() if method is not None else [Phase("train", config.epochs)]
    bounds = _phase_bounds(phases)
    run_path = Path(run_dir) if run_dir is not None else None
    device = next(model.parameters()).device

    epochs_done, step, history, optimizer = 0, 0, [], None
    if resume and run_path is not None and (run_path / CHECKPOINT).exists():
        state = load_checkpoint(run_path / CHECKPOINT, device)
        load_model_weights(model, state["model"], str(run_path / CHECKPOINT))
        if method is not None:
            method.load_state_dict(state["method"])
        epochs_done, step, history = state["epochs_done"], state["step"], list(state["history"])
        restore_rng(state)
        phase_index = next(i for i, (a, b) in enumerate(bounds) if a <= epochs_done < b) if epochs_done < config.epochs else None
        if phase_index is not None and bounds[phase_index][0] < epochs_done:
            # Mid-phase: the phase's optimizer state continues; at a phase boundary a fresh one is built.
            optimizer = build_optimizer(model, config, method)
            optimizer.load_state_dict(state["optimizer"])

    bar = progress_bar(show_progress, total=config.epochs * len(train_loader), done=epochs_done * len(train_loader))
    start_time = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    try:
        for index, (phase, (first, last)) in enumerate(zip(phases, bounds)):
            if epochs_done >= last:
                continue
            if epochs_done == first:
                optimizer = build_optimizer(model, config, method)
                if method is not None:
                    method.on_phase_start(index)
            assert optimizer is not None
            factor = lr_factor(config, phase.epochs * len(train_loader), len(train_loader))
            for epoch in range(epochs_done, last):
                train_loader.set_epoch(epoch)
                if method is not None:
                    method.on_epoch_start(epoch)
                step, logs, bad_step = _train_epoch(
                    net, train_loader, optimizer, method, config,
                    step=step, phase_step0=first * len(train_loader), factor=factor,
                    progress=bar.advance if bar is not None else None,
                )
                if bad_step is not None:
                    raise _diverged("the loss is not finite", epoch + 1, bad_step, run_path, epochs_done)
                if (name := _non_finite_tensor(model)) is not None:
                    raise _diverged(f"{name} is not finite", epoch + 1, None, run_path, epochs_done)
                record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase.name, "step": step, **logs}
                record["lr"] = optimizer.param_groups[0]["lr"]
                if method is not None:
                    record["sparsity"] = method.hard_masks().sparsity()
                    record.update(method.on_epoch_end(epoch))
                if eval_loader is not None:
                    scores = evaluate(net, eval_loader, amp=config.amp, channels_last=config.channels_last)
                    record.update({f"eval_{k}": v for k, v in scores.items()})
                record["seconds"] = time.perf_counter() - start_time
                if (key := _non_finite_value(record)) is not None:
                    raise _diverged(f"{key} is {record[key]}", epoch + 1, None, run_path, epochs_done)
                history.append(record)
                epochs_done = epoch + 1
                if run_path is not None:
                    append_jsonl(record, run_path / METRICS)
                    save_checkpoint(
                        run_path / CHECKPOINT, model=model, optimizer=optimizer, method=method,
                        epochs_done=epochs_done, step=step, history=history,
                    )
                for cb in callbacks:
                    cb.on_epoch_end(record)
    finally:
        if bar is not None:
            bar.close()
    final: dict[str, float] = {}
    if history and "eval_accuracy" in history[-1]:
        final = {"loss": history[-1]["eval_loss"], "accuracy": history[-1]["eval_accuracy"]}
    elif eval_loader is not None:
        final = evaluate(net, eval_loader, amp=config.amp, channels_last=config.channels_last)
    seconds = history[-1]["seconds"] if history else 0.0
    return FitResult(history=history, final=final, seconds=seconds)
