"""``secateurs shrink RUN --out DIR`` and the ``--prunability`` flag of ``secateurs inspect``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from secateurs.cli.command import Command
from secateurs.cli.command import positive_int as _positive
from secateurs.cli.command import write_out as _out

__all__ = ["SHRINK", "Command", "add_prunability_arguments", "run_prunability"]

_REFUSALS_SHOWN = 5




def _shrink_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a finished run directory of `secateurs prune --granularity filter`")
    p.add_argument("--out", required=True, help="directory for arch.json, model.safetensors and report.json")
    p.add_argument("--round-to", type=_positive, default=None, metavar="N",
                   help="keep channel counts at multiples of N (default: the run's round_to, 8 unless the run "
                        "said otherwise; 1 keeps exact counts); channels given back stay zero")
    p.add_argument("--onnx", action="store_true", help="also export model.onnx and check it with onnxruntime")
    p.add_argument("--sparse-format", choices=["bitmask", "csr"], default=None,
                   help="also store the weights compressed (the only export of unstructured and N:M runs)")
    p.add_argument("--compress", action="store_true",
                   help="also write model.cmp.safetensors: weights packed to their real bit width, sparse "
                        "positions, entropy-coded (any run; load with secateurs.load_compressed)")
    p.add_argument("--codec", choices=["lzma", "zstd", "none"], default="lzma",
                   help="entropy stage of --compress (zstd needs the zstandard package)")
    p.add_argument("--float-storage", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="--compress: store float tensors that are not quantized in fp16 or int8 (lossy: "
                        "the report gives the output difference and the accuracy)")
    p.add_argument("--approximate", action="store_true",
                   help="also remove channels seen by LayerNorm/GroupNorm (outputs change slightly)")


def _compressed_line(report: dict[str, Any]) -> str:
    c = report["compressed"]
    if c["lossless"]:
        verdict = f"lossless, outputs equal to the saved model: {'yes' if c['outputs_equal'] else 'NO'}"
    else:
        verdict = (f"LOSSY ({len(c['lossy_tensors'])} tensors in fewer bits): max output difference "
                   f"{c['max_abs_diff_vs_run']:.3g}, accuracy {c['accuracy_run']:.2f}% -> "
                   f"{c['accuracy_compressed']:.2f}%")
    return (f"compressed: {c['file']} {c['bytes_on_disk']:,} bytes on disk vs {c['bytes_dense_fp32']:,} dense fp32 "
            f"({c['compression']}x, {c['codec']}), {verdict}")


def _summary(report: dict[str, Any], out: str) -> str:
    if "params_after" not in report:
        lines = [f"{report['model']} ({report['granularity']}):"]
        if "sparse" in report:
            sparse = report["sparse"]
            lines.append(f"sparse: {sparse['bytes_on_disk']:,} bytes on disk vs {sparse['bytes_dense_fp32']:,} dense "
                         f"fp32 ({sparse['compression']}x), exact round trip: {sparse['round_trip_exact']}")
        if "compressed" in report:
            lines.append(_compressed_line(report))
        return "\n".join(lines) + f"\nexport directory: {out}"
    lines = [
        f"{report['model']}: params {report['params_before']:,} -> {report['params_after']:,}, "
        f"MACs {report['macs_before']:,} -> {report['macs_after']:,} "
        f"(as predicted: {'yes' if report['prediction_matches'] else 'NO'})",
        f"channels removed {report['channels_removed']}, pruned channels kept as zeros {report['channels_masked']}",
        f"accuracy {report['accuracy_run']:.2f}% -> {report['accuracy_shrunk']:.2f}%, "
        f"max output difference {report['max_abs_diff_vs_run']:.3g}",
    ]
    refused = report.get("refused", {})
    for root, reason in list(refused.items())[:_REFUSALS_SHOWN]:
        lines.append(f"group {root} kept (pruned channels stay zero): {reason}")
    if len(refused) > _REFUSALS_SHOWN:
        lines.append(f"... and {len(refused) - _REFUSALS_SHOWN} more groups kept (see report.json)")
    if "onnx" in report:
        onnx = report["onnx"]
        lines.append(f"onnx: {onnx['file']} (onnxruntime max difference {onnx['max_abs_diff']:.3g})")
    if "compressed" in report:
        lines.append(_compressed_line(report))
    return "\n".join(lines) + f"\nshrunk model: {out} (load with secateurs.load_shrunk)"


def _shrink_run(args: argparse.Namespace) -> int:
    from secateurs.experiment.shrink_run import CompressOptions, shrink_run
    from secateurs.structured import ShrinkError

    compress = CompressOptions(args.codec, args.float_storage) if args.compress else None
    try:
        report = shrink_run(args.run, args.out, round_to=args.round_to, onnx=args.onnx,
                            sparse_format=args.sparse_format, approximate=args.approximate, compress=compress)
    except ShrinkError as exc:
        sys.stderr.write(f"secateurs: shrink failed: {exc}\n")
        return 1
    _out(_summary(report, args.out))
    return 0


SHRINK = Command("remove pruned channels: a smaller dense model (+ ONNX, compressed weights)", _shrink_args,
                 _shrink_run)


def add_prunability_arguments(p: argparse.ArgumentParser) -> None:
    """The ``inspect`` flags of the pre-flight report (``inspect --prunability MODEL``)."""
    p.add_argument("--prunability", metavar="MODEL",
                   help="list coupled channel groups and what can be removed structurally, for a model "
                        "name (e.g. resnet20, torchvision:resnet18, timm:resnet18) or a run directory")
    p.add_argument("--image-size", type=_positive, default=None, help="input side for --prunability MODEL")
    p.add_argument("--in-channels", type=_positive, default=3, help="input channels for --prunability MODEL")
    p.add_argument("--num-classes", type=_positive, default=10, help="classes for --prunability MODEL")
    p.add_argument("--round-to", type=_positive, default=None,
                   help="as in `shrink --round-to` (default: a run's round_to; 1 for a model name)")


def run_prunability(args: argparse.Namespace) -> int:
    """Print the prunability report of ``args.prunability``."""
    from secateurs.experiment.shrink_run import prunability_of
    from secateurs.structured.prunability import render_prunability

    report = prunability_of(args.prunability, image_size=args.image_size, in_channels=args.in_channels,
                            num_classes=args.num_classes, round_to=args.round_to)
    _out(json.dumps(report, indent=2) if getattr(args, "json", False) else render_prunability(report))
    return 0
