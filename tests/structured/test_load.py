"""Portable save/load: arch.json + model.safetensors rebuild the shrunk model from its class."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from secateurs.errors import UsageError
from secateurs.models import build_model
from secateurs.structured import ArchSpec, load_shrunk, save_shrunk, shrink

from ._helpers import outputs, random_filter_masks, randomize_, squash_

INFO = {"name": "resnet20", "in_channels": 1, "num_classes": 10, "image_size": [8, 8]}


@pytest.fixture(scope="module")
def shrunk_dir(tmp_path_factory):
    model = randomize_(build_model("resnet20", in_channels=1, num_classes=10, image_size=8))
    masks = random_filter_masks(model, keep=0.5, seed=2)
    squash_(model, masks)
    result = shrink(model, masks, torch.randn(1, 1, 8, 8), model_info=INFO)
    directory = tmp_path_factory.mktemp("shrunk")
    save_shrunk(result.model, result.spec, directory)
    return directory, result


def test_round_trip_reproduces_outputs(shrunk_dir):
    directory, result = shrunk_dir
    x = torch.randn(3, 1, 8, 8)
    loaded = load_shrunk(directory)
    assert (outputs(loaded, x) - outputs(result.model, x)).abs().max() == 0
    # Only JSON and safetensors on disk: nothing that unpickles.
    assert sorted(p.name for p in directory.iterdir()) == ["arch.json", "model.safetensors"]
    assert json.loads((directory / "arch.json").read_text())["model"] == INFO


def test_round_trip_into_a_user_supplied_instance(shrunk_dir):
    directory, result = shrunk_dir
    fresh = build_model("resnet20", in_channels=1, num_classes=10, image_size=8)
    loaded = load_shrunk(directory / "arch.json", model=fresh)
    assert loaded is fresh
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(outputs(loaded, x), outputs(result.model, x))


def test_reload_in_a_fresh_process(shrunk_dir):
    directory, result = shrunk_dir
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    torch.save(x, directory.parent / "x.pt")
    code = (
        "import sys, torch, secateurs; m = secateurs.load_shrunk(sys.argv[1]); "
        "x = torch.load(sys.argv[2], weights_only=True); "
        "torch.save(m(x).detach(), sys.argv[3])"
    )
    out = directory.parent / "y.pt"
    done = subprocess.run([sys.executable, "-c", code, str(directory), str(directory.parent / "x.pt"), str(out)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(out, weights_only=True), outputs(result.model, x))


def test_spec_for_another_class_is_a_usage_error(shrunk_dir):
    directory, _ = shrunk_dir
    with pytest.raises(UsageError, match="spec is for"):
        load_shrunk(directory, model=build_model("vgg16", in_channels=1, num_classes=10, image_size=8))


def test_spec_with_unknown_layer_or_channel_count_is_a_usage_error(shrunk_dir, tmp_path):
    directory, _ = shrunk_dir
    raw = json.loads((directory / "arch.json").read_text())
    raw["groups"][0]["root"] = "layer9.conv"
    (tmp_path / "arch.json").write_text(json.dumps(raw))
    with pytest.raises(UsageError, match="no layer 'layer9.conv'"):
        load_shrunk(tmp_path / "arch.json")
    raw = json.loads((directory / "arch.json").read_text())
    raw["groups"][0]["channels"] += 1
    raw["groups"][0]["keep"] = [0]
    (tmp_path / "arch.json").write_text(json.dumps(raw))
    with pytest.raises(UsageError, match="output channels"):
        load_shrunk(tmp_path / "arch.json")


def test_malformed_specs_are_usage_errors(tmp_path):
    (tmp_path / "arch.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        ArchSpec.load(tmp_path / "arch.json")
    (tmp_path / "arch.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(UsageError, match="not a secateurs architecture spec"):
        ArchSpec.load(tmp_path / "arch.json")
    with pytest.raises(UsageError, match="no shrunk model"):
        load_shrunk(tmp_path / "missing")


def test_spec_json_round_trip(shrunk_dir):
    _, result = shrunk_dir
    assert ArchSpec.from_dict(json.loads(json.dumps(result.spec.to_dict()))) == result.spec


@pytest.mark.parametrize(("target", "damage"), [
    ("arch.json", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),        # truncated
    ("arch.json", lambda p: p.write_text(p.read_text().replace('"keep"', '"kept"', 1))),        # a field renamed
    ("arch.json", lambda p: p.write_bytes(b"\xff" + p.read_bytes())),                            # not UTF-8
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),                        # truncated
    ("model.safetensors", lambda p: p.write_bytes(_flip(p.read_bytes()))),                       # a flipped bit
])
def test_damaged_files_raise_the_projects_own_error(shrunk_dir, tmp_path, target, damage):
    import secateurs
    from secateurs.errors import DamagedFileError

    directory, _ = shrunk_dir
    for path in directory.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    damage(tmp_path / target)
    with pytest.raises(DamagedFileError, match=f"{target}.*damaged|damaged"):
        secateurs.load_shrunk(tmp_path)


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[-10] ^= 0x01
    return bytes(out)
