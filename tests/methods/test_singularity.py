"""The ``singularity`` method: coupled groups pruned under the estimated caps, shrinking exactly,
rounds that revert when validation accuracy falls, and checkpoints that resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from secateurs.core.targets import select_targets
from secateurs.errors import UsageError
from secateurs.methods import Horizon, build_method
from secateurs.structured import coupled_channel_groups, shrink

from ._loop import run


class ResidualNet(nn.Module):
    """stem -> [c1 -> c2] + stem -> c3 -> fc: groups {stem, c2}, {c1}, {c3}."""

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
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.5)
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture
def batches():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(2)]


def _method(sparsity: float, **options):
    method = build_method("singularity", sparsity=sparsity, **{"calibration": 32, **options})
    method.set_calibration(torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(4)))
    return method


def _prune(method, batches, epochs=2, net=None, **kwargs):
    net = net or make_net()
    run(method, net, batches, epochs, pretrained=True, targets=select_targets(net, include_first=True),
        channel_groups=coupled_channel_groups(net, torch.zeros(1, 3, 8, 8)), **kwargs)
    return net


def _removed(method) -> dict[str, int]:
    return {key: int((~p.mask).sum()) for key, p in method.parametrizations.items() if key in method.shared_groups}


def test_prunes_coupled_groups_within_caps_and_shrinks_exactly(batches):
    method = _method(0.3)
    net = _prune(method, batches)
    assert sorted(method.shared_groups) == ["c1.weight", "c2.weight", "c3.weight"]
    (first,) = method.rounds_log  # the target is met in round 1: no further round
    assert not first["target_beyond_estimate"]
    assert first["sparsity_after"] >= 0.3
    for layer in first["layers"]:
        floor = max(1, math.ceil(0.1 * layer["channels"]))  # kappa: the minimum keep
        assert layer["removed"] <= layer["cap"] == min(layer["live"] - layer["effective"], layer["live"] - floor)
        assert _removed(method)[layer["unit"]] == layer["removed"]
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        masked = net(x)
    masks = method.finalize()
    assert torch.equal(masks["stem.weight"].mask, masks["c2.weight"].mask)
    assert masks.sparsity() == pytest.approx(first["sparsity_after"])
    result = shrink(net, masks, x[:1])
    assert result.plan.masked_channels == 0 and result.plan.removed_channels == sum(_removed_counts(first))
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked, rtol=0, atol=1e-5)


def _removed_counts(entry):
    return [layer["removed"] for layer in entry["layers"]]


def test_target_beyond_the_estimate_is_flagged_and_caps_hold(batches):
    method = _method(0.95, rounds=1)
    _prune(method, batches, epochs=1)
    (entry,) = method.rounds_log
    assert entry["target_beyond_estimate"] and entry["alpha"] == 1.0
    assert _removed_counts(entry) == [layer["cap"] for layer in entry["layers"]]
    assert method.report_extras()["singularity"]["target_beyond_estimate"]
    # With the override, level 1 may go past the caps (down to the minimum keep).
    forced = _method(0.95, rounds=1, exceed_caps=True)
    _prune(forced, batches, epochs=1)
    assert sum(_removed_counts(forced.rounds_log[0])) > sum(_removed_counts(entry))


def test_later_round_that_loses_accuracy_is_reverted(batches):
    method = _method(0.95, rounds=3, kappa=0.0, tau=0.8)  # each round finds filters to remove
    # dense, round 1 pruned, after its fine-tuning, round 2 pruned, after its fine-tuning
    scripted = iter([90.0, 85.0, 89.8, 75.0, 70.0])
    method.val_loader = object()
    method._validate = lambda: next(scripted)  # type: ignore[method-assign]
    seen = {}

    def remember(index, step):
        seen[index] = {k: p.mask.clone() for k, p in method.parametrizations.items()}

    _prune(method, batches, epochs=3, on_phase_start=remember)
    assert [e["round"] for e in method.rounds_log] == [1, 2]
    assert method.rounds_log[1]["reverted"] and "reverted" in method.stopped
    for key, p in method.parametrizations.items():  # back to the network after round 1's fine-tuning
        assert torch.equal(p.mask, seen[0][key]), key
    assert sum(_removed_counts(method.rounds_log[1])) > 0


def test_checkpoint_round_trip_and_resume(batches, tmp_path):
    full = _method(0.5, rounds=2)
    full_net = _prune(full, batches, epochs=2)
    first = _method(0.5, rounds=2)
    net = _prune(first, batches, epochs=2, stop_epoch=1)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "method": first.state_dict()}, path)
    state = torch.load(path, weights_only=True)
    resumed = _method(0.5, rounds=2)
    resumed_net = make_net(7)
    run(resumed, resumed_net, batches, 2, pretrained=True, targets=select_targets(resumed_net, include_first=True),
        channel_groups=coupled_channel_groups(resumed_net, torch.zeros(1, 3, 8, 8)), stop_epoch=0)
    resumed_net.load_state_dict(state["model"])
    resumed.load_state_dict(state["method"])
    run(resumed, resumed_net, batches, 2, pretrained=True, attach=False, start_epoch=1)
    assert resumed.rounds_log == full.rounds_log
    for key, p in full.parametrizations.items():
        assert torch.equal(resumed.parametrizations[key].mask, p.mask), key
    for k, v in full_net.state_dict().items():
        torch.testing.assert_close(resumed_net.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_bad_configurations_are_usage_errors(batches):
    with pytest.raises(UsageError, match="filter"):
        build_method("singularity", sparsity=0.5, granularity="unstructured")
    with pytest.raises(UsageError, match="criterion"):
        build_method("singularity", sparsity=0.5, criterion="median")
    with pytest.raises(UsageError):
        build_method("singularity", sparsity=0.5, calibration=0)
    with pytest.raises(UsageError, match="coupled"):
        build_method("singularity", sparsity=0.5, coupled=False)
    method = build_method("singularity", sparsity=0.5)
    with pytest.raises(UsageError, match="channel groups"):
        method.attach(make_net(), horizon=Horizon(epochs=1, steps_per_epoch=1))
    no_data = build_method("singularity", sparsity=0.5)
    with pytest.raises(UsageError, match="calibration"):
        _prune(no_data, batches, epochs=1)
    assert copy.deepcopy(method.config) == method.config


def test_an_allocation_sets_the_total_that_level_one_spreads_under_the_caps(batches):
    method = _method(0.0)
    method.use_allocation({"c1.weight": 0.5})  # e.g. from --budget: 4 of c1's 8 filters
    _prune(method, batches, epochs=1)
    width = 8 * 9  # c1: 8 input channels x 3x3 per filter
    total = sum(p.numel() for n, p in make_net().named_parameters() if n.endswith("weight") and p.dim() == 4)
    assert method._target() == pytest.approx(4 * width / total)
    (entry,) = method.rounds_log
    assert entry["sparsity_after"] >= method._target() - 1e-12
    assert all(layer["removed"] <= layer["cap"] for layer in entry["layers"])
