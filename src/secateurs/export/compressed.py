"""The compressed model file: every tensor packed to its real size, one entropy-coded stream, one reader.

``save_compressed(model, "model.cmp.safetensors")`` writes a safetensors file with one tensor,
``payload`` (uint8), entropy-coded (:mod:`secateurs.export.entropy`). Decoded, the payload is a JSON
index (one record per tensor in state-dict order, and how to build the model: a zoo entry and, for a
shrunk model, its architecture spec) followed by every tensor's sections
(:mod:`secateurs.export.compressed_tensor`: positions, bit-packed codes or raw values, scales). The
safetensors header holds a small JSON under ``secateurs.compressed`` (format, version, codec, decoded
size, index size) and the SHA-256 of the payload that :func:`secateurs.utils.io.read_safetensors`
checks. The index sits inside the coded payload because in a 5 kB model its ~1.5 kB of JSON would
otherwise be a third of the file. Nothing is unpickled when reading.

Lossless by default: integer-grid weights (quantized runs) are stored as their codes and scales and
come back bit for bit, other values in their own dtype. ``float_storage="fp16"`` or ``"int8"`` stores
float tensors that lie on no grid in fewer bits; the records say which (``x``) and the report lists them.

``load_compressed(path)`` (also ``secateurs.load_compressed``) rebuilds the model; ``read_compressed``
returns the state dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from secateurs.errors import DamagedFileError, UsageError
from secateurs.export.compressed_tensor import FLOAT_STORAGE, decode_tensor, encode_tensor
from secateurs.export.entropy import CODECS, compress, decompress
from secateurs.utils.state_fit import load_fitting_state

__all__ = ["COMPRESSED_FILE", "CompressedReport", "load_compressed", "read_compressed", "manifest_summary",
           "read_manifest", "save_compressed"]

#: File name of the compressed model in an export directory (``secateurs shrink --compress``).
COMPRESSED_FILE = "model.cmp.safetensors"
FORMAT = "secateurs.compressed"
VERSION = 1
_PAYLOAD = "payload"


@dataclass(frozen=True)
class CompressedReport:
    """What :func:`save_compressed` wrote.

    Attributes:
        bytes_on_disk: Size of the whole file (header, manifest, checksum, payload).
        bytes_dense_fp32: The same tensors stored densely in float32 (the reference of the ratio).
        bytes_packed: The tensors' sections before the entropy stage.
        codec: The entropy codec.
        tensors: Name -> position encoding, value storage, code bits and packed bytes.
        lossy: Names of the tensors stored with fewer bits than they had (empty when lossless).
    """

    bytes_on_disk: int
    bytes_dense_fp32: int
    bytes_packed: int
    codec: str
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    lossy: tuple[str, ...] = ()

    @property
    def compression(self) -> float:
        """Dense fp32 bytes / bytes on disk."""
        return self.bytes_dense_fp32 / max(self.bytes_on_disk, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for report.json."""
        return {"bytes_on_disk": self.bytes_on_disk, "bytes_dense_fp32": self.bytes_dense_fp32,
                "compression": round(self.compression, 2), "bytes_packed": self.bytes_packed, "codec": self.codec,
                "lossless": not self.lossy, "lossy_tensors": list(self.lossy), "tensors": self.tensors}


def _state_of(source: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    return {name: t.detach().cpu() for name, t in state.items()}


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    values = f"int{record['q']}" if record["v"] == "q" else record["v"]
    out = {"positions": record["p"], "stored": record["n"], "values": values, "bytes_packed": sum(record["l"])}
    if record["v"] == "q":
        out["code_bits"] = record["b"]
        out["scale"] = "channel" if record["c"] == "c" else "tensor"
    return out


def save_compressed(
    source: nn.Module | Mapping[str, Tensor],
    path: str | Path,
    *,
    codec: str = "lzma",
    float_storage: str = "fp32",
    model_info: Mapping[str, Any] | None = None,
    arch: Mapping[str, Any] | None = None,
) -> CompressedReport:
    """Write a model's state dict in the compressed format (atomically).

    Args:
        source: A model or a state dict (finalised: pruned weights are zeros, quantized weights
            their dequantized values).
        path: The file to write.
        codec: The entropy stage, one of ``lzma``, ``zstd``, ``none``.
        float_storage: ``fp32`` (lossless), ``fp16`` or ``int8``: how float tensors that lie on no
            integer grid are stored (lossy unless ``fp32``).
        model_info: How to build the model from the secateurs zoo (``name``, ``in_channels``,
            ``num_classes``, ``image_size``), for :func:`load_compressed` without a model.
        arch: The architecture spec (``ArchSpec.to_dict()``) of a shrunk model.

    Returns:
        Sizes and per-tensor encodings.
    """
    from secateurs.utils.io import save_safetensors

    if codec not in CODECS:
        raise UsageError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    if float_storage not in FLOAT_STORAGE:
        raise UsageError(f"unknown float storage {float_storage!r}; known: {', '.join(FLOAT_STORAGE)}")
    state = _state_of(source)
    compress(b"", codec)  # a missing codec package fails here, before any work

    def coded_size(blob: bytes) -> int:
        return len(compress(blob, codec))

    encoded = {name: encode_tensor(t, float_storage=float_storage, entropy=coded_size) for name, t in state.items()}
    index: dict[str, Any] = {"tensors": {name: e.record for name, e in encoded.items()}}
    if model_info is not None:
        index["model"] = dict(model_info)
    if arch is not None:
        index["arch"] = dict(arch)
    index_bytes = json.dumps(index, separators=(",", ":")).encode()
    raw = index_bytes + b"".join(b"".join(e.sections) for e in encoded.values())
    payload = compress(raw, codec)
    header = {"format": FORMAT, "version": VERSION, "codec": codec, "raw": len(raw), "index": len(index_bytes)}
    blob = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
    save_safetensors({_PAYLOAD: blob}, path, metadata={FORMAT: json.dumps(header, separators=(",", ":"))})
    return _report({**header, **index}, Path(path).stat().st_size)


def _report(manifest: dict[str, Any], size: int) -> CompressedReport:
    records = manifest["tensors"]
    return CompressedReport(
        bytes_on_disk=size, bytes_dense_fp32=sum(4 * math.prod(r["s"]) for r in records.values()),
        bytes_packed=int(manifest["raw"]), codec=manifest["codec"],
        tensors={name: _summary(r) for name, r in records.items()},
        lossy=tuple(name for name, r in records.items() if r.get("x")))


def manifest_summary(manifest: dict[str, Any], size: int) -> dict[str, Any]:
    """The report of a file from its manifest (:func:`read_manifest`) and its size on disk."""
    try:
        return _report(manifest, size).to_dict()
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedFileError(f"the compressed file's manifest is damaged ({type(exc).__name__}: {exc})") from None


def read_manifest(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The manifest and the decoded payload of a compressed file (checksum verified).

    Raises:
        UsageError: no such file, or not a compressed secateurs file.
        DamagedFileError: the file is truncated or corrupt.
    """
    from secateurs.utils.io import read_safetensors

    path = Path(path)
    try:
        tensors, metadata = read_safetensors(path)
    except FileNotFoundError:
        raise UsageError(f"no compressed model at {path}") from None
    if FORMAT not in metadata:
        raise UsageError(f"{path} is not a secateurs compressed model file")
    try:
        manifest = json.loads(metadata[FORMAT])
        if manifest.get("format") != FORMAT:
            raise ValueError("not a compressed-model manifest")
        if manifest.get("version") != VERSION:
            raise UsageError(f"{path} has compressed-format version {manifest.get('version')}; "
                             f"this secateurs reads {VERSION}")
        payload = tensors[_PAYLOAD].numpy().tobytes()
        raw = decompress(payload, manifest["codec"], int(manifest["raw"]))
        split = int(manifest["index"])
        index = json.loads(raw[:split].decode())
        if not isinstance(index, dict) or not isinstance(index.get("tensors"), dict):
            raise ValueError("the payload does not start with the tensor index")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise DamagedFileError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    return {**manifest, **index}, raw[split:]


def read_compressed(path: str | Path) -> dict[str, Tensor]:
    """The state dict stored in a compressed file, every tensor at its original shape and dtype.

    Raises:
        UsageError: no such file, or not a compressed secateurs file.
        DamagedFileError: the file is truncated or corrupt.
    """
    return _decode_state(*read_manifest(path), Path(path))


def _decode_state(manifest: dict[str, Any], raw: bytes, path: Path) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    offset = 0
    try:
        for name, record in manifest["tensors"].items():
            lengths = [int(n) for n in record["l"]]
            sections = []
            for n in lengths:
                if n < 0 or offset + n > len(raw):
                    raise ValueError(f"tensor {name} runs past the payload")
                sections.append(raw[offset:offset + n])
                offset += n
            state[name] = decode_tensor(record, (sections[0], sections[1], sections[2]))
        if offset != len(raw):
            raise ValueError(f"{len(raw) - offset} payload bytes belong to no tensor")
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise DamagedFileError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    return state


def _build_model(manifest: dict[str, Any], model: nn.Module | None, path: Path) -> nn.Module:
    from secateurs.structured.load import apply_spec_
    from secateurs.structured.spec import ArchSpec

    spec = ArchSpec.from_dict(manifest["arch"], source=str(path)) if manifest.get("arch") else None
    if model is None:
        info = manifest.get("model") or (spec.model if spec is not None else None)
        if not info or "name" not in info:
            raise UsageError(f"{path} names no zoo model; pass model=<a new instance of its class>")
        from secateurs.models import build_model

        model = build_model(info["name"], in_channels=int(info["in_channels"]),
                            num_classes=int(info["num_classes"]), image_size=tuple(info["image_size"]))
    if spec is not None:
        apply_spec_(model, spec)
    return model


def load_compressed(path: str | Path, model: nn.Module | None = None, *, map_location: Any = "cpu") -> nn.Module:
    """Rebuild the model stored by :func:`save_compressed` (``secateurs shrink --compress``).

    Args:
        path: The compressed file, or a directory holding ``model.cmp.safetensors``.
        model: A new instance of the model's (original, unshrunk) class; None builds it from the
            secateurs zoo entry recorded in the file.
        map_location: Device of the returned model.

    Returns:
        The model in eval mode, its weights equal to those saved (bit for bit where lossless).

    Raises:
        UsageError: missing file, a file that is not a compressed model, weights that do not fit the model.
        DamagedFileError: the file is truncated or corrupt.
    """
    path = Path(path)
    if path.is_dir():
        path = path / COMPRESSED_FILE
    manifest, raw = read_manifest(path)
    state = _decode_state(manifest, raw, path)
    model = _build_model(manifest, model, path)
    load_fitting_state(model, state, mismatch=f"the weights in {path} do not fit the model")
    return model.to(map_location).eval()

