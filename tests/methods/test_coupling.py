"""Filter masks on coupled channel groups: one decision per group, so shrinking changes nothing.

The model has a residual stream (stem + block output added), a plain block channel and a head, and
batch norms with non-zero shifts and running statistics, as a trained network has: a per-layer
filter mask would leave the norms' shifts on pruned channels and residual partners unpruned.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateurs.core.targets import select_targets
from secateurs.methods import METHODS, Horizon, build_method
from secateurs.structured import coupled_channel_groups, shrink

from ._loop import run
from .test_contract import WHOLE_NETWORK

EPOCHS = 3
SPARSITY = 0.5
METHOD_KWARGS: dict[str, dict] = {
    "magnitude": {"prune_at": 0.5},
    "lottery": {"rounds": 2, "rewind_fraction": 0.0},
    "gmp": {"end": 0.75},
    "dpp": {"metric_samples": 8},
}


class ResidualNet(nn.Module):
    """stem -> [c1 -> c2] + stem -> c3 -> fc: channel group {stem, c2} (residual), {c1}, {c3}."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(y + self.b2(self.c2(torch.relu(self.b1(self.c1(y))))))
        y = torch.relu(self.b3(self.c3(y)))
        return self.fc(y.mean((2, 3)))


def make_net(seed: int = 0) -> ResidualNet:
    torch.manual_seed(seed)
    net = ResidualNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # trained-looking norms: shifts that survive a zero filter
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.5)
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture
def batches():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(2)]


def groups_of(net: nn.Module):
    return coupled_channel_groups(net, torch.zeros(1, 3, 8, 8))


def prune(name: str, batches, *, seed: int = 0, stop_epoch: int | None = None, **kwargs):
    net = make_net()
    method = build_method(name, **{**METHOD_KWARGS.get(name, {}), "sparsity": SPARSITY, "granularity": "filter",
                                   "seed": seed, **kwargs})
    targets = select_targets(net, include_first=True)
    run(method, net, batches, EPOCHS, pretrained=True, targets=targets, channel_groups=groups_of(net),
        stop_epoch=stop_epoch)
    return method, net


@pytest.mark.parametrize("name", [m for m in METHODS.names() if m not in WHOLE_NETWORK])
def test_every_method_prunes_coupled_channels_together_and_shrinks_exactly(name, batches):
    method, net = prune(name, batches)
    assert sorted(method.shared_groups) == ["c1.weight", "c2.weight", "c3.weight"]  # the {stem, c2} group is keyed by c2
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        masked = net(x)
    masks = method.finalize()
    stem, c2 = masks["stem.weight"].mask, masks["c2.weight"].mask
    assert torch.equal(stem, c2), "residual partners must lose the same channels"
    for name_ in ("stem.weight", "c1.weight", "c3.weight"):
        assert int((~masks[name_].mask).sum()) == masks[name_].mask.numel() // 2
    with torch.no_grad():
        squashed = net(x)
        assert torch.equal(net.bn0.weight[~stem], torch.zeros(4)) and torch.equal(net.b2.bias[~c2], torch.zeros(4))
    torch.testing.assert_close(squashed, masked, rtol=0, atol=1e-6)
    result = shrink(net, masks, x[:1])
    assert result.plan.masked_channels == 0, "every pruned channel is removable"
    assert result.model.stem.out_channels == 4 and result.model.c3.out_channels == 6
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked, rtol=0, atol=1e-5)


def test_per_layer_masks_without_channel_groups_leave_partners_unpruned(batches):
    """The contrast: the old per-layer behaviour, which the groups replace."""
    net = make_net()
    method = build_method("magnitude", sparsity=SPARSITY, granularity="filter", prune_at=0.5)
    run(method, net, batches, EPOCHS, pretrained=True, targets=select_targets(net, include_first=True))
    assert method.shared_groups == {}
    masks = method.finalize()
    assert not torch.equal(masks["stem.weight"].mask, masks["c2.weight"].mask)
    assert shrink(net, masks, torch.zeros(1, 3, 8, 8)).plan.masked_channels > 0


def test_coupled_false_keeps_one_mask_per_layer(batches):
    method, _ = prune("magnitude", batches, coupled=False)
    assert method.shared_groups == {} and "stem.weight" in method.parametrizations


@pytest.mark.parametrize("name", ["dpp", "gibbs"])
def test_stochastic_masks_draw_once_per_forward_pass(name, batches):
    # From a trained model DPP trains at the deterministic top-k by default; the draws need its noise.
    method, net = prune(name, batches, stop_epoch=1, **({"noise_scale": 0.1} if name == "dpp" else {}))
    net.train()
    seen = []

    def read_weights(module, args, output):  # inside the pass: the shared draw
        seen.append((net.stem.weight.detach().clone(), net.c2.weight.detach().clone(), net.b2.weight.detach().clone()))

    handle = net.fc.register_forward_hook(read_weights)
    for _ in range(6):
        net(torch.randn(2, 3, 8, 8))
    handle.remove()
    patterns = set()
    for stem, c2, bn in seen:
        stem_off = stem.flatten(1).abs().sum(1) == 0
        c2_off = c2.flatten(1).abs().sum(1) == 0
        if name == "dpp":  # exact k-of-n channel draws, shared by every tensor of the group
            assert torch.equal(stem_off, c2_off) and torch.equal(stem_off, bn == 0)
            assert int(stem_off.sum()) == 4
        else:  # one per-weight draw over the group weight; the norm follows the channel's majority
            zeros = (stem.flatten(1) == 0).sum(1) + (c2.flatten(1) == 0).sum(1)
            assert torch.equal(bn == 0, zeros > (stem[0].numel() + c2[0].numel()) / 2)
        patterns.add(tuple(stem_off.tolist()) + tuple(c2_off.tolist()))
    if name == "dpp":
        assert len(patterns) > 1, "a new draw per pass"


def test_group_mask_state_is_stored_once_and_resumes(batches):
    method, net = prune("cs", batches, stop_epoch=2)
    state = copy.deepcopy({"model": net.state_dict(), "method": method.state_dict()})
    scores = [k for k in state["model"] if k.endswith("group_mask.scores")]
    assert len(scores) == 3 and all(".parametrizations.weight.0.group_mask." in k for k in scores)

    full_method, full_net = prune("cs", batches)
    resumed_net = make_net(seed=7)
    resumed = build_method("cs", sparsity=SPARSITY, granularity="filter")
    resumed.attach(resumed_net, select_targets(resumed_net, include_first=True),
                   Horizon(EPOCHS, len(batches), pretrained=True), channel_groups=groups_of(resumed_net))
    resumed_net.load_state_dict(state["model"])
    resumed.load_state_dict(state["method"])
    run(resumed, resumed_net, batches, EPOCHS, pretrained=True, attach=False, start_epoch=2)
    a, b = resumed.hard_masks(), full_method.hard_masks()
    assert list(a) == list(b) and all(torch.equal(a[n].mask, b[n].mask) for n in a)
    for k, v in full_net.state_dict().items():
        torch.testing.assert_close(resumed_net.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_global_scope_counts_every_weight_of_a_channel(batches):
    method, net = prune("magnitude", batches, scope="global")
    masks = method.finalize()
    pruned = sum(int((~m.full()).sum()) for m in masks.values())
    total = sum(m.mask.numel() * m.granularity.unit_size(m.weight_shape) for m in masks.values())
    assert abs(pruned / total - SPARSITY) < 0.1


class ConcatGroupedNet(nn.Module):
    """A concatenation normalised by one batch norm (two groups share its tensors) and a grouped
    convolution (its groups need equal widths: channels are pruned in matching pairs)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 8, 1, bias=False)
        self.bnc = nn.BatchNorm2d(8)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bng = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        y = torch.relu(self.bn(torch.cat([a, torch.relu(self.b(a))], 1)))
        y = torch.relu(self.bnc(self.c(y)))
        y = torch.relu(self.bng(self.g(y)))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("name", ["magnitude", "gibbs", "dpp", "cs"])
def test_shared_norms_and_grouped_convolutions_shrink_exactly(name, batches):
    torch.manual_seed(0)
    net = ConcatGroupedNet()
    with torch.no_grad():
        for m in (net.bn, net.bnc, net.bng):
            m.bias.normal_(0.0, 0.5)
            m.running_mean.normal_(0.0, 0.5)
    groups = coupled_channel_groups(net, torch.zeros(1, 3, 8, 8))
    method = build_method(name, **{**METHOD_KWARGS.get(name, {}), "sparsity": SPARSITY, "granularity": "filter"})
    run(method, net, batches, EPOCHS, pretrained=True, targets=select_targets(net, include_first=True),
        channel_groups=groups)
    ties = {key: tie for key, (tie, _) in method.shared_groups.items()}
    assert set(ties) >= {"a.weight", "b.weight"}, "a norm shared by two groups does not stop either"
    assert ties["c.weight"].chunks == 2 and ties["g.weight"].chunks == 2, "a grouped convolution ties pairs"
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        masked = net(x)
    masks = method.finalize()
    result = shrink(net, masks, x[:1])
    assert result.plan.masked_channels == 0
    assert result.model.g.out_channels == 4 and result.model.g.in_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked, rtol=0, atol=1e-5)


def test_cs_group_gate_starts_dense_and_keeps_its_rescale_off_the_norms(batches):
    """CS gates are σ(βs)/σ(s0): 1 at the start. Its factor 1/σ(s0) belongs on the filters only; on
    the batch norms after them it would multiply through the depth of the network."""
    net = make_net()
    dense = copy.deepcopy(net).train()
    # Constant scores: the magnitude start of a trained model (the default with --from) is only about dense.
    method = build_method("cs", sparsity=SPARSITY, granularity="filter", score_init="constant")
    method.attach(net, select_targets(net, include_first=True), Horizon(EPOCHS, 2, pretrained=True),
                  channel_groups=groups_of(net))
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(net.train()(x), dense(x), rtol=0, atol=1e-6)
    gate = method.parametrizations["c1.weight"]
    with torch.no_grad():
        gate.scores.fill_(5.0)  # every channel kept: filters gated by about 1/σ(0) = 2, norms by 1
        gate.beta.fill_(50.0)
        assert torch.allclose(net.c1.weight, net.c1.parametrizations.weight.original * 2)
        assert torch.equal(net.b1.weight, net.b1.parametrizations.weight.original)


def test_a_switch_given_as_text_is_a_usage_error():
    from secateurs.errors import UsageError

    with pytest.raises(UsageError, match="coupled must be true or false"):
        build_method("magnitude", sparsity=0.5, granularity="filter", coupled="maybe")


def test_a_deep_copy_draws_its_own_shared_mask_per_pass(batches):
    """EMA or evaluation copies are common: the copy's hooks must bracket the copy's gates."""
    method, net = prune("dpp", batches, stop_epoch=1)
    twin = copy.deepcopy(net).train()
    seen = []
    handle = twin.fc.register_forward_hook(
        lambda module, args, output: seen.append((twin.stem.weight.detach().clone(), twin.c2.weight.detach().clone())))
    for _ in range(4):
        twin(torch.randn(2, 3, 8, 8))
    handle.remove()
    for stem, c2 in seen:
        assert torch.equal(stem.flatten(1).abs().sum(1) == 0, c2.flatten(1).abs().sum(1) == 0)


class MixedDepthwiseConv(nn.Module):
    """Input split at fixed sizes (kept in ``splits``, as timm's MixedConv2d) into a depthwise 3x3
    and a depthwise 5x5 convolution, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.dw3 = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.dw5 = nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False)
        self.splits = [4, 6]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, self.splits, 1)
        return torch.cat([self.dw3(a), self.dw5(b)], 1)


class MixedDepthwise(nn.Module):
    """stem -> mixed depthwise -> pointwise -> fc: the stem's channels are produced again by two
    depthwise parts, each holding some of them (MixNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10)
        self.mixed, self.bn1 = MixedDepthwiseConv(), nn.BatchNorm2d(10)
        self.pw = nn.Conv2d(10, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.mixed(torch.relu(self.bn0(self.stem(x))))))
        return self.fc(torch.relu(self.pw(y)).mean((2, 3)))


@pytest.mark.parametrize("name", ["magnitude", "gibbs"])
def test_the_parts_of_a_mixed_convolution_share_their_group_mask(name, batches):
    torch.manual_seed(0)
    net = MixedDepthwise()
    method = build_method(name, **{**METHOD_KWARGS.get(name, {}), "sparsity": SPARSITY, "granularity": "filter"})
    run(method, net, batches, EPOCHS, pretrained=True, targets=select_targets(net, include_first=True),
        channel_groups=groups_of(net))
    # torch-pruning roots the stem's channels at the two parts: the stem's rows go to both groups
    assert {"mixed.dw3.weight", "mixed.dw5.weight"} <= set(method.shared_groups)
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        masked = net(x)
    masks = method.finalize()
    result = shrink(net, masks, x[:1])
    assert result.plan.masked_channels == 0 and result.model.stem.out_channels == 5
    mixed = result.model.mixed
    assert mixed.splits == [mixed.dw3.in_channels, mixed.dw5.in_channels] and sum(mixed.splits) == 5
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked, rtol=0, atol=1e-5)
