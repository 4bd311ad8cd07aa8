"""The torch-pruning fixes: only inside ``patched``, and noticed when an upstream release changes them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from secateurs.structured import coupled_channel_groups
from secateurs.structured.tp_compat import CHECKED_VERSION, MAX_MAPPED_INDICES, IndexExplosionError, patched

tp = pytest.importorskip("torch_pruning")
MAPPING = tp.dependency.index_mapping


def upstream() -> tuple:
    shapes = tp.dependency.shape_infer
    return (MAPPING.update_concat_index_mapping, MAPPING.update_reshape_index_mapping,
            MAPPING._FlattenIndexMapping.__call__, MAPPING.update_split_index_mapping,
            MAPPING.update_slice_index_mapping, tp.dependency.graph.DependencyGraph.get_pruning_group,
            shapes.init_shape_information, shapes.infer_out_channels_recursively)


def test_the_fixes_were_checked_against_the_installed_torch_pruning():
    assert tp.__version__ == CHECKED_VERSION, (
        f"torch-pruning {tp.__version__} is installed; the fixes in secateurs.structured.tp_compat were checked "
        f"against {CHECKED_VERSION}: re-run the tests of the upstream behaviours below, drop the fixes they no "
        f"longer need, and update CHECKED_VERSION")


def test_torch_pruning_is_unchanged_outside_the_block(tiny_cnn):
    before, update = upstream(), MAPPING.update_index_mapping
    coupled_channel_groups(tiny_cnn, torch.randn(2, 3, 8, 8))  # builds a graph and walks every group
    assert upstream() == before and MAPPING.update_index_mapping is update  # derived once per walk, then restored
    with patched(tp):
        inside = upstream()
        with patched(tp):  # re-entrant: the inner block neither re-wraps nor restores
            assert upstream() == inside
        assert upstream() == inside
    assert all(a is not b for a, b in zip(inside, before))
    assert upstream() == before


def test_upstream_flatten_mapping_still_has_no_bound():
    """Fix 3 is needed while torch-pruning maps any number of indices; fails once upstream bounds it."""
    index = tp._helpers._HybridIndex(idx=0, root_idx=0)
    mapped = MAPPING._FlattenIndexMapping(stride=2 * MAX_MAPPED_INDICES)([index])
    assert len(mapped) == 2 * MAX_MAPPED_INDICES
    with patched(tp), pytest.raises(IndexExplosionError):
        MAPPING._FlattenIndexMapping(stride=2 * MAX_MAPPED_INDICES)([index])


@pytest.mark.parametrize("update", ["update_concat_index_mapping", "update_reshape_index_mapping"])
def test_upstream_index_mappings_still_fail_on_sizes_they_cannot_infer(update, monkeypatch):
    """Fixes 1 and 2 are needed while these raise where a size is unknown (0 or None); fail once they do not."""
    monkeypatch.setattr(tp.dependency.shape_infer, "infer_channels_between", lambda *a, **k: None)
    monkeypatch.setattr(tp.dependency.shape_infer, "infer_in_channels_recursively", lambda *a, **k: 0)
    monkeypatch.setattr(tp.dependency.shape_infer, "infer_out_channels_recursively", lambda *a, **k: 4)

    def node() -> SimpleNamespace:  # what the two functions read of a concat or reshape node
        out = object()
        return SimpleNamespace(
            type=tp.ops.OPTYPE.CONCAT if "concat" in update else tp.ops.OPTYPE.RESHAPE,
            grad_fn=SimpleNamespace(_saved_dim=1), module=SimpleNamespace(concat_sizes=None),
            inputs=[object(), object()], outputs=[out],
            dependencies=[SimpleNamespace(target=out, index_mapping=[None, None])])

    graph = SimpleNamespace(_2d_4d=True)
    with pytest.raises((ZeroDivisionError, TypeError)):
        getattr(MAPPING, update)(graph, node())
    marked = node()
    with patched(tp):
        getattr(MAPPING, update)(graph, marked)  # marked instead of raised
    assert marked._secateurs_unmapped


class Mixed(nn.Module):
    """A mixed convolution: its input split at fixed sizes, kept in ``splits`` (as timm's MixedConv2d)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(4, 5, 3, padding=1), nn.Conv2d(6, 5, 5, padding=2)
        self.splits = [4, 6]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(x, self.splits, 1)
        return torch.cat([self.c(p), self.d(q)], 1)


class SplitAfterConcat(nn.Module):
    """Two convolutions concatenated, then split at the same sizes into two others (MixNet):
    torch-pruning meets the split's consumers in the other order."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.mixed = Mixed()
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(self.mixed(y).mean((2, 3)))


def test_each_consumer_of_a_split_reads_its_own_slice_and_cuts_follow_the_new_offsets():
    from secateurs.structured import group_filter_masks, reference_model, shrink

    from ._helpers import outputs, randomize_, squash_

    model = randomize_(SplitAfterConcat())
    x = torch.randn(2, 3, 8, 8)
    groups = coupled_channel_groups(model, x[:1])
    readers = {g.root: [m.param for m in g.members if m.role == "in"] for g in groups}
    assert readers["a"] == ["mixed.c.weight"] and readers["b"] == ["mixed.d.weight"]
    # both groups cut, the first one shifting the second one's offsets in the concatenation and split
    keep = {"a": torch.tensor([True, False, True, False]), "b": torch.tensor([False, True, True, False, True, True])}
    masks = group_filter_masks(model, groups, keep)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert not result.refused and result.model.mixed.splits == [2, 4]
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    torch.testing.assert_close(outputs(result.model, x), expected, rtol=0, atol=1e-5)


class ChannelsLastSubsample(nn.Module):
    """Tokens (B, 16, 8) viewed as a 4x4 grid, every second row and column kept (LeViT's Subsample)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(3, 8), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        b, _, c = y.shape  # (B, 16, 8)
        y = y.view(b, 4, 4, c)[:, ::2, ::2].reshape(b, -1, c)
        return self.fc(self.b(y).mean(1))


def test_a_slice_of_rows_in_a_channels_last_tensor_keeps_every_channel():
    from secateurs.structured import group_filter_masks, reference_model, shrink

    from ._helpers import outputs, randomize_, squash_

    model = randomize_(ChannelsLastSubsample())
    x = torch.randn(2, 16, 3)
    groups = coupled_channel_groups(model, x[:1])
    (reader,) = [m for g in groups if g.root == "a" for m in g.members if m.role == "in"]
    assert reader.param == "b.weight" and sorted(reader.index) == list(range(8))  # not every second one
    masks = group_filter_masks(model, groups, {"a": torch.tensor([True, False] * 4)})
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert not result.refused and result.model.b.in_features == 4
    torch.testing.assert_close(outputs(result.model, x), outputs(reference_model(model, result.groups, result.plan), x),
                               rtol=0, atol=1e-5)


class TokenGlu(nn.Module):
    """Tokens with a position embedding (a 3-D free parameter), then a gated MLP that splits its hidden
    channels into two halves along the last dimension (EVA-02's SwiGLU: ``fc1(x).chunk(2, dim=-1)``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.pos = nn.Parameter(torch.randn(1, 4, 6))
        self.embed, self.fc1, self.fc2, self.head = nn.Linear(3, 6), nn.Linear(6, 10), nn.Linear(5, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x) + self.pos
        a, b = self.fc1(y).chunk(2, dim=self.dim)
        return self.head((y + self.fc2(a * torch.sigmoid(b))).mean(1))


@pytest.mark.filterwarnings("ignore:Unwrapped parameters")
@pytest.mark.parametrize("dim", [-1, 2])
def test_upstream_still_maps_no_channels_last_split(dim):
    """Fix 7 is needed while torch-pruning leaves such a split unmapped; fails once it maps it."""
    dg = tp.DependencyGraph().build_dependency(TokenGlu(dim), example_inputs=torch.randn(1, 4, 3))
    (split,) = [n for n in dg.module2node.values() if n.type == tp.ops.OPTYPE.SPLIT]
    mapped = split.enable_index_mapping and all(dep.index_mapping[0] is not None for dep in split.dependencies)
    assert not mapped


@pytest.mark.parametrize("dim", [-1, 2])
def test_a_channels_last_split_pairs_the_gated_halves_and_shrinks_exactly(dim):
    from secateurs.structured import group_filter_masks, reference_model, shrink

    from ._helpers import outputs, randomize_, squash_

    model = randomize_(TokenGlu(dim))
    x = torch.randn(2, 4, 3)
    groups = coupled_channel_groups(model, x[:1])
    (glu,) = [g for g in groups if g.root == "fc1"]
    # fc2 reads position c from channels c and c + 5: one removable group of two tied halves
    assert glu.removable and glu.chunks == 2
    (reader,) = [m for m in glu.members if m.role == "in"]
    assert reader.param == "fc2.weight" and sorted(reader.index) == list(range(5))
    masks = group_filter_masks(model, groups, {"fc1": torch.tensor([True, False, True, True, False] * 2)})
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert not result.refused
    assert (result.model.fc1.out_features, result.model.fc2.in_features) == (6, 3)
    torch.testing.assert_close(outputs(result.model, x), outputs(reference_model(model, result.groups, result.plan), x),
                               rtol=0, atol=1e-5)


class DualPath(nn.Module):
    """A dual-path block (DPN): the first 4 channels of the input are a residual path, the other 2 a
    dense path that a new convolution extends: ``cat([x[:, :4] + r(x), x[:, 4:], d(x)])``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.r, self.d, self.head = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 4, 1), nn.Conv2d(6, 2, 1), nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.cat([x[:, :4] + self.r(x), x[:, 4:], self.d(x)], 1))


def test_upstream_still_misreads_the_sizes_of_a_concatenation_of_slices():
    """Fix 9 is needed while torch-pruning sizes the slice ``x[:, 4:]`` as all of ``x`` and so leaves
    the concatenation unmapped; fails once it maps it."""
    dg = tp.DependencyGraph().build_dependency(DualPath(), example_inputs=torch.randn(1, 3, 4, 4))
    (cat,) = [n for n in dg.module2node.values() if n.type == tp.ops.OPTYPE.CONCAT]
    assert cat.module.concat_sizes != [4, 2, 2] and cat.module.offsets is None


def test_a_concatenation_of_slices_is_sized_from_autograd_and_maps_each_path_to_its_place():
    groups = {g.root: g for g in coupled_channel_groups(DualPath(), torch.randn(1, 3, 4, 4))}
    reads = {g: sorted(i for m in groups[g].members if m.param == "head.weight" for i in m.index) for g in ("d", "stem")}
    assert reads == {"d": [6, 7], "stem": list(range(6))}  # the dense path's new channels come last
    assert groups["d"].removable and "r.weight" not in {m.param for m in groups["d"].members}
