"""Coupled filter masks: one mask per channel group, shared by every tensor carrying its channels.

With the filter granularity, pruning output channel ``c`` of one convolution is only half the
story: a residual addition couples it to channel ``c`` of every other convolution added to it, and
the batch norm after each of them still adds its shift ``β − γμ/σ`` to a channel whose filter is
zero. A per-layer filter mask therefore leaves channels that cannot be removed physically, and a
shrunk model that differs from the masked one.

Here a method's mask state (scores, logits, a fixed mask...) is created once per coupled group,
over the group's channels, and the group's *group weight* (every producer's filters laid side by
side, one row per channel) stands in for the layer weight wherever the method reads one: magnitude
scores become group norms, Gibbs energies span all the group's filters, and budgets count every
weight of a channel. A :class:`SharedGateMask` on each tensor of the group (filters, biases,
normalisation scales and shifts) applies the shared gate at that tensor's channel positions, so the
masked model computes exactly what the shrunk model will.

Stochastic masks (Gibbs, DPP) must use the same draw in every tensor of a forward pass: the gate is
computed once per pass, between hooks on the model's own forward, and recomputed on any access
outside a pass.

Vocabulary: a *channel group* (:class:`~secateurs.structured.groups.ChannelGroup`, found by
:mod:`secateurs.structured.graph`) is channels coupled across tensors; a *shared group*
(:class:`SharedGroup`) is a channel group whose channels a method prunes with one mask; its
*shared gate* (:class:`SharedGate`) is computed once per pass and applied on every member tensor by
a :class:`SharedGateMask`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from secateurs.core.granularity import Filter
from secateurs.core.parametrize import MaskParametrization
from secateurs.core.targets import Target
from secateurs.structured.groups import ChannelGroup

__all__ = [
    "SharedGateMask", "SharedGate", "SharedGroup", "SharedMember", "install_pass_hooks", "plan_shared_groups", "remove_pass_hooks",
]


@dataclass(frozen=True)
class SharedMember:
    """One tensor dimension of a shared group.

    Attributes:
        param: Original parameter name.
        dim: Dimension along which the channels lie.
        unit_of: For each position along ``dim``, the unit (see :class:`SharedGroup`) of its channel, or
            ``-1`` when the position belongs to no channel of the group (it is left alone).
        slot_of: For each position, which of its unit's channels it holds (always 0 without chunks).
        columns: For producers (filter banks, dim 0), the slice of the group weight's columns that
            holds this tensor's filters; None for followers (biases, normalisation affine).
    """

    param: str
    dim: int
    unit_of: tuple[int, ...]
    slot_of: tuple[int, ...]
    columns: tuple[int, int] | None

    def spread(self, per_unit: Tensor) -> Tensor:
        """One value per position along ``dim``: its unit's entry of ``per_unit``, 1 (True) outside."""
        unit = torch.tensor(self.unit_of, dtype=torch.long, device=per_unit.device)
        padded = torch.cat([per_unit.reshape(-1), per_unit.new_ones(1)])
        return padded[torch.where(unit >= 0, unit, per_unit.numel())]


@dataclass(frozen=True)
class SharedGroup:
    """A coupled channel group whose channels a method prunes together.

    The method's unit is one channel, or, where a grouped convolution needs equal group widths
    (``chunks > 1``), the set of channels at the same offset in each of the ``chunks`` slices.

    Attributes:
        name: The method's key for the group: the root layer's weight name.
        units: Number of units (channels / chunks).
        chunks: Channels per unit.
        members: Every tensor dimension that carries the channels (producers first).
        width: Columns of the group weight (weight elements per unit over all producers; a producer
            holding only some units, as the parts of a mixed convolution, counts for every unit).
    """

    name: str
    units: int
    chunks: int
    members: tuple[SharedMember, ...]
    width: int

    @property
    def producers(self) -> tuple[SharedMember, ...]:
        """The filter banks, whose rows make up the group weight."""
        return tuple(m for m in self.members if m.columns is not None)

    @property
    def target(self) -> Target:
        """The group as the method sees it: a ``(units, width)`` weight named after the root."""
        return Target(self.name, torch.Size((self.units, self.width)))

    def rows(self, member: SharedMember) -> Tensor:
        """Positions along a producer's dim 0, ordered by unit, then slot."""
        unit = torch.tensor(member.unit_of, dtype=torch.long)
        key = unit * self.chunks + torch.tensor(member.slot_of, dtype=torch.long)
        positions = torch.nonzero(unit >= 0).flatten()
        return positions[torch.argsort(key[positions])]

    def held_units(self, member: SharedMember) -> Tensor | None:
        """For a producer holding only some units (one of a mixed convolution's parts), the unit of
        each of its :meth:`rows`; None for a producer holding every unit."""
        unit = torch.tensor(member.unit_of, dtype=torch.long)
        if int((unit >= 0).sum()) == self.units * self.chunks:
            return None
        return unit[self.rows(member)]

    def group_weight(self, tensors: Callable[[str], Tensor], rows: Sequence[Tensor] | None = None,
                     held: Sequence[Tensor | None] | None = None) -> Tensor:
        """``(units, width)``: each producer's filters of unit ``u`` flattened into row ``u`` (zeros
        where a producer does not hold the unit).

        Args:
            tensors: Maps a parameter name to its current (original, unmasked) tensor.
            rows: :meth:`rows` of every producer, already on the weights' device (computed if not given).
            held: :meth:`held_units` of every producer, on the weights' device (computed if not given).
        """
        parts = []
        for i, member in enumerate(self.producers):
            weight = tensors(member.param)
            index = rows[i] if rows is not None else self.rows(member).to(weight.device)
            units = held[i] if held is not None else self.held_units(member)
            part = weight.index_select(0, index)
            if units is None:
                parts.append(part.reshape(self.units, -1))
            else:
                full = part.new_zeros(self.units, part[0].numel())
                parts.append(full.index_copy(0, units.to(weight.device), part.reshape(len(index), -1)))
        return torch.cat(parts, dim=1)


def plan_shared_groups(groups: Sequence[ChannelGroup], targets: Sequence[Target],
              shapes: dict[str, torch.Size]) -> tuple[list[SharedGroup], list[Target]]:
    """Split the targets into coupled groups and the weights that keep a mask of their own.

    A channel group gets a shared mask when it can be removed physically and every producer is a target filter bank
    holding each channel once: then its channels are pruned together. Other targets keep per-layer
    masks (their channels are pruned in one layer and left as zeros by the shrinker where a coupled
    partner keeps them). Followers (biases, norms) may belong to several groups: a batch norm after
    a concatenation normalises the channels of every layer concatenated.

    Args:
        groups: From :func:`secateurs.structured.coupled_channel_groups`.
        targets: The weights the user asked to prune.
        shapes: Parameter name -> shape of every parameter of the model (original names).

    Returns:
        ``(shared groups, remaining targets)``.
    """
    target_names = {t.name for t in targets}
    shared_groups: list[SharedGroup] = []
    # Filter rows already given to a group, per filter bank: a bank may produce the channels of
    # several groups (a stem split into the parts of a mixed convolution), at different rows.
    taken: dict[str, set[int]] = {}
    for group in groups:
        shared = _shared_group(group, target_names, shapes)
        if shared is None:
            continue
        rows = {m.param: {i for i, u in enumerate(m.unit_of) if u >= 0} for m in shared.producers}
        if any(taken.get(param, set()) & positions for param, positions in rows.items()):
            continue
        for param, positions in rows.items():
            taken.setdefault(param, set()).update(positions)
        shared_groups.append(shared)
    return shared_groups, [t for t in targets if t.name not in taken]


def _shared_group(group: ChannelGroup, targets: set[str], shapes: dict[str, torch.Size]) -> SharedGroup | None:
    producers = group.producers
    if not group.removable or not producers or group.channels % group.chunks:
        return None
    if any(m.param not in targets or m.dim != 0 for m in producers):
        return None
    units = group.channels // group.chunks
    members: list[SharedMember] = []
    width = 0
    covered: set[int] = set()
    for member in (*producers, *(m for m in group.members if m.role == "out" and not m.producer)):
        if member.param not in shapes:
            return None
        size = shapes[member.param][member.dim]
        channel_of = [-1] * size
        for position, channel in zip(member.index, member.channel):
            position %= size  # a grouped convolution's input dimension repeats (see GroupMember.chunks)
            if channel_of[position] not in (-1, channel):
                return None
            channel_of[position] = channel
        columns = None
        if member.producer:
            held = [c for c in channel_of if c >= 0]
            # A producer holds each channel once: all of them, or (a part of a mixed convolution,
            # without chunks) some of them, the others' producers holding the rest.
            if len(held) != len(set(held)) or (len(held) != group.channels and group.chunks != 1):
                return None
            covered.update(held)
            per_row = shapes[member.param].numel() // size * group.chunks
            columns = (width, width + per_row)
            width += per_row
        members.append(SharedMember(member.param, member.dim,
                                  tuple(c % units if c >= 0 else -1 for c in channel_of),
                                  tuple(c // units if c >= 0 else 0 for c in channel_of), columns))
    if len(covered) != group.channels:
        return None  # a channel no filter bank produces cannot be pruned by the group's mask
    root = f"{group.root}.weight" if group.root else "weight"
    if root not in {m.param for m in members if m.columns is not None}:
        root = members[0].param
    return SharedGroup(root, units, group.chunks, tuple(members), width)


class SharedGate:
    """The gate of one shared group, computed once per forward pass of the model.

    Args:
        mask: The method's parametrization for the group (its units: see :class:`SharedGroup`).
        weight: Returns the current group weight.
        stand_in: Returns a tensor of the weights' dtype and device, given instead of the group weight
            to masks whose gate does not read it (``MaskParametrization.gate_reads_weight``): the
            training step then gathers no weights.
    """

    def __init__(self, mask: MaskParametrization, weight: Callable[[], Tensor], stand_in: Callable[[], Tensor]) -> None:
        self.mask = mask
        self.weight = weight
        self.stand_in = stand_in
        self.in_pass = False
        self._value: Tensor | None = None

    def gate(self) -> Tensor:
        """``(units,)`` unit gate, or ``(units, width)`` per-weight gate (Gibbs filter samples)."""
        if self.in_pass and self._value is not None:
            return self._value
        weight = self.weight() if self.mask.gate_reads_weight else self.stand_in()
        value = self.mask.channel_gate(weight.detach())
        if self.in_pass:
            self._value = value
        return value

    def hard(self) -> Tensor:
        """``(units,)`` boolean: the group's deterministic mask."""
        with torch.no_grad():
            return self.mask.hard_mask(self.weight().detach()).to(torch.bool).reshape(-1)

    def start_pass(self) -> None:
        """A forward pass of the model begins: the next access computes a fresh gate."""
        self.in_pass, self._value = True, None

    def end_pass(self) -> None:
        """The pass ended (or failed): drop the gate and its autograd graph."""
        self.in_pass, self._value = False, None


class SharedGateMask(MaskParametrization):
    """``tensor * gate`` with the gate of its shared group gathered at this tensor's channel positions.

    The parametrization on the root weight also owns the method's group mask (as the submodule
    ``group_mask``), so the model's state dict holds it exactly once.
    """

    unit_of: Tensor
    slot_of: Tensor

    def __init__(self, shared: SharedGate, member: SharedMember, shape: torch.Size, *, units: int, chunks: int,
                 owner: bool) -> None:
        super().__init__(Filter(), shape)
        self.dim = member.dim
        self.columns = member.columns
        self.units, self.chunks = units, chunks
        # Positions outside the group read the padding entry ``units``, whose gate is 1.
        unit_of = torch.tensor(member.unit_of, dtype=torch.long)
        self.register_buffer("unit_of", torch.where(unit_of >= 0, unit_of, units), persistent=False)
        self.register_buffer("slot_of", torch.tensor(member.slot_of, dtype=torch.long), persistent=False)
        object.__setattr__(self, "shared", shared)  # a plain reference: registered once, by the owner
        if owner:
            self.group_mask = shared.mask

    def _padded(self, unit_gate: Tensor) -> Tensor:
        return torch.cat([unit_gate.reshape(-1), unit_gate.new_ones(1)])[self.unit_of.to(unit_gate.device)]

    def _view(self, full: Tensor, like: Tensor) -> Tensor:
        view = [1] * like.dim()
        view[self.dim] = full.numel()
        return full.reshape(view)

    def _gather(self, gate: Tensor, like: Tensor) -> Tensor:
        """The gate at this tensor's positions, shaped to broadcast against ``like``."""
        if gate.dim() == 2 and self.columns is not None:  # per-weight gate: this producer's own columns
            block = gate[:, self.columns[0]:self.columns[1]].reshape(self.units, self.chunks, -1)
            block = torch.cat([block, block.new_ones(1, self.chunks, block.shape[2])])
            unit, slot = self.unit_of.to(gate.device), self.slot_of.to(gate.device)
            return block[unit, slot].reshape(like.shape)
        if gate.dim() == 2:  # a follower of a per-weight gate: on while most of the unit's weights are
            gate = (gate.float().mean(1) > 0.5).to(gate.dtype)
        if self.columns is None:
            gate = self.shared.mask.follower_gate(gate)
        return self._view(self._padded(gate), like)

    def unit_mask(self, weight: Tensor) -> Tensor:
        gate = self.shared.gate()
        return self._padded(gate.float().mean(1) if gate.dim() == 2 else gate)

    def hard_mask(self, weight: Tensor) -> Tensor:
        return self._padded(self.shared.hard().to(self.unit_of.device))

    def weight_mask(self, weight: Tensor) -> Tensor:
        return self._view(self.hard_mask(weight).to(weight.device), weight)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self._gather(self.shared.gate(), weight).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, units={self.units}, chunks={self.chunks}, owner={hasattr(self, 'group_mask')}"


#: Attribute of the model holding its shared gates, read by the pass hooks.
_GATES = "_secateurs_shared_gates"


def install_pass_hooks(model: nn.Module, gates: Sequence[SharedGate]) -> list[RemovableHandle]:
    """Hooks on the model's forward that bracket each pass for the shared gates.

    The hooks find the gates on the module they run for, not in a closure, so a ``copy.deepcopy`` of
    the model (its gates copied with it) brackets its own passes.
    """
    if not gates:
        return []
    object.__setattr__(model, _GATES, list(gates))
    return [model.register_forward_pre_hook(_start_pass), model.register_forward_hook(_end_pass, always_call=True)]


def remove_pass_hooks(model: nn.Module, handles: Sequence[RemovableHandle]) -> None:
    """Undo :func:`install_pass_hooks`."""
    for handle in handles:
        handle.remove()
    if _GATES in vars(model):
        delattr(model, _GATES)


def _start_pass(module: nn.Module, args: object) -> None:
    for gate in getattr(module, _GATES, ()):
        gate.start_pass()


def _end_pass(module: nn.Module, args: object, output: object) -> None:
    for gate in getattr(module, _GATES, ()):
        gate.end_pass()


# The names before one vocabulary for coupled channels ("shared group" for a channel group that
# shares one mask), kept for code written against them.
TiedGroup, TiedMember, CoupledFilterMask, plan_ties = SharedGroup, SharedMember, SharedGateMask, plan_shared_groups
