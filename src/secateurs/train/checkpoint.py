"""Checkpoints that let a killed run resume to the same final weights.

A checkpoint holds everything the next epoch depends on: model (with mask state), optimizer,
the method's own state (generator, snapshots), the global RNG states (dropout), the epoch and step
counters and the history, for each replica of :func:`secateurs.train.fit_replicas` (one for ``fit``).
It is written atomically and loaded weights-only (no pickled objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.methods.base import PruningMethod
from secateurs.utils.io import load_weights_only, save_torch

__all__ = ["checkpoint_weights", "load_checkpoint", "load_model_weights", "restore_rng", "save_checkpoint"]


#: Format 2 holds a list of replicas (``fit_replicas``); format 1 (one model at the top level) still loads.
FORMAT = 2


def save_checkpoint(path: str | Path, *, replicas: Sequence[dict[str, Any]], epochs_done: int, step: int) -> None:
    """Write the resumable state after ``epochs_done`` finished epochs.

    Args:
        path: the checkpoint file (written atomically).
        replicas: per replica ``{"model": nn.Module, "optimizer": Optimizer | None,
            "method": PruningMethod | None, "history": [records]}``.
        epochs_done: finished epochs.
        step: optimizer steps done.
    """
    state = {
        "format": FORMAT,
        "epochs_done": epochs_done,
        "step": step,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "replicas": [_replica_state(**r) for r in replicas],
    }
    save_torch(state, path)


def _replica_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, method: PruningMethod | None,
                   history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "method": method.state_dict() if method is not None else {}, "history": history}


def load_checkpoint(path: str | Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights-only), in format 2's layout."""
    try:
        state = load_weights_only(path, map_location=device)
    except FileNotFoundError:
        raise UsageError(f"no checkpoint at {path}") from None
    except UsageError:  # damaged or refused: the message already names the file
        raise
    except Exception as exc:  # a truncated or foreign file: say so in one line
        raise UsageError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("format") not in (1, FORMAT):
        raise UsageError(f"{path} is not a secateurs training checkpoint")
    if state["format"] == 1:  # one model at the top level
        state["replicas"] = [{k: state.pop(k) for k in ("model", "optimizer", "method", "history")}]
    return state


def checkpoint_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The (first) model's state dict of a raw checkpoint, in either format."""
    if state.get("format") == 1:
        return state["model"]
    return state["replicas"][0]["model"]


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved in a checkpoint."""
    torch.set_rng_state(state["rng_cpu"].cpu())
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])


def load_model_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly; a mismatch becomes one clear UsageError line."""
    missing, unexpected, wrong = [], [], []
    own = model.state_dict()
    for k, v in state_dict.items():
        if k not in own:
            unexpected.append(k)
        elif own[k].shape != v.shape:
            wrong.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
    missing = [k for k in own if k not in state_dict]
    if missing or unexpected or wrong:
        detail = (wrong or [f"missing {k}" for k in missing] or [f"unexpected {k}" for k in unexpected])[0]
        raise UsageError(f"checkpoint {source} does not match the model ({detail})")
    model.load_state_dict(state_dict)
