"""Which runs trace channel groups, and what happens when a model cannot be traced."""

from __future__ import annotations

import logging

import torch

import secateurs.structured as structured
from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.experiment.run import channel_groups_for
from secateurs.models import build_model


def _config(**options):
    return RunConfig(model="lenet5", data="synthetic", method="magnitude",
                     method_options={"sparsity": 0.5, **options})


def test_only_coupled_filter_runs_trace_groups():
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28)
    cpu = torch.device("cpu")
    assert channel_groups_for(_config(granularity="filter"), model, (1, 28, 28), cpu)
    assert channel_groups_for(_config(granularity="filter", coupled=False), model, (1, 28, 28), cpu) is None
    assert channel_groups_for(_config(), model, (1, 28, 28), cpu) is None
    assert _config(granularity="filter").select_targets(model)[0].name == "conv1.weight"
    assert _config().select_targets(model)[0].name == "conv2.weight"


def test_an_untraceable_model_falls_back_to_per_layer_masks_with_a_warning(monkeypatch, caplog):
    def refuse(model, example):
        raise UsageError("cannot trace Net for channel dependencies: dynamic control flow")

    monkeypatch.setattr(structured, "coupled_channel_groups", refuse)
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28)
    with caplog.at_level(logging.WARNING):
        assert channel_groups_for(_config(granularity="filter"), model, (1, 28, 28), torch.device("cpu")) is None
    assert "filter masks stay per layer" in caplog.text
