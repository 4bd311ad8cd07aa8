"""DPP per-layer pieces: the k-of-n grouping of a weight and the parametrization holding the logits.

Groups come from the granularity's own ``group_view`` (so every granularity means the same groups
here as in the selector and the metrics):

- ``unstructured``: the ``n = C_in * kh * kw`` inputs of every output neuron / filter (the paper's
  "k-out-of-n weights for every output neuron"); ``weight_groups="fan-out"`` transposes this to the
  released conv code's grouping: for every input element ``(c, y, x)`` k of the ``C_out`` filters;
- ``kernel``: the ``C_in`` kernels of every filter, indexed on the ``(C_out, C_in)`` unit tensor, so it
  is correct when ``C_in != C_out`` (the released code's raw reshape is not);
- ``filter``: all filters of the layer (one group);
- ``N:M``: every block of M consecutive inputs (k = N);
- tiling: each group's row is cut into contiguous tiles of ``tile`` candidates, k kept per tile.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from secateurs.core.granularity import Filter, Granularity, Kernel, NofM, Unstructured
from secateurs.core.gumbel import gumbel_noise, hard_topk, hard_topk_mask, straight_through_topk
from secateurs.core.parametrize import MaskParametrization
from secateurs.errors import UsageError
from secateurs.quant.fake_quant import QuantConfig, fake_quantize

__all__ = ["WEIGHT_GROUPS", "DPPMask", "KofNGrouping", "default_entropy_weight", "fan_in_correction", "initial_logits"]

#: Grouping of single weights: the inputs of each output neuron, or the outputs reading each input.
WEIGHT_GROUPS = ("fan-in", "fan-out")


class KofNGrouping:
    """Maps a weight's unit tensor to ``(groups, n)`` rows of candidates and back.

    Args:
        granularity: the unit of removal.
        weight_shape: the weight's full shape.
        weight_groups: ``"fan-in"`` or ``"fan-out"`` (the latter for unstructured and kernel only).
        tile: candidates per tile (must divide the group size), or None.
        name: the weight's name, for error messages.

    Raises:
        UsageError: fan-out grouping at a granularity without it, or a tile that does not divide.
    """

    def __init__(self, granularity: Granularity, weight_shape: torch.Size, weight_groups: str = "fan-in",
                 tile: int | None = None, name: str = "") -> None:
        self.granularity = granularity
        self.weight_shape = torch.Size(weight_shape)
        self.unit_shape = granularity.unit_shape(self.weight_shape)
        rows, cols = granularity.group_view(torch.empty(self.unit_shape, device="meta")).shape
        self.transposed = weight_groups == "fan-out"
        if self.transposed:
            if not isinstance(granularity, (Unstructured, Kernel)):
                raise UsageError(f"fan-out weight groups need the unstructured or kernel granularity, "
                                 f"not {granularity}")
            rows, cols = cols, rows
        self.base_shape = (rows, cols)
        label = f" of {name}" if name else f" of a weight {tuple(self.weight_shape)}"
        if tile is not None and cols % tile != 0:
            raise UsageError(f"tile {tile} does not divide the group size {cols}{label} ({granularity}); "
                             f"choose a divisor of {cols}")
        self.n = tile if tile is not None else cols
        self.groups = rows * cols // self.n

    def to_groups(self, unit: Tensor) -> Tensor:
        """Unit tensor -> ``(groups, n)``."""
        grouped = self.granularity.group_view(unit)
        if self.transposed:
            grouped = grouped.t()
        return grouped.reshape(self.groups, self.n)

    def from_groups(self, grouped: Tensor) -> Tensor:
        """``(groups, n)`` -> unit tensor (inverse of :meth:`to_groups`)."""
        base = grouped.reshape(self.base_shape)
        if self.transposed:
            base = base.t()  # back to the granularity's own (rows, cols) layout
        return self.granularity.from_groups(base, self.unit_shape)

    def unit_ids(self, device: torch.device | str | None = None) -> Tensor:
        """``(groups, n)`` flat index of every candidate in the unit tensor."""
        return self.to_groups(torch.arange(math.prod(self.unit_shape), device=device).reshape(self.unit_shape))


def default_entropy_weight(granularity: Granularity) -> float:
    """The reference code's entropy weight ``mu`` for a granularity (spec §3.6)."""
    if isinstance(granularity, Filter):
        return 5e-3  # feature-map masks (ResNet-18 script)
    if isinstance(granularity, Kernel):
        return 1e-5  # kernel level (LeNet)
    return 5e-5  # weight level (FC and conv)


def fan_in_correction(grouping: KofNGrouping, k: int) -> float:
    """``sqrt(n / k)``: restores the initial activation scale of a neuron that reads k of n candidates.

    For the filter granularity the kept filters read all their inputs, so the factor is 1.
    """
    if isinstance(grouping.granularity, Filter) or k == 0:
        return 1.0
    return math.sqrt(grouping.n / k)


def _default_std(granularity: Granularity) -> float:
    return 0.5 if isinstance(granularity, (Unstructured, NofM)) else 1.0


def initial_logits(grouping: KofNGrouping, weight: Tensor, std: float | None, *, magnitude: bool,
                   generator: torch.Generator) -> Tensor:
    """Initial ``(groups, n)`` logits: N(0, std^2), or the per-group z-scores of unit magnitudes * std.

    Magnitude initialisation makes the first evaluation mask the per-group magnitude mask, which is
    what a trained model (``prune --from``) should start from.
    """
    std = _default_std(grouping.granularity) if std is None else std
    if not magnitude:
        noise = torch.randn((grouping.groups, grouping.n), generator=generator, device=weight.device)
        return noise * std
    scores = grouping.to_groups(grouping.granularity.reduce(weight.float(), how="l2"))
    centred = scores - scores.mean(1, keepdim=True)
    spread = centred.std(1, keepdim=True, unbiased=False) if grouping.n > 1 else torch.ones_like(centred)
    return torch.where(spread > 0, centred / spread.clamp(min=1e-12), torch.zeros_like(centred)) * std


class DPPMask(MaskParametrization):
    """Gumbel top-k k-of-n mask over learned logits, with optional joint fake quantization.

    Training: a fresh exact k-hot sample per forward with the straight-through relaxed gradient.
    Evaluation: the deterministic top-k of the logits (ties to the earlier candidate).
    """

    temperature: Tensor
    gate_reads_weight = False  # the gate comes from its own state

    def __init__(self, grouping: KofNGrouping, k: int, logits: Tensor, *, noise_scale: float, relax_order: str,
                 generator: torch.Generator, quant: QuantConfig | None, temperature: float) -> None:
        super().__init__(grouping.granularity, grouping.weight_shape)
        if not 0 <= k <= grouping.n:
            raise ValueError(f"cannot keep {k} of {grouping.n}")
        self.grouping = grouping
        #: The kept count of the final mask; :attr:`k` is the count of the current step, above
        #: ``k_final`` while the method's sparsity ramp runs (pushed by the method per step).
        self.k_final = k
        self.k = k
        self.noise_scale = float(noise_scale)
        self.relax_order = relax_order
        self.generator = generator  # the method's generator: one random stream for the whole run
        self.quant = quant
        self.logits = nn.Parameter(logits.detach().clone().float())
        self._hard_cache: tuple[tuple, Tensor] | None = None  # see grouped_hard
        self.register_buffer("temperature", torch.tensor(float(temperature), device=logits.device))

    def _sampled(self) -> Tensor:
        logits = self.logits
        if self.noise_scale == 0 and not logits.requires_grad:
            # Fixed masks (noise 0, logits frozen): the straight-through value is the deterministic
            # top-k with no gradient, the same tensor at every step until the logits or k change.
            return self.grouped_hard()
        if self.noise_scale > 0:
            noise = gumbel_noise(logits.shape, generator=self.generator, device=logits.device, dtype=logits.dtype)
            logits = logits + noise.mul_(self.noise_scale)  # the values of logits + eta * noise
        # Continuous noise makes ties impossible, so the faster torch.topk is safe (rank order).
        idx = torch.topk(logits.detach(), self.k, dim=1).indices if self.noise_scale > 0 else hard_topk(logits, self.k)
        return straight_through_topk(logits, idx, self.temperature, self.relax_order)

    def grouped_hard(self) -> Tensor:
        """``(groups, n)`` float k-hot mask of the deterministic top-k of the logits.

        Kept until the logits change (an optimizer step or a loaded state bumps their version
        counter) or ``k`` does: evaluation and the fixed stretch of training reuse it. Do not modify
        the returned tensor in place.
        """
        logits = self.logits
        if torch.compiler.is_compiling():  # a traced graph has no use for a Python-side cache
            return hard_topk_mask(logits, self.k).to(logits.dtype)
        key = (logits.data_ptr(), logits._version, self.k, logits.dtype, logits.device)
        if self._hard_cache is None or self._hard_cache[0] != key:
            self._hard_cache = (key, hard_topk_mask(logits, self.k).to(logits.dtype))
        return self._hard_cache[1]

    def unit_mask(self, weight: Tensor) -> Tensor:
        grouped = self._sampled() if self.training else self.grouped_hard()
        return self.grouping.from_groups(grouped)

    def hard_mask(self, weight: Tensor) -> Tensor:
        return self.grouping.from_groups(self.grouped_hard() > 0.5)

    def forward(self, weight: Tensor) -> Tensor:
        masked = super().forward(weight)
        return fake_quantize(masked, self.quant) if self.quant is not None else masked

    @torch.no_grad()
    def deployed(self, weight: Tensor) -> Tensor:
        """The weight as evaluation uses it: hard-masked and, when on, quantized (dequantized values)."""
        hard = self.granularity.broadcastable(self.hard_mask(weight).to(weight.dtype), weight.shape)
        masked = weight * hard
        return fake_quantize(masked, self.quant) if self.quant is not None else masked

    @torch.no_grad()
    def masked_weight(self, weight: Tensor) -> Tensor:
        """The hard-masked weight before quantization."""
        return weight * self.granularity.broadcastable(self.hard_mask(weight).to(weight.dtype), weight.shape)

    def entropy(self) -> Tensor:
        """``(groups,)`` entropy of ``softmax(logits)`` per group (the sampled axis), differentiable."""
        log_p = torch.log_softmax(self.logits, dim=1)
        return -(log_p.exp() * log_p).sum(1)

    def extra_repr(self) -> str:
        return f"groups={self.grouping.groups}, k={self.k}, n={self.grouping.n}, quant={self.quant}"
