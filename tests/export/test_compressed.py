"""The compressed model file: lossless round trips of every kind of run, lossy storage said, damage refused."""

from __future__ import annotations

import json

import pytest
import torch
from structured._helpers import random_filter_masks, randomize_, squash_

import secateurs as sc
from secateurs.cli.main import main
from secateurs.errors import DamagedFileError, UsageError
from secateurs.export.bitpack import packed_size
from secateurs.export.compressed import load_compressed, read_compressed, read_manifest, save_compressed
from secateurs.models import build_model
from secateurs.structured import shrink


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _assert_same_model(loaded, model, x):
    own = model.state_dict()
    assert loaded.state_dict().keys() == own.keys()
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == own[name].dtype and torch.equal(tensor, own[name]), name
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


@torch.no_grad()
def _prune_(model, keep_of):
    """Zero weights of every 2-d+ parameter with ``keep_of(weight) -> bool mask``."""
    for p in model.parameters():
        if p.dim() >= 2:
            p.mul_(keep_of(p))
    return model


@pytest.fixture
def make_cnn(tiny_cnn):
    """Fresh TinyCNNs (the suite's conftest model) for one input channel and five classes."""
    def make():
        torch.manual_seed(0)
        return type(tiny_cnn)(in_channels=1, classes=5)
    return make


@pytest.fixture
def cnn(make_cnn):
    return randomize_(make_cnn())


def _unstructured(w, density=0.1):
    return w.abs() >= w.abs().flatten().quantile(1 - density)


def _two_of_four(w):
    groups = w.reshape(-1, 4).abs()
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(2, dim=1).indices, True)
    return keep.reshape(w.shape)


X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("keep_of", [_unstructured, _two_of_four], ids=["unstructured", "2:4"])
def test_pruned_float_model_round_trips_bit_for_bit(tmp_path, keep_of, cnn, make_cnn):
    model = _prune_(cnn, keep_of)
    report = save_compressed(model, tmp_path / "m.cmp.safetensors")
    assert not report.lossy and report.bytes_on_disk < report.bytes_dense_fp32
    _assert_same_model(load_compressed(tmp_path / "m.cmp.safetensors", model=make_cnn()),
                       model, X)


def test_shrunk_filter_model_rebuilds_from_the_file_alone(tmp_path):
    info = {"name": "lenet5", "in_channels": 1, "num_classes": 10, "image_size": [28, 28]}
    model = randomize_(build_model("lenet5", in_channels=1, num_classes=10, image_size=28))
    masks = random_filter_masks(model, keep=0.5, seed=2)
    squash_(model, masks)
    result = shrink(model, masks, torch.randn(1, 1, 28, 28), model_info=info)
    assert result.plan.removed_channels > 0
    save_compressed(result.model, tmp_path / "s.cmp.safetensors", model_info=info, arch=result.spec.to_dict())
    loaded = sc.load_compressed(tmp_path / "s.cmp.safetensors")  # zoo entry + architecture spec from the header
    _assert_same_model(loaded, result.model, torch.randn(2, 1, 28, 28))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantized_dpp_run_is_stored_as_packed_codes_and_reloads_exactly(tmp_path, bits, make_cnn):
    model = make_cnn()
    method = sc.build_method("dpp", sparsity=0.75, quant_bits=bits)
    method.attach(model, horizon=sc.Horizon(1, 2))
    model.train()(X).sum().backward()  # one step of the joint quantization
    method.finalize()
    report = save_compressed(model, tmp_path / "q.cmp.safetensors", model_info=None)
    assert not report.lossy
    records = read_manifest(tmp_path / "q.cmp.safetensors")[0]["tensors"]
    for target in method.targets:
        entry, record = report.tensors[target.name], records[target.name]
        # codes of a b-bit grid take b bits each (1 bit for ternary), packed back to back
        assert entry["values"] == f"int{record['q']}" and record["q"] <= bits and entry["code_bits"] <= bits
        assert record["l"][1] == packed_size(record["n"], record["b"])
    _assert_same_model(load_compressed(tmp_path / "q.cmp.safetensors", model=make_cnn()),
                       model, X)


@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_lossy_float_storage_is_stated_and_close(tmp_path, storage, cnn, make_cnn):
    model = _prune_(cnn, _unstructured)
    exact = save_compressed(model, tmp_path / "a.safetensors")
    lossy = save_compressed(model, tmp_path / "b.safetensors", float_storage=storage)
    assert lossy.lossy and lossy.bytes_on_disk < exact.bytes_on_disk
    assert json.loads(json.dumps(lossy.to_dict()))["lossless"] is False
    loaded = load_compressed(tmp_path / "b.safetensors", model=make_cnn())
    diff = (_outputs(loaded, X) - _outputs(model, X)).abs().max()
    assert 0 < diff < 0.1


@pytest.mark.parametrize("codec", ["lzma", "zstd", "none"])
def test_file_grows_with_density_and_bits(tmp_path, codec):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 256, generator=g)
    order = torch.rand(64, 256, generator=g)
    sizes = {}
    for density in (0.02, 0.1, 0.4):
        for bits in (1, 2, 4, 8):
            w = sc.quant.fake_quantize(weight * (order < density), sc.quant.QuantConfig(bits))
            path = tmp_path / f"{density}-{bits}.safetensors"
            sizes[density, bits] = save_compressed({"w": w}, path, codec=codec).bytes_on_disk
            assert torch.equal(read_compressed(path)["w"], w)
    for bits in (1, 2, 4, 8):
        assert sizes[0.02, bits] < sizes[0.1, bits] < sizes[0.4, bits]
    for density in (0.02, 0.1, 0.4):
        # 1- and 2-bit grids are both ternary once the zeros are positions: the same size
        assert sizes[density, 2] <= sizes[density, 1] * 1.05
        assert sizes[density, 2] < sizes[density, 4] < sizes[density, 8]


def _damage(path, at, byte=0xFF):
    data = bytearray(path.read_bytes())
    data[at] ^= byte
    path.write_bytes(bytes(data))


def test_damaged_or_foreign_files_are_refused(tmp_path, capsys, cnn, make_cnn):
    model = _prune_(cnn, _unstructured)
    path = tmp_path / "m.cmp.safetensors"
    save_compressed(model, path)
    size = path.stat().st_size
    _damage(path, size - 10)  # a bit flipped in the payload: the checksum says so
    with pytest.raises(DamagedFileError, match="damaged"):
        load_compressed(path, model=make_cnn())
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "damaged" in err and "Traceback" not in err
    save_compressed(model, path)
    path.write_bytes(path.read_bytes()[: size // 2])  # truncated
    with pytest.raises(DamagedFileError):
        read_compressed(path)
    sc.utils.io.save_safetensors({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(UsageError, match="not a secateurs compressed model"):
        read_manifest(tmp_path / "plain.safetensors")


def test_inspect_shows_the_bytes_of_a_compressed_file(tmp_path, capsys, cnn):
    model = _prune_(cnn, _unstructured)
    path = tmp_path / "m.cmp.safetensors"
    report = save_compressed(model, path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{report.bytes_on_disk:,} on disk" in out and "conv1.weight" in out and "lossless" in out
