"""The one way a mask enters the forward pass: a ``torch.nn.utils.parametrize`` parametrization.

Modules stay unmodified (no masked-layer subclasses): any Linear, Conv or custom layer with a weight
works. Learned mask state (scores, logits) and buffers (fixed masks, schedule values) live in the
parametrization module, so ``model.state_dict()`` carries them; :func:`squash_` bakes the masks into
the weights and restores the plain state-dict keys.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from secateurs.core.granularity import Granularity

__all__ = [
    "FixedMask",
    "MaskParametrization",
    "attach_",
    "find_parametrizations",
    "original_name",
    "original_tensor",
    "split_name",
    "squash_",
]


class MaskParametrization(nn.Module):
    """Base class: ``forward(weight) = weight * expand(unit_mask(weight))``.

    Subclasses implement :meth:`unit_mask` (soft or stochastic while ``self.training``, the hard mask
    in eval mode) and :meth:`hard_mask` (boolean, unit shape, deterministic).
    """

    #: Whether :meth:`channel_gate` reads the weight's values (Gibbs energies do; fixed masks, scores
    #: and logits do not, and are then given a stand-in of the right dtype and device).
    gate_reads_weight: ClassVar[bool] = True

    def __init__(self, granularity: Granularity, weight_shape: torch.Size) -> None:
        super().__init__()
        self.granularity = granularity
        self.weight_shape = torch.Size(weight_shape)

    @abstractmethod
    def unit_mask(self, weight: Tensor) -> Tensor:
        """Mask or gate at unit shape, applied multiplicatively (float, any device of ``weight``)."""

    @abstractmethod
    def hard_mask(self, weight: Tensor) -> Tensor:
        """Deterministic boolean unit mask in the current state."""

    def forward(self, weight: Tensor) -> Tensor:
        gate = self.unit_mask(weight)
        return weight * self.granularity.broadcastable(gate.to(weight.dtype), weight.shape)

    def channel_gate(self, weight: Tensor) -> Tensor:
        """The gate a coupled channel group shares (see :mod:`secateurs.structured.coupled_masks`).

        ``weight`` is the group weight (one row per channel); the default is :meth:`unit_mask`.
        A method whose training mask varies inside a unit returns a gate of ``weight``'s shape.
        """
        return self.unit_mask(weight)

    def follower_gate(self, gate: Tensor) -> Tensor:
        """The gate for tensors that follow a coupled channel (biases, normalisation scales and shifts),
        given the one applied to its filters; the same by default. A gate that rescales the filters
        (Continuous Sparsification's ``1/σ(s0)``) keeps that factor off them: after a batch norm it
        would compound through the depth of the network."""
        return gate

    def weight_mask(self, weight: Tensor) -> Tensor:
        """The hard mask viewed so that ``weight * weight_mask(weight)`` applies it."""
        return self.granularity.broadcastable(self.hard_mask(weight), weight.shape)


class FixedMask(MaskParametrization):
    """A parametrization holding a boolean unit mask in a buffer (magnitude, random, gmp, ...)."""

    mask: Tensor
    gate_reads_weight = False

    def __init__(self, granularity: Granularity, weight_shape: torch.Size, device: torch.device | None = None) -> None:
        super().__init__(granularity, weight_shape)
        self.register_buffer("mask", torch.ones(granularity.unit_shape(weight_shape), dtype=torch.bool, device=device))

    def unit_mask(self, weight: Tensor) -> Tensor:
        return self.mask

    def hard_mask(self, weight: Tensor) -> Tensor:
        return self.mask.clone()

    @torch.no_grad()
    def set_(self, mask: Tensor) -> None:
        """Replace the mask in place (keeps the buffer, so optimizers and state dicts stay valid)."""
        self.mask.copy_(mask.to(torch.bool).reshape(self.mask.shape))


def split_name(name: str) -> tuple[str, str]:
    """``"layer1.conv.weight"`` -> ``("layer1.conv", "weight")``."""
    module, _, param = name.rpartition(".")
    return module, param


def original_name(param_name: str) -> str | None:
    """Map a ``named_parameters`` name to the original weight name.

    ``"a.parametrizations.weight.original"`` -> ``"a.weight"``; a parameter living inside a
    parametrization (learned mask state) -> ``None``; any other name is returned unchanged.
    """
    parts = param_name.split(".")
    if "parametrizations" not in parts:
        return param_name
    i = parts.index("parametrizations")
    if parts[-1] != "original" or len(parts) != i + 3:
        return None
    return ".".join(parts[:i] + [parts[i + 1]])


def original_tensor(model: nn.Module, name: str) -> Tensor:
    """The original (unmasked) tensor of parameter ``name`` (original fqn), parametrized or not."""
    module_name, param = split_name(name)
    module = model.get_submodule(module_name)
    plist = getattr(module, "parametrizations", None)
    if plist is not None and param in plist:
        return plist[param].original
    return getattr(module, param)


def attach_(model: nn.Module, name: str, parametrization: MaskParametrization, *, chain: bool = False) -> None:
    """Register ``parametrization`` on the weight ``name`` (original fqn) of ``model``.

    Args:
        chain: allow a tensor that already carries masks to take one more (they multiply); without it
            a second mask is an error (a previous method was not finalized).
    """
    module_name, param = split_name(name)
    module = model.get_submodule(module_name)
    if parametrize.is_parametrized(module, param) and not chain:
        raise ValueError(f"{name} already carries a parametrization; finalize the previous method first")
    # unsafe=True skips parametrize's extra consistency forward; shapes are preserved by construction.
    parametrize.register_parametrization(module, param, parametrization, unsafe=True)


def find_parametrizations(model: nn.Module) -> Iterator[tuple[str, MaskParametrization]]:
    """Yield ``(original weight name, parametrization)`` for every mask parametrization in ``model``."""
    for module_name, module in model.named_modules():
        plist = getattr(module, "parametrizations", None)
        if plist is None:
            continue
        for param, chain in plist.items():
            for p in chain:
                if isinstance(p, MaskParametrization):
                    yield (f"{module_name}.{param}" if module_name else param), p


@torch.no_grad()
def squash_(model: nn.Module) -> None:
    """Bake every mask's hard mask into its weight and remove the parametrizations.

    Afterwards the model has its original state-dict keys and pruned weights are exactly zero.
    """
    # Every mask first, then the changes: a mask shared across tensors (coupled channel groups) reads
    # several weights, which must not be half squashed yet.
    found = []
    for name, p in list(find_parametrizations(model)):
        module_name, param = split_name(name)
        module = model.get_submodule(module_name)
        original = module.parametrizations[param].original
        found.append((module, param, original, p.weight_mask(original).to(original.dtype)))
    for module, param, original, mask in found:
        original.mul_(mask)
    for module, param in dict.fromkeys((module, param) for module, param, _, _ in found):
        parametrize.remove_parametrizations(module, param, leave_parametrized=False)
