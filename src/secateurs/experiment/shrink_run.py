"""``secateurs shrink RUN`` and ``secateurs inspect --prunability``: structural compaction of a run.

A filter-pruned run becomes a directory holding ``arch.json`` (kept channels per group),
``model.safetensors`` (the smaller weights), ``report.json`` (sizes before/after, the prediction
they must equal, output differences, accuracy before/after, bytes on disk) and optionally
``model.onnx``. Unstructured, kernel and N:M runs have no channels to remove; ``sparse_format``
stores their weights compressed instead (``weights.sparse.safetensors``), and ``compress`` writes
the really small file of any run (``model.cmp.safetensors``, :mod:`secateurs.export.compressed`):
for a filter run the shrunk model, for the others the pruned (and quantized) one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet
from secateurs.data import DataBundle, build_data
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig, load_recipe
from secateurs.metrics import count_macs, count_params
from secateurs.models import build_model
from secateurs.train.checkpoint import load_model_weights
from secateurs.utils.io import load_safetensors, read_json

__all__ = ["CompressOptions", "LoadedRun", "load_run", "prunability_of", "shrink_run"]

SPARSE_FILE = "weights.sparse.safetensors"
COMPRESSED_FILE = "model.cmp.safetensors"
ONNX_FILE = "model.onnx"
_EVAL_BATCH = 64


@dataclass
class LoadedRun:
    """A finished run rebuilt in memory: its config, report, masks, model (finalised) and data."""

    config: RunConfig
    report: dict[str, Any]
    masks: MaskSet
    model: nn.Module
    data: DataBundle
    model_info: dict[str, Any]

    @property
    def example_input(self) -> torch.Tensor:
        """One test image, the shape the model was built for."""
        return next(iter(self.data.test))[0][:1].cpu()


def load_run(run: str | Path) -> LoadedRun:
    """Rebuild a finished pruning run's model (weights loaded, masks validated) on the CPU."""
    run = Path(run)
    for name in ("config.yaml", "report.json", "model.safetensors"):
        if not (run / name).exists():
            raise UsageError(f"{run} is not a finished secateurs run (no {name})")
    if not (run / "masks.safetensors").exists():
        raise UsageError(f"{run} is a dense run (no masks.safetensors): there is nothing to shrink")
    config = RunConfig.from_dict(load_recipe(run / "config.yaml"))
    report = read_json(run / "report.json")
    masks = MaskSet.load(run / "masks.safetensors")
    data = build_data(config.data, data_dir=config.data_dir, batch_size=_EVAL_BATCH, eval_batch_size=_EVAL_BATCH,
                      augment=False, seed=config.seed, limit_train=config.limit_train, limit_test=config.limit_test)
    info = {"name": config.model, "in_channels": data.in_channels, "num_classes": data.num_classes,
            "image_size": [data.image_size, data.image_size]}
    model = build_model(config.model, in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size)
    load_model_weights(model, load_safetensors(run / "model.safetensors"), str(run))
    masks.validate(model)
    return LoadedRun(config, report, masks, model.eval(), data, info)


def _restore_masked_norms(loaded: LoadedRun, groups: list[Any]) -> None:
    """Give the loaded run's LayerNorms the masked statistics the run computed with.

    While a run's masks are active, LayerNorms that see a pruned channel group normalise over its
    kept channels only (:mod:`secateurs.structured.masked_norm`); the saved weights cannot say so,
    so the run's model is rebuilt with them from its masks (the channels every producer pruned).
    """
    from secateurs.structured import plan_removal
    from secateurs.structured.masked_norm import install_masked_norms_
    from secateurs.structured.predict import masked_norm_channels

    shapes = {name: tuple(p.shape) for name, p in loaded.model.named_parameters()}
    plan = plan_removal(groups, loaded.masks, shapes=shapes)
    install_masked_norms_(loaded.model, masked_norm_channels(loaded.model, groups, plan, "dead"))


def _guard_out(run: Path, out: Path) -> None:
    if out.resolve() == run.resolve():
        raise UsageError("--out must be a new directory, not the run itself")
    if any((out / name).exists() for name in ("arch.json", SPARSE_FILE, COMPRESSED_FILE)):
        raise UsageError(f"{out} already holds an export; choose another --out")


def _accuracy(model: nn.Module, loaded: LoadedRun) -> float:
    from secateurs.train import evaluate

    return evaluate(model, loaded.data.test, amp=False)["accuracy"]


def _sparse_export(loaded: LoadedRun, out: Path, layout: str, model: nn.Module | None = None) -> dict[str, Any]:
    from secateurs.export import load_sparse, save_sparse

    state = (model or loaded.model).state_dict()
    masks = loaded.masks if model is None else None
    written = save_sparse(out / SPARSE_FILE, state, layout=layout, masks=masks)
    restored = load_sparse(out / SPARSE_FILE)
    exact = all(torch.equal(restored[k], v.cpu()) for k, v in state.items())
    return {"file": SPARSE_FILE, "layout": layout, "round_trip_exact": exact, **written.to_dict()}


def _run_round_to(run: Path, config: RunConfig) -> int:
    """The ``round_to`` a run's shrunk size and budgets were computed with: its setting, or 1 for a
    run written before the setting existed (its masks were chosen with exact counts)."""
    return config.round_to if "round_to" in load_recipe(run / "config.yaml") else 1


def _compressed_export(loaded: LoadedRun, out: Path, options: CompressOptions, model: nn.Module,
                       arch: dict[str, Any] | None) -> dict[str, Any]:
    """Write ``model.cmp.safetensors``, read it back and compare it with the run's model."""
    from secateurs.export.compressed import load_compressed, save_compressed
    from secateurs.structured.shrink import forward_outputs

    written = save_compressed(model, out / COMPRESSED_FILE, codec=options.codec, float_storage=options.float_storage,
                              model_info=loaded.model_info, arch=arch)
    restored = load_compressed(out / COMPRESSED_FILE)
    state = model.state_dict()
    exact = all(torch.equal(v, state[k].cpu()) for k, v in restored.state_dict().items())
    batch = next(iter(loaded.data.test))[0][:_EVAL_BATCH].cpu()
    ours = forward_outputs(restored, batch)
    saved = forward_outputs(model, batch)
    # The reference is the run's whole dense fp32 state dict, also for a shrunk model (its removed
    # channels are part of what the compression saves).
    dense = sum(t.numel() * 4 for t in loaded.model.state_dict().values())
    report = {"file": COMPRESSED_FILE, **written.to_dict(), "bytes_dense_fp32": dense,
              "compression": round(dense / max(written.bytes_on_disk, 1), 2), "weights_exact": exact,
              "outputs_equal": all(torch.equal(a, b) for a, b in zip(ours, saved, strict=True)),
              "max_abs_diff_vs_run": max(float((a - b).abs().max()) for a, b in zip(
                  forward_outputs(loaded.model, batch), ours, strict=True))}
    if written.lossy:  # lossy storage changes the outputs: say by how much it costs in accuracy
        report["accuracy_run"] = _accuracy(loaded.model, loaded)
        report["accuracy_compressed"] = _accuracy(restored, loaded)
    return report


@dataclass(frozen=True)
class CompressOptions:
    """How ``shrink --compress`` writes the compressed file (see :func:`secateurs.export.save_compressed`)."""

    codec: str = "lzma"
    float_storage: str = "fp32"


def shrink_run(
    run: str | Path,
    out: str | Path,
    *,
    round_to: int | None = None,
    onnx: bool = False,
    sparse_format: str | None = None,
    approximate: bool = False,
    compress: CompressOptions | None = None,
) -> dict[str, Any]:
    """Shrink (or, for non-filter runs, compress) a finished run into ``out``; return the report.

    ``round_to`` None takes the run's own setting (``RunConfig.round_to``), which its report's shrunk
    size and its budgets were computed with."""
    from secateurs.structured import save_shrunk, shrink
    from secateurs.structured.shrink import forward_outputs
    from secateurs.utils.io import save_json

    run, out = Path(run), Path(out)
    loaded = load_run(run)
    _guard_out(run, out)
    granularities = sorted({str(e.granularity) for e in loaded.masks.values()})
    base = {"run": str(run), "model": loaded.config.model, "dataset": loaded.config.data,
            "method": loaded.report.get("method"), "granularity": ",".join(granularities)}
    if not all(isinstance(e.granularity, Filter) for e in loaded.masks.values()):
        if sparse_format is None and compress is None:
            article = "an" if base["granularity"][:1] in ("a", "e", "i", "o", "u") else "a"
            raise UsageError(f"{run} is {article} {base['granularity']} run: shrink removes whole channels and needs "
                             "--granularity filter; store it compressed with --compress (or --sparse-format bitmask)")
        out.mkdir(parents=True, exist_ok=True)
        report = {**base, "bytes_dense_fp32": sum(t.numel() * 4 for t in loaded.model.state_dict().values())}
        if sparse_format is not None:
            report["sparse"] = _sparse_export(loaded, out, sparse_format)
        if compress is not None:
            report["compressed"] = _compressed_export(loaded, out, compress, loaded.model, None)
        save_json(report, out / "report.json")
        return report
    example = loaded.example_input
    round_to = _run_round_to(run, loaded.config) if round_to is None else round_to
    result = shrink(loaded.model, loaded.masks, example, round_to=round_to, approximate=approximate,
                    model_info=loaded.model_info)
    _restore_masked_norms(loaded, result.groups)
    save_shrunk(result.model, result.spec, out)
    batch = next(iter(loaded.data.test))[0][:_EVAL_BATCH].cpu()
    after_params, after_macs = count_params(result.model), count_macs(result.model, example).dense
    pred = result.prediction
    dense_bytes = sum(t.numel() * 4 for t in loaded.model.state_dict().values())
    report = {
        **base,
        "round_to": round_to,
        "params_before": pred.params_before, "params_after": after_params, "params_predicted": pred.params_after,
        "macs_before": pred.macs_before, "macs_after": after_macs, "macs_predicted": pred.macs_after,
        "prediction_matches": after_params == pred.params_after and after_macs == pred.macs_after,
        "channels_removed": result.plan.removed_channels, "channels_masked": result.plan.masked_channels,
        "refused": result.refused,
        "max_abs_diff_reference": result.max_abs_diff,
        "max_abs_diff_vs_run": max(float((a - b).abs().max()) for a, b in zip(
            forward_outputs(loaded.model, batch), forward_outputs(result.model, batch), strict=True)),
        "accuracy_run": _accuracy(loaded.model, loaded),
        "accuracy_shrunk": _accuracy(result.model, loaded),
        "bytes_dense_fp32": dense_bytes,
        "bytes_on_disk": (out / "model.safetensors").stat().st_size,
        "groups": [{"root": g.root, "channels": g.channels, "kept": len(g.keep), "masked": g.masked, "note": g.note}
                   for g in result.plan.groups if g.removed or g.masked],
    }
    if onnx:
        from secateurs.export import check_onnx, export_onnx

        export_onnx(result.model, example, out / ONNX_FILE)
        report["onnx"] = {"file": ONNX_FILE, "max_abs_diff": check_onnx(out / ONNX_FILE, result.model, batch)}
    if sparse_format is not None:
        report["sparse"] = _sparse_export(loaded, out, sparse_format, model=result.model)
    if compress is not None:
        report["compressed"] = _compressed_export(loaded, out, compress, result.model, result.spec.to_dict())
    save_json(report, out / "report.json")
    return report


def prunability_of(
    target: str, *, image_size: int | None = None, in_channels: int = 3, num_classes: int = 10,
    round_to: int | None = None,
) -> dict[str, Any]:
    """The prunability report of a zoo model name, or of a run directory (then with its masks)."""
    from secateurs.structured.prunability import prunability_report

    path = Path(target)
    if path.is_dir():
        loaded = load_run(path)
        masks = loaded.masks if all(isinstance(e.granularity, Filter) for e in loaded.masks.values()) else None
        return prunability_report(loaded.model, loaded.example_input, masks,
                                  round_to=_run_round_to(path, loaded.config) if round_to is None else round_to)
    size = image_size or (224 if target.startswith(("torchvision:", "timm:")) else 32)
    model = build_model(target, in_channels=in_channels, num_classes=num_classes, image_size=size).eval()
    return prunability_report(model, torch.randn(1, in_channels, size, size))
