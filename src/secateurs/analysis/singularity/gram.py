"""The consumer-weighted gradient-matrix Gram of each unit, accumulated over a calibration set.

For a consumer layer reading a unit's channels, the gradient of its output with respect to its
weights is the input patch it reads; collapsed over the kernel offsets this gives the *gradient
matrix* ``Z`` (rows: sampled image positions, columns: the unit's channels, entries: the channel's
activation there). Weighting each column by the norm of the consumer weights that read it,
``Z~ = Z diag(omega)``, also exposes channels nobody reads (spec: crl_singularity.md, section B.2.1).

Only the ``channels x channels`` Gram ``sum z z^T`` is kept, in float64, summed batch by batch: no
matrix of all rows is ever held. A unit read at several points (a residual stream feeds every block
of its stage) stacks the rows of every tensor it is read from; consumers reading the *same* tensor
(a block's first convolution and its projection shortcut) share the rows and add their squared
weight norms (``omega^2 = sum over consumers``).

Positions are drawn once per tensor for the whole calibration set (``positions`` per image, from
the analysis generator), so the Gram does not depend on the batch size it is accumulated in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from secateurs.analysis.singularity.units import AnalysisUnit

__all__ = ["TensorGram", "UnitGram", "channel_view", "collect_grams", "consumer_weight_norms"]


@dataclass
class TensorGram:
    """The rows read from one tensor: their raw Gram ``sum z z^T`` and count.

    Attributes:
        consumers: Indices (into ``unit.consumers``) of the consumers reading this tensor.
        gram: ``(channels, channels)`` float64, unweighted.
        rows: Number of rows summed.
    """

    consumers: list[int]
    gram: Tensor
    rows: int = 0


@dataclass
class UnitGram:
    """Every tensor a unit is read from, with its Gram."""

    unit: AnalysisUnit
    tensors: list[TensorGram] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows of the stacked gradient matrix."""
        return sum(t.rows for t in self.tensors)

    def weighted(self, omega_sq: Sequence[Tensor]) -> Tensor:
        """``S~ = Z~^T Z~ / M`` of the stacked, consumer-weighted matrix.

        Args:
            omega_sq: For each consumer of the unit, the squared norm of its weights per channel.
        """
        n = self.unit.channels
        total = torch.zeros(n, n, dtype=torch.float64)
        for t in self.tensors:
            w = torch.stack([omega_sq[c] for c in t.consumers]).sum(0).sqrt()
            total += w[:, None] * t.gram * w[None, :]
        return total / max(self.rows, 1)


def channel_view(x: Tensor, index: Tensor) -> Tensor:
    """``(N, channels, positions)``: the unit's channels of a consumer input.

    Args:
        x: The consumer's input, ``(N, C, *spatial)`` for a convolution, ``(N, F)`` for a linear layer.
        index: ``(channels, per-channel positions)`` along dim 1 (see :class:`ConsumerRead`).
    """
    index = index.to(x.device)
    if x.dim() > 2:
        return x.index_select(1, index[:, 0]).flatten(2)
    return x[:, index]


@torch.no_grad()
def consumer_weight_norms(model: nn.Module, unit: AnalysisUnit) -> list[Tensor]:
    """For each consumer, ``||W[:, channel]||_F^2`` per channel (its current, masked weights), float64."""
    out = []
    for read in unit.consumers:
        weight = model.get_submodule(read.module).weight.detach().to(torch.float64)
        dims = [d for d in range(weight.dim()) if d != 1]
        per_position = weight.pow(2).sum(dim=dims).cpu()
        out.append(per_position[read.index].sum(1))
    return out


class _Collector:
    """Forward pre-hooks that add each batch's sampled rows to the units' Grams."""

    def __init__(self, units: Sequence[AnalysisUnit], total: int, positions: int, generator: torch.Generator) -> None:
        self.grams = [UnitGram(u) for u in units]
        self.total, self.positions, self.generator = total, positions, generator
        self.offset = 0
        # Per (unit, first consumer of a tensor): the positions drawn for the whole calibration set.
        self.draws: dict[tuple[int, int], Tensor] = {}
        # Per unit: consumer -> tensor index; learnt in the first pass, from which tensors are shared.
        self.tensor_of: list[dict[int, int]] = [{} for _ in units]
        self.seen: dict[tuple[int, int], tuple[Tensor, int]] = {}  # (unit, id(x)) -> (x, tensor index)
        self.by_module: dict[str, list[tuple[int, int]]] = {}
        for u, unit in enumerate(units):
            for c, read in enumerate(unit.consumers):
                self.by_module.setdefault(read.module, []).append((u, c))

    def hook(self, module_name: str):  # noqa: ANN201 - a torch hook
        def run(module: nn.Module, args: tuple[object, ...]) -> None:
            x = args[0]
            assert isinstance(x, Tensor)
            for u, c in self.by_module[module_name]:
                self._add(u, c, x)
        return run

    def _add(self, u: int, c: int, x: Tensor) -> None:
        unit_gram = self.grams[u]
        mapping = self.tensor_of[u]
        known = self.seen.get((u, id(x)))
        if known is not None and known[0] is x:  # another consumer of a tensor already counted this pass
            mapping.setdefault(c, known[1])
            if c not in unit_gram.tensors[known[1]].consumers:
                unit_gram.tensors[known[1]].consumers.append(c)
            return
        if c in mapping:
            t = mapping[c]
        else:
            t = len(unit_gram.tensors)
            mapping[c] = t
            n = unit_gram.unit.channels
            unit_gram.tensors.append(TensorGram([c], torch.zeros(n, n, dtype=torch.float64)))
        self.seen[(u, id(x))] = (x, t)
        view = channel_view(x.detach(), unit_gram.unit.consumers[c].index)  # (N, C, L)
        batch, channels, length = view.shape
        key = (u, t)
        if length > self.positions:
            if key not in self.draws:
                scores = torch.rand(self.total, length, generator=self.generator)
                self.draws[key] = scores.argsort(dim=1)[:, : self.positions]
            chosen = self.draws[key][self.offset:self.offset + batch].to(view.device)
            view = view.gather(2, chosen[:, None, :].expand(batch, channels, chosen.shape[1]))
        rows = view.permute(0, 2, 1).reshape(-1, channels).to(torch.float64).cpu()
        tensor_gram = unit_gram.tensors[t]
        tensor_gram.gram += rows.T @ rows
        tensor_gram.rows += rows.shape[0]

    def end_batch(self, batch: int) -> None:
        self.offset += batch
        self.seen.clear()


@torch.no_grad()
def collect_grams(
    model: nn.Module,
    units: Sequence[AnalysisUnit],
    images: Tensor,
    *,
    batch_size: int = 128,
    positions: int = 16,
    generator: torch.Generator | None = None,
) -> list[UnitGram]:
    """Run the calibration images through ``model`` (eval mode) and accumulate every unit's Gram.

    Args:
        model: The network (masks attached or not: the current, masked network is analysed).
        units: From :func:`analysis_units`.
        images: Calibration inputs ``(N, ...)``, on any device (moved batch by batch to the model's).
        batch_size: Images per forward pass (the result does not depend on it).
        positions: Spatial positions sampled per image and tensor (all of them when fewer).
        generator: Source of the position draws (CPU generator; default seed 0).

    Returns:
        One :class:`UnitGram` per unit, in order.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    collector = _Collector(units, images.shape[0], positions, generator)
    device = next(model.parameters()).device
    handles = [model.get_submodule(name).register_forward_pre_hook(collector.hook(name))
               for name in collector.by_module]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device)
            model(batch)
            collector.end_batch(batch.shape[0])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return collector.grams
