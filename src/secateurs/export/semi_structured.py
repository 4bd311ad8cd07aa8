"""2:4 semi-structured sparsity on GPUs: linear weights as ``torch.sparse`` semi-structured tensors.

Ampere and newer NVIDIA GPUs run matrix products twice as fast in the best case when every block of
4 consecutive weights of a row holds at most 2 non-zeros (``--granularity 2:4``). PyTorch exposes
this through :func:`torch.sparse.to_sparse_semi_structured`, for 2-D half-precision (or int8)
weights on CUDA only; this module converts the eligible ``nn.Linear`` layers of a model in place.
On a CPU there is nothing to convert to, and :func:`to_semi_structured_` says so.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from secateurs.errors import UsageError

__all__ = ["is_two_four", "semi_structured_available", "to_semi_structured_"]

# CUTLASS kernels of to_sparse_semi_structured need these multiples of (rows, columns) for 16-bit types.
_MIN_ROWS, _MIN_COLS = 32, 64


def is_two_four(weight: Tensor) -> bool:
    """Whether every block of 4 consecutive elements of each row has at most 2 non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(-1, 4) != 0).sum(dim=1) <= 2).all())


def semi_structured_available() -> bool:
    """CUDA with compute capability 8.0 or newer (Ampere, Hopper...)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def to_semi_structured_(model: nn.Module, *, dtype: torch.dtype = torch.float16) -> list[str]:
    """Convert, in place, the 2:4-sparse ``nn.Linear`` weights of a CUDA model.

    The whole model is cast to ``dtype`` first (the kernels need 16-bit inputs); layers whose weights
    are not 2:4 or whose shapes the kernels do not take are left dense.

    Args:
        model: A finalised model on a CUDA device.
        dtype: ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        Names of the converted layers.

    Raises:
        UsageError: Without a suitable GPU, or with a model that is not on one.
    """
    if not semi_structured_available():
        raise UsageError("2:4 semi-structured kernels need a CUDA GPU with compute capability 8.0 or newer")
    from torch.sparse import to_sparse_semi_structured

    if any(p.device.type != "cuda" for p in model.parameters()):
        raise UsageError("move the model to the GPU before converting it to 2:4 semi-structured weights")
    model.to(dtype)
    converted = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight.detach()
        rows, cols = weight.shape
        if rows % _MIN_ROWS or cols % _MIN_COLS or not is_two_four(weight):
            continue
        module.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
        converted.append(name)
    return converted
