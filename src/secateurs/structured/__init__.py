"""Structural compaction: coupled channel groups, physical removal, and portable shrunk models.

The entry points::

    groups = coupled_channel_groups(model, example_input)     # which channels go together
    result = shrink(model, masks, example_input, round_to=8)  # a smaller model, same outputs
    save_shrunk(result.model, result.spec, "out/")            # arch.json + model.safetensors
    model = load_shrunk("out/")                               # also secateurs.load_shrunk("out/")

torch-pruning (which traces the dependencies) is imported only when a graph is built.
"""

from secateurs.structured.graph import ChannelGraph, coupled_channel_groups
from secateurs.structured.groups import ChannelGroup, GroupMember, group_filter_masks
from secateurs.structured.load import apply_spec_, load_shrunk, save_shrunk
from secateurs.structured.plan import GroupPlan, RemovalPlan, plan_removal
from secateurs.structured.predict import (
    SizePrediction,
    predict_from_masks,
    predict_shrunk_size,
    reference_model,
    zero_dead_channels_,
)
from secateurs.structured.shrink import ShrinkError, ShrinkResult, shrink
from secateurs.structured.spec import ArchSpec, SpecGroup

__all__ = [
    "ArchSpec",
    "ChannelGraph",
    "ChannelGroup",
    "GroupMember",
    "GroupPlan",
    "RemovalPlan",
    "ShrinkError",
    "ShrinkResult",
    "SizePrediction",
    "SpecGroup",
    "apply_spec_",
    "coupled_channel_groups",
    "group_filter_masks",
    "load_shrunk",
    "plan_removal",
    "predict_from_masks",
    "predict_shrunk_size",
    "reference_model",
    "save_shrunk",
    "shrink",
    "zero_dead_channels_",
]
