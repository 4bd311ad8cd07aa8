"""The entropy stage of the compressed format: a maintained general-purpose codec over the packed bytes.

* ``lzma`` (standard library): LZMA2 in a raw stream (no ``.xz`` container: its ~60 bytes of
  framing matter in a 5 kB file; the safetensors checksum guards the bytes instead), preset 9 extreme;
* ``zstd``: Zstandard level 22 through the ``zstandard`` package (``pip install secateurs[export]``);
* ``none``: the packed bytes as they are.

Which one wins is data-dependent; ``docs/results.md`` measures them on the zoo's small models.
"""

from __future__ import annotations

import lzma

from secateurs.errors import UsageError

__all__ = ["CODECS", "compress", "decompress"]

CODECS = ("lzma", "zstd", "none")
#: The decoder's window; the encoder's is no larger (a window beyond the data only costs set-up time).
_LZMA_MAX_DICT = 1 << 24
_LZMA_DECODE = [{"id": lzma.FILTER_LZMA2, "dict_size": _LZMA_MAX_DICT}]


def _lzma_filters(size: int) -> list[dict[str, int]]:
    dict_size = min(_LZMA_MAX_DICT, max(1 << 12, 1 << max(size - 1, 1).bit_length()))
    # lc=1, pb=0: packed codes and varints are not aligned text; measured 1-2 % smaller than the
    # defaults (lc=3, pb=2) on quantized LeNet-300-100. The stream carries them: decoding needs no setting.
    return [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size, "lc": 1, "pb": 0}]
_ZSTD_LEVEL = 22


def _zstd():  # type: ignore[no-untyped-def]
    try:
        import zstandard
    except ImportError:
        raise UsageError("the zstd codec needs the zstandard package: pip install 'secateurs[export]' "
                         "(or choose --codec lzma)") from None
    return zstandard


def compress(data: bytes, codec: str) -> bytes:
    """``data`` coded with ``codec`` (one of :data:`CODECS`)."""
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(data)))
    if codec == "zstd":
        return _zstd().ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=False, write_checksum=False,
                                      write_dict_id=False).compress(data)
    if codec == "none":
        return bytes(data)
    raise UsageError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")


def decompress(data: bytes, codec: str, size: int) -> bytes:
    """The ``size`` bytes that :func:`compress` coded into ``data``.

    Raises:
        ValueError: the stream is corrupt or does not decode to ``size`` bytes.
    """
    if codec == "lzma":
        try:
            out = lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_DECODE)
        except lzma.LZMAError as exc:
            raise ValueError(f"lzma stream is corrupt ({exc})") from None
    elif codec == "zstd":
        zstandard = _zstd()
        try:
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd stream is corrupt ({exc})") from None
    elif codec == "none":
        out = bytes(data)
    else:
        raise ValueError(f"unknown codec {codec!r}")
    if len(out) != size:
        raise ValueError(f"the payload decodes to {len(out)} bytes, expected {size}")
    return out
