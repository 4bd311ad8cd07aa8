"""Residual streams of hierarchical transformers and modern convnets shrink exactly.

Each test builds a tiny plain-PyTorch model with one pattern that used to block (or refuse) the
residual-stream group of a timm family, and holds the shrunk model to the masked reference: equal
outputs, the predicted size, and the stream's channels actually gone.
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.metrics import count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink

from ._helpers import group_masks, outputs, randomize_, squash_


def _shrunk_equals_reference(model: nn.Module, x: torch.Tensor, stream_param: str) -> tuple:
    """Prune 40 % of every removable group, shrink, check equality and size; return (result, stream group)."""
    groups = coupled_channel_groups(model, x[:1])
    stream = next(g for g in groups if any(m.param == stream_param for m in g.members))
    assert stream.removable and stream.exact, stream.blocker
    masks = group_masks(model, groups, prune=0.4)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert not result.refused, result.refused
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after
    removed = next(p for p in result.plan.groups if p.root == stream.root).removed
    assert removed
    return result, stream, removed


class _LayerScaleBlock(nn.Module):
    """ConvNeXt / MetaFormer style: the branch is scaled per channel by ``gamma.reshape(1, -1, 1, 1)``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.fc1, self.fc2 = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, c, 1)
        self.gamma = nn.Parameter(torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.dw(x)))) * self.gamma.reshape(1, -1, 1, 1)


class _LayerScaleNet(nn.Module):
    def __init__(self, c: int = 12) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(_LayerScaleBlock(c), _LayerScaleBlock(c))
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_layer_scale_reshaped_for_broadcasting_is_cut_with_the_stream():
    torch.manual_seed(0)
    model = randomize_(_LayerScaleNet())
    result, stream, removed = _shrunk_equals_reference(model, torch.randn(2, 3, 8, 8), "blocks.0.gamma")
    assert {m.param for m in stream.members} >= {"blocks.0.gamma", "blocks.1.gamma", "stem.weight"}
    assert result.model.blocks[1].gamma.shape == (12 - len(removed),) == (result.model.stem.out_channels,)


class _GroupNormAct(nn.GroupNorm):
    """A fused norm and activation, as timm's GroupNormAct: the masked norm must apply ``act`` too."""

    def __init__(self, groups: int, channels: int) -> None:
        super().__init__(groups, channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class _Scale(nn.Module):
    """MetaFormer's layer scale: the vector is viewed at a shape stored when the model was built."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.shape = (c, 1, 1)
        self.scale = nn.Parameter(torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


class _PoolFormerNet(nn.Module):
    """PoolFormerV2 style: GroupNorm(1) (all channels and positions of a sample; one without bias, as
    timm's GroupNorm1NoBias) on the residual stream, layer scales with a stored view shape, and a
    GroupNorm with 2 groups, fused with its activation, on the MLP's hidden channels."""

    def __init__(self, c: int = 12) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.norm1, self.norm2 = nn.GroupNorm(1, c), nn.GroupNorm(1, c)
        self.norm2.bias = None
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.fc1, self.fc2 = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, c, 1)
        self.mid = _GroupNormAct(2, 2 * c)
        self.scale1, self.scale2 = _Scale(c), _Scale(c)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.norm1(x)
        x = x + self.scale1(self.pool(y) - y)
        x = x + self.scale2(self.fc2(self.mid(self.fc1(self.norm2(x)))))
        return self.head(x.mean((2, 3)))


def test_group_norms_and_stored_view_shapes_shrink_exactly_with_the_stream():
    torch.manual_seed(0)
    model = randomize_(_PoolFormerNet())
    groups = coupled_channel_groups(model, torch.randn(1, 3, 8, 8))
    hidden = next(g for g in groups if g.root == "fc1")
    assert hidden.chunks == 2 and hidden.norms == ("mid",) and hidden.removable and hidden.exact
    result, stream, removed = _shrunk_equals_reference(model, torch.randn(2, 3, 8, 8), "norm1.weight")
    assert set(stream.norms) == {"norm1", "norm2"}
    assert result.model.norm2.num_channels == 12 - len(removed) == result.model.fc2.out_channels
    assert result.model.norm2.bias is None and result.model.scale2.shape == (12 - len(removed), 1, 1)
    kept_hidden = result.model.fc1.out_channels
    assert kept_hidden < 24 and result.model.mid.num_channels == kept_hidden and kept_hidden % 2 == 0


class _ResponseNorm(nn.Module):
    """ConvNeXt-V2's global response norm (channels first): each channel's norm over the positions is
    divided by the mean over the channels, a statistic that removing channels changes."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.eps, self.spatial_dim, self.channel_dim, self.wb_shape = 1e-6, (2, 3), 1, (1, -1, 1, 1)
        self.weight, self.bias = nn.Parameter(torch.zeros(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n)


class _ResponseNormNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.fc1, self.grn, self.fc2 = nn.Conv2d(c, 3 * c, 1), _ResponseNorm(3 * c), nn.Conv2d(3 * c, c, 1)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.fc2(self.grn(torch.nn.functional.gelu(self.fc1(x))))
        return self.head(x.mean((2, 3)))


def test_global_response_norm_takes_its_channel_mean_over_the_kept_channels():
    torch.manual_seed(0)
    model = randomize_(_ResponseNormNet())
    result, hidden, removed = _shrunk_equals_reference(model, torch.randn(2, 3, 8, 8), "grn.weight")
    assert hidden.root == "fc1" and hidden.norms == ("grn",)
    assert result.model.grn.weight.shape == (24 - len(removed),) == (result.model.fc2.in_channels,)


class _InputWidthAttention(nn.Module):
    """ConViT / CaiT / DaViT style: the head width is the input width over the heads (nothing stored).

    ``layout`` picks the projections: ``"qkv"`` (one fused projection, explicit scale), ``"qk+v"``
    (GPSA's pair, the fused kernel's default scale) or ``"qkv-dims"`` (NesT: the heads' outputs
    concatenated dimension by dimension).
    """

    def __init__(self, c: int, heads: int, layout: str) -> None:
        super().__init__()
        self.num_heads, self.layout, self.scale = heads, layout, (c // heads) ** -0.5
        if layout == "qk+v":
            self.qk, self.v = nn.Linear(c, 2 * c), nn.Linear(c, c)
        else:
            self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        if self.layout == "qk+v":
            q, k = self.qk(x).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
            v = self.v(x).reshape(b, n, h, c // h).transpose(1, 2)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
            y = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
        if self.layout == "qkv-dims":
            return self.proj(y.permute(0, 2, 3, 1).reshape(b, n, c))
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class _InputWidthViT(nn.Module):
    def __init__(self, c: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, c, 4, 4)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for _ in range(4))
        self.attns = nn.ModuleList(_InputWidthAttention(c, heads, layout) for layout in ("qkv", "qk+v", "qkv-dims"))
        self.fc1, self.fc2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        for norm, attn in zip(self.norms, self.attns, strict=False):
            x = x + attn(norm(x))
        x = x + self.fc2(torch.relu(self.fc1(self.norms[-1](x))))
        return self.head(x.mean(1))


def test_attention_whose_head_width_is_its_input_width_shrinks_with_the_stream():
    from secateurs.metrics import count_macs

    torch.manual_seed(0)
    model = randomize_(_InputWidthViT())
    x = torch.randn(2, 3, 8, 8)
    result, stream, removed = _shrunk_equals_reference(model, x, "attns.0.qkv.weight")
    assert stream.chunks % 2 == 0 and {("attns.0.qkv.weight", 0), ("attns.1.qk.weight", 0)} <= set(stream.params)
    assert not any(g.root.startswith("attns.") for g in result.groups)  # the per-projection groups are in the stream's
    kept = 16 - len(removed)
    shrunk = result.model
    assert shrunk.attns[0].qkv.out_features == 3 * kept and shrunk.attns[1].v.out_features == kept
    assert shrunk.attns[1].qk.out_features == 2 * kept and shrunk.attns[2].proj.in_features == kept
    assert count_macs(shrunk, x[:1]).dense == result.prediction.macs_after


def test_a_fresh_model_is_cut_to_a_saved_stream_attention_shape(tmp_path):
    from secateurs.structured import load_shrunk, save_shrunk

    torch.manual_seed(0)
    model = randomize_(_InputWidthViT())
    x = torch.randn(2, 3, 8, 8)
    result, _, _ = _shrunk_equals_reference(model, x, "attns.0.qkv.weight")
    save_shrunk(result.model, result.spec, tmp_path)
    fresh = _InputWidthViT()  # other weights: the coupling must be found again on them
    nn.init.zeros_(fresh.attns[0].proj.weight)
    loaded = load_shrunk(tmp_path, model=fresh)
    torch.testing.assert_close(outputs(loaded, x), outputs(result.model, x))


class _InterleavedAttention(nn.Module):
    """TinyViT / LeViT style: widths stored, q, k and v interleaved per head. Its attributes look like
    a stream attention's, but its head width does not follow the stream: it must not be coupled."""

    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.key_dim = heads, c // heads
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, self.num_heads, 3, self.key_dim).permute(3, 0, 2, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, self.num_heads * self.key_dim))


def test_an_attention_that_only_looks_like_one_following_the_stream_is_left_alone():
    torch.manual_seed(0)
    model = _InputWidthViT()
    model.attns = nn.ModuleList([_InterleavedAttention(16, 2) for _ in range(3)])
    randomize_(model)
    result, stream, _ = _shrunk_equals_reference(model, torch.randn(2, 3, 8, 8), "attns.0.qkv.weight")
    assert ("attns.0.qkv.weight", 0) not in stream.params and result.model.attns[0].qkv.out_features == 48


class _LSTMMixer(nn.Module):
    """Sequencer style: a bidirectional LSTM mixes the tokens, reading the residual stream."""

    def __init__(self, c: int = 12, hidden: int = 6) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, c, 4, 4)
        self.norm = nn.LayerNorm(c)
        self.rnn = nn.LSTM(c, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, c)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.fc(self.rnn(self.norm(x))[0])
        return self.head(x.mean(1))


def test_an_lstm_reading_the_stream_loses_the_input_columns_of_its_removed_channels():
    torch.manual_seed(0)
    model = randomize_(_LSTMMixer())
    result, _, removed = _shrunk_equals_reference(model, torch.randn(2, 3, 8, 8), "rnn.weight_ih_l0")
    rnn = result.model.rnn
    assert rnn.input_size == 12 - len(removed) == rnn.weight_ih_l0.shape[1] == rnn.weight_ih_l0_reverse.shape[1]
