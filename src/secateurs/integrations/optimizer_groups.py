"""Give a method's mask state its own optimizer groups in an optimizer that someone else built.

A training framework (Lightning's ``configure_optimizers``) builds the optimizer and its learning-rate
schedulers from ``model.parameters()``, which also yields the learned mask state (CS scores, DPP
logits) of the parametrizations. That state must sit in the groups the method asks for
(:meth:`secateurs.methods.PruningMethod.mask_param_groups`): without weight decay (decaying scores
towards zero biases the masks) and at the method's learning rate (DPP's own Adam steps the logits, so
the run's optimizer must hold them at learning rate 0).

:func:`add_mask_groups` moves the mask parameters out of the groups they were put in and appends the
method's groups, each a copy of the hyperparameters of the group its parameters came from (momentum,
betas, a scheduler's ``initial_lr``/``max_lr``), and extends the per-group lists that torch's
schedulers keep (``base_lrs``, ``lr_lambdas``, ...) by the same entry, so a schedule built for the
original groups drives the new ones too. Learning rates of a group that sets its own ``lr`` are scaled
by its ratio to the source group's base rate.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["add_mask_groups", "scheduler_lists"]

#: Group keys that hold learning rates (scaled when a mask group sets its own rate).
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
#: Attributes of torch's schedulers that hold one entry per parameter group (learning rates end in
#: ``lr``/``lrs``). Named rather than guessed from list lengths: SequentialLR's milestones are a list too.
_PER_GROUP = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs", "max_lrs", "base_momentums", "max_momentums")


def _group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int | None:
    for index, group in enumerate(optimizer.param_groups):
        if any(p is param for p in group["params"]):
            return index
    return None


def _already_grouped(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    """Whether the optimizer holds exactly this group already (built with ``method.param_groups``)."""
    wanted = {id(p) for p in group["params"]}
    for existing in optimizer.param_groups:
        if {id(p) for p in existing["params"]} != wanted:
            continue
        return all(existing.get(k) == v for k, v in group.items() if k != "params")
    return False


def scheduler_lists(scheduler: Any, groups: int) -> list[tuple[Any, str]]:
    """The ``(scheduler, attribute)`` pairs of a torch scheduler that hold one entry per parameter
    group (``base_lrs``, ``lr_lambdas``, ``min_lrs``, ...), nested schedulers (SequentialLR,
    ChainedScheduler) included."""
    found = []
    for name in _PER_GROUP:
        value = getattr(scheduler, name, None)
        if isinstance(value, list) and len(value) == groups:
            found.append((scheduler, name))
    for inner in getattr(scheduler, "_schedulers", []) or []:
        found.extend(scheduler_lists(inner, groups))
    return found


def _scaled(value: Any, name: str, ratio: float | None, own_lr: float | None) -> Any:
    """An entry copied for a new group: learning rates scaled to the group's own rate."""
    if own_lr is None or not isinstance(value, float) or not name.endswith(("lrs", "_lr")):
        return copy.copy(value)
    return value * ratio if ratio is not None else own_lr


def add_mask_groups(optimizer: torch.optim.Optimizer, mask_groups: Sequence[dict[str, Any]],
                    schedulers: Sequence[Any] = ()) -> int:
    """Put each of ``mask_groups`` into ``optimizer`` as a group of its own; returns how many were added.

    A group the optimizer already holds as given (same parameters, same settings) is left alone. The
    optimizer must not have stepped yet (its per-parameter state would be keyed to the old groups'
    layout only loosely, and momentum of decayed scores is wrong anyway).

    Args:
        optimizer: the optimizer to change in place.
        mask_groups: the method's groups: ``params`` plus the settings it insists on (``weight_decay``,
            optionally ``lr``).
        schedulers: learning-rate schedulers built on ``optimizer``; their per-group lists grow with it.
    """
    added = 0
    for wanted in mask_groups:
        params = list(wanted["params"])
        if not params or _already_grouped(optimizer, wanted):
            continue
        sources = [_group_of(optimizer, p) for p in params]
        source = next((s for s in sources if s is not None), 0)
        ids = {id(p) for p in params}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        before = len(optimizer.param_groups)
        template = optimizer.param_groups[source]
        own_lr = wanted.get("lr")
        base = template.get("initial_lr", template["lr"])
        ratio = (float(own_lr) / base) if own_lr is not None and base > 0 else None
        group = {k: copy.copy(v) for k, v in template.items() if k != "params"}
        group.update({k: v for k, v in wanted.items() if k != "params"})
        if own_lr is not None:
            for key in _LR_KEYS:
                if isinstance(template.get(key), float | int):
                    group[key] = float(template[key]) * ratio if ratio is not None else float(own_lr)
        group["params"] = params
        # add_param_group validates the group (duplicates, leaf tensors) and fills missing defaults.
        optimizer.add_param_group(group)
        for scheduler in schedulers:
            for owner, name in scheduler_lists(scheduler, before):
                entries = getattr(owner, name)
                entries.append(_scaled(entries[source], name, ratio, own_lr))
        added += 1
    return added
