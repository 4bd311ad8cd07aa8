"""The search reward: accuracy of the masked model on a calibration split of the training data.

The split is a fixed, seeded subset of the *training* images (never the test set), without
augmentation, cached once. Each evaluation reloads the dense weights, zeroes the pruned units
(:meth:`AllocationProblem.apply_`), re-estimates the batch-norm statistics on the split (pruning
shifts every later layer's statistics; without this a good allocation can score at chance), can
fine-tune a few Adam steps on training batches as the official code does, and returns top-1 in
percent. Results are cached by mask, so a repeated allocation costs nothing.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.core.masks import MaskSet

__all__ = ["CalibrationReward", "calibration_split"]


def calibration_split(x: Tensor, y: Tensor, samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random subset of ``samples`` training examples (all of them if fewer)."""
    n = x.shape[0]
    if samples >= n:
        return x, y
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=gen)[:samples].sort().values.to(x.device)
    return x.index_select(0, index), y.index_select(0, index.to(y.device))


class CalibrationReward:
    """``reward(problem, masks, units) -> accuracy %`` of the pruned model on calibration data.

    Args:
        model: The dense model (copied once; not modified).
        x, y: Calibration inputs and labels (training data).
        batch_size: Evaluation batch size.
        finetune_steps: Adam steps (lr 3e-4, the official code's) on ``train`` batches before scoring.
        train: ``(x, y)`` training tensors for the fine-tuning steps.
        finetune_batch: Batch size of those steps (60 in the official code).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256, finetune_steps: int = 0,
                 train: tuple[Tensor, Tensor] | None = None, finetune_batch: int = 60) -> None:
        self.work = copy.deepcopy(model)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.finetune_steps = finetune_steps
        self.train = train
        self.finetune_batch = finetune_batch
        self.cache: dict[str, float] = {}

    @staticmethod
    def _signature(units: Mapping[str, Tensor]) -> str:
        digest = hashlib.sha1()
        for name in sorted(units):
            digest.update(name.encode())
            digest.update(units[name].to(torch.bool).cpu().numpy().tobytes())
        return digest.hexdigest()

    def __call__(self, problem: Any, masks: MaskSet, units: Mapping[str, Tensor]) -> float:
        key = self._signature(units)
        if key not in self.cache:
            self.cache[key] = self._evaluate(problem, units)
        return self.cache[key]

    def _evaluate(self, problem: Any, units: Mapping[str, Tensor]) -> float:
        model = self.work
        model.load_state_dict(self.state)
        problem.apply_(model, units)
        if self.finetune_steps > 0 and self.train is not None:
            self._finetune(problem, units)
        self._reestimate_batch_norm()
        return self._accuracy()

    def _finetune(self, problem: Any, units: Mapping[str, Tensor]) -> None:
        model = self.work
        x, y = self.train  # type: ignore[misc]
        # A fresh optimizer per evaluation (the official code keeps one across episodes; spec §A.3.1).
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        # The same batches for every candidate (a fair comparison), drawn from the run's seed.
        gen = torch.Generator().manual_seed(int(getattr(problem, "seed", 0)))
        model.train()
        for _ in range(self.finetune_steps):
            index = torch.randint(0, x.shape[0], (self.finetune_batch,), generator=gen).to(x.device)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            problem.apply_(model, units)  # pruned units stay zero

    @torch.no_grad()
    def _reestimate_batch_norm(self) -> None:
        norms = [m for m in self.work.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats]
        if not norms:
            return
        self.work.eval()
        saved = [(m, m.momentum) for m in norms]
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the split
                m.train()
            for start in range(0, self.x.shape[0], self.batch_size):
                self.work(self.x[start:start + self.batch_size])
        finally:
            for m, momentum in saved:
                m.momentum = momentum
            self.work.eval()

    @torch.no_grad()
    def _accuracy(self) -> float:
        self.work.eval()
        correct = 0
        for start in range(0, self.x.shape[0], self.batch_size):
            logits = self.work(self.x[start:start + self.batch_size])
            correct += int((logits.argmax(1) == self.y[start:start + self.batch_size]).sum())
        return 100.0 * correct / max(self.x.shape[0], 1)
