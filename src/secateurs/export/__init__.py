"""Exports of pruned models: compressed sparse weights, ONNX, and 2:4 semi-structured GPU weights.

onnx, onnxruntime and the GPU kernels are optional and imported only inside the functions that use
them. Shrunk models (arch spec + safetensors) live in :mod:`secateurs.structured`.
"""

from secateurs.export.onnx_export import OnnxMismatchError, check_onnx, export_onnx
from secateurs.export.semi_structured import is_two_four, semi_structured_available, to_semi_structured_
from secateurs.export.sparse_format import (
    LAYOUTS,
    QuantizedWeight,
    SparseReport,
    load_sparse,
    quantize_symmetric,
    save_sparse,
)

__all__ = [
    "LAYOUTS",
    "OnnxMismatchError",
    "QuantizedWeight",
    "SparseReport",
    "check_onnx",
    "export_onnx",
    "is_two_four",
    "load_sparse",
    "quantize_symmetric",
    "save_sparse",
    "semi_structured_available",
    "to_semi_structured_",
]
