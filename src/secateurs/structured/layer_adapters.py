"""Layers whose channels the dependency graph cannot follow unaided: how to trace and cut them.

Families of timm layers (recognised by their attributes, so timm is never imported here):

* **Weight-standardized convolutions** (``StdConv2d``, ``ScaledStdConv2d`` and their ``Same``
  variants, in NF-Nets and BiT ResNets) standardize their weight per output channel inside
  ``forward``: the weight is reshaped, normalised and scaled by a per-channel ``gain``. Traced as
  is, that reshape looks like a regrouping of channels and blocks every group around the layer.
  While tracing, their parameters are swapped for detached copies, so the weight's own computation
  leaves no trace and the layer reads as the convolution it is. When output channels go, ``gain``
  goes with the weight (:func:`per_channel_extras`). Input channels removed from such a layer
  change the statistics of its remaining weights: those groups are approximate.
* **Mixed convolutions** (``MixedConv2d``: one input split at fixed sizes into several
  convolutions) keep the split sizes in a list; after a removal they are recomputed from the
  convolutions' new widths (:func:`refresh_split_sizes_`).
* **Per-channel scales viewed at a stored shape** (MetaFormer's ``Scale``: ``self.scale.view(self.shape)``
  with ``shape = (dim, 1, 1)`` fixed at construction): after a removal the stored shape is set to
  the vector's new length (:func:`refresh_view_shapes_`).
* **Dual-path blocks** (DPN) slice their input, or its projection, at the residual path's width
  ``num_1x1_c``: ``x[:, :num_1x1_c]`` is added to the residual output, the rest is the dense path.
  When a removal takes channels below that width from the layer making the residual output (its
  own convolution ``c1x1_c1`` in DPN's "b" blocks, else the convolution making both paths), the
  width goes down by as many (:func:`narrow_dual_path_widths_`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

from torch import nn

__all__ = [
    "detached_weight_computations",
    "is_weight_standardized",
    "narrow_dual_path_widths_",
    "per_channel_extras",
    "refresh_split_sizes_",
    "refresh_view_shapes_",
]


def is_weight_standardized(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution that standardizes its own weight in ``forward``."""
    return isinstance(module, nn.modules.conv._ConvNd) and "stdconv" in type(module).__name__.lower()


def per_channel_extras(module: nn.Module) -> list[str]:
    """Names of a convolution's parameters besides weight and bias that follow its output channels."""
    if not isinstance(module, nn.modules.conv._ConvNd):
        return []
    return [name for name, p in module.named_parameters(recurse=False)
            if name not in ("weight", "bias") and p.dim() >= 1 and p.shape[0] == module.out_channels]


@contextmanager
def detached_weight_computations(model: nn.Module) -> Iterator[None]:
    """Within the context, weight-standardized convolutions compute their weight without autograd.

    Their parameters are replaced by detached tensors of the same values and restored on exit, so a
    traced forward pass sees a convolution whose weight is a constant: no reshape, no ``gain``.
    """
    swapped: list[tuple[nn.Module, dict]] = []
    for module in model.modules():
        if is_weight_standardized(module):
            saved = dict(module._parameters)
            swapped.append((module, saved))
            for name, param in saved.items():
                if param is not None:
                    module._parameters[name] = param.detach()  # type: ignore[assignment]
    try:
        yield
    finally:
        for module, saved in swapped:
            module._parameters.update(saved)


def refresh_split_sizes_(model: nn.Module) -> None:
    """Recompute the split sizes of mixed convolutions from their convolutions' input widths."""
    for module in model.modules():
        splits = getattr(module, "splits", None)
        if not isinstance(splits, list) or not all(isinstance(s, int) for s in splits):
            continue
        convs = [m for m in module.children() if isinstance(m, nn.modules.conv._ConvNd)]
        if len(convs) != len(splits):
            continue
        module.splits = [conv.in_channels for conv in convs]
        if isinstance(getattr(module, "in_channels", None), int):
            module.in_channels = sum(module.splits)
        if isinstance(getattr(module, "out_channels", None), int):
            module.out_channels = sum(conv.out_channels for conv in convs)


def refresh_view_shapes_(model: nn.Module) -> None:
    """Give a stored broadcast shape the new length of the one vector it views.

    A module qualifies when its own parameters are vectors of one length ``n`` and it has a
    ``shape`` attribute, a tuple of integers with a single entry other than 1 (``(dim, 1, 1)``): once
    its vector is cut, that entry becomes ``n``.
    """
    for module in model.modules():
        shape = getattr(module, "shape", None)
        if not isinstance(shape, tuple) or not shape or not all(isinstance(d, int) for d in shape):
            continue
        lengths = {p.shape[0] for p in module.parameters(recurse=False) if p.dim() == 1}
        if len(lengths) != 1 or any(p.dim() != 1 for p in module.parameters(recurse=False)):
            continue
        long = [i for i, d in enumerate(shape) if d != 1]
        if len(long) == 1:
            (n,) = lengths
            module.shape = tuple(n if i == long[0] else d for i, d in enumerate(shape))


def narrow_dual_path_widths_(model: nn.Module, removed: Mapping[nn.Module, Collection[int]]) -> None:
    """Lower the residual width of dual-path blocks by the residual channels a cut removed.

    Args:
        model: The model, just cut.
        removed: Layer -> output channels the cut removed from it (numbered as before the cut).
    """
    for module in model.modules():
        width = getattr(module, "num_1x1_c", None)
        if not isinstance(width, int):
            continue
        residual = getattr(module, "c1x1_c1", None)
        if not isinstance(residual, nn.modules.conv._ConvNd):  # one layer makes both paths
            residual = getattr(getattr(module, "c1x1_c", None), "conv", None)
        if residual in removed:
            module.num_1x1_c = width - sum(1 for c in removed[residual] if c < width)
