"""Atomic writes: a file is either the old version or the complete new one, never half written.

A run killed mid-save (a preempted job, Ctrl-C) must not lose the last good checkpoint, so every
file secateurs writes goes to a temporary sibling first and is moved into place with ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from secateurs.errors import DamagedFileError, UsageError

__all__ = [
    "append_jsonl",
    "atomic_path",
    "load_safetensors",
    "load_weights_only",
    "read_json",
    "remove_stale_temporaries",
    "save_json",
    "save_safetensors",
    "save_torch",
    "tensors_digest",
    "trim_jsonl",
]

#: Metadata key of the checksum secateurs writes into its safetensors files: safetensors checks the
#: header's layout but not the bytes of the tensors, so a flipped bit would otherwise load silently.
DIGEST_KEY = "secateurs.sha256"
#: Suffix of the temporary siblings of :func:`atomic_path` (named ``.NAME.RANDOM.tmp``).
TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically. Only tensors and plain containers: it must load weights-only."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_weights_only(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: never unpickles arbitrary objects.

    Raises:
        FileNotFoundError: when there is no file.
        UsageError: the file holds objects other than tensors and plain containers (refused, not run).
        DamagedFileError: the file is truncated or not a torch file at all.
    """
    import pickle
    import warnings

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's multi-line advice is not for our users
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        what = str(exc).split("Unsupported global:")[-1].split(".")[0].strip() if "Unsupported global" in str(exc) else ""
        detail = f" ({what})" if what and len(what) < 120 else ""
        raise UsageError(f"refused to load {path}: it holds Python objects, not only tensors{detail}; "
                         "secateurs loads weights-only files (a state dict of tensors)") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a weights file") from None
    except (OSError, EOFError, RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise DamagedFileError(f"{path} is damaged or not a torch weights file ({type(exc).__name__})") from None


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically, with a checksum that :func:`load_safetensors` verifies."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), DIGEST_KEY: tensors_digest(tensors)}
    with atomic_path(path) as tmp:
        tmp.write_bytes(_canonical_header(save(tensors, metadata=meta)))


def _canonical_header(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors keeps the metadata in a hash map, so two saves of the same tensors may order the
    header differently; sorted, equal runs give byte-identical files (``cmp`` and hashes agree).
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or corrupt one is a :class:`DamagedFileError` naming it.

    Files written by :func:`save_safetensors` carry a checksum of their tensors, verified here.

    Raises:
        FileNotFoundError: when there is no file.
    """
    tensors, _ = read_safetensors(path)
    return tensors


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file (checked like :func:`load_safetensors`)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (a handle, not a dict)
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a safetensors file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedFileError(f"{path} is damaged or not a safetensors file ({first[:160]})") from None
    expected = metadata.get(DIGEST_KEY)
    if expected is not None and tensors_digest(tensors) != expected:
        raise DamagedFileError(f"{path} is damaged: its tensors do not match the checksum written with them")
    return tensors, metadata


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a truncated or corrupt one is a :class:`DamagedFileError` naming it.

    Raises:
        FileNotFoundError: when there is no file (callers say what was expected there).
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DamagedFileError(f"{path} is damaged (not valid JSON); rerun what wrote it") from None
    except IsADirectoryError:
        raise DamagedFileError(f"{path} is a directory, not a JSON file") from None


def save_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically, indented for people."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(obj: Any, path: str | Path) -> None:
    """Append one JSON object as a line (flushed and fsynced: logs survive a crash).

    Strict JSON: NaN or infinity raise ValueError (Python's ``NaN`` token is not JSON).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, allow_nan=False) + "\n"
    with path.open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``directory`` when a process was
    killed mid-write (they are never the current version of anything); returns what was removed."""
    directory = Path(directory)
    stale = sorted(directory.glob(f".*{TMP_SUFFIX}")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def trim_jsonl(path: str | Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite the JSON-lines file ``path`` (atomically) with only the objects ``keep`` accepts.

    A line that does not parse (the half-written last line of a killed process) is dropped. Returns
    the number of lines removed; a missing file is left missing, and one left without lines removed.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and keep(record):
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    if not kept:
        path.unlink()
    else:
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(kept) + "\n")
    return len(lines) - len(kept)
