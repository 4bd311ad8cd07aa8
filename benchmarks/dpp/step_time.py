"""Median training-step time of DPP against dense and GMP (single thread, random inputs).

    OMP_NUM_THREADS=1 python benchmarks/dpp/step_time.py

Prints markdown rows: model, method, milliseconds per step, ratio to the dense step.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from secateurs.methods import Horizon, build_method
from secateurs.models import build_model

CASES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("dense", None, {}),
    ("gmp 0.9", "gmp", {"sparsity": 0.9}),
    ("dpp 0.9 unstructured", "dpp", {"sparsity": 0.9}),
    ("dpp 0.9 kernel", "dpp", {"sparsity": 0.9, "granularity": "kernel"}),
    ("dpp 0.9 unstructured 4-bit", "dpp", {"sparsity": 0.9, "quant_bits": 4}),
]


def step_time(model_name: str, method_name: str | None, steps: int, batch: int, **options: Any) -> float:
    """Median seconds of one step (forward, backward, SGD step, the method's on_step) after 3 warm-up steps."""
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=1, num_classes=10, image_size=(28, 28))
    method = build_method(method_name, **options) if method_name else None
    if method is not None:
        method.attach(model, horizon=Horizon(epochs=3, steps_per_epoch=100))
    mask_ids = {id(p) for p in method.mask_parameters()} if method else set()
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if id(p) not in mask_ids]}]
    if method is not None:
        groups += method.mask_param_groups()
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        penalty = method.penalty() if method is not None else None
        if penalty is not None:
            loss = loss + penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if method is not None:
            method.on_step(i + 1)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.set_num_threads(1)
    for model_name, steps, batch in (("lenet5", 40, 128), ("resnet20", 8, 64)):
        base = None
        for label, name, options in CASES:
            seconds = step_time(model_name, name, steps, batch, **options)
            base = base or seconds
            print(f"| {model_name} ({batch}) | {label} | {1000 * seconds:.1f} | {seconds / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
