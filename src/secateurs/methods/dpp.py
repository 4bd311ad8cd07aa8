"""Dynamic Probabilistic Pruning (DPP): exact k-out-of-n masks sampled by Gumbel top-k.

Paper: L. Gonzalez-Carabarin, I. A. M. Huijben, B. Veeling, A. Schmid, R. J. G. van Sloun,
"Dynamic Probabilistic Pruning: A General Framework for Hardware-Constrained Pruning at Different
Granularities", IEEE TNNLS 2022 (doi:10.1109/TNNLS.2022.3176809, arXiv:2105.12686).

Algorithm. Every group of ``n`` candidate units (the inputs of an output neuron, the kernels of a
filter, the filters of a layer, or a tile of a group) has trainable logits ``phi``. At every training
step ``k = round((1 - S) n)`` units are drawn without replacement by perturbing the logits with
Gumbel noise (scale ``eta``) and keeping the top k, so every group keeps exactly k at every step. The
backward pass uses the sequential relaxed softmax without replacement at temperature ``T``
(straight-through: the forward value is the exact k-hot mask). ``T`` falls linearly from 5 to 0.5;
an entropy penalty ``mu * sum_g H(softmax(phi_g))`` makes the distributions confident. At evaluation
the mask is the deterministic top-k of the logits. Optionally the masked weights are fake-quantized
to ``B`` bits and trained jointly with the masks.

==================  ==========================  ===================================================
paper symbol        config field                meaning
==================  ==========================  ===================================================
k / n               ``sparsity`` (S)            ``k = round((1 - S) n)`` per group (or per tile)
phi                 ``logit_init_std``          logits, initialised N(0, sd^2) (or from magnitudes)
eta                 ``noise_scale``             scale of the Gumbel noise (0 = deterministic top-k)
tau_0 -> tau_E      ``temperature_start/end``   linear temperature schedule (per epoch or step)
mu                  ``entropy_weight``          entropy regulariser weight
tiles               ``tile``                    candidates per tile; k kept per tile
B                   ``quant_bits``              joint fake quantization of the masked weights
Adam, lr 1e-3       ``logit_lr``                the logits' own Adam (``logit_optimizer``)
(constant lr)       ``logit_lr_schedule``       ``run`` (default): times the run's lr multiplier
(never fixed)       ``fix_fraction``            last share of the run at a fixed top-k (default 0.2)
(k from step 0)     ``ramp_end``                k falls from n to its target over this share (default 0)
(not in the paper)  ``rescale_init``            sqrt(n/k) fan-in correction of the initial weights
==================  ==========================  ===================================================

The paper's schedule is ``logit_lr_schedule=constant fix_fraction=0``. By default the Gumbel noise
falls linearly to 0 over the stretch before the last ``fix_fraction`` of the run, and that last stretch
trains the weights at the fixed deterministic top-k of the logits (the evaluation mask). With
``ramp_end > 0`` the kept count of every group falls from ``n`` to ``k`` on gmp's cubic schedule over
that share of the run instead of being ``k`` from the first step (off by default: it did not help on
the validation cells, docs/results.md).

Deviations and their reasons are listed in ``docs/methods/dpp.md``. The grouping and the
parametrization live in :mod:`secateurs.methods.dpp_layers`; metrics, plots, the integer export and
the sizes for ``report.json`` in :mod:`secateurs.methods.dpp_report`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.core.granularity import Filter, Kernel, NofM, Unstructured
from secateurs.core.gumbel import RELAX_ORDERS
from secateurs.core.masks import MaskSet
from secateurs.core.parametrize import MaskParametrization, original_name
from secateurs.core.schedules import linear, polynomial
from secateurs.core.selection import keep_count
from secateurs.core.targets import Target, select_targets
from secateurs.errors import UsageError
from secateurs.methods.base import Horizon, MethodConfig, PruningMethod
from secateurs.methods.dpp_layers import (
    WEIGHT_GROUPS,
    DPPMask,
    KofNGrouping,
    default_entropy_weight,
    fan_in_correction,
    initial_logits,
)
from secateurs.methods.dpp_report import epoch_metrics, report_fields, write_artifacts
from secateurs.methods.registry import METHODS
from secateurs.quant.fake_quant import QUANT_SCALES, QuantConfig

__all__ = ["DPPConfig", "DynamicProbabilisticPruning"]

_LOGIT_INITS = ("auto", "random", "magnitude")
#: The reference trains the logits with Adam at lr 1e-3 (spec §3.6, §3.10).
_REFERENCE_LOGIT_LR = 1e-3
#: The reference's Gumbel noise scale for its FC layers (spec §3.6); the default from scratch.
_REFERENCE_NOISE = 0.1


@dataclass(frozen=True, kw_only=True)
class DPPConfig(MethodConfig):
    """DPP settings. The scope is always ``group`` (exactly k of n in every group).

    Attributes:
        noise_scale: ``eta``, scale of the Gumbel noise in training (0 = deterministic top-k);
            None = 0.1 (the reference's) from scratch, 0 when pruning a trained model (``--from``):
            on magnitude-initialised logits (spread ``logit_init_std``) η = 0.1 reshuffles, at every
            step, a band around the threshold about as wide as the kept set at 95 %, a random
            drop-connect of the trained weights that cost 1.2 points on the validation cells.
        temperature_start / temperature_end: the linear temperature schedule (5 -> 0.5).
        temperature_every: ``"epoch"`` (as the reference) or ``"step"``.
        entropy_weight: ``mu``; None picks the reference's value for the granularity.
        logit_optimizer: ``"adam"``: the method steps the logits with its own Adam (the reference's
            optimizer, whatever optimizer the weights use); ``"shared"``: the logits are a group of
            the run's optimizer.
        logit_lr: learning rate of the logits; None = 1e-3 (reference) for ``adam``, the weights'
            learning rate for ``shared``.
        logit_init: ``"random"`` N(0, sd^2), ``"magnitude"`` (ranked like the weights' magnitudes, for
            pruning a trained model) or ``"auto"`` (magnitude with ``--from``, random otherwise).
        logit_init_std: ``sd``; None gives 0.5 for weights and 1.0 for kernels/filters.
        relax_order: order of the sequential relaxation: ``"rank"`` or ``"index"`` (as released).
        weight_groups: ``"fan-in"`` (k of the inputs of each output neuron; the paper) or
            ``"fan-out"`` (k of the outputs reading each input element; the released conv code).
        tile: candidates per tile (must divide the group size); None = no tiling.
        quant_bits: bits of the joint fake quantization (1 to 16); None = off.
        quant_scale: ``"tensor"`` or ``"channel"`` quantization scales.
        metric_samples: Monte-Carlo draws for the inclusion probabilities logged each epoch.
        logit_lr_schedule: ``"run"``: the logits' own Adam follows the run's learning-rate multiplier
            (warm-up and decay, :attr:`PruningMethod.lr_scale`), so the masks settle as the weights'
            learning rate goes to 0; ``"constant"``: the reference's constant rate.
        fix_fraction: the last fraction of the run trains at the fixed top-k of the logits (noise
            0, logits frozen); the noise falls linearly to 0 over an equally long stretch before it.
            0 = the reference (constant noise, masks sampled to the end).
        ramp_end: the share of the run over which every group's kept count falls from ``n`` to ``k``
            on the cubic schedule of gmp (exactly the scheduled count of n at every step; the
            target k from then on); 0 = the paper and the default (k from the first step: unlike
            Gibbs, DPP pruning a trained model gained nothing from the ramp on the validation cells).
        rescale_init: multiply each pruned weight by ``sqrt(n / k)`` at attach, so that a neuron
            reading k of n inputs starts with the activation scale its initialiser meant for n
            (the fan-in correction of sparse initialisation); None = on from scratch, off with ``--from``.
    """

    noise_scale: float | None = field(default=None, metadata={
        "help": "Gumbel noise scale eta (default 0.1; 0 with --from)", "ge": 0.0})
    temperature_start: float = field(default=5.0, metadata={"help": "relaxation temperature at the start", "gt": 0.0})
    temperature_end: float = field(default=0.5, metadata={"help": "relaxation temperature at the end", "gt": 0.0})
    temperature_every: str = field(default="epoch", metadata={"help": "epoch or step", "choices": ("epoch", "step")})
    entropy_weight: float | None = field(default=None, metadata={"help": "entropy penalty mu", "ge": 0.0})
    logit_optimizer: str = field(default="adam", metadata={
        "help": "adam (own) or shared", "choices": ("adam", "shared")})
    logit_lr: float | None = field(default=None, metadata={"help": "learning rate of the logits", "gt": 0.0})
    logit_lr_schedule: str = field(default="run", metadata={
        "help": "run (follow the lr schedule) or constant", "choices": ("run", "constant")})
    fix_fraction: float = field(default=0.2, metadata={
        "help": "last share of the run at a fixed top-k (0: paper)", "ge": 0.0, "lt": 0.5})
    logit_init: str = field(default="auto", metadata={"help": "auto, random or magnitude", "choices": _LOGIT_INITS})
    logit_init_std: float | None = field(default=None, metadata={"help": "spread of the initial logits", "gt": 0.0})
    relax_order: str = field(default="rank", metadata={"help": "rank or index", "choices": RELAX_ORDERS})
    weight_groups: str = field(default="fan-in", metadata={"help": "fan-in or fan-out", "choices": WEIGHT_GROUPS})
    tile: int | None = field(default=None, metadata={"help": "candidates per tile, k kept per tile", "ge": 1})
    quant_bits: int | None = field(default=None, metadata={"help": "joint quantization bits (1-16)", "ge": 1, "le": 16})
    quant_scale: str = field(default="tensor", metadata={"help": "tensor or channel scales", "choices": QUANT_SCALES})
    metric_samples: int = field(default=100, metadata={"help": "draws for the inclusion probabilities", "ge": 0})
    rescale_init: bool | None = field(default=None, metadata={"help": "sqrt(n/k) fan-in correction at attach"})
    ramp_end: float = field(default=0.0, metadata={
        "help": "share of the run over which k falls from n to its target (0: k from the start)", "ge": 0.0, "lt": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ramp_end + self.fix_fraction > 1.0:
            raise UsageError(f"ramp_end {self.ramp_end} + fix_fraction {self.fix_fraction} exceed the run; "
                             f"the kept count must reach k before the masks are fixed")
        if self.scope == "global":
            raise UsageError("dpp keeps exactly k of n in every group; the global scope does not apply")
        object.__setattr__(self, "scope", "group")
        if self.weight_groups == "fan-out" and not isinstance(self.granularity, (Unstructured, Kernel)):
            raise UsageError(f"fan-out weight groups need the unstructured or kernel granularity, "
                             f"not {self.granularity}")
        if self.quant_bits is not None:
            QuantConfig(self.quant_bits, self.quant_scale)  # validates the bit width

    @property
    def quant(self) -> QuantConfig | None:
        """The joint quantization, or None."""
        return None if self.quant_bits is None else QuantConfig(self.quant_bits, self.quant_scale)


@METHODS.register("dpp", aliases=("dynamic-probabilistic-pruning",),
                  description="exact k-of-n masks by Gumbel top-k with a relaxed straight-through backward")
class DynamicProbabilisticPruning(PruningMethod):
    """Dynamic Probabilistic Pruning with optional joint quantization and mask-information metrics."""

    Config = DPPConfig
    granularities = (Unstructured, Kernel, Filter, NofM)
    samples_masks = True
    config: DPPConfig

    def __init__(self, config: DPPConfig) -> None:
        super().__init__(config)
        #: Every value :meth:`on_epoch_end` logged, per key, plus ``"epoch"`` (kept across resumes).
        self.history: dict[str, list[float]] = {}
        self._exports: dict[str, Any] | None = None
        self._logit_optimizer: torch.optim.Optimizer | None = None
        self._fixed = False  # the masks are fixed (set by the schedule; a pure function of the step)

    def layers(self) -> Iterator[tuple[str, DPPMask, Tensor]]:
        """``(weight name, parametrization, original weight)`` of every pruned layer."""
        for name, p, weight in self.weights():
            if isinstance(p, DPPMask):
                yield name, p, weight

    def layer_names(self) -> list[str]:
        """Names of the pruned weights."""
        return [t.name for t in self.targets]

    def cache_exports(self, exports: dict[str, Any]) -> None:
        """Remember the exports written by :meth:`save_artifacts` for :meth:`report_extras`."""
        self._exports = exports

    def cached_exports(self) -> dict[str, Any] | None:
        """The exports of :meth:`save_artifacts`, if it ran."""
        return self._exports

    # ----------------------------------------------------------------- setup
    def grouping(self, shape: torch.Size, name: str = "") -> KofNGrouping:
        """The k-of-n grouping of a weight of ``shape`` (UsageError when the tiling does not fit)."""
        cfg = self.config
        return KofNGrouping(cfg.granularity, torch.Size(shape), cfg.weight_groups, cfg.tile, name=name)

    def attach(self, model: nn.Module, targets: list[Target] | None = None, horizon: Horizon | None = None,
               **kwargs: Any) -> None:
        targets = list(targets) if targets is not None else select_targets(model)
        for t in targets:  # check every grouping before the model is touched
            if self.config.granularity.supports(t.shape):
                self.grouping(t.shape, t.name)
        super().attach(model, targets, horizon, **kwargs)
        if self.config.logit_optimizer == "adam" and self.mask_parameters():
            # Keras' Adam defaults (the reference's optimizer), including eps = 1e-7.
            self._logit_optimizer = torch.optim.Adam(self.mask_parameters(), lr=self.logit_lr, eps=1e-7)

    @property
    def noise_scale(self) -> float:
        """η of this run: the configured value, else 0.1 (the reference) from scratch, 0 with ``--from``."""
        if self.config.noise_scale is not None:
            return self.config.noise_scale
        return 0.0 if self.horizon.pretrained else _REFERENCE_NOISE

    @property
    def logit_lr(self) -> float:
        """The base learning rate of the logits' own Adam."""
        return self.config.logit_lr if self.config.logit_lr is not None else _REFERENCE_LOGIT_LR

    @classmethod
    def supports_coupling(cls, config: MethodConfig) -> bool:
        # Joint quantization scales each weight tensor on its own; a group mask spans several.
        return getattr(config, "quant_bits", None) is None

    def make_parametrization(self, target: Target, weight: Tensor) -> MaskParametrization:
        cfg = self.config
        grouping = self.grouping(target.shape, target.name)
        k = keep_count(grouping.n, self.sparsity_of(target.name))
        use_magnitude = cfg.logit_init == "magnitude" or (cfg.logit_init == "auto" and self.horizon.pretrained)
        logits = initial_logits(grouping, weight.detach(), cfg.logit_init_std, magnitude=use_magnitude,
                                generator=self.generator)
        rescale = cfg.rescale_init if cfg.rescale_init is not None else not self.horizon.pretrained
        if rescale and 0 < k < grouping.n:
            with torch.no_grad():
                weight.mul_(fan_in_correction(grouping, k))
        mask = DPPMask(grouping, k, logits, noise_scale=self.noise_at(0), relax_order=cfg.relax_order,
                       generator=self.generator, quant=cfg.quant, temperature=self.temperature_at(0, 0))
        mask.k = self.kept_at(grouping.n, k, 0)
        return mask

    # ----------------------------------------------------------------- schedule
    def temperature_at(self, epoch: int, step: int) -> float:
        """The relaxation temperature at ``epoch`` (or after ``step`` steps when stepping per step)."""
        cfg = self.config
        if cfg.temperature_every == "step":
            return linear(0, self.horizon.total_steps, cfg.temperature_start, cfg.temperature_end)(step)
        return linear(0, max(self.horizon.epochs - 1, 1), cfg.temperature_start, cfg.temperature_end)(epoch)

    @property
    def fix_step(self) -> int | None:
        """The step count from which the masks are fixed (None with ``fix_fraction=0``)."""
        if self.config.fix_fraction == 0:
            return None
        total = self.horizon.total_steps
        return total - max(1, round(self.config.fix_fraction * total))

    def noise_at(self, step: int) -> float:
        """Gumbel noise scale of the step after ``step`` steps: η, falling linearly to 0 at :attr:`fix_step`."""
        fix = self.fix_step
        if fix is None:
            return self.noise_scale
        stretch = self.horizon.total_steps - fix
        return linear(fix - stretch, fix, self.noise_scale, 0.0)(step)

    @property
    def ramp_steps(self) -> int:
        """Steps over which the kept count falls from n to k (0: k from the first step)."""
        return round(self.config.ramp_end * self.horizon.total_steps)

    def kept_at(self, n: int, k: int, step: int) -> int:
        """Kept count per group of ``n`` after ``step`` steps on the way to ``k``: the pruned count
        follows gmp's cubic ``(n - k) (1 - (1 - t)^3)``, so most units go early, while the network
        can still recover, and the last ones slowly."""
        ramp = self.ramp_steps
        if ramp == 0 or step >= ramp:
            return k
        return n - round((n - k) * polynomial(0, ramp, 0.0, 1.0, 3.0)(step))

    def fixed_at(self, step: int) -> bool:
        """Whether the masks are fixed after ``step`` steps."""
        return self.fix_step is not None and step >= self.fix_step

    def _masks(self) -> list[DPPMask]:
        return [p for p in self.parametrizations.values() if isinstance(p, DPPMask)]

    @torch.no_grad()
    def _advance(self, step: int) -> None:
        """Noise for the next step; at the fix the logits freeze (the mask is then their top-k)."""
        noise, fixed = self.noise_at(step), self.fixed_at(step)
        for p in self._masks():
            p.noise_scale = noise
            p.k = self.kept_at(p.grouping.n, p.k_final, step)
            if fixed:
                p.logits.requires_grad_(False)
                p.logits.grad = None
        self._fixed = fixed

    @torch.no_grad()
    def _push_temperature(self, value: float) -> None:
        for p in self._masks():
            p.temperature.fill_(value)

    def on_epoch_start(self, epoch: int) -> None:
        self._push_temperature(self.temperature_at(epoch, epoch * self.horizon.steps_per_epoch))
        self._advance(epoch * self.horizon.steps_per_epoch)

    def on_step(self, step: int) -> None:
        if self._logit_optimizer is not None and not self._fixed:
            scale = self.lr_scale if self.config.logit_lr_schedule == "run" else 1.0
            for group in self._logit_optimizer.param_groups:
                group["lr"] = self.logit_lr * scale
            self._logit_optimizer.step()
            # Clear the logits' gradients here: a user's optimizer may not hold them (no accumulation).
            self._logit_optimizer.zero_grad(set_to_none=True)
        self._advance(step)
        if self.config.temperature_every == "step":
            self._push_temperature(self.temperature_at(step // self.horizon.steps_per_epoch, step))

    def penalty(self) -> Tensor | None:
        mu = self.config.entropy_weight
        mu = default_entropy_weight(self.config.granularity) if mu is None else mu
        masks = self._masks()
        if mu == 0 or not masks or self._fixed:
            return None
        return mu * torch.stack([p.entropy().sum() for p in masks]).sum()

    def mask_param_groups(self) -> list[dict[str, Any]]:
        groups = super().mask_param_groups()
        if self._logit_optimizer is not None:
            # The method's own Adam steps the logits (in on_step); the run's optimizer holds them
            # with lr 0 only so that its zero_grad and gradient clipping see them.
            lr: float | None = 0.0
        else:
            lr = self.config.logit_lr
        if lr is not None:
            for g in groups:
                g["lr"] = lr
        return groups

    # ----------------------------------------------------------------- metrics and artifacts
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        logs = epoch_metrics(self, epoch)
        last = (epoch + 1) * self.horizon.steps_per_epoch - 1
        logs["dpp_noise_scale"] = self.noise_at(last)
        logs["dpp_fixed"] = float(self._fixed)
        if self._logit_optimizer is not None:
            logs["dpp_logit_lr"] = float(self._logit_optimizer.param_groups[0]["lr"])
        self.history.setdefault("epoch", []).append(float(epoch + 1))
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        return logs

    def save_artifacts(self, run_dir: Path) -> list[Path]:
        return write_artifacts(self, Path(run_dir))

    def report_extras(self) -> dict[str, Any]:
        return report_fields(self)

    # ----------------------------------------------------------------- finalize and state
    def finalize(self, squash: bool = True) -> MaskSet:
        """Hard masks; with ``squash`` bake masks (and the quantization, when on) into the weights."""
        deployed: dict[str, Tensor] = {}
        if squash and self.config.quant is not None:
            with torch.no_grad():
                deployed = {n: p.deployed(w) for n, p, w in self.weights() if isinstance(p, DPPMask)}
        model = self.model
        masks = super().finalize(squash)
        if model is not None:
            with torch.no_grad():
                for name, value in deployed.items():
                    model.get_parameter(name).copy_(value)
        return masks

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"history": {k: list(v) for k, v in self.history.items()}}
        if self._logit_optimizer is not None:
            state["logit_optimizer"] = self._logit_optimizer.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.history = {k: [float(x) for x in v] for k, v in state.get("history", {}).items()}
        if self._logit_optimizer is not None and "logit_optimizer" in state:
            self._logit_optimizer.load_state_dict(state["logit_optimizer"])

    def non_target_parameter_count(self) -> int:
        """Parameters of the model outside the pruned weights (mask logits excluded)."""
        assert self.model is not None
        names = {t.name for t in self.targets}
        return sum(p.numel() for n, p in self.model.named_parameters()
                   if (o := original_name(n)) is not None and o not in names)
