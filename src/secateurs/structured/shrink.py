"""Physical removal of pruned channels: a new, smaller dense model that computes the same outputs.

``shrink(model, masks, example_input)`` leaves ``model`` untouched and returns a copy whose layers
are narrower, together with the :class:`~secateurs.structured.spec.ArchSpec` that rebuilds its shape
from the original class. Steps:

1. trace the coupled channel groups (:class:`~secateurs.structured.graph.ChannelGraph`);
2. plan the removal: a channel goes where every producer of its group pruned it
   (:func:`~secateurs.structured.plan.plan_removal`);
3. zero the doomed channels in every coupled tensor (the *reference* model: a filter mask zeroes
   only the filter, while removal also drops the batch norm's shift of that channel);
4. cut them with torch-pruning's layer functions and check on the example input that the shrunk
   model reproduces the reference (max abs difference), so a mis-shrink never passes silently.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.core.masks import MaskSet
from secateurs.errors import SecateursError, UsageError
from secateurs.structured.graph import ChannelGraph
from secateurs.structured.groups import ChannelGroup
from secateurs.structured.plan import RemovalPlan, plan_removal
from secateurs.structured.predict import SizePrediction, predict_shrunk_size, zero_dead_channels_
from secateurs.structured.spec import ArchSpec, SpecGroup, class_path

__all__ = ["ShrinkError", "ShrinkResult", "forward_outputs", "input_shapes", "shrink"]

#: Largest allowed difference between the shrunk and the reference model, relative to max(1, |reference|).
TOLERANCE = 1e-4


class ShrinkError(SecateursError):
    """The shrunk model does not reproduce the masked one: an unsupported operation in the model."""


@dataclass
class ShrinkResult:
    """A shrunk model and how it came about.

    Attributes:
        model: The new, smaller model (same class as the original).
        spec: Its portable architecture spec.
        plan: The removal plan that was executed.
        groups: The original model's channel groups.
        prediction: Parameters and MACs before and after, predicted from the plan.
        max_abs_diff: Largest output difference from the reference (dead channels zeroed) on the
            example input, or None when not verified.
    """

    model: nn.Module
    spec: ArchSpec
    plan: RemovalPlan
    groups: list[ChannelGroup]
    prediction: SizePrediction
    max_abs_diff: float | None


def input_shapes(example_input: Any) -> tuple[tuple[int, ...], ...]:
    """Shapes of the example input tensor(s)."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    return tuple(tuple(int(d) for d in x.shape) for x in inputs)


@torch.no_grad()
def forward_outputs(model: nn.Module, example_input: Any) -> list[torch.Tensor]:
    """The model's output tensors in eval mode (modes restored), flattened from tuples/lists/dicts."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = model(*inputs)
    finally:
        for module, training in modes:
            module.training = training
    stack, flat = [out], []
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            flat.append(item.float())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "logits"):  # e.g. torchvision's named tuples in training mode
            stack.append(item.logits)
    return flat


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return float("inf")
    return max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True) if x.numel()), default=0.0)


def _check_plain(model: nn.Module) -> None:
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise UsageError("shrink needs a finalised model: call method.finalize() or secateurs.squash_ first")


def shrink(
    model: nn.Module,
    masks: MaskSet,
    example_input: Any,
    *,
    round_to: int = 1,
    approximate: bool = False,
    verify: bool = True,
    model_info: dict[str, Any] | None = None,
    groups: list[ChannelGroup] | None = None,
) -> ShrinkResult:
    """Remove the channels pruned by filter masks, returning a new smaller model.

    Args:
        model: A finalised (squashed) model whose pruned filters are zero; it is not modified.
        masks: Its Filter-granularity masks.
        example_input: An input of the model (a batch of 1 is enough) for tracing and checking.
        round_to: Keep every group's channel count a multiple of this (e.g. 8); the channels given
            back stay zero.
        approximate: Also remove channels seen by LayerNorm/GroupNorm (outputs then differ a little).
        verify: Compare the shrunk model with the reference on ``example_input`` and raise
            :class:`ShrinkError` on a mismatch (skipped for approximate removals).
        model_info: How to rebuild the original model from the zoo (stored in the spec), e.g.
            ``{"name": "resnet20", "in_channels": 1, "num_classes": 10, "image_size": [28, 28]}``.
        groups: The model's groups when already computed (:func:`coupled_channel_groups` on this
            model and input), which saves enumerating them again.

    Returns:
        The shrunk model, its spec, the plan, the groups, the predicted sizes and the check result.

    Raises:
        UsageError: Parametrized model, non-filter masks, or masks that do not match the model.
        ShrinkError: The check failed (the model uses an operation the dependency graph misreads).
    """
    _check_plain(model)
    masks.validate(model)
    work = copy.deepcopy(model)
    graph = None
    if groups is None:
        graph = ChannelGraph(work, example_input)
        groups = graph.groups()
    plan = plan_removal(groups, masks, round_to=round_to, approximate=approximate)
    prediction = predict_shrunk_size(work, groups, plan, example_input)
    zero_dead_channels_(work, groups, plan)
    reference = forward_outputs(work, example_input) if verify else None
    changed = []
    for group in plan.groups:
        if group.removed:
            # Cutting needs torch-pruning's graph of this very copy; build it only when there is a cut.
            graph = graph or ChannelGraph(work, example_input)
            graph.remove_channels_(group.root, group.removed)
            changed.append(SpecGroup(group.root, group.channels, group.keep))
    diff = None
    if reference is not None:
        diff = _max_diff(reference, forward_outputs(work, example_input))
        exact = all(g.exact for g in groups if plan.by_root()[g.root].removed)
        scale = max([1.0] + [float(r.abs().max()) for r in reference if r.numel()])
        if exact and diff > TOLERANCE * scale:
            raise ShrinkError(f"the shrunk {type(model).__name__} differs from the masked one by {diff:.3g}; "
                              "an operation of this model is not supported for structural removal")
    spec = ArchSpec(
        model_class=class_path(model), input_shapes=input_shapes(example_input), groups=tuple(changed),
        model=model_info, round_to=round_to,
    )
    return ShrinkResult(work, spec, plan, groups, prediction, diff)
