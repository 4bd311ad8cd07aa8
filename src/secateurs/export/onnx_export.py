"""ONNX export of a (shrunk) model, checked with onnxruntime.

onnx and onnxruntime are optional (``pip install secateurs[export]``) and imported only here, inside
the functions. The export uses torch's dynamo-based exporter when its ``onnxscript`` dependency is
installed and the TorchScript-based one otherwise; either way the batch dimension stays dynamic and
the file is checked by running it in onnxruntime against the PyTorch model.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import SecateursError, UsageError

__all__ = ["OnnxMismatchError", "check_onnx", "export_onnx"]


class OnnxMismatchError(SecateursError):
    """onnxruntime's outputs differ from PyTorch's."""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"ONNX export needs {module}; install it with `pip install secateurs[export]`")


def _inputs(example_input: Any) -> tuple[torch.Tensor, ...]:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def export_onnx(model: nn.Module, example_input: Any, path: str | Path, *, opset: int = 17) -> Path:
    """Export ``model`` (in eval mode) to an ONNX file with a dynamic batch dimension.

    Args:
        model: The model; its train/eval modes are restored afterwards.
        example_input: An input tensor (or a tuple of them) on the model's device.
        path: Output ``.onnx`` file.
        opset: ONNX opset version.

    Returns:
        ``path``.

    Raises:
        UsageError: If onnx is not installed.
    """
    _require("onnx")
    inputs = _inputs(example_input)
    names = [f"input{i}" if len(inputs) > 1 else "input" for i in range(len(inputs))]
    dynamic = {n: {0: "batch"} for n in names}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation on every call.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            buffer = io.BytesIO()
            torch.onnx.export(
                model, inputs, buffer, input_names=names, output_names=["output"], opset_version=opset,
                dynamic_axes=dynamic, dynamo=importlib.util.find_spec("onnxscript") is not None,
            )
        path.write_bytes(buffer.getvalue())
    finally:
        for module, training in modes:
            module.training = training
    return path


def check_onnx(path: str | Path, model: nn.Module, example_input: Any, *, atol: float = 1e-4) -> float:
    """Run the ONNX file in onnxruntime (CPU) and compare with the PyTorch model.

    Args:
        path: The ``.onnx`` file.
        model: The PyTorch model it was exported from.
        example_input: Input(s) to compare on.
        atol: Largest allowed difference, relative to ``max(1, |PyTorch output|)``.

    Returns:
        The largest absolute difference of the first output.

    Raises:
        UsageError: If onnx/onnxruntime is missing.
        OnnxMismatchError: If the difference exceeds the tolerance.
    """
    _require("onnx")
    _require("onnxruntime")
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    inputs = _inputs(example_input)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {arg.name: x.detach().cpu().numpy() for arg, x in zip(session.get_inputs(), inputs, strict=True)}
    got = torch.from_numpy(session.run(None, feed)[0])
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            expected = model(*inputs)
    finally:
        for module, training in modes:
            module.training = training
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    expected = expected.detach().cpu().float()
    if got.shape != expected.shape:
        raise OnnxMismatchError(f"onnxruntime output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
    diff = float((got.float() - expected).abs().max()) if got.numel() else 0.0
    if diff > atol * max(1.0, float(expected.abs().max())):
        raise OnnxMismatchError(f"onnxruntime differs from PyTorch by {diff:.3g}")
    return diff
