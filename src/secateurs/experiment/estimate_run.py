"""``secateurs estimate``: the singularity analysis of a trained model, written next to it.

The model and data come from a run directory (its ``config.yaml`` and weights), or from
``--model/--data`` with ``--from`` trained weights. The calibration images are a seeded subset of
the *training* split (no augmentation), as in the ``singularity`` method, so the estimate printed here
is the one that method starts from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secateurs.analysis.singularity.estimate import NetworkEstimate, calibration_subset, estimate_network
from secateurs.analysis.singularity.render import TargetCheck, check_targets, plot_estimate
from secateurs.analysis.singularity.spectrum import Criterion
from secateurs.errors import UsageError
from secateurs.utils.io import save_json

__all__ = ["EstimateRequest", "EstimateResult", "run_estimate"]

ESTIMATE_JSON = "estimate.json"
ESTIMATE_PNG = "estimate.png"


@dataclass(frozen=True)
class EstimateRequest:
    """What to analyse and how (see ``secateurs estimate --help``)."""

    run: str | None = None
    model: str | None = None
    data: str | None = None
    weights: str | None = None
    data_dir: str | None = None
    limit_train: int | None = None
    seed: int = 0
    criterion: Criterion = Criterion()
    calibration: int = 1024
    positions: int = 16
    targets: tuple[tuple[str, float], ...] = ()
    out: str | None = None
    plot: bool = True


@dataclass
class EstimateResult:
    """The estimate, the targets checked against it, and the files written."""

    estimate: NetworkEstimate
    checks: list[TargetCheck]
    files: list[Path]
    source: dict[str, Any]


def _resolve(request: EstimateRequest) -> tuple[str, str, str, dict[str, Any]]:
    """(model, data, weights source, data options) from a run directory or explicit flags."""
    options: dict[str, Any] = {"data_dir": request.data_dir, "limit_train": request.limit_train, "seed": request.seed}
    if request.run is not None:
        run = Path(request.run)
        config_path = run / "config.yaml"
        if not config_path.exists():
            raise UsageError(f"{run} is not a run directory (no config.yaml)")
        from secateurs.experiment.config import load_recipe

        saved = load_recipe(config_path)
        for key in ("data_dir", "limit_train", "seed"):
            if options[key] is None or (key == "seed" and request.seed == 0):
                options[key] = saved.get(key, options[key])
        options["val_fraction"] = saved.get("val_fraction", 0.0)
        return (request.model or saved["model"], request.data or saved["data"], str(run), options)
    if not (request.model and request.data and request.weights):
        raise UsageError("estimate needs a run directory, or --model, --data and --from trained weights")
    return request.model, request.data, request.weights, options


def run_estimate(request: EstimateRequest) -> EstimateResult:
    """Analyse the model, write ``estimate.json`` (and the PNG) into ``out``, return the result."""
    from secateurs.core.targets import select_targets
    from secateurs.data import build_data
    from secateurs.experiment.run import load_dense_weights
    from secateurs.models import build_model
    from secateurs.structured import coupled_channel_groups
    from secateurs.train.checkpoint import load_model_weights

    model_name, data_name, weights, options = _resolve(request)
    data = build_data(data_name, data_dir=options["data_dir"], limit_train=options["limit_train"],
                      val_fraction=options.get("val_fraction", 0.0), seed=options["seed"], augment=False)
    model = build_model(model_name, in_channels=data.in_channels, num_classes=data.num_classes,
                        image_size=data.image_size)
    state, accuracy = load_dense_weights(weights)
    load_model_weights(model, state, weights)
    model.eval()
    example = torch.zeros(1, *data.input_shape)
    groups = coupled_channel_groups(model, example)
    targets = select_targets(model, include_first=True)
    images = calibration_subset(data.train.x, request.calibration, options["seed"])
    estimate = estimate_network(model, groups, targets, images, criterion=request.criterion,
                                positions=request.positions, generator=torch.Generator().manual_seed(options["seed"]))
    source = {"model": model_name, "data": data_name, "weights": weights, "accuracy": accuracy}
    estimate.extra["source"] = source
    checks = check_targets(estimate, dict(request.targets))
    if checks:
        estimate.extra["targets"] = [c.to_dict() for c in checks]
    out = Path(request.out) if request.out else (Path(weights) if Path(weights).is_dir() else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    files = [out / ESTIMATE_JSON]
    save_json(estimate.to_dict(), files[0])
    if request.plot:
        try:
            files.append(plot_estimate(estimate, out / ESTIMATE_PNG))
        except ImportError:
            estimate.extra["plot"] = "matplotlib is not installed (pip install secateurs[report])"
    return EstimateResult(estimate, checks, files, source)


def load_estimate(path: str | Path) -> dict[str, Any]:
    """Read an ``estimate.json``."""
    return json.loads(Path(path).read_text())
