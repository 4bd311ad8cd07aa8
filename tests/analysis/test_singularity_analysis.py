"""The singularity analysis (spec crl_singularity.md, section B.6): singular filters lower the
effective count, pivoted QR finds them, the Gram is exact however it is accumulated, residual groups
stack their matrices, and the size of the shrunk model is the shrinker's own prediction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.analysis.singularity import (
    Criterion,
    analyse_units,
    analysis_units,
    collect_grams,
    estimate_network,
    removal_counts,
    spectrum,
)
from secateurs.analysis.singularity.compensate import compensate_consumers_
from secateurs.analysis.singularity.gram import consumer_weight_norms
from secateurs.analysis.singularity.selection import cap_counts, find_alpha
from secateurs.analysis.singularity.sizes import ShrunkSize
from secateurs.analysis.singularity.spectrum import effective_filters
from secateurs.core.targets import select_targets
from secateurs.errors import UsageError
from secateurs.structured import coupled_channel_groups, group_filter_masks, plan_removal, predict_shrunk_size

NUMERICAL = Criterion("numerical", epsilon=1e-6)


def _trained_looking(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.2, 0.3)
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


class Plain(nn.Module):
    """conv1 (6 filters) -> conv2 (8) -> pooled linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return self.fc(y.mean((2, 3)))


class Residual(nn.Module):
    """stem -> [c1 -> c2] + stem -> c3 -> fc: the {stem, c2} group is read by c1 and by c3."""

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


def _net(cls, seed=0):
    torch.manual_seed(seed)
    return _trained_looking(cls())


def _images(n=48, seed=1):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _estimate(net, criterion=NUMERICAL, positions=64):
    groups = coupled_channel_groups(net, torch.zeros(1, 3, 8, 8))
    targets = select_targets(net, include_first=True)
    return estimate_network(net, groups, targets, _images(), criterion=criterion, positions=positions)


def _unit(estimate, key):
    return next(e for e in estimate.units if e.unit.key == key)


def test_duplicated_filter_lowers_r_by_one_and_qr_removes_a_copy():
    net = _net(Plain)
    assert _unit(_estimate(net), "conv1.weight").effective == 6
    with torch.no_grad():  # filter 4 becomes a copy of filter 1, batch norm included
        net.conv1.weight[4] = net.conv1.weight[1]
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(net.bn1, name)[4] = getattr(net.bn1, name)[1]
    unit = _unit(_estimate(net), "conv1.weight")
    assert unit.effective == 5
    order = unit.order()
    assert sorted(order) == list(range(6)) and order[-1] in (1, 4)


def test_zeroed_consumer_weights_lower_r():
    net = _net(Plain)
    with torch.no_grad():
        net.conv2.weight[:, 2] = 0.0  # channel 2 of conv1 is computed but never read
    unit = _unit(_estimate(net), "conv1.weight")
    assert unit.effective == 5
    assert unit.order()[-1] == 2


def test_removed_count_is_monotone_in_alpha_and_caps_hold_up_to_one():
    g = torch.Generator().manual_seed(0)
    caps = []
    for _ in range(20):
        n = int(torch.randint(2, 40, (1,), generator=g))
        r = int(torch.randint(0, n + 1, (1,), generator=g))
        caps.append(cap_counts(n, r, n, 0.1))
    previous = [0] * len(caps)
    for step in range(201):
        alpha = 2.0 * step / 200
        counts = removal_counts(caps, alpha)
        assert all(a >= b for a, b in zip(counts, previous))
        assert all(k <= most for k, (_, most) in zip(counts, caps))
        if alpha <= 1.0:
            assert all(k <= cap for k, (cap, _) in zip(counts, caps))
        previous = counts
    assert removal_counts(caps, 1.0) == [cap for cap, _ in caps]
    assert removal_counts(caps, 2.0) == [most for _, most in caps]
    assert find_alpha(lambda a: sum(removal_counts(caps, a)) >= 10**6) is None


def test_gram_accumulated_in_chunks_equals_one_shot():
    net = _net(Residual)
    groups = coupled_channel_groups(net, torch.zeros(1, 3, 8, 8))
    units, _ = analysis_units(net, groups, select_targets(net, include_first=True))
    images = _images()

    def grams(batch):  # 16 of 64 positions sampled per image: the draw must not depend on the batch
        return collect_grams(net, units, images, batch_size=batch, positions=16,
                             generator=torch.Generator().manual_seed(5))

    for one, chunked in zip(grams(len(images)), grams(5)):
        assert one.rows == chunked.rows > 0
        for a, b in zip(one.tensors, chunked.tensors):
            assert a.consumers == b.consumers
            torch.testing.assert_close(a.gram, b.gram, rtol=1e-12, atol=1e-12)


def test_residual_group_estimate_equals_the_stacked_matrix():
    net = _net(Residual)
    estimate = _estimate(net, Criterion("energy", tau=0.99))
    unit = _unit(estimate, "c2.weight")
    assert sorted(m.param for m in unit.unit.group.producers) == ["c2.weight", "stem.weight"]
    assert sorted(r.module for r in unit.unit.consumers) == ["c1", "c3"]
    captured = {}
    hooks = [getattr(net, m).register_forward_pre_hook(lambda mod, args, m=m: captured.__setitem__(m, args[0].clone()))
             for m in ("c1", "c3")]
    with torch.no_grad():
        net(_images())
    for h in hooks:
        h.remove()
    blocks = []
    for module in ("c1", "c3"):  # every position of every image: the matrix itself, row-stacked
        z = captured[module].permute(0, 2, 3, 1).reshape(-1, 8).double()
        omega = getattr(net, module).weight.detach().double().pow(2).sum((0, 2, 3)).sqrt()
        blocks.append(z * omega)
    stacked = torch.cat(blocks)
    gram = stacked.T @ stacked / stacked.shape[0]
    torch.testing.assert_close(unit.gram, gram, rtol=1e-10, atol=1e-12)
    singular = torch.linalg.svdvals(stacked / stacked.shape[0] ** 0.5)
    torch.testing.assert_close(unit.eigenvalues, singular.pow(2), rtol=1e-8, atol=1e-10)
    assert unit.effective == effective_filters(singular.pow(2), Criterion("energy", tau=0.99), stacked.shape[0])


def test_shared_input_rows_are_counted_once_with_summed_consumer_norms():
    """A block's first conv and its projection shortcut read one tensor: one set of rows."""

    class Projection(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.bn0 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
            self.a, self.bn_a = nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.proj, self.bn_p = nn.Conv2d(6, 8, 1, bias=False), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            y = torch.relu(self.bn0(self.stem(x)))
            y = torch.relu(self.bn_a(self.a(y)) + self.bn_p(self.proj(y)))
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    net = _trained_looking(Projection())
    estimate = _estimate(net)
    unit = _unit(estimate, "stem.weight")
    groups = coupled_channel_groups(net, torch.zeros(1, 3, 8, 8))
    units, _ = analysis_units(net, groups, select_targets(net, include_first=True))
    stem = next(u for u in units if u.key == "stem.weight")
    (gram,) = collect_grams(net, [stem], _images(), positions=64)
    assert len(gram.tensors) == 1 and sorted(gram.tensors[0].consumers) == [0, 1]
    norms = consumer_weight_norms(net, stem)
    omega = (norms[0] + norms[1]).sqrt()
    expected = omega[:, None] * gram.tensors[0].gram * omega[None, :] / gram.rows
    torch.testing.assert_close(unit.gram, expected)


def test_shrunk_size_matches_the_shrinker_prediction():
    net = _net(Residual)
    example = torch.zeros(1, 3, 8, 8)
    groups = coupled_channel_groups(net, example)
    units, _ = analysis_units(net, groups, select_targets(net, include_first=True))
    sizes = ShrunkSize(net, units, example)
    for removed in ([0] * len(units), [1, 2, 3][: len(units)], [u.channels - 1 for u in units]):
        keep = {}
        for unit, k in zip(units, removed):
            vector = torch.ones(unit.channels, dtype=torch.bool)
            vector[unit.channels - k:] = False
            keep[unit.group.root] = vector
        masks = group_filter_masks(net, groups, keep)
        predicted = predict_shrunk_size(net, groups, plan_removal(groups, masks), example)
        assert sizes.counts(removed) == (predicted.params_after, predicted.macs_after)


def test_compensation_makes_removing_a_duplicate_exact():
    net = _net(Plain)
    with torch.no_grad():
        net.conv1.weight[4] = net.conv1.weight[1]
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(net.bn1, name)[4] = getattr(net.bn1, name)[1]
    x = _images(8, seed=9)
    with torch.no_grad():
        reference = net(x)
    groups = coupled_channel_groups(net, torch.zeros(1, 3, 8, 8))
    units, _ = analysis_units(net, groups, select_targets(net, include_first=True))
    grams = collect_grams(net, units, _images(), positions=64)
    unit = next(e for e in analyse_units(net, grams, NUMERICAL) if e.unit.key == "conv1.weight")
    keep = torch.ones(6, dtype=torch.bool)
    keep[unit.order()[-1]] = False
    removed = int(torch.nonzero(~keep))

    def without_channel(model):
        with torch.no_grad():
            for tensor in (model.conv1.weight, model.bn1.weight, model.bn1.bias):
                tensor[removed] = 0.0
            return model(x)

    import copy

    plain = without_channel(copy.deepcopy(net))
    assert (plain - reference).abs().max() > 1e-2  # removing a copy alone changes the outputs
    assert compensate_consumers_(net, unit, keep) == 1
    torch.testing.assert_close(without_channel(net), reference, rtol=1e-3, atol=1e-3)


def test_criteria():
    values = torch.tensor([10.0, 5.0, 1.0, 1e-9, 0.0], dtype=torch.float64)
    assert effective_filters(values, Criterion("energy", tau=0.9), 100) == 2
    assert effective_filters(values, Criterion("energy", tau=1.0), 100) == 4
    assert effective_filters(values, Criterion("numerical", epsilon=1e-3), 100) == 3
    assert 1 <= effective_filters(values, Criterion("effective"), 100) <= 3
    assert effective_filters(torch.zeros(3, dtype=torch.float64), Criterion(), 10) == 0
    noisy = spectrum(torch.diag(torch.tensor([100.0, 90.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)))
    assert effective_filters(noisy, Criterion("gavish-donoho"), 1000) == 2
    with pytest.raises(UsageError):
        Criterion("median")
    with pytest.raises(UsageError):
        Criterion(tau=1.5)
