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
   model reproduces the reference (max abs difference), so a mis-shrink never passes silently;
5. if it does not (or the surgery fails), start again and cut the groups one at a time, each
   checked: a group whose removal breaks the model stays in place, zeroed, and is reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from secateurs.core.masks import MaskSet
from secateurs.errors import SecateursError, UsageError
from secateurs.structured.graph import ChannelGraph
from secateurs.structured.groups import ChannelGroup
from secateurs.structured.masked_norm import masked_norms, remove_masked_norms_
from secateurs.structured.plan import GroupPlan, RemovalPlan, plan_removal
from secateurs.structured.predict import (
    SizePrediction,
    masked_norm_channels,
    predict_shrunk_size,
    predicted_shapes,
    zero_dead_channels_,
)
from secateurs.structured.spec import ArchSpec, SpecGroup, class_path

__all__ = ["ShrinkError", "ShrinkResult", "forward_outputs", "input_shapes", "shrink"]

#: Largest allowed difference between the shrunk and the reference model, relative to max(1, |reference|).
TOLERANCE = 1e-4


class ShrinkError(SecateursError):
    """Shrinking cannot proceed: the masked model does not run, or the groups do not fit it.

    A group whose removal breaks the model is not an error: it stays in place (zeroed) and is listed
    in :attr:`ShrinkResult.refused`.
    """


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
        refused: Group root -> why its channels were not removed after all: removing them broke the
            model or its equality with the masked one. They stay in the model as zeros, and
            ``plan`` and ``prediction`` already count them as kept.
    """

    model: nn.Module
    spec: ArchSpec
    plan: RemovalPlan
    groups: list[ChannelGroup]
    prediction: SizePrediction
    max_abs_diff: float | None
    refused: dict[str, str] = field(default_factory=dict)


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
        verify: Compare the shrunk model with the reference on ``example_input`` (skipped for
            approximate removals). Without it, the shrunk model is only run once.
        model_info: How to rebuild the original model from the zoo (stored in the spec), e.g.
            ``{"name": "resnet20", "in_channels": 1, "num_classes": 10, "image_size": [28, 28]}``.
        groups: The model's groups when already computed (:func:`coupled_channel_groups` on this
            model and input), which saves enumerating them again.

    Returns:
        The shrunk model, its spec, the plan, the groups, the predicted sizes and the check result.
        Groups whose removal makes the model fail or differ from the masked one (an operation the
        dependency graph misreads) are found by removing the groups one at a time, left in the
        model as zeros and listed in :attr:`ShrinkResult.refused`; the rest is still removed.

    Raises:
        UsageError: Parametrized model, non-filter masks, masks that do not match the model, or a
            model that cannot be traced.
        ShrinkError: The masked model does not run on ``example_input``, or the groups do not fit it.
    """
    _check_plain(model)
    masks.validate(model)
    work = _plain_copy(model)
    graph = None
    if groups is None:
        graph = ChannelGraph(work, example_input)
        groups = graph.groups()
    shapes = {name: tuple(p.shape) for name, p in work.named_parameters()}
    check_input = _two_samples(example_input)
    try:
        plan = plan_removal(groups, masks, round_to=round_to, approximate=approximate, shapes=shapes)
        zero_dead_channels_(work, groups, plan, roles=("out",))
        norms = masked_norm_channels(work, groups, plan)
        reference = _outputs(work, check_input, norms) if verify else None
        misread: dict[str, str] = {}
        if reference is not None:
            misread = _misread_groups(work, groups, plan, check_input, reference, norms)
            if misread:
                plan = plan.refusing(misread, untouched=True)
                work = zero_dead_channels_(_plain_copy(model), groups, plan, roles=("out",))
                reference = _outputs(work, check_input, masked_norm_channels(work, groups, plan))
        zero_dead_channels_(work, groups, plan)
    except (UsageError, ShrinkError):
        raise
    except Exception as exc:  # noqa: BLE001 - the model's or the groups' failure, in one clear line
        raise ShrinkError(f"cannot prepare the removal for {type(model).__name__}: {_first_line(exc)}") from None
    check = _Check(model, groups, plan, check_input, reference)
    to_cut = [g for g in plan.groups if g.removed]
    refused: dict[str, str] = {}
    cut = work
    if to_cut:
        # All groups at once first (one trace, one check); only if that fails, group by group, so
        # that the groups whose removal breaks the model are found and left in place.
        try:
            _remove_all(graph or ChannelGraph(work, example_input), to_cut)
            problem = check.problem(work, to_cut)
        except Exception as exc:  # noqa: BLE001 - any failure of the surgery sends us group by group
            problem = _first_line(exc)
        if problem is not None:
            fresh = zero_dead_channels_(_plain_copy(model), groups, plan)
            check.zeroed = copy.deepcopy(fresh)
            cut, refused = _remove_one_by_one(fresh, example_input, to_cut, check)
            plan = plan.refusing(refused)
    refused = {**misread, **refused}
    if reference is not None and check.last_diff is None:
        check.last_diff = _max_diff(check.reference_for([g for g in plan.groups if g.removed]),
                                    forward_outputs(cut, check_input))
    prediction = predict_shrunk_size(model, groups, plan, example_input)
    changed = [SpecGroup(g.root, g.channels, g.keep) for g in plan.groups if g.removed]
    spec = ArchSpec(
        model_class=class_path(model), input_shapes=input_shapes(example_input), groups=tuple(changed),
        model=model_info, round_to=round_to,
    )
    return ShrinkResult(cut, spec, plan, groups, prediction, check.last_diff, refused)


def _plain_copy(model: nn.Module) -> nn.Module:
    """A copy to cut: without the masked-LayerNorm hooks of a finalised model (the plan decides them
    again, and the tracer must see the LayerNorms themselves)."""
    work = copy.deepcopy(model)
    remove_masked_norms_(work)
    return work


def _outputs(model: nn.Module, example_input: Any, norms: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The model's outputs with the named LayerNorms normalising over their kept channels only."""
    with masked_norms(model, norms):
        return forward_outputs(model, example_input)


@torch.no_grad()
def _misread_groups(
    model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan, check_input: Any, reference: list[torch.Tensor],
    norms: dict[str, torch.Tensor],
) -> dict[str, str]:
    """Groups whose dead channels are still read somewhere the groups do not say.

    ``model`` has every dead channel zeroed where it is made (filters, biases, norms). Zeroing also
    the weights that read them must then change nothing; when it does, a group's readers are not
    where the trace put them (a reshape or slice misread) or the channels are not zero when read.
    Such groups are left to the masks. The readers of the others stay zeroed in ``model``.
    """
    scale = max([1.0] + [float(r.abs().max()) for r in reference if r.numel()])
    trial = zero_dead_channels_(copy.deepcopy(model), groups, plan, roles=("in",))
    if _max_diff(reference, _outputs(trial, check_input, norms)) <= TOLERANCE * scale:
        return {}
    misread: dict[str, str] = {}
    by_root = plan.by_root()
    for group in groups:
        decided = by_root.get(group.root)
        if decided is None or not decided.dead:
            continue
        alone = RemovalPlan((decided,), plan.round_to)
        trial = zero_dead_channels_(copy.deepcopy(model), [group], alone, roles=("in",))
        diff = _max_diff(reference, _outputs(trial, check_input, norms))
        if diff > TOLERANCE * scale:
            misread[group.root] = (f"its pruned channels are read where the trace does not say (outputs change by "
                                   f"{diff:.3g}): an operation the dependency graph misreads")
    return misread


def _two_samples(example_input: Any) -> Any:
    """The example input with a second, different sample appended along the batch dimension.

    A removal that mixes samples (a reshape folding the batch into another dimension, sized for
    the old width) is invisible on a batch of one.
    """
    if isinstance(example_input, torch.Tensor) and example_input.dim() >= 2 and example_input.shape[0] == 1:
        other = example_input.flip(-1) * 0.5 + 0.1
        return torch.cat([example_input, other], dim=0)
    return example_input


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _remove_all(graph: ChannelGraph, to_cut: list[GroupPlan]) -> None:
    for group in to_cut:
        graph.remove_channels_(group.root, group.removed)


class _Check:
    """Whether a (partly) shrunk model has the planned shapes and still computes the reference outputs."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup], plan: RemovalPlan, example_input: Any,
                 reference: list[torch.Tensor] | None) -> None:
        self.model, self.groups, self.plan = model, groups, plan
        self.example_input = example_input
        self.reference = reference
        self.inexact = {g.root for g in groups if not g.exact}
        self.with_norms = {g.root for g in groups if g.norms}
        self.scale = max([1.0] + [float(r.abs().max()) for r in reference or () if r.numel()])
        self.last_diff: float | None = None
        #: The model with the plan's dead channels zeroed, uncut (set before cutting group by group):
        #: the reference of a partial cut, where LayerNorms leave out the cut groups' channels only.
        self.zeroed: nn.Module | None = None
        self._partial: dict[frozenset[str], list[torch.Tensor]] = {}

    def reference_for(self, cut: list[GroupPlan]) -> list[torch.Tensor] | None:
        """The outputs a model with the groups ``cut`` removed must have."""
        key = frozenset(g.root for g in cut if g.root in self.with_norms)
        everything = frozenset(g.root for g in self.plan.groups if g.removed and g.root in self.with_norms)
        if self.reference is None or key == everything or self.zeroed is None:
            return self.reference
        if key not in self._partial:
            partial = self.plan.refusing({g.root: "" for g in self.plan.groups if g.root not in key})
            self._partial[key] = _outputs(self.zeroed, self.example_input,
                                          masked_norm_channels(self.zeroed, self.groups, partial))
        return self._partial[key]

    def problem(self, model: nn.Module, cut: list[GroupPlan]) -> str | None:
        """None when ``model`` has the shapes planned for ``cut``, runs, and (for exact removals) equals
        the reference; else what is wrong."""
        wrong = self._wrong_shape(model, cut)
        if wrong is not None:
            return wrong
        try:
            outputs = forward_outputs(model, self.example_input)
        except Exception as exc:  # noqa: BLE001 - the shrunk model fails: that is the finding
            return f"the shrunk model fails: {_first_line(exc)}"
        reference = self.reference_for(cut)
        if reference is None:
            return None
        diff = _max_diff(reference, outputs)
        if diff == float("inf"):
            return "the shrunk model's outputs change shape"
        exact = not any(g.root in self.inexact for g in cut)
        if exact and diff > TOLERANCE * self.scale:
            return f"the shrunk model differs from the masked one by {diff:.3g}"
        self.last_diff = diff
        return None

    def _wrong_shape(self, model: nn.Module, cut: list[GroupPlan]) -> str | None:
        # The size a run reports before shrinking must be the size shrinking delivers: a removal that
        # cuts other positions than the groups describe (paired GLU halves) is refused.
        chosen = {g.root for g in cut}
        partial = self.plan.refusing({g.root: "" for g in self.plan.groups if g.root not in chosen})
        expected = predicted_shapes(self.model, self.groups, partial)
        for name, param in model.named_parameters():
            if expected.get(name, tuple(param.shape)) != tuple(param.shape):
                return (f"torch-pruning cuts {name} to {tuple(param.shape)}, the plan to {expected[name]} "
                        "(channels coupled in a way the groups do not describe)")
        return None


def _remove_one_by_one(
    model: nn.Module, example_input: Any, to_cut: list[GroupPlan], check: _Check
) -> tuple[nn.Module, dict[str, str]]:
    """Remove the groups one at a time, each checked; a group that breaks the model stays (zeroed)."""
    refused: dict[str, str] = {}
    done: list[GroupPlan] = []
    graph = ChannelGraph(model, example_input)
    for group in to_cut:
        backup = copy.deepcopy(model)
        try:
            graph.remove_channels_(group.root, group.removed)
            problem = check.problem(model, [*done, group])
        except Exception as exc:  # noqa: BLE001 - torch-pruning's or the model's failure, per group
            problem = f"the removal fails: {_first_line(exc)}"
        if problem is None:
            done.append(group)
            continue
        refused[group.root] = problem
        model = backup  # the graph belongs to the broken copy: trace the restored one
        graph = ChannelGraph(model, example_input)
    if not done:
        check.last_diff = None
    return model, refused
