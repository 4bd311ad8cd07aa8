"""LayerNorm over the kept channels only: what makes masked and shrunk transformers equal.

A LayerNorm normalises each token over all of its channels. When a coupled channel group (a
transformer's embedding dimension, carried by the residual stream) is masked, the masked channels
are zero but still enter the mean and the variance; once they are removed they do not, so the
shrunk model would differ from the masked one. Here the *masked model itself* normalises over the
kept channels only: while masks are active, a forward hook on each LayerNorm that sees a shared
group recomputes its output with the mean and variance weighted by the channels' gates (exactly the
kept channels for hard masks; a smooth interpolation for soft ones, so gates learn through it) and
leaves the removed channels at zero (their affine scale and shift are masked too). The shrunk model's
plain LayerNorm over the remaining channels then computes the same thing.

Two kinds of hook, both :class:`MaskedNorm`:

* *live*: the gate is read from the masks on the LayerNorm's own weight (the parametrizations a
  :class:`~secateurs.structured.mask_binder.MaskBinder` puts there), at every call;
* *fixed*: a boolean vector of kept channels, for a finalised model (masks baked into the weights)
  and for the reference model that ``shrink`` holds the shrunk one to.

Hooks are found on the modules themselves (no handles to keep), so a deep copy of a model carries
its own. Only LayerNorms over one dimension and GroupNorms, with an affine weight, qualify
(:func:`maskable_norm`): the weight is where the gate lives, and the one dimension is where the
channels lie. A GroupNorm (timm's GroupNorm1 in PoolFormer, GroupNormAct in BiT ResNets) weights
each group's statistics by the gates of its channels; its groups lose equal numbers of channels
(the group's ``chunks``), so the shrunk GroupNorm computes the same. Fused norm-and-activation layers
get their activation applied after the masked normalisation. A global response norm (ConvNeXt-V2's
GRN divides each channel's norm by the mean over the channels) takes that mean over the gated
channels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from secateurs.core.parametrize import MaskParametrization

__all__ = [
    "MaskedNorm",
    "freeze_masked_norms_",
    "install_masked_norms_",
    "masked_group_norm",
    "masked_layer_norm",
    "masked_response_norm",
    "masked_norms",
    "maskable_norm",
    "remove_masked_norms_",
]


def maskable_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a LayerNorm over one channel dimension, a GroupNorm or a global response
    norm, with an affine weight."""
    if isinstance(module, nn.GroupNorm):
        return isinstance(module.weight, Tensor)
    if _is_response_norm(module):
        return True
    return (isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1
            and isinstance(module.weight, Tensor))


def _is_response_norm(module: nn.Module) -> bool:
    # ConvNeXt-V2's GlobalResponseNorm, recognised by its attributes (timm is not imported here).
    weight = getattr(module, "weight", None)
    return (all(isinstance(getattr(module, a, None), (int, tuple)) for a in ("spatial_dim", "channel_dim", "wb_shape"))
            and isinstance(weight, Tensor) and weight.dim() == 1 and isinstance(getattr(module, "eps", None), float))


def _channel_dim(module: nn.Module, x: Tensor) -> int | None:
    if _is_response_norm(module):
        dim = module.channel_dim % x.dim()
        return dim if x.shape[dim] == module.weight.shape[0] else None
    # GroupNorm and timm's LayerNorm2d (ConvNeXt; also LayerNormAct2d...) normalise dimension 1 of
    # (N, C, H, W); every other LayerNorm the last dimension.
    if isinstance(module, nn.GroupNorm):
        channels, dim = module.num_channels, 1
    else:
        channels = module.normalized_shape[0]
        dim = 1 if "2d" in type(module).__name__.lower() and x.dim() == 4 else x.dim() - 1
    return dim if x.dim() > dim and x.shape[dim] == channels else None


def masked_layer_norm(x: Tensor, gate: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                      dim: int = -1) -> Tensor:
    """Layer normalisation of ``x`` along ``dim`` with the statistics weighted by ``gate``.

    With a 0/1 gate this is ``F.layer_norm`` over the channels where the gate is 1 (the others get
    only the affine shift, zero for a masked one).

    Args:
        x: Input.
        gate: ``(channels,)`` non-negative weights of the channels in the mean and variance.
        weight: Affine scale (already masked), or None.
        bias: Affine shift (already masked), or None.
        eps: As LayerNorm's.
        dim: The channel dimension of ``x``.
    """
    shape = [1] * x.dim()
    shape[dim] = -1
    g = gate.to(x.dtype).reshape(shape)
    total = g.sum().clamp_min(torch.finfo(x.dtype).tiny)
    mean = (x * g).sum(dim, keepdim=True) / total
    centred = x - mean
    var = (centred * centred * g).sum(dim, keepdim=True) / total
    return _affine(centred * torch.rsqrt(var + eps), weight, bias, shape)


def masked_group_norm(x: Tensor, gate: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None,
                      eps: float) -> Tensor:
    """Group normalisation of ``(N, C, *)`` input with each group's statistics weighted by ``gate``.

    With a 0/1 gate that keeps the same number of channels in every group, this is ``F.group_norm``
    over the kept channels (what a GroupNorm of the shrunk width computes, e.g. timm's GroupNorm1 of
    PoolFormer, which normalises each sample over all channels and positions).

    Args:
        x: Input, channels in dimension 1.
        gate: ``(C,)`` non-negative weights of the channels.
        groups: Number of groups (``C`` must divide into them).
        weight: Affine scale (already masked), or None.
        bias: Affine shift (already masked), or None.
        eps: As GroupNorm's.
    """
    n, c = x.shape[:2]
    xs = x.reshape(n, groups, c // groups, -1)
    g = gate.to(x.dtype).reshape(1, groups, c // groups, 1)
    total = (g.sum(2, keepdim=True) * xs.shape[-1]).clamp_min(torch.finfo(x.dtype).tiny)
    mean = (xs * g).sum((2, 3), keepdim=True) / total
    centred = xs - mean
    var = (centred * centred * g).sum((2, 3), keepdim=True) / total
    y = (centred * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = [1] * x.dim()
    shape[1] = -1
    return _affine(y, weight, bias, shape)


def masked_response_norm(x: Tensor, gate: Tensor, weight: Tensor, bias: Tensor, eps: float,
                         spatial_dim: tuple[int, ...], dim: int) -> Tensor:
    """Global response normalisation (ConvNeXt-V2) with the mean over channels weighted by ``gate``.

    Each channel's L2 norm over the positions is divided by the mean of those norms over the
    channels; with a 0/1 gate the mean runs over the kept channels only, as in the shrunk layer.

    Args:
        x: Input.
        gate: ``(C,)`` non-negative weights of the channels.
        weight: Scale (already masked).
        bias: Shift (already masked).
        eps: As the layer's.
        spatial_dim: The dimensions of the positions.
        dim: The channel dimension of ``x``.
    """
    shape = [1] * x.dim()
    shape[dim] = -1
    g = gate.to(x.dtype).reshape(shape)
    norms = x.norm(p=2, dim=spatial_dim, keepdim=True)
    mean = (norms * g).sum(dim, keepdim=True) / g.sum().clamp_min(torch.finfo(x.dtype).tiny)
    return x + bias.reshape(shape) + weight.reshape(shape) * (x * (norms / (mean + eps)))


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, shape: list[int]) -> Tensor:
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _after_norm(module: nn.Module, y: Tensor) -> Tensor:
    """What a fused norm-and-activation layer (timm's GroupNormAct, LayerNormAct...) does after normalising."""
    for name in ("drop", "act"):
        step = getattr(module, name, None)
        if isinstance(step, nn.Module):
            y = step(y)
    return y


class MaskedNorm:
    """Forward hook that replaces a LayerNorm's output by :func:`masked_layer_norm`.

    Args:
        kept: Fixed boolean vector of kept channels; None reads the gate from the masks on the
            norm's weight at every call (no mask there: the norm's own output is left alone).
    """

    def __init__(self, kept: Tensor | None = None) -> None:
        self.kept = kept

    def gate(self, module: nn.Module) -> Tensor | None:
        """The channels' weights in the statistics, or None when nothing is masked."""
        if self.kept is not None:
            return self.kept
        if not parametrize.is_parametrized(module, "weight"):
            return None
        chain = module.parametrizations["weight"]
        gate = torch.ones_like(chain.original)
        masked = False
        for p in chain:
            if isinstance(p, MaskParametrization):
                gate, masked = p(gate), True  # masks multiply: this is the gate the weight gets
        return gate if masked else None

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0]
        gate = self.gate(module)
        dim = _channel_dim(module, x) if gate is not None else None
        if dim is None:
            return output
        # In float32 whatever the input, as autocast runs layer_norm; returned as the norm returned.
        weight = None if module.weight is None else module.weight.float()
        bias = None if module.bias is None else module.bias.float()
        if _is_response_norm(module):
            y = masked_response_norm(x.float(), gate.to(x.device), weight, bias, module.eps, module.spatial_dim, dim)
            return y.to(output.dtype)
        if isinstance(module, nn.GroupNorm):
            y = masked_group_norm(x.float(), gate.to(x.device), module.num_groups, weight, bias, module.eps)
        else:
            y = masked_layer_norm(x.float(), gate.to(x.device), weight, bias, module.eps, dim)
        return _after_norm(module, y.to(output.dtype))

    @torch.no_grad()
    def frozen(self, module: nn.Module) -> MaskedNorm:
        """A fixed hook with the hard kept channels of the masks on ``module``'s weight now."""
        if self.kept is not None or not parametrize.is_parametrized(module, "weight"):
            return self
        chain = module.parametrizations["weight"]
        kept = torch.ones(chain.original.shape[0], dtype=torch.bool, device=chain.original.device)
        for p in chain:
            if isinstance(p, MaskParametrization):
                kept &= p.weight_mask(chain.original).reshape(-1).to(torch.bool)
        return MaskedNorm(kept)


def _hooks(module: nn.Module) -> list[tuple[int, MaskedNorm]]:
    return [(key, hook) for key, hook in module._forward_hooks.items() if isinstance(hook, MaskedNorm)]


def install_masked_norms_(model: nn.Module, kept: Mapping[str, Tensor | None]) -> None:
    """Put a :class:`MaskedNorm` on each named LayerNorm (replacing one already there).

    Args:
        model: The model.
        kept: LayerNorm module name -> kept channels (boolean), or None for a live hook.
    """
    for name, vector in kept.items():
        module = model.get_submodule(name)
        for key, _ in _hooks(module):
            del module._forward_hooks[key]
        module.register_forward_hook(MaskedNorm(None if vector is None else vector.to(torch.bool)))


def remove_masked_norms_(model: nn.Module) -> dict[str, Tensor | None]:
    """Take every :class:`MaskedNorm` off ``model``; return what they were (as for :func:`install_masked_norms_`)."""
    removed: dict[str, Tensor | None] = {}
    for name, module in model.named_modules():
        for key, hook in _hooks(module):
            removed[name] = hook.kept
            del module._forward_hooks[key]
    return removed


def freeze_masked_norms_(model: nn.Module) -> None:
    """Turn every live hook into a fixed one with the current hard masks (before the masks are baked
    into the weights), so the finalised model still normalises over the kept channels."""
    for module in model.modules():
        for key, hook in _hooks(module):
            module._forward_hooks[key] = hook.frozen(module)


@contextmanager
def masked_norms(model: nn.Module, kept: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Within the block, the named LayerNorms of ``model`` normalise over their kept channels only."""
    saved = remove_masked_norms_(model)
    install_masked_norms_(model, kept)
    try:
        yield model
    finally:
        remove_masked_norms_(model)
        install_masked_norms_(model, saved)
