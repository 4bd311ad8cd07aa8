"""Parallel lottery-ticket search: several settings of one method, one pass over the data.

K replicas of the same initial network (one per value of the varied option: ``s0``, ``lam``,
``sparsity``, ...) are trained by :func:`secateurs.train.fit_replicas` on the *same* batches, each
with its own method in ticket mode, its own optimizer and the same phase layout (search rounds,
rewind, ticket training). The data pass (loading, shuffling, augmentation) is shared; the compute is
that of K runs. Unlike iterative magnitude pruning, whose curve points come out of rounds that must
run one after another, the K searches are independent, so the whole curve takes the sequential time
of one search. Which methods can search tickets, and how, they declare themselves
(:attr:`secateurs.methods.PruningMethod.ticket_search`).

Outputs in the directory ``out``: ``curve.json`` (per setting: its ``value``, the ticket's sparsity
and test accuracy, the method's own ticket fields; the costs), ``curve.md`` (the same as tables),
``curve.png`` (the plot, when matplotlib is installed), ``search.json`` (what was searched),
``metrics.jsonl`` (one line per epoch and replica), ``tickets/<i>/masks.safetensors`` and the
resumable ``checkpoint.pt`` of :func:`secateurs.train.fit_replicas`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from secateurs.data import build_data
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.experiment.resume import check_same_settings
from secateurs.experiment.run import channel_groups_for, check_forward, load_dense_weights, resolve_device
from secateurs.methods import METHODS, Horizon
from secateurs.methods.ticket import TicketSearch
from secateurs.models import build_model
from secateurs.reporting.ticket_curve import plot_ticket_curve, render_ticket_markdown
from secateurs.train import FitResult, Replica, fit_replicas
from secateurs.train.checkpoint import load_model_weights
from secateurs.train.evaluate import evaluate
from secateurs.train.loop import CHECKPOINT
from secateurs.utils.io import atomic_path, read_json, save_json

__all__ = ["imp_cost", "replica_configs", "search_tickets", "ticket_methods", "ticket_spec"]

CURVE = "curve.json"
SEARCH = "search.json"


def ticket_methods() -> list[str]:
    """The registered methods that can search tickets."""
    return [name for name in METHODS.names() if METHODS.get(name).ticket_search is not None]


def ticket_spec(method: str | None) -> TicketSearch:
    """The ticket search that ``method`` declares (UsageError when it declares none)."""
    spec = METHODS.get(method).ticket_search if method is not None else None
    if spec is None:
        raise UsageError(f"method {method} cannot search tickets; methods that can: {', '.join(ticket_methods())}")
    return spec


def replica_configs(base: RunConfig, vary: str, values: Sequence[Any]) -> list[RunConfig]:
    """One RunConfig per value of the method option ``vary``, in ticket mode (validated now, before
    any data loads)."""
    spec = ticket_spec(base.method)
    if not values:
        raise UsageError("give at least one value to search over (--values)")
    out = []
    for value in values:
        options = {**spec.options, vary: value, **(spec.targeted if vary == "sparsity" else {})}
        out.append(base.with_method_options(**options))
    return out


def imp_cost(points: int, epochs_per_round: int) -> dict[str, Any]:
    """Cost of a ``points``-point curve by IMP with the same epochs per round (computed, not measured).

    IMP reaches one more sparsity level per round, after a dense round, and each round's training
    *is* that level's ticket training: ``points + 1`` rounds, all sequential.
    """
    rounds = points + 1
    return {"rounds": rounds, "epochs": rounds * epochs_per_round, "sequential_epochs": rounds * epochs_per_round,
            "how": "computed: (points + 1) sequential rounds x epochs per round"}


def search_tickets(
    base: RunConfig,
    vary: str,
    values: Sequence[Any],
    out: str | Path,
    *,
    resume: bool = False,
    imp: str = "compute",
    show_progress: bool = False,
) -> dict[str, Any]:
    """Search tickets for every value of ``vary`` in one shared pass over the data.

    Args:
        base: the run (model, data, training budget per replica, method options); the method must
            declare a ticket search, whose options are set on every replica.
        vary: the method option varied across replicas (``s0``, ``lam``, ``sparsity``, ...).
        values: its values, one replica each.
        out: output directory.
        resume: continue from ``out/checkpoint.pt``.
        imp: ``compute`` IMP's cost for the same curve, ``measure`` it by running ``lottery`` (its curve
            and seconds are added to the results), or ``none``.
        show_progress: draw a progress bar on the terminal.

    Returns:
        The content of ``curve.json``.
    """
    if imp not in ("compute", "measure", "none"):
        raise UsageError(f"imp must be compute, measure or none, got {imp!r}")
    configs = replica_configs(base, vary, values)
    base = base.with_method_options(**ticket_spec(base.method).options)
    out = Path(out)
    if not resume and ((out / CHECKPOINT).exists() or (out / CURVE).exists()):
        raise UsageError(f"{out} already holds a ticket search; pass --resume or choose another --out")
    search = json.loads(json.dumps({"vary": vary, "values": list(values), "base": base.to_dict()}, default=str))
    if resume and (out / SEARCH).exists():  # a resumed search continues as it was started
        check_same_settings(read_json(out / SEARCH), search, out)
    device = resolve_device(base.device)
    data = build_data(
        base.data, data_dir=base.data_dir, batch_size=base.train.batch_size, val_fraction=base.val_fraction,
        augment=base.augment, seed=base.seed, device=device, download=base.download,
        limit_train=base.limit_train, limit_test=base.limit_test,
    )
    replicas = [_build_replica(cfg, i, value, data, device) for i, (cfg, value) in enumerate(zip(configs, values, strict=True))]
    if len({tuple(r.method.phases()) for r in replicas if r.method is not None}) != 1:
        raise UsageError(f"varying {vary} changes the phase layout; replicas must share one pass over the data")
    out.mkdir(parents=True, exist_ok=True)
    save_json(search, out / SEARCH)
    results = fit_replicas(replicas, data.train, config=base.train,
                           eval_loader=data.val if data.val is not None else data.test,
                           run_dir=out, resume=resume, show_progress=show_progress)
    return _finish(out, base, vary, values, replicas, results, data, imp)


def _build_replica(cfg: RunConfig, index: int, value: Any, data: Any, device: torch.device) -> Replica:
    torch.manual_seed(cfg.seed)  # every replica starts from the same initial weights
    model = build_model(cfg.model, in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size).to(device)
    if cfg.from_checkpoint:
        state, _ = load_dense_weights(cfg.from_checkpoint)
        load_model_weights(model, state, cfg.from_checkpoint)
    check_forward(model, cfg.model, data.input_shape, device)
    method = cfg.build_method()
    assert method is not None  # replica configs always carry the method
    method.bind_data(data)
    horizon = Horizon(cfg.train.epochs, len(data.train), pretrained=bool(cfg.from_checkpoint))
    method.attach(model, cfg.select_targets(model), horizon,
                  channel_groups=channel_groups_for(cfg, model, data.input_shape, device))
    return Replica(model, method, tags={"replica": index, "value": value})


def _finish(out: Path, base: RunConfig, vary: str, values: Sequence[Any], replicas: list[Replica],
            results: list[FitResult], data: Any, imp: str) -> dict[str, Any]:
    assert replicas[0].method is not None
    phases = replicas[0].method.phases()
    phase_ends = {sum(p.epochs for p in phases[: i + 1]) for i in range(len(phases))}
    spec = ticket_spec(base.method)
    points = []
    for i, (r, fitted) in enumerate(zip(replicas, results, strict=True)):
        assert r.method is not None
        test = evaluate(r.model, data.test, amp=base.train.amp, channels_last=base.train.channels_last)
        fields = r.method.ticket_fields()
        masks = r.method.finalize(squash=False)
        masks.save(out / "tickets" / str(i) / "masks.safetensors")
        round_acc = [h["eval_accuracy"] for h in fitted.history if h["epoch"] in phase_ends and "eval_accuracy" in h]
        points.append({"value": values[i], "sparsity": masks.sparsity(), "accuracy": test["accuracy"], **fields,
                       "search_round_accuracy": round_acc[:-1]})
    per_round = phases[0].epochs
    result: dict[str, Any] = {
        "method": base.method, "label": spec.label, "model": base.model, "dataset": base.data, "vary": vary,
        "points": points,
        "cost": {"replicas": len(replicas), "epochs": len(replicas) * base.train.epochs,
                 "sequential_epochs": base.train.epochs, "data_passes": base.train.epochs,
                 "seconds": results[0].seconds, "epochs_per_round": per_round, "search_rounds": len(phases) - 1},
        "options": replicas[0].method.config.to_dict(),
    }
    if imp != "none":
        result["imp"] = imp_cost(len(replicas), per_round)
        if imp == "measure":
            result["imp"].update(_measure_imp(base, points, per_round, out))
    save_json(result, out / CURVE)
    with atomic_path(out / "curve.md") as tmp:
        tmp.write_text(render_ticket_markdown(result))
    plot_ticket_curve(result, out / "curve.png")
    return result


def _measure_imp(base: RunConfig, points: list[dict[str, Any]], per_round: int, out: Path) -> dict[str, Any]:
    """Run ``lottery`` (IMP) over the densest-to-sparsest range of the ticket curve, one round per point."""
    from secateurs.experiment.run import execute

    rounds = len(points)
    target = max(p["sparsity"] for p in points)
    target = min(max(target, 0.01), 0.999)
    cfg = replace(base, method="lottery", method_options={"sparsity": round(target, 4), "rounds": rounds},
                  train=replace(base.train, epochs=(rounds + 1) * per_round))
    report = execute(cfg, out / "imp", resume=True)
    history = [json.loads(line) for line in (out / "imp" / "metrics.jsonl").read_text().splitlines()]
    ends = [h for i, h in enumerate(history) if i + 1 == len(history) or history[i + 1]["phase"] != h["phase"]]
    curve = [{"sparsity": h["sparsity"], "accuracy": h.get("eval_accuracy")} for h in ends[1:]]
    return {"how": "measured: secateurs prune --method lottery", "measured_seconds": report["train_seconds"],
            "epochs": cfg.train.epochs, "curve": curve}
