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
* **Slice widths held in attributes**: DPN's dual-path blocks (``x[:, :num_1x1_c]`` joins the
  residual path, the rest the dense one), ReXNet's partial residual (``x[:, :in_channels] +
  shortcut``) and FasterNet's partial convolution (``split(x, [dim_conv3, dim_untouched])``) slice
  at widths fixed at construction. When a removal takes channels below such a width from the layer
  whose output is sliced, the width goes down by as many (:func:`narrow_slice_widths_`); the
  untouched part of a partial convolution follows its split (:func:`refresh_partial_splits_`).
* **Selective-kernel convolutions with a split input** (SKNet's ``SelectiveKernel``, ``split_input``)
  cut their input into ``num_paths`` equal slices of ``in_channels // num_paths``, one per path: a
  group reaching them must lose the same offsets from every slice (:func:`equal_split_readers`), and
  ``in_channels`` follows the paths' new widths (:func:`refresh_split_sizes_`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager

from torch import nn

__all__ = [
    "detached_weight_computations",
    "equal_split_readers",
    "is_weight_standardized",
    "narrow_slice_widths_",
    "per_channel_extras",
    "refresh_partial_splits_",
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


def _split_input_paths(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """``(name, first convolution)`` of each path of a selective-kernel module splitting its input, else None."""
    paths = getattr(module, "paths", None)
    if getattr(module, "split_input", False) is not True or not isinstance(paths, nn.ModuleList) \
            or not isinstance(getattr(module, "in_channels", None), int) or len(paths) < 2:
        return None
    found = []
    for i, path in enumerate(paths):
        conv = next(((n, m) for n, m in path.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if conv is None:
            return None
        found.append((f"paths.{i}.{conv[0]}" if conv[0] else f"paths.{i}", conv[1]))
    return found


def equal_split_readers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Weight name -> ``(part, parts)`` for each convolution reading slice ``part`` of ``parts`` equal
    slices of its module's input, the slice width fixed by the module (selective-kernel ``split_input``)."""
    found: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        paths = _split_input_paths(module)
        for part, (conv_name, _) in enumerate(paths or ()):
            found[f"{name}.{conv_name}.weight" if name else f"{conv_name}.weight"] = (part, len(paths))
    return found


def refresh_split_sizes_(model: nn.Module) -> None:
    """Recompute the split sizes of mixed convolutions from their convolutions' input widths, and the
    input width of selective-kernel modules splitting their input from their paths'."""
    for module in model.modules():
        paths = _split_input_paths(module)
        if paths is not None:
            module.in_channels = sum(conv.in_channels for _, conv in paths)
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


#: (width attribute, the layers whose output the width slices, first found), by model family.
_SLICE_WIDTHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("num_1x1_c", ("c1x1_c1", "c1x1_c.conv")),  # DPN: the residual output's own conv, else the shared one
    ("in_channels", ("conv_pwl.conv",)),  # ReXNet
    ("dim_conv3", ("partial_conv3",)),  # FasterNet
)


def narrow_slice_widths_(model: nn.Module, removed: Mapping[nn.Module, Collection[int]]) -> None:
    """Lower the slice widths of the blocks above by the channels below them that a cut removed.

    Args:
        model: The model, just cut.
        removed: Layer -> output channels the cut removed from it (numbered as before the cut).
    """
    for module in model.modules():
        for attribute, paths in _SLICE_WIDTHS:
            width = getattr(module, attribute, None)
            if not isinstance(width, int) or isinstance(module, nn.modules.conv._ConvNd):
                continue
            sliced = next((layer for layer in map(lambda p: _child(module, p), paths)
                           if isinstance(layer, nn.modules.conv._ConvNd)), None)
            if sliced in removed:
                setattr(module, attribute, width - sum(1 for c in removed[sliced] if c < width))


def refresh_partial_splits_(model: nn.Module, split_sizes: Callable[[nn.Module], list[int] | None]) -> None:
    """Set a partial convolution's ``dim_untouched`` (and ``dim_conv3``) to the split it reads.

    Args:
        model: The model, just cut.
        split_sizes: Convolution -> current sizes of the ``torch.split`` whose first part it reads
            (as the dependency graph keeps them), or None.
    """
    for module in model.modules():
        conv = getattr(module, "partial_conv3", None)
        if not (isinstance(conv, nn.modules.conv._ConvNd) and isinstance(getattr(module, "dim_untouched", None), int)):
            continue
        sizes = split_sizes(conv)
        if sizes is not None and len(sizes) == 2 and sizes[0] == conv.in_channels:
            module.dim_conv3, module.dim_untouched = sizes


def _child(module: nn.Module, path: str) -> nn.Module | None:
    for name in path.split("."):
        module = getattr(module, name, None)
        if not isinstance(module, nn.Module):
            return None
    return module
