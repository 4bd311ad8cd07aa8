"""Damaged files for the bad-input table: a finished-looking run directory, weights and data, each
truncated or with a flipped bit. Written by hand (no training), so every row stays fast."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import torch

from secateurs.core.masks import MaskEntry, MaskSet
from secateurs.core.granularity import parse_granularity
from secateurs.experiment.config import RunConfig
from secateurs.models import build_model
from secateurs.utils.io import save_json, save_safetensors


def truncate(path: Path) -> None:
    """Keep the first half of the file (a copy cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bit(path: Path, *, at: float = 0.75) -> None:
    """Flip one bit at a fraction ``at`` of the file (past the header for the formats here)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def mlp_weights(path: Path) -> None:
    """The zoo mlp's weights on 1x28x28 inputs and 10 classes (what ``--model mlp --data synthetic`` builds)."""
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=28)
    save_safetensors(model.state_dict(), path)


def pruned_run(run: Path) -> None:
    """A finished gmp run of mlp on synthetic data, as ``secateurs prune`` leaves it (without training)."""
    run.mkdir(parents=True)
    RunConfig.from_dict({"model": "mlp", "data": "synthetic", "method": "gmp",
                         "method_options": {"sparsity": 0.5, "granularity": "filter"}}).save(run / "config.yaml")
    mlp_weights(run / "model.safetensors")
    gran = parse_granularity("filter")
    masks = {}
    for name, shape in (("features.1.weight", (300, 784)), ("features.3.weight", (100, 300))):
        mask = torch.ones(gran.unit_shape(torch.Size(shape)), dtype=torch.bool)
        mask[::2] = False
        masks[name] = MaskEntry(mask, gran, torch.Size(shape))
    MaskSet(masks).save(run / "masks.safetensors")
    save_json({"method": "gmp", "model": "mlp", "dataset": "synthetic", "layers": []}, run / "report.json")


def idx_files(directory: Path) -> None:
    """Four tiny gzipped MNIST-style IDX files (40 train, 20 test images)."""
    directory.mkdir(parents=True)
    for stem, shape in (("train-images-idx3-ubyte", (40, 28, 28)), ("train-labels-idx1-ubyte", (40,)),
                        ("t10k-images-idx3-ubyte", (20, 28, 28)), ("t10k-labels-idx1-ubyte", (20,))):
        n = 1
        for s in shape:
            n *= s
        body = bytes((i * 7) % 10 for i in range(n))
        header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        with gzip.open(directory / f"{stem}.gz", "wb") as f:
            f.write(header + body)


def damaged(prepare: Callable[[Path], None], target: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """A setup for the table: ``prepare(tmp)``, then damage ``tmp / target``."""

    def setup(tmp: Path) -> None:
        prepare(tmp)
        damage(tmp / target)

    return setup
