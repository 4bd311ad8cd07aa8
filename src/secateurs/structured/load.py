"""Saving and loading shrunk models: ``arch.json`` + ``model.safetensors``, no pickled modules.

``save_shrunk(result, directory)`` writes the architecture spec and the weights;
``load_shrunk(directory)`` (also ``secateurs.load_shrunk``) builds the original model class, cuts the
recorded channels and loads the weights with safetensors, which cannot execute code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.structured.spec import ArchSpec, class_path
from secateurs.utils.state_fit import load_fitting_state

__all__ = ["SPEC_FILE", "WEIGHTS_FILE", "apply_spec_", "load_shrunk", "save_shrunk"]

SPEC_FILE = "arch.json"
WEIGHTS_FILE = "model.safetensors"


def save_shrunk(model: nn.Module, spec: ArchSpec, directory: str | Path) -> tuple[Path, Path]:
    """Write ``directory/arch.json`` and ``directory/model.safetensors``.

    Args:
        model: The shrunk model (e.g. ``ShrinkResult.model``).
        spec: Its spec (``ShrinkResult.spec``).
        directory: Output directory (created).

    Returns:
        The paths of the spec and of the weights.
    """
    from secateurs.utils.io import save_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_safetensors(state, directory / WEIGHTS_FILE, metadata={"secateurs.arch": SPEC_FILE})
    spec.save(directory / SPEC_FILE)
    return directory / SPEC_FILE, directory / WEIGHTS_FILE


def apply_spec_(model: nn.Module, spec: ArchSpec) -> nn.Module:
    """Cut a freshly built original model to the spec's shape, in place (weights are not loaded).

    Raises:
        UsageError: If the model is not of the spec's class or its layers do not match the spec.
    """
    from secateurs.structured.graph import ChannelGraph

    if class_path(model) != spec.model_class:
        raise UsageError(f"the spec is for a {spec.model_class}, not a {class_path(model)}")
    example = tuple(torch.zeros(shape) for shape in spec.input_shapes)
    graph = ChannelGraph(model, example if len(example) > 1 else example[0])
    for group in spec.groups:
        channels = graph.out_channels(group.root)
        if channels is None:
            raise UsageError(f"the spec does not match this {type(model).__name__}: it has no layer {group.root!r}")
        if channels != group.channels:
            raise UsageError(f"the spec does not match this {type(model).__name__}: layer {group.root} has "
                             f"{channels} output channels, the spec expects {group.channels}")
        kept = set(group.keep)
        graph.remove_channels_(group.root, [c for c in range(group.channels) if c not in kept])
    return model


def _build_from_zoo(spec: ArchSpec) -> nn.Module:
    info = spec.model
    if not info or "name" not in info:
        raise UsageError(f"the spec names no zoo model; pass model=<a new {spec.model_class}> to load it")
    from secateurs.models import build_model

    return build_model(info["name"], in_channels=int(info["in_channels"]), num_classes=int(info["num_classes"]),
                       image_size=tuple(info["image_size"]))


def _load_weights(model: nn.Module, path: Path) -> None:
    from secateurs.utils.io import load_safetensors

    try:
        state = load_safetensors(path)  # DamagedFileError (a UsageError) for a truncated or corrupt file
    except FileNotFoundError:
        raise UsageError(f"no weights at {path}") from None
    load_fitting_state(model, state, mismatch=f"weights {path} do not match the spec's model")


def load_shrunk(path: str | Path, model: nn.Module | None = None, *, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a shrunk model from ``arch.json`` and ``model.safetensors``.

    Args:
        path: The directory written by :func:`save_shrunk` (or ``secateurs shrink --out``), or its
            ``arch.json``.
        model: A new instance of the original model class; None builds it from the secateurs zoo
            entry recorded in the spec.
        map_location: Device of the returned model.

    Returns:
        The shrunk model in eval mode.

    Raises:
        UsageError: Missing or malformed files, or a spec that does not match the model class.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no shrunk model at {path} (expected a directory with {SPEC_FILE} and {WEIGHTS_FILE})")
    directory = path if path.is_dir() else path.parent
    spec = ArchSpec.load(path if path.is_file() else directory / SPEC_FILE)
    model = _build_from_zoo(spec) if model is None else model
    apply_spec_(model, spec)
    _load_weights(model, directory / WEIGHTS_FILE)
    return model.to(map_location).eval()
