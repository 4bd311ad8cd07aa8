"""Importing secateurs stays lean: no CUDA initialisation, no optional extras."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import secateurs, secateurs.cli.main, secateurs.experiment
import torch
heavy = [m for m in ("torchvision", "matplotlib", "onnx", "onnxruntime", "torch_pruning", "lightning") if m in sys.modules]
assert not heavy, heavy
assert not torch.cuda.is_initialized()
print("ok", secateurs.__version__)
"""


def test_import_is_lean():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_version_has_one_source():
    import secateurs
    from secateurs._version import __version__

    assert secateurs.__version__ == __version__
