"""``--deterministic``: torch's deterministic algorithms and cuDNN settings for the length of one run.

Same seed on the same CPU already gives byte-identical runs; on GPUs some kernels (scatter-adds,
cuDNN's autotuned convolutions, atomics in backward passes) do not, and this switch asks torch for
the deterministic versions (slower; an operation without one raises an error that names it).
The previous global settings come back when the run ends, so one run cannot change the next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["deterministic_mode"]

#: cuBLAS needs a fixed workspace for reproducible matrix products (CUDA >= 10.2).
_CUBLAS_KEY, _CUBLAS_VALUE = "CUBLAS_WORKSPACE_CONFIG", ":4096:8"


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Turn deterministic algorithms on for the block when ``enabled`` (a no-op otherwise)."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, os.environ.get(_CUBLAS_KEY))
    os.environ.setdefault(_CUBLAS_KEY, _CUBLAS_VALUE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop(_CUBLAS_KEY, None)
