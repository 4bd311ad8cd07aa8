"""The README's Python code runs as written, for every registered method, on tiny synthetic data.

A user copies the README's loop; if it breaks for some method (as it once did for CS and DPP, whose
mask state also shows up in ``model.parameters()``), this test fails before they find out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from secateurs.core.granularity import Unstructured
from secateurs.core.parametrize import find_parametrizations
from secateurs.methods import METHODS

from methods.test_contract import WHOLE_NETWORK  # procedures that also need channel groups and calibration data

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
#: The method name and granularity the README uses, replaced by each method's here.
BUILD = re.compile(r'sc\.build_method\("[^"]+"(.*?)granularity="[^"]+"')


def test_the_readme_has_a_loop_to_test():
    assert any(BUILD.search(block) for block in BLOCKS)


@pytest.mark.parametrize("name", [m for m in METHODS.names() if m not in WHOLE_NETWORK])
@pytest.mark.parametrize("block", [b for b in BLOCKS if BUILD.search(b)], ids=lambda b: "loop")
def test_readme_loop_runs_for_every_method(name, block, make_mlp, make_vector_batches, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the block saves its masks into the working directory
    kinds = METHODS.get(name).granularities  # the README's own granularity, where the method has it
    granularity = "unstructured" if Unstructured in kinds else kinds[0].kind
    code = BUILD.sub(lambda m: f'sc.build_method("{name}"{m.group(1)}granularity="{granularity}"', block)
    model = make_mlp(0)
    loader = make_vector_batches(n_batches=2)
    scope = {"model": model, "loader": loader, "epochs": 6}
    exec(compile(code, f"README.md ({name})", "exec"), scope)
    masks = scope["masks"]
    assert sorted(masks) == ["fc1.weight", "fc2.weight"]
    assert masks.sparsity() == pytest.approx(0.9, abs=0.05)
    assert (tmp_path / "masks.safetensors").is_file()
    assert not list(find_parametrizations(model))  # finalized: plain weights with the masks baked in
    for n in masks:
        weight = model.get_parameter(n)
        assert torch.equal(weight == 0, ~masks[n].full()) or bool((weight[~masks[n].full()] == 0).all())
