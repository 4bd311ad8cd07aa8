"""Execute a RunConfig into a run directory.

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per epoch),
``checkpoint.pt`` (resumable state, written atomically each epoch), ``masks.safetensors`` (pruned
runs), ``model.safetensors`` (final weights, masks baked in) and ``report.json``.

Under ``torchrun`` (an initialised process group) every process executes the run: each trains on its
share of every batch (:mod:`secateurs.train.distributed`), and rank 0 alone writes the run directory,
searches an allocation (the others receive it) and measures and reports the result.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from secateurs.core.masks import MaskSet
from secateurs.data import build_data
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.experiment.determinism import deterministic_mode
from secateurs.experiment.record import RunOrigin, finish_record, start_record
from secateurs.experiment.report import build_report
from secateurs.methods import Horizon
from secateurs.models import build_model
from secateurs.train import fit
from secateurs.train.checkpoint import checkpoint_weights, load_model_weights
from secateurs.train.distributed import World
from secateurs.train.loop import CHECKPOINT
from secateurs.utils.io import load_safetensors, load_weights_only, read_json, save_json, save_safetensors
from secateurs.utils.output_dir import check_output_dir

__all__ = ["channel_groups_for", "check_forward", "execute", "load_dense_weights", "resolve_device"]

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
MASKS = "masks.safetensors"
REPORT = "report.json"
CONFIG = "config.yaml"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA request is a UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but CUDA is not available here")
    return device


def load_dense_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], float | None]:
    """Weights from a run directory, a ``.safetensors`` file or a weights-only ``.pt`` state dict.

    Returns the state dict and the dense accuracy when the source is a run with a report.
    """
    path = Path(source)
    accuracy = None
    if path.is_dir():
        report = path / REPORT
        if report.exists():
            saved = read_json(report)
            accuracy = saved.get("accuracy") if isinstance(saved, dict) else None
        path = path / WEIGHTS
    if not path.exists():
        raise UsageError(f"no trained weights at {path} (give a run directory of `secateurs train` or a weights file)")
    if path.suffix == ".safetensors":
        return load_safetensors(path), accuracy
    state = load_weights_only(path)
    if isinstance(state, dict) and state.get("format") in (1, 2) and ("model" in state or "replicas" in state):
        state = checkpoint_weights(state)  # a training checkpoint
    if not isinstance(state, dict):
        raise UsageError(f"{path} does not hold a state dict")
    return state, accuracy


def _guard_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run unless resuming it: nothing already written is lost."""
    if resume:
        return
    if (out / CHECKPOINT).exists() or (out / REPORT).exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def save_weights(model: nn.Module, path: Path) -> None:
    """Write the model's state dict as safetensors, atomically (tensors made contiguous and unshared),
    with a checksum that loading verifies."""
    save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}, path)


def execute(config: RunConfig, out: str | Path, *, resume: bool = False, show_progress: bool = False,
            origin: RunOrigin | None = None) -> dict[str, Any]:
    """Run ``config`` into the directory ``out`` and return the report (also written as ``report.json``).

    ``origin`` (the command line and where each setting came from) goes into the run record,
    ``run.json``, with the software, machine and data the run used (:mod:`secateurs.experiment.record`).
    Under ``torchrun`` every process calls this; rank 0 returns the report, the others an empty dict.
    """
    with deterministic_mode(config.deterministic):
        return _execute(config, Path(out), resume=resume, show_progress=show_progress, origin=origin)


def _execute(config: RunConfig, out: Path, *, resume: bool, show_progress: bool,
             origin: RunOrigin | None) -> dict[str, Any]:
    if resume and (out / REPORT).exists():
        log.info("run %s is already finished", out)
        return read_json(out / REPORT)
    _guard_run_dir(out, resume)
    check_output_dir(out, flag="run directory")
    world = World.current()
    device = world.place(resolve_device(config.device))
    method = config.build_method()
    data = build_data(
        config.data, data_dir=config.data_dir, batch_size=config.train.batch_size, val_fraction=config.val_fraction,
        augment=config.augment, seed=config.seed, device=device, download=config.download,
        limit_train=config.limit_train, limit_test=config.limit_test,
    )
    # The global seed fixes the model's initialisation (a run is seeded as a whole).
    torch.manual_seed(config.seed)
    model = build_model(config.model, in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size).to(device)
    dense_accuracy = None
    if config.from_checkpoint:
        state, dense_accuracy = load_dense_weights(config.from_checkpoint)
        load_model_weights(model, state, config.from_checkpoint)
    check_forward(model, config.model, data.input_shape, device)
    targets = config.select_targets(model) if method else None
    if method is not None:
        method.bind_data(data)
    channel_groups = channel_groups_for(config, model, data.input_shape, device)
    planned: Any = None
    allocated: _Allocated | None = None
    if method is not None:
        planned, allocated = _plan(config, model, data, targets, channel_groups, out, world, resume=resume,
                                   show_progress=show_progress)
        config = _apply_allocation(method, allocated, config)
    pretrained = bool(config.from_checkpoint) or bool(allocated is not None and allocated.pretrained)
    if method is not None:
        # Attached before the run directory exists (fit would attach it first thing): a budget the
        # method cannot use (lottery rounds > epochs) is refused without leaving a directory behind.
        horizon = Horizon(config.train.epochs, len(data.train), pretrained=pretrained)
        method.attach(model, targets, horizon, channel_groups=channel_groups)
    record = _start_run_dir(config, out, origin, device, data, resume=resume, world=world)
    eval_loader = data.val if data.val is not None else data.test
    result = fit(
        model, data.train, config=config.train, method=method, targets=targets, eval_loader=eval_loader,
        run_dir=out, resume=resume, pretrained=pretrained,
        show_progress=show_progress,
        channel_groups=channel_groups, world=world,
    )
    if not world.is_main:
        return {}  # every process holds the same model: rank 0 measures, saves and reports it
    masks: MaskSet | None = None
    extras: dict[str, Any] = {}
    if method is not None:
        method.save_artifacts(out)
        extras = method.report_extras()
        masks = method.finalize(squash=True)
        masks.save(out / MASKS)
    recalibration = _recalibrate(model, method, data, config, result.final)
    delivered: dict[str, Any] = {}
    repairs = 0
    if planned is not None and masks is not None:
        from secateurs.experiment.allocate import deliver, report_fields

        results, masks, repairs = deliver(planned, model, masks, data, config)
        if repairs:
            masks.save(out / MASKS)
        delivered = report_fields(planned, results, repairs, out)
    save_weights(model, out / WEIGHTS)
    fresh = recalibration or repairs
    test = result.final if data.val is None and not fresh else _evaluate(model, data.test, config)
    report = build_report(
        config, model, example_input=next(iter(data.test))[0][:1], masks=masks, accuracy=test.get("accuracy"),
        dense_accuracy=dense_accuracy, train_seconds=result.seconds, channel_groups=channel_groups,
    )
    report.update(extras)
    report.update(delivered)
    if recalibration:
        report["bn_recalibration"] = recalibration
    save_json(report, out / REPORT)
    finish_record(out, record)
    return report


def _start_run_dir(config: RunConfig, out: Path, origin: RunOrigin | None, device: torch.device, data: Any, *,
                   resume: bool, world: World) -> dict[str, Any]:
    """Create the run directory with ``config.yaml`` and the run record (rank 0 only; {} elsewhere)."""
    if not world.is_main:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG)
    return start_record(out, config.to_dict(), origin, device=device, deterministic=config.deterministic,
                        data_files=data.files, data_generator=data.generator,
                        from_checkpoint=config.from_checkpoint, resume=resume,
                        given_options=tuple(sorted(config.declared_options)), processes=world.size)


class _Allocated(NamedTuple):
    """What every process of a run needs of its allocation (rank 0 plans it)."""

    sparsities: dict[str, float]
    units: dict[str, torch.Tensor]
    pretrained: bool
    #: The budget is met with exact unit counts only: the run drops the rounding of kept counts.
    exact_counts: bool


def _apply_allocation(method: Any, allocated: _Allocated | None, config: RunConfig) -> RunConfig:
    """Give the method its allocation; the run's config, without rounding where only exact counts
    meet the budget."""
    if allocated is None:
        return config
    method.use_allocation(allocated.sparsities, allocated.units)
    return config.with_overrides(round_to=1) if allocated.exact_counts else config


def _plan(config: RunConfig, model: nn.Module, data: Any, targets: Any, channel_groups: Any, out: Path, world: World,
          *, resume: bool, show_progress: bool) -> tuple[Any, _Allocated | None]:
    """The run's planned allocation (rank 0's; None on the others) and what the method takes of it
    (every process's), or ``(None, None)`` without an allocator.

    A budget that cannot be met is a usage error here, before any training. Rank 0 alone plans: a
    search may train and measure, and it writes into the run directory.
    """
    from secateurs.experiment.allocate import plan_allocation

    planned, allocated = None, None
    if world.is_main:
        planned = plan_allocation(config, model, data, targets, channel_groups, out, resume=resume,
                                  show_progress=show_progress)
        if planned is not None:
            allocated = _Allocated(dict(planned.allocation.sparsities), dict(planned.allocation.units or {}),
                                   bool(planned.pretrained), planned.problem.rounding_dropped is not None)
    if world.distributed and config.allocator is not None:
        allocated = _share_allocation(world, allocated, model)
    return planned, allocated


def _share_allocation(world: World, allocated: _Allocated | None, model: nn.Module) -> _Allocated | None:
    """Rank 0's allocation, and its model weights (a search may have trained them first), on every process."""
    device = next(model.parameters()).device
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if world.is_main else None
    if allocated is not None:  # tensors travel on the CPU (a CUDA tensor would land on rank 0's GPU)
        allocated = allocated._replace(units={k: v.cpu() for k, v in allocated.units.items()})
    allocated, state = world.from_main((allocated, state))
    if not world.is_main and state is not None:
        model.load_state_dict(state)
    if allocated is None:
        return None
    return allocated._replace(units={k: v.to(device) for k, v in allocated.units.items()})


@torch.no_grad()
def check_forward(model: nn.Module, name: str, input_shape: tuple[int, ...], device: torch.device) -> None:
    """One clear line, before any training, when the model cannot take the data's inputs (an
    ImageNet network on 28x28 images pools its feature map away)."""
    was_training = model.training
    model.eval()  # no batch-norm statistics change
    try:
        model(torch.zeros(1, *input_shape, device=device))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"model {name} does not run on inputs of shape {tuple(input_shape)}: {first}") from None
    finally:
        model.train(was_training)


def channel_groups_for(
    config: RunConfig, model: nn.Module, input_shape: tuple[int, ...], device: torch.device
) -> list[Any] | None:
    """The model's coupled channel groups when the run prunes filters by groups, else None.

    A model that cannot be traced gets a warning and per-layer filter masks instead.
    """
    if not config.couples_channels:
        return None
    from secateurs.structured import coupled_channel_groups

    try:
        return coupled_channel_groups(model, torch.zeros(1, *input_shape, device=device))
    except UsageError as exc:
        log.warning("%s; filter masks stay per layer", exc)
        return None


def _recalibrate(model: nn.Module, method: Any, data: Any, config: RunConfig,
                 final: dict[str, float]) -> dict[str, Any] | None:
    """Re-estimate batch-norm statistics for the final masks (see ``TrainConfig.bn_recalibration``)."""
    from secateurs.train.recalibrate import recalibrate_batch_norm_

    batches = config.train.bn_recalibration
    if batches is None:
        batches = _AUTO_RECALIBRATION if method is not None and method.samples_masks else 0
    data.train.set_epoch(config.train.epochs)  # a fixed, fresh order: resumed runs recalibrate alike
    used = recalibrate_batch_norm_(model, data.train, batches, channels_last=config.train.channels_last)
    if not used:
        return None
    log.info("re-estimated batch-norm statistics over %d training batches", used)
    before = "accuracy_before" if data.val is None else "val_accuracy_before"  # what ``final`` measured
    return {"batches": used, before: final.get("accuracy")}


#: Batches of re-estimation for methods that train with sampled masks, unless the run says otherwise.
_AUTO_RECALIBRATION = 100


def _evaluate(model: nn.Module, loader: Any, config: RunConfig) -> dict[str, float]:
    from secateurs.train import evaluate

    return evaluate(model, loader, amp=config.train.amp)
