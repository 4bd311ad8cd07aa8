"""measure_latency: sane numbers and conditions (no timed assertions)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.metrics import measure_latency


def test_latency_is_positive_and_finite() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).train()
    threads_before = torch.get_num_threads()
    result = measure_latency(model, torch.randn(3, 16), threads=1, min_run_time=0.05)
    assert result.median_ms > 0 and math.isfinite(result.median_ms)
    assert result.iqr_ms >= 0 and math.isfinite(result.iqr_ms)
    assert (result.threads, result.batch_size, result.device) == (1, 3, "cpu")
    assert torch.get_num_threads() == threads_before
    assert model.training


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"min_run_time": 0.0}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), **kwargs)
