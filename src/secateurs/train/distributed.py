"""Data-parallel training over several processes (launched by ``torchrun``) with DistributedDataParallel.

What every process of a run shares, and how:

* **Batches.** ``--batch-size`` is the *global* batch: each of the ``W`` processes trains on its
  contiguous share of every batch of the one-process loader (same order, same augmentation draws;
  :meth:`secateurs.data.TensorLoader.shard`). Steps per epoch, learning-rate and pruning schedules
  are those of a one-process run, so a run may resume with another number of processes.
* **Gradients.** DDP averages the gradients of every parameter the step's loss reads, the model's
  weights and the learned mask state of the parametrizations (CS scores, DPP logits) alike: the
  method's penalty is computed inside the wrapped forward pass (:class:`_Objective` in the loop).
  Each process scales its summed loss by ``W / global batch`` so that the average is the gradient
  of the global batch's mean loss, also when the last batch does not split evenly.
* **Masks.** A method draws its stochastic masks from its own generator, seeded alike on every
  process, from weights that are identical everywhere (the averaged gradients are identical), so
  Gibbs, DPP and random masks are the same on every process without communication; deterministic
  decisions (magnitude top-k, CS's fix, lottery rounds) likewise. After every epoch
  :meth:`World.settle` compares a checksum of every weight, buffer and method state across the
  processes and stops the run with a :class:`~secateurs.errors.DivergedError` if they disagree:
  never a silent divergence.
* **Batch-norm statistics.** Each process normalises over its share of the batch (DDP without
  SyncBatchNorm); running statistics are averaged over the processes at the end of every epoch.
* **Files.** Only rank 0 writes the run directory, metrics and checkpoints (atomically); every rank
  reads the checkpoint on ``--resume`` (the run directory must be on a file system every node sees).

Gloo serves CPU tensors and NCCL CUDA tensors (a GPU per process: ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import inspect
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from secateurs.errors import DivergedError, UsageError
from secateurs.utils.torchrun import launched_processes

__all__ = ["World", "launched", "launched_processes"]

#: How long a collective waits for a slow process before the run fails (an allocation search or a
#: long evaluation on one process keeps the others waiting).
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """The processes of a data-parallel run, as seen from one of them (one process: the default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> World:
        """The initialised default process group, or a one-process world when there is none."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one process that writes files and reports."""
        return self.rank == 0

    # ------------------------------------------------------------------------------ placement
    def place(self, device: torch.device) -> torch.device:
        """The device of this process: ``cuda`` means ``cuda:LOCAL_RANK`` (one GPU per process)."""
        if not self.distributed or device.type != "cuda":
            return device
        if device.index is not None and device.index != self.local_rank:
            raise UsageError(f"--device {device} under torchrun: give --device cuda (each process takes "
                             "cuda:LOCAL_RANK)")
        if self.local_rank >= torch.cuda.device_count():
            raise UsageError(f"process {self.rank} wants cuda:{self.local_rank}, but this machine has "
                             f"{torch.cuda.device_count()} GPUs; start at most that many processes per node")
        return torch.device("cuda", self.local_rank)

    def shard(self, loader: Any) -> Any:
        """This process's share of ``loader`` (which must offer ``shard(rank, count)``)."""
        if not self.distributed or loader is None:
            return loader
        shard = getattr(loader, "shard", None)
        if shard is None:
            raise UsageError(f"{type(loader).__name__} cannot be split between processes: give a "
                             "secateurs.data.TensorLoader, or a loader with shard(rank, count)")
        return shard(self.rank, self.size)

    def wrap(self, module: nn.Module, *, may_freeze: bool) -> nn.Module:
        """``module`` inside DistributedDataParallel (itself for one process).

        ``may_freeze``: some parameters may stop receiving gradients during the run (learned mask
        state that a method fixes); DDP then looks for unused parameters at every step (a graph
        traversal, and a warning from DDP when it finds none). Buffers are not synchronised at
        every forward pass: masks agree anyway, and :meth:`settle` averages running statistics
        once an epoch.
        """
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        # torch 2.14 renamed broadcast_buffers (buffers are still made equal once, at construction).
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        buffers = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        # A weight with a dimension of size 1 (a one-channel input conv) has two equivalent stride
        # layouts; DDP then warns at every step about a harmless mismatch with its bucket views.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=may_freeze, **buffers)

    # ------------------------------------------------------------------------------ reductions
    def sum_(self, *tensors: Tensor) -> None:
        """Sum each tensor over the processes, in place."""
        if self.distributed:
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def total(self, count: int, device: torch.device) -> int:
        """The sum of a count over the processes."""
        if not self.distributed:
            return count
        t = torch.tensor(count, dtype=torch.long, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return int(t)

    def earliest_(self, step: Tensor) -> None:
        """In place: the smallest non-negative value of ``step`` over the processes (-1: none has one)."""
        if not self.distributed:
            return
        never = torch.iinfo(step.dtype).max
        step.copy_(torch.where(step < 0, never, step))
        dist.all_reduce(step, op=dist.ReduceOp.MIN)
        step.copy_(torch.where(step == never, -1, step))

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on some process (every process gets the same answer)."""
        if not self.distributed:
            return flag
        t = torch.tensor(int(flag), dtype=torch.long, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object; CPU tensors) on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ------------------------------------------------------------------------------ agreement
    def settle(self, model: nn.Module, method: Any, *, epoch: int, tags: Mapping[str, Any] | None = None) -> None:
        """End of an epoch: average running statistics, then check that every process holds the same
        weights, buffers and method state (generator included).

        Raises:
            DivergedError: on every process alike, naming the first tensor that differs.
        """
        if not self.distributed:
            return
        _average_running_stats(model, self.size)
        named = [(f"model.{k}", v) for k, v in model.state_dict().items()]
        if method is not None:
            named += list(_tensors_of(method.state_dict(), "method"))
        device = next(model.parameters()).device
        sums = torch.stack([_checksum(t, device) for _, t in named]) if named else torch.zeros(0, device=device)
        gathered = self._gather(sums)
        if gathered is None:
            raise DivergedError(f"the {self.size} processes hold different model or method states after epoch "
                                f"{epoch} (different sets of tensors)")
        first = gathered[0]
        same = (gathered == first) | (torch.isnan(gathered) & torch.isnan(first))
        if bool(same.all()):
            return
        rank, index = (int(i) for i in (~same).nonzero()[0])
        where = "".join(f", {k}={v}" for k, v in (tags or {}).items())
        raise DivergedError(f"the {self.size} processes disagree after epoch {epoch}{where}: "
                            f"{named[index][0]} differs between rank 0 and rank {rank}; stochastic masks must come "
                            "from the method's own generator, seeded alike on every process")

    def _gather(self, values: Tensor) -> Tensor | None:
        """``(size, n)``: every process's ``values``, or None when their lengths differ."""
        length = torch.tensor([values.numel()], dtype=torch.long, device=values.device)
        lengths = [torch.zeros_like(length) for _ in range(self.size)]
        dist.all_gather(lengths, length)
        if any(int(n) != values.numel() for n in lengths):
            return None
        out = [torch.empty_like(values) for _ in range(self.size)]
        dist.all_gather(out, values)
        return torch.stack(out)


def _average_running_stats(model: nn.Module, size: int) -> None:
    """Mean of the batch-norm running statistics over the processes (each saw its share of the data)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            for stat in (module.running_mean, module.running_var):
                if stat is not None:
                    dist.all_reduce(stat, op=dist.ReduceOp.SUM)
                    stat.div_(size)


def _tensors_of(value: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    """Every tensor and number inside nested dicts and sequences, with a dotted name."""
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, bool | int | float):
        yield prefix, torch.tensor(float(value), dtype=torch.float64)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _tensors_of(v, f"{prefix}.{k}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for i, v in enumerate(value):
            yield from _tensors_of(v, f"{prefix}.{i}")


def _checksum(t: Tensor, device: torch.device) -> Tensor:
    """A float64 sum of ``t``'s values weighted by position (a permutation changes it, e.g. two
    swapped mask entries, which a plain sum would not see)."""
    flat = t.detach().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    flat = flat.to(device=device, dtype=torch.float64)
    # Weights 1 + frac(i * golden ratio): distinct for every position, never periodic.
    weights = torch.arange(flat.numel(), device=device, dtype=torch.float64).mul_(0.6180339887498949).frac_().add_(1.0)
    return (flat * weights).sum()


@contextmanager
def launched() -> Iterator[World]:
    """Join the process group that ``torchrun`` set up (environment variables), for the duration.

    Without ``torchrun`` (or with one process) nothing is initialised and the world has one process.
    Gloo carries CPU tensors and, where CUDA is available, NCCL carries CUDA tensors; each process
    then uses the GPU ``LOCAL_RANK``.
    """
    if launched_processes() <= 1 or (dist.is_available() and dist.is_initialized()):
        yield World.current()
        return
    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; run with one process")
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    try:
        yield World.current()
    finally:
        dist.destroy_process_group()
