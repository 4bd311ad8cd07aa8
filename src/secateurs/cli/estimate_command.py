"""``secateurs estimate``: effective filters per layer and the network's maximum compression."""

from __future__ import annotations

import argparse
import json

from secateurs.cli.command import Command
from secateurs.cli.command import positive_int as _positive
from secateurs.cli.command import write_out as _out
from secateurs.errors import UsageError

__all__ = ["ESTIMATE"]


def _target(text: str) -> tuple[str, float]:
    from secateurs.analysis.singularity.render import TARGET_KINDS

    kind, sep, value = text.partition("=")
    if not sep or kind not in TARGET_KINDS:
        raise UsageError(f"targets are KIND=FRACTION with KIND one of {', '.join(TARGET_KINDS)}; got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"target {kind} needs a number, got {value!r}") from None
    if not 0.0 <= number < 1.0:
        raise UsageError(f"target {kind} must lie in [0, 1), got {number}")
    return kind, number


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="a run directory (model, data and weights come from it)")
    p.add_argument("--model", help="model name (with --data and --from)")
    p.add_argument("--data", help="dataset name")
    p.add_argument("--from", dest="weights", help="trained weights: a run directory or a weights file")
    p.add_argument("--data-dir", help="where to look for dataset files first")
    p.add_argument("--limit-train", type=_positive, help="use only this many training samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset and position draws")
    p.add_argument("--criterion", default="energy", help="energy (default), numerical, effective or gavish-donoho")
    p.add_argument("--tau", type=float, default=0.99, help="energy share of the energy criterion")
    p.add_argument("--epsilon", type=float, default=1e-3, help="relative floor of the numerical rank")
    p.add_argument("--calibration", type=_positive, default=1024, help="calibration images from the training data")
    p.add_argument("--positions", type=_positive, default=16, help="spatial positions sampled per image")
    p.add_argument("--target", action="append", type=_target, default=[], metavar="KIND=FRACTION",
                   help="flag a target beyond the estimate: sparsity=0.5, params=0.6, macs=0.5 (repeatable)")
    p.add_argument("--out", help="where estimate.json and estimate.png go (default: the run directory)")
    p.add_argument("--no-plot", action="store_true", help="do not draw estimate.png")
    p.add_argument("--json", action="store_true", help="print estimate.json instead of the table")


def _run(args: argparse.Namespace) -> int:
    from secateurs.analysis.singularity.render import render_estimate
    from secateurs.analysis.singularity.spectrum import Criterion
    from secateurs.experiment.estimate_run import EstimateRequest, run_estimate

    if args.run and args.weights:
        raise UsageError("give either a run directory or --from weights, not both")
    request = EstimateRequest(
        run=args.run, model=args.model, data=args.data, weights=args.weights, data_dir=args.data_dir,
        limit_train=args.limit_train, seed=args.seed, criterion=Criterion(args.criterion, args.tau, args.epsilon),
        calibration=args.calibration, positions=args.positions, targets=tuple(args.target), out=args.out,
        plot=not args.no_plot,
    )
    result = run_estimate(request)
    if args.json:
        _out(json.dumps(result.estimate.to_dict(), indent=2))
        return 0
    files = ", ".join(str(f) for f in result.files)
    _out(render_estimate(result.estimate, result.checks) + f"\nwrote {files}")
    return 0


ESTIMATE = Command("effective filters per layer and the maximum compression (singularity analysis)",
                   _arguments, _run)
