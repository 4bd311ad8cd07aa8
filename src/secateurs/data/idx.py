"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is: two zero bytes, one byte naming the element type, one byte giving the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the elements in C order, big-endian.
The files are often shipped gzipped; gzip is recognised by its magic bytes, not by the file name, so a
renamed file still reads.
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from secateurs.errors import DamagedFileError, UsageError

__all__ = ["IdxFiles", "find_idx_files", "read_idx", "write_idx"]

# Element-type byte -> (torch dtype, item size in bytes).
_IDX_TYPES: dict[int, tuple[torch.dtype, int]] = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}
_TYPE_CODES: dict[torch.dtype, int] = {dtype: code for code, (dtype, _) in _IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == _GZIP_MAGIC else open
    with opener(path, "rb") as f:
        return f.read()


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (plain or gzipped) into a tensor.

    Args:
        path: The file to read.

    Returns:
        A tensor with the file's shape and element type; ``torch.uint8`` for the image and label
        files of MNIST and Fashion-MNIST.

    Raises:
        DamagedFileError: If the file is not a well-formed IDX file (bad magic, unknown type, wrong
            size) or its gzip stream is truncated or corrupt (a UsageError, one line naming the file).
        FileNotFoundError: If ``path`` does not exist.
    """
    path = Path(path)
    try:
        raw = _read_bytes(path)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an IDX file") from None
    except (OSError, EOFError, zlib.error) as exc:
        # A truncated gzip stream ends early (EOFError), a flipped bit breaks the deflate data
        # (zlib.error) or the CRC (BadGzipFile, an OSError).
        reason = str(exc).strip() or type(exc).__name__
        raise DamagedFileError(f"IDX file {path} is damaged ({reason}); fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DamagedFileError(f"{path} is damaged or not an IDX file (bad magic number)")
    dtype, itemsize = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DamagedFileError(f"IDX file {path} is damaged: truncated (incomplete header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    count = 1
    for size in shape:
        count *= size
    if len(raw) - header_len != count * itemsize:
        raise DamagedFileError(
            f"IDX file {path} is damaged: header says {count * itemsize} data bytes, "
            f"found {len(raw) - header_len}"
        )
    # bytearray: torch.frombuffer needs a writable buffer to avoid a warning, and the copy is cheap.
    data = torch.frombuffer(bytearray(raw[header_len:]), dtype=torch.uint8) if count else None
    if data is None:
        return torch.empty(shape, dtype=dtype)
    if itemsize > 1 and sys.byteorder == "little":
        # IDX is big-endian: reverse the bytes of each element before reinterpreting them.
        data = data.view(-1, itemsize).flip(1).contiguous().view(-1)
    return data.view(dtype).reshape(shape)


def write_idx(path: str | Path, tensor: torch.Tensor, *, compress: bool | None = None) -> Path:
    """Write a tensor as an IDX file.

    Args:
        path: Destination. Written gzipped when ``compress`` is true.
        tensor: A tensor of one of the IDX element types (uint8, int8, int16, int32, float32, float64).
        compress: Gzip the file. ``None`` means: gzip when the name ends in ``.gz``.

    Returns:
        The path written.

    Raises:
        UsageError: If the dtype has no IDX code or the tensor has more than 255 dimensions.
    """
    path = Path(path)
    if tensor.dtype not in _TYPE_CODES:
        raise UsageError(f"IDX cannot store dtype {tensor.dtype}")
    if tensor.dim() > 255:
        raise UsageError("IDX stores at most 255 dimensions")
    if compress is None:
        compress = path.suffix == ".gz"
    code = _TYPE_CODES[tensor.dtype]
    itemsize = _IDX_TYPES[code][1]
    header = bytes([0, 0, code, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    if itemsize > 1 and sys.byteorder == "little":
        flat = flat.view(-1, itemsize).flip(1).contiguous().view(-1)
    payload = header + flat.numpy().tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


class IdxFiles(NamedTuple):
    """Paths of the four files of an MNIST-style dataset."""

    train_images: Path
    train_labels: Path
    test_images: Path
    test_labels: Path


# Stems of the four files; both the hyphenated names of the original distribution and the dotted
# variant (``train-images.idx3-ubyte``) found in many re-uploads are accepted.
_STEMS: dict[str, tuple[str, ...]] = {  # in IdxFiles field order
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_one(directory: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        # The uncompressed file first: torchvision leaves both after extracting, and reading the
        # plain one skips the decompression.
        for name in (stem, stem + ".gz"):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def find_idx_files(directory: str | Path, subdirs: Sequence[str] = ()) -> IdxFiles | None:
    """Find the four IDX files of an MNIST-style dataset.

    Looks in ``directory`` itself, then in each ``directory / sub`` for ``sub`` in ``subdirs`` (for
    example ``"FashionMNIST/raw"``, torchvision's layout). Each file may be plain or gzipped.

    Args:
        directory: Where to look.
        subdirs: Relative sub-directories to try after ``directory``, in order.

    Returns:
        The four paths from the first directory that holds all four files, or ``None``.
    """
    root = Path(directory).expanduser()
    for candidate in [root, *(root / sub for sub in subdirs)]:
        if not candidate.is_dir():
            continue
        found = [_find_one(candidate, stems) for stems in _STEMS.values()]
        paths = [path for path in found if path is not None]
        if len(paths) == len(_STEMS):
            return IdxFiles(*paths)
    return None
