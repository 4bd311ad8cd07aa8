"""Parallel ticket search with Continuous Sparsification: several settings, one pass over the data.

K replicas of the same initial network (one per value of the varied option: ``s0``, ``lam``,
``sparsity``, ...) are trained in one process on the *same* batches, each with its own CS method in
ticket mode, its own optimizer and the same phase layout (search rounds, rewind, ticket training).
The data pass (loading, shuffling, augmentation) is shared; the compute is that of K runs. Unlike
iterative magnitude pruning, whose curve points come out of rounds that must run one after another,
the K searches are independent, so the whole curve takes the sequential time of one search.

Outputs in the directory ``out``: ``curve.json`` (per setting: its ``value``, the ticket's sparsity
and test accuracy; the costs), ``curve.md`` (the same as a table), ``curve.png`` (the plot, when
matplotlib is installed),
``metrics.jsonl`` (one line per epoch and replica), ``tickets/<i>/masks.safetensors`` and a
resumable ``state.pt``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.data import build_data
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.experiment.run import channel_groups_for, check_forward, load_dense_weights, resolve_device
from secateurs.methods import Horizon, PruningMethod
from secateurs.models import build_model
from secateurs.train.checkpoint import load_model_weights, restore_rng
from secateurs.train.evaluate import autocast_for, evaluate
from secateurs.train.optim import build_optimizer, lr_factor
from secateurs.train.progress import ProgressBar, progress_bar
from secateurs.utils.io import append_jsonl, atomic_path, load_weights_only, save_json, save_torch

__all__ = ["imp_cost", "replica_configs", "search_tickets"]

STATE = "state.pt"
METHOD = "continuous-sparsification"


def replica_configs(base: RunConfig, vary: str, values: Sequence[Any]) -> list[RunConfig]:
    """One RunConfig per value of the method option ``vary`` (validated now, before any data loads)."""
    if base.method != METHOD:
        raise UsageError(f"ticket search runs continuous sparsification, not {base.method}")
    if not values:
        raise UsageError("give at least one value to search over (--values)")
    out = []
    for value in values:
        options = {vary: value, **({"free": False} if vary == "sparsity" else {})}
        out.append(base.with_method_options(**options))
    return out


class _Replica:
    """One model, its method and its optimizer."""

    def __init__(self, config: RunConfig, model: nn.Module, method: PruningMethod) -> None:
        self.config, self.model, self.method = config, model, method
        self.optimizer: torch.optim.Optimizer | None = None
        self.history: list[dict[str, Any]] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, scale: float) -> torch.Tensor:
        assert self.optimizer is not None
        train = self.config.train
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * scale
        self.method.lr_scale = scale
        with autocast_for(x.device, train.amp):
            out = self.model(x)
            loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=train.label_smoothing)
        total = loss
        extra = self.method.penalty()
        if extra is not None:
            total = total + extra
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if train.grad_clip > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, train.grad_clip)
        self.optimizer.step()
        self.method.on_step(step + 1)
        return loss.detach()


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
        base: the run (model, data, training budget per replica, CS options, ``mode`` forced to ticket).
        vary: the CS option varied across replicas (``s0``, ``lam``, ``sparsity``, ...).
        values: its values, one replica each.
        out: output directory.
        resume: continue from ``out/state.pt``.
        imp: ``compute`` IMP's cost for the same curve, ``measure`` it by running ``lottery`` (its curve
            and seconds are added to the results), or ``none``.
        show_progress: draw a progress bar over the epochs on the terminal.

    Returns:
        The content of ``curve.json``.
    """
    if imp not in ("compute", "measure", "none"):
        raise UsageError(f"imp must be compute, measure or none, got {imp!r}")
    base = base.with_method_options(mode="ticket")
    configs = replica_configs(base, vary, values)
    out = Path(out)
    if not resume and (out / STATE).exists():
        raise UsageError(f"{out} already holds a ticket search; pass --resume or choose another --out")
    device = resolve_device(base.device)
    data = build_data(
        base.data, data_dir=base.data_dir, batch_size=base.train.batch_size, val_fraction=base.val_fraction,
        augment=base.augment, seed=base.seed, device=device, limit_train=base.limit_train, limit_test=base.limit_test,
    )
    replicas = _build_replicas(configs, data, device)
    if len({tuple((p.name, p.epochs) for p in r.method.phases()) for r in replicas}) != 1:
        raise UsageError(f"varying {vary} changes the phase layout; replicas must share one pass over the data")
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps({"vary": vary, "values": list(values), "base": base.to_dict()},
                                                indent=2, default=str) + "\n")
    search = _Search(base, vary, values, replicas, data, out, device)
    if resume and (out / STATE).exists():
        search.load()
    search.train(show_progress)
    return _finish(out, base, vary, values, replicas, data, search.seconds, imp, search.phases)


def _build_replicas(configs: list[RunConfig], data: Any, device: torch.device) -> list[_Replica]:
    horizon = Horizon(configs[0].train.epochs, len(data.train), pretrained=bool(configs[0].from_checkpoint))
    replicas = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)  # every replica starts from the same initial weights
        model = build_model(cfg.model, in_channels=data.in_channels, num_classes=data.num_classes,
                            image_size=data.image_size).to(device)
        if cfg.from_checkpoint:
            state, _ = load_dense_weights(cfg.from_checkpoint)
            load_model_weights(model, state, cfg.from_checkpoint)
        check_forward(model, cfg.model, data.input_shape, device)
        method = cfg.build_method()
        assert method is not None  # replica configs always carry the method
        method.attach(model, cfg.select_targets(model), horizon,
                      channel_groups=channel_groups_for(cfg, model, data.input_shape, device))
        replicas.append(_Replica(cfg, model, method))
    return replicas


class _Search:
    """The shared loop: per batch, every replica takes one step; per phase, fresh optimizers."""

    def __init__(self, base: RunConfig, vary: str, values: Sequence[Any], replicas: list[_Replica], data: Any,
                 out: Path, device: torch.device) -> None:
        self.base, self.vary, self.values, self.replicas = base, vary, values, replicas
        self.data, self.out, self.device = data, out, device
        self.phases = replicas[0].method.phases()
        self.steps_per_epoch = len(data.train)
        self.eval_loader = data.val if data.val is not None else data.test
        self.epochs_done, self.step, self.seconds = 0, 0, 0.0

    def train(self, show_progress: bool) -> None:
        start = time.perf_counter() - self.seconds
        bar = progress_bar(show_progress, total=self.base.train.epochs, done=self.epochs_done,
                           description=f"{len(self.replicas)} tickets")
        try:
            self._train_phases(start, bar)
        finally:
            if bar is not None:
                bar.close()

    def _train_phases(self, start: float, bar: ProgressBar | None) -> None:
        first = 0
        for index, phase in enumerate(self.phases):
            last = first + phase.epochs
            if self.epochs_done < last:
                if self.epochs_done == first:
                    for r in self.replicas:
                        r.optimizer = build_optimizer(r.model, r.config.train, r.method)
                        r.method.on_phase_start(index)
                factor = lr_factor(self.base.train, phase.epochs * self.steps_per_epoch, self.steps_per_epoch)
                for epoch in range(self.epochs_done, last):
                    self._epoch(epoch, phase.name, first, last, factor)
                    self.seconds = time.perf_counter() - start
                    self._log(epoch, phase.name, evaluate_now=epoch + 1 == last)
                    self.epochs_done = epoch + 1
                    _save_state(self.out / STATE, self.replicas, self.epochs_done, self.step, self.seconds)
                    if bar is not None:
                        bar.advance()
            first = last

    def _epoch(self, epoch: int, name: str, first: int, last: int, factor: Any) -> None:
        self.data.train.set_epoch(epoch)
        for r in self.replicas:
            r.model.train()
            r.method.on_epoch_start(epoch)
        self.losses = [torch.zeros((), device=self.device) for _ in self.replicas]
        for x, y in self.data.train:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            scale = factor(self.step - first * self.steps_per_epoch)
            for i, r in enumerate(self.replicas):
                self.losses[i] += r.step(x, y, self.step, scale)
            self.step += 1

    def _log(self, epoch: int, phase: str, *, evaluate_now: bool) -> None:
        for i, r in enumerate(self.replicas):
            record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase, "replica": i, "value": self.values[i],
                                      "train_loss": float(self.losses[i]) / self.steps_per_epoch,
                                      "sparsity": r.method.hard_masks().sparsity(), **r.method.on_epoch_end(epoch)}
            if evaluate_now:  # at the end of each phase (search round or ticket)
                metrics = evaluate(r.model, self.eval_loader, amp=self.base.train.amp)
                record.update({f"eval_{k}": v for k, v in metrics.items()})
            record["seconds"] = self.seconds
            r.history.append(record)
            append_jsonl(record, self.out / "metrics.jsonl")

    def load(self) -> None:
        self.epochs_done, self.step, self.seconds = _load_state(
            self.out / STATE, self.replicas, self.device, self.base, self.phases)


def _save_state(path: Path, replicas: list[_Replica], epochs_done: int, step: int, seconds: float) -> None:
    save_torch({
        "format": 1, "epochs_done": epochs_done, "step": step, "seconds": seconds,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "replicas": [{"model": r.model.state_dict(), "optimizer": r.optimizer.state_dict() if r.optimizer else {},
                      "method": r.method.state_dict(), "history": r.history} for r in replicas],
    }, path)


def _load_state(path: Path, replicas: list[_Replica], device: torch.device, base: RunConfig,
                phases: Sequence[Any]) -> tuple[int, int, float]:
    try:
        state = load_weights_only(path, map_location=device)
    except Exception as exc:
        raise UsageError(f"cannot read {path}: {type(exc).__name__}") from None
    if state.get("format") != 1 or len(state["replicas"]) != len(replicas):
        raise UsageError(f"{path} does not belong to this search (another number of settings?)")
    epochs_done = state["epochs_done"]
    boundaries, acc = set(), 0
    for p in phases:
        boundaries.add(acc)
        acc += p.epochs
    for r, saved in zip(replicas, state["replicas"], strict=True):
        load_model_weights(r.model, saved["model"], str(path))
        r.method.load_state_dict(saved["method"])
        r.history = list(saved["history"])
        if epochs_done not in boundaries and epochs_done < base.train.epochs:
            r.optimizer = build_optimizer(r.model, r.config.train, r.method)
            r.optimizer.load_state_dict(saved["optimizer"])
    restore_rng(state)
    return epochs_done, state["step"], float(state["seconds"])


def _finish(out: Path, base: RunConfig, vary: str, values: Sequence[Any], replicas: list[_Replica], data: Any,
            seconds: float, imp: str, phases: Sequence[Any]) -> dict[str, Any]:
    points = []
    for i, r in enumerate(replicas):
        extras = r.method.report_extras().get("cs", {})
        test = evaluate(r.model, data.test, amp=base.train.amp)
        masks = r.method.finalize(squash=False)
        masks.save(out / "tickets" / str(i) / "masks.safetensors")
        round_acc = [h["eval_accuracy"] for h in r.history if "eval_accuracy" in h]
        points.append({"value": values[i], "sparsity": masks.sparsity(), "accuracy": test["accuracy"],
                       "natural_sparsity": extras.get("natural_sparsity"), "search_round_accuracy": round_acc[:-1]})
    per_round = phases[0].epochs
    result: dict[str, Any] = {
        "model": base.model, "dataset": base.data, "vary": vary, "points": points,
        "cost": {"replicas": len(replicas), "epochs": len(replicas) * base.train.epochs,
                 "sequential_epochs": base.train.epochs, "data_passes": base.train.epochs, "seconds": seconds,
                 "epochs_per_round": per_round, "search_rounds": len(phases) - 1},
        "options": replicas[0].method.config.to_dict(),
    }
    if imp != "none":
        result["imp"] = imp_cost(len(replicas), per_round)
        if imp == "measure":
            result["imp"].update(_measure_imp(base, points, per_round, out))
    save_json(result, out / "curve.json")
    with atomic_path(out / "curve.md") as tmp:
        tmp.write_text(render_markdown(result))
    plot_curve(result, out / "curve.png")
    return result


def _measure_imp(base: RunConfig, points: list[dict[str, Any]], per_round: int, out: Path) -> dict[str, Any]:
    """Run ``lottery`` to the densest-to-sparsest range of the CS curve, one round per CS point."""
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


def render_markdown(result: dict[str, Any]) -> str:
    """The curve and the costs as a markdown page."""
    vary = result["vary"]
    lines = [f"# CS ticket search: {result['model']} on {result['dataset']}", "",
             f"| {vary} (setting) | sparsity | ticket accuracy % | natural sparsity |", "|---:|---:|---:|---:|"]
    for p in sorted(result["points"], key=lambda p: p["sparsity"]):
        nat = "n/a" if p["natural_sparsity"] is None else f"{p['natural_sparsity']:.4f}"
        lines.append(f"| {p['value']} | {p['sparsity']:.4f} | {p['accuracy']:.2f} | {nat} |")
    c = result["cost"]
    lines += ["", "| cost | epochs (compute) | sequential epochs | seconds |", "|---|---:|---:|---:|",
              f"| CS, {c['replicas']} settings in one pass | {c['epochs']} | {c['sequential_epochs']} "
              f"| {c['seconds']:.0f} |"]
    if "imp" in result:
        imp = result["imp"]
        secs = f"{imp['measured_seconds']:.0f}" if "measured_seconds" in imp else "n/a"
        lines.append(f"| IMP, same points ({imp['how'].split(':')[0]}) | {imp['epochs']} "
                     f"| {imp['sequential_epochs']} | {secs} |")
        if imp.get("curve"):
            lines += ["", "| IMP sparsity | IMP ticket accuracy % |", "|---:|---:|"]
            lines += [f"| {p['sparsity']:.4f} | {p['accuracy']:.2f} |" for p in imp["curve"]]
    return "\n".join(lines) + "\n"


def plot_curve(result: dict[str, Any], path: Path) -> Path | None:
    """Sparsity vs ticket accuracy (CS points, and IMP's when measured); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = sorted(result["points"], key=lambda p: p["sparsity"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([p["sparsity"] for p in pts], [p["accuracy"] for p in pts], "o-", label="CS tickets")
    for p in pts if result["vary"] != "sparsity" else ():
        ax.annotate(f"{result['vary']}={p['value']}", (p["sparsity"], p["accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    imp_curve = result.get("imp", {}).get("curve")
    if imp_curve:
        ax.plot([p["sparsity"] for p in imp_curve], [p["accuracy"] for p in imp_curve], "s--", label="IMP (lottery)")
    ax.set_xlabel("sparsity (fraction of target weights removed)")
    ax.set_ylabel("test accuracy of the ticket (%)")
    ax.set_title(f"{result['model']} on {result['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
