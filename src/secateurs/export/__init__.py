"""Exports of pruned models: the compressed model file, sparse weights, ONNX, 2:4 semi-structured GPU weights.

onnx, onnxruntime and the GPU kernels are optional and imported only inside the functions that use
them. Shrunk models (arch spec + safetensors) live in :mod:`secateurs.structured`.
"""

from secateurs.export.compressed import (
    COMPRESSED_FILE,
    CompressedReport,
    load_compressed,
    read_compressed,
    save_compressed,
)
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
    "COMPRESSED_FILE",
    "LAYOUTS",
    "CompressedReport",
    "OnnxMismatchError",
    "QuantizedWeight",
    "SparseReport",
    "check_onnx",
    "export_onnx",
    "is_two_four",
    "load_compressed",
    "load_sparse",
    "quantize_symmetric",
    "read_compressed",
    "save_compressed",
    "save_sparse",
    "semi_structured_available",
    "to_semi_structured_",
]
