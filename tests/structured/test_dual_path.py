"""DPN's dual-path blocks shrink exactly: concatenations of slices mapped, the residual width followed.

Each block computes ``cat([x_s[:, :w] + out1, x_s[:, w:], out2])`` with the residual width ``w``
held in ``num_1x1_c``: the dense path's new channels (``out2``) go to the end, the residual path's
width shrinks with its channels. A tiny timm DPN of both block kinds ("b": the residual and dense
outputs from two convolutions; plain: from one, sliced at ``w``).
"""

from __future__ import annotations

import pytest
import torch

from secateurs.metrics import count_macs, count_params
from secateurs.structured import coupled_channel_groups, reference_model, shrink

from ._helpers import group_masks, outputs, randomize_, squash_

pytest.importorskip("timm")


@pytest.mark.filterwarnings("ignore:Maximum recursive depth")
@pytest.mark.parametrize("b", [True, False])
def test_dual_path_blocks_shrink_to_an_equal_model_of_the_predicted_size(b):
    from timm.models.dpn import DPN

    torch.manual_seed(0)
    model = randomize_(DPN(k_sec=(2, 2, 1, 1), inc_sec=(4, 8, 8, 8), k_r=16, groups=4, small=True,
                           num_init_features=8, b=b, num_classes=10).eval())
    x = torch.randn(2, 3, 32, 32)
    groups = coupled_channel_groups(model, x[:1])
    masks = group_masks(model, groups, prune=0.3)
    squash_(model, masks)
    result = shrink(model, masks, x[:1], groups=groups)
    assert result.plan.removed_channels > 0 and not result.refused
    widths = {n: m.num_1x1_c for n, m in result.model.named_modules() if hasattr(m, "num_1x1_c")}
    assert all(widths[n] < m.num_1x1_c for n, m in model.named_modules() if n in widths)
    expected = outputs(reference_model(model, result.groups, result.plan), x)
    assert expected.std() > 1e-3
    assert (outputs(result.model, x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    assert count_params(result.model) == result.prediction.params_after < count_params(model)
    assert count_macs(result.model, x[:1]).dense == result.prediction.macs_after
