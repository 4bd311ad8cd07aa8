"""Quantization: symmetric fake quantization with straight-through gradients, and integer export."""

from secateurs.quant.fake_quant import (
    QUANT_SCALES,
    QuantConfig,
    fake_quantize,
    integer_dtype,
    quant_scale,
    quantize_to_int,
)
from secateurs.quant.integer_export import LayerExport, export_layer, index_dtype, packed_size_bits, save_export

__all__ = [
    "QUANT_SCALES",
    "LayerExport",
    "QuantConfig",
    "export_layer",
    "fake_quantize",
    "index_dtype",
    "integer_dtype",
    "packed_size_bits",
    "quant_scale",
    "quantize_to_int",
    "save_export",
]
