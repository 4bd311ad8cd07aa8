"""Forward-pass latency, measured with :class:`torch.utils.benchmark.Timer`.

The Timer handles warm-up, CUDA synchronisation and the thread count; this module only fixes the
conditions (eval mode, no gradients) and reports robust statistics (median, interquartile range).
"""

from __future__ import annotations

import logging

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.metrics.effective_tensors import eval_mode

__all__ = ["LatencyResult", "measure_latency"]

# Untimed forward passes before measuring: first calls pay for allocation, lazy init and autotuning.
_WARMUP_RUNS = 3


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass.

    Attributes:
        median_ms: Median time per forward pass, in milliseconds.
        iqr_ms: Interquartile range of the per-block times, in milliseconds.
        threads: CPU threads used (``torch.set_num_threads``).
        batch_size: Size of the first dimension of the (first) input.
        device: Device of the input, e.g. ``"cpu"`` or ``"cuda:0"``.
    """

    median_ms: float
    iqr_ms: float
    threads: int
    batch_size: int
    device: str


def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor | tuple[Any, ...],
    *,
    threads: int | None = None,
    min_run_time: float = 0.5,
) -> LatencyResult:
    """Measures the forward latency of ``model`` on ``example_input``.

    The model runs in eval mode without gradients; its modes are restored afterwards. Put the model
    and input on the device to measure beforehand.

    Args:
        model: The model.
        example_input: One input tensor, or a tuple of positional inputs.
        threads: CPU threads to use while timing; ``None`` keeps ``torch.get_num_threads()``.
        min_run_time: Minimum total measuring time in seconds (more gives steadier numbers).

    Returns:
        Median and interquartile range in milliseconds, with the conditions of the measurement.

    Raises:
        UsageError: If ``threads`` is not positive or ``min_run_time`` not positive and finite.
    """
    # Imported here: torch.utils.benchmark is only needed when latency is actually measured. Its import
    # pulls in torch.utils.cpp_extension, which warns about CUDA_HOME on CPU-only machines; that warning
    # says nothing about the measurement, so it is silenced for the import only.
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        cpp_logger.setLevel(level)

    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    if not (min_run_time > 0 and math.isfinite(min_run_time)):
        raise UsageError(f"min_run_time must be a positive number of seconds, got {min_run_time!r}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
    batch_size = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
    device = str(first.device) if first is not None else "cpu"
    num_threads = threads if threads is not None else torch.get_num_threads()
    with eval_mode(model), torch.no_grad():
        for _ in range(_WARMUP_RUNS):
            model(*inputs)
        timer = Timer(
            stmt="model(*inputs)",
            globals={"model": model, "inputs": inputs},
            num_threads=num_threads,
        )
        # The Timer sets its own grad mode from the caller's; no_grad above carries over.
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return LatencyResult(
        median_ms=measurement.median * 1e3,
        iqr_ms=measurement.iqr * 1e3,
        threads=num_threads,
        batch_size=batch_size,
        device=device,
    )
