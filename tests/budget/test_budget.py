"""Budget parsing (errors are usage errors, exit 2) and each cost against hand counts."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from secateurs.budget import Subject, parse_budget, resolve_cost
from secateurs.cli.main import main
from secateurs.core.granularity import Filter, Unstructured
from secateurs.core.masks import MaskSet
from secateurs.errors import UsageError


def test_parse_absolute_percent_and_multiple():
    b = parse_budget("params<=20000")
    assert (b.cost, b.value, b.relative, b.limit(1e9)) == ("params", 20000, False, 20000)
    b = parse_budget(" macs <= 25% ")
    assert b.relative and b.limit(400.0) == pytest.approx(100.0) and b.text == "macs<=25%"
    b = parse_budget("latency_ms[batch=64,threads=1]<=0.5x")
    assert b.option_dict() == {"batch": 64, "threads": 1} and b.limit(3.0) == pytest.approx(1.5)


@pytest.mark.parametrize("text, match", [
    ("macs<25%", "NAME<=VALUE"), ("macs<=", "NAME<=VALUE"), ("macs<=0", "positive"), ("flops<=10%", "unknown cost"),
    ("latency_ms[colour=red]<=1x", "no option"), ("no_such_module_xyz:f<=1", "cannot import"),
])
def test_bad_budgets_are_usage_errors(text, match):
    with pytest.raises(UsageError, match=match):
        parse_budget(text)


@pytest.mark.parametrize("argv", [
    ["--budget", "macs<<3"], ["--budget", "watts<=3"], ["--budget", "macs<=1%", "--sparsity", "0.5"],
    ["--budget", "params<=10"],  # cannot be met even at one unit per layer
])
def test_cli_budget_errors_exit_2(argv, tmp_path, capsys):
    code = main(["prune", "--model", "mlp", "--data", "synthetic", "--method", "magnitude", "--epochs", "1",
                 "--limit-train", "32", "--limit-test", "16", "--out", str(tmp_path / "run"), *argv])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing trained


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_params_and_macs_unstructured_by_hand():
    model = _mlp()
    x = torch.zeros(1, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, :3] = False
    mask[2, 0:2] = False  # 5 of 12 removed
    masks = MaskSet.from_masks({"0.weight": mask}, Unstructured(), {"0.weight": torch.Size((3, 4))})
    dense, pruned = Subject(model, None, x), Subject(model, masks, x)
    assert resolve_cost("params").measure(dense) == 4 * 3 + 3 + 3 * 2 + 2
    assert resolve_cost("params").measure(pruned) == 23 - 5
    assert resolve_cost("macs").measure(dense) == 12 + 6
    assert resolve_cost("macs").measure(pruned) == 7 + 6


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


def test_params_and_macs_of_shrunk_filter_model_by_hand():
    model = _ConvNet().eval()
    x = torch.randn(1, 1, 5, 5)
    keep = torch.tensor([True, False, True, False])  # 2 of conv1's 4 filters go
    masks = MaskSet.from_masks({"conv1.weight": keep}, Filter(), {"conv1.weight": torch.Size((4, 1, 3, 3))})
    with torch.no_grad():
        model.conv1.weight[~keep] = 0
    subject = Subject(model, masks, x)
    # conv1 2x1x3x3, bn 2+2, conv2 2x2x3x3 once the channels are removed
    assert resolve_cost("params").measure(subject) == 18 + 4 + 36
    assert resolve_cost("macs").measure(subject) == 25 * 18 + 25 * 36
    assert resolve_cost("params").measure(Subject(model, None, x)) == 36 + 8 + 72
    shrunk = subject.delivered
    assert shrunk.conv1.weight.shape[0] == 2 and shrunk.conv2.weight.shape[1] == 2
    assert resolve_cost("latency_ms", {"min_run_time": 0.01, "threads": 1}).measure(subject) > 0


def test_bytes_shrink_with_masks_and_user_cost(tmp_path, monkeypatch):
    model = nn.Sequential(nn.Linear(64, 64))
    x = torch.zeros(1, 64)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:, :4] = True
    dense = resolve_cost("bytes").measure(Subject(model, None, x))
    with torch.no_grad():
        model[0].weight[~mask] = 0
    masks = MaskSet.from_masks({"0.weight": mask}, Unstructured(), {"0.weight": torch.Size((64, 64))})
    sparse = resolve_cost("bytes").measure(Subject(model, masks, x))
    assert dense > 64 * 64 * 4 and sparse < dense / 4
    (tmp_path / "my_costs.py").write_text(
        "def nonzero(model):\n    return float(sum(int((p != 0).sum()) for p in model.parameters()))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_costs", None)
    b = parse_budget("my_costs:nonzero<=300")
    assert resolve_cost(b.cost).measure(Subject(model, masks, x)) == 64 * 4 + 64
