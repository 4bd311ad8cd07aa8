"""Costs of a model: a function of the model as it will be delivered (plus its masks) to a float.

Built-ins (``secateurs.budget.COSTS``):

- ``params``: structural parameter count. For filter masks, what ``secateurs shrink`` delivers
  (predicted from the removal plan: :func:`secateurs.structured.predict_from_masks`); otherwise all
  parameters minus the masked-out weight elements.
- ``macs``: multiply-accumulates of one forward pass at batch 1 (``FlopCounterMode``); of the shrunk
  model for filter masks, else the dense count less each masked layer's pruned share.
- ``latency_ms``: median forward time (``torch.utils.benchmark``) of the really shrunk model (filter
  masks) or the masked model with its masks baked in; options ``batch`` (1), ``threads`` (the current
  count), ``device`` (where the model is), ``min_run_time`` (seconds of timing, 0.2).
- ``bytes``: size on disk of the compressed export (:func:`secateurs.export.save_sparse`).
- ``module:function``: a user callable ``f(model)`` or ``f(model, masks) -> float``, given the
  delivered model.

A :class:`Subject` is the thing measured: it shrinks the model at most once, on demand, so costs that
only count (``params``, ``macs``) never pay for the surgery.
"""

from __future__ import annotations

import importlib
import inspect
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import nn

from secateurs.core.granularity import Filter
from secateurs.core.masks import MaskSet
from secateurs.errors import UsageError

__all__ = ["COSTS", "Cost", "Subject", "resolve_cost"]


class Subject:
    """A model to measure as it will be delivered.

    Args:
        model: A plain model (no parametrizations) whose pruned weights are already zero, or the dense model.
        masks: The masks of the pruned weights (None for the dense model).
        example_input: One input of batch 1 (shape and device of the model's inputs).
        groups: The model's channel groups (filter masks), when already traced.
        round_to: Filter masks: the shrunk channel counts are rounded up to multiples of this, as
            ``shrink(..., round_to=...)`` delivers them.
    """

    def __init__(self, model: nn.Module, masks: MaskSet | None, example_input: torch.Tensor, *,
                 groups: list[Any] | None = None, round_to: int = 1) -> None:
        self.model = model
        self.masks = masks if masks is not None and len(masks) else None
        self.example_input = example_input
        self.groups = groups
        self.round_to = round_to

    @property
    def filter(self) -> bool:
        """Whether the masks remove whole filters (costs then count the shrunk model)."""
        return self.masks is not None and all(isinstance(e.granularity, Filter) for e in self.masks.values())

    @cached_property
    def prediction(self) -> Any:
        """Parameters and MACs after ``shrink`` (filter masks only)."""
        from secateurs.structured import predict_from_masks

        assert self.masks is not None
        return predict_from_masks(self.model, self.masks, self.example_input, groups=self.groups,
                                  round_to=self.round_to)

    @cached_property
    def dense_macs(self) -> Any:
        from secateurs.metrics import count_macs

        return count_macs(self.model, self.example_input)

    @cached_property
    def delivered(self) -> nn.Module:
        """The model a user gets: really shrunk for filter masks, else the model as given."""
        if not self.filter:
            return self.model
        from secateurs.structured import shrink

        assert self.masks is not None
        return shrink(self.model, self.masks, self.example_input, groups=self.groups, verify=False,
                      round_to=self.round_to).model


class Cost(ABC):
    """One cost function. Subclasses set ``name``, ``allowed`` options and :meth:`measure`."""

    name: ClassVar[str] = ""
    allowed: ClassVar[tuple[str, ...]] = ()
    #: Whether repeated measurements of the same model may differ (timing): the verification then
    #: says so, and allocators avoid trusting one sample.
    noisy: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.allowed))
        if unknown:
            known = ", ".join(self.allowed) or "none"
            raise UsageError(f"cost {self.name} has no option {unknown[0]!r}; options: {known}")
        self.options = options

    @abstractmethod
    def measure(self, subject: Subject) -> float:
        """The cost of ``subject``."""


class ParamsCost(Cost):
    """Structural parameter count (shrunk model for filter masks)."""

    name = "params"

    def measure(self, subject: Subject) -> float:
        from secateurs.metrics import count_params

        if subject.masks is None:
            return float(count_params(subject.model))
        if subject.filter:
            return float(subject.prediction.params_after)
        pruned = sum(e.numel - e.kept for e in subject.masks.values())
        return float(count_params(subject.model) - pruned)


class MacsCost(Cost):
    """MACs of one forward pass at batch 1 (shrunk model for filter masks)."""

    name = "macs"

    def measure(self, subject: Subject) -> float:
        if subject.masks is None:
            return float(subject.dense_macs.dense)
        if subject.filter:
            return float(subject.prediction.macs_after)
        macs = subject.dense_macs
        total = float(macs.dense)
        for layer in macs.per_layer:
            entry = subject.masks.get(f"{layer.name}.weight" if layer.name else "weight")
            if entry is not None:
                total -= layer.dense * entry.sparsity
        return total


class LatencyCost(Cost):
    """Median forward latency in milliseconds of the delivered model."""

    name = "latency_ms"
    allowed = ("batch", "threads", "device", "min_run_time")
    noisy = True

    def measure(self, subject: Subject) -> float:
        import copy

        from secateurs.metrics import measure_latency

        model = subject.delivered
        example = subject.example_input
        device = self.options.get("device")
        if device is not None and torch.device(device) != example.device:
            model = copy.deepcopy(model).to(device)
            example = example.to(device)
        batch = int(self.options.get("batch", 1))
        if batch < 1:
            raise UsageError(f"latency_ms batch must be at least 1, got {batch}")
        inputs = example[:1].expand(batch, *example.shape[1:]).contiguous()
        threads = self.options.get("threads")
        result = measure_latency(model, inputs, threads=None if threads is None else int(threads),
                                 min_run_time=float(self.options.get("min_run_time", 0.2)))
        return float(result.median_ms)


class BytesCost(Cost):
    """Bytes of the compressed export (bitmask layout) of the delivered model's state dict."""

    name = "bytes"
    allowed = ("layout",)

    def measure(self, subject: Subject) -> float:
        from secateurs.export.sparse_format import save_sparse

        model = subject.delivered
        masks = None if subject.filter else subject.masks
        state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.sparse.safetensors")
            save_sparse(path, state, layout=str(self.options.get("layout", "bitmask")), masks=masks)
            return float(os.path.getsize(path))


class UserCost(Cost):
    """A user function ``module:function`` taking the delivered model (and the masks)."""

    allowed = ()

    def __init__(self, spec: str, options: Mapping[str, Any] | None = None) -> None:
        self.name = spec  # type: ignore[misc]
        super().__init__(options)
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"cost {spec}: cannot import {module_name} ({exc})") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise UsageError(f"cost {spec}: {module_name} has no function {attr}")
        self.fn: Callable[..., float] = fn
        try:
            self.takes_masks = len(inspect.signature(fn).parameters) >= 2
        except (TypeError, ValueError):
            self.takes_masks = False

    def measure(self, subject: Subject) -> float:
        model = subject.delivered
        value = self.fn(model, subject.masks) if self.takes_masks else self.fn(model)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"cost {self.name} returned {value!r}, not a number") from None


#: Built-in costs by name.
COSTS: dict[str, type[Cost]] = {c.name: c for c in (ParamsCost, MacsCost, LatencyCost, BytesCost)}


def resolve_cost(name: str, options: Mapping[str, Any] | None = None) -> Cost:
    """The cost called ``name`` (a built-in or ``module:function``) with its options.

    Raises:
        UsageError: Unknown name, a user function that cannot be imported, or an unknown option.
    """
    if ":" in name:
        return UserCost(name, options)
    cls = COSTS.get(name)
    if cls is None:
        raise UsageError(f"unknown cost {name!r}; known: {', '.join(COSTS)} or module:function")
    return cls(options)
