"""``run.json``: what produced a run directory, so that every number in it can be traced and rerun.

The record sits beside ``report.json`` and holds the command line, every resolved setting with where
it came from (``default``, ``recipe``, ``flag``, ``-o``, ...), the software (package version, git
commit and dirty flag of a checkout, Python/torch/torchvision), the machine (device name, thread
count, deterministic flag), a fingerprint of the data (the files read, with sizes and SHA-256, or the
generator's settings for synthetic data) and of the ``--from`` weights, and start and end times.
``secateurs reproduce`` reruns a run from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from secateurs._version import __version__
from secateurs.errors import DamagedFileError
from secateurs.utils.io import read_json, save_json

__all__ = [
    "RECORD",
    "RECORD_VERSION",
    "RunOrigin",
    "environment",
    "file_fingerprint",
    "flatten_settings",
    "read_record",
    "start_record",
    "finish_record",
]

RECORD = "run.json"
#: Bumped when the record's layout changes in a way ``reproduce`` must know about.
RECORD_VERSION = 1

#: Settings that only say where things are or run, not what the run computes (compared loosely).
PLACE_SETTINGS = ("device", "data_dir", "from_checkpoint")


@dataclass(frozen=True)
class RunOrigin:
    """How a run was asked for: the command line and where each setting came from.

    Attributes:
        argv: the command line (``secateurs prune ...``); empty for a run started from Python.
        sources: flattened setting name (``train.lr``, ``method_options.seed``) -> its source.
            Settings missing here count as ``default`` when they hold their default value, else as
            ``config`` (given in the RunConfig by the caller).
        reproduced_from: the run directory this run reproduces, if any.
    """

    argv: Sequence[str] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    reproduced_from: str | None = None


def now() -> str:
    """The current time, UTC, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ settings
def flatten_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (one level of nesting, as RunConfig has)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    return flat


def _default_settings() -> dict[str, Any]:
    """Flattened default values of RunConfig and TrainConfig (method options have no run-level default)."""
    from dataclasses import MISSING, fields

    from secateurs.experiment.config import RunConfig
    from secateurs.train.config import TrainConfig

    out = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
    out.update({f"train.{k}": v for k, v in TrainConfig().to_dict().items()})
    return out


def settings_with_sources(config_dict: Mapping[str, Any], sources: Mapping[str, str],
                          given_options: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Every resolved setting with its value and where it came from.

    ``given_options`` are the method options the RunConfig was given; the others hold the method's
    defaults, except ``seed``, which follows the run's seed unless given.
    """
    defaults = _default_settings()
    out = {}
    for key, value in flatten_settings(config_dict).items():
        option = key.removeprefix("method_options.") if key.startswith("method_options.") else None
        if key in sources:
            source = sources[key]
        elif option is not None:
            source = "config" if option in given_options else ("run seed" if option == "seed" else "default")
        elif key in defaults:
            source = "default" if _plain(defaults[key]) == _plain(value) else "config"
        else:
            source = "config"
        out[key] = {"value": value, "source": source}
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------------------------------ software
def _git_state() -> dict[str, Any] | None:
    """Commit and dirty flag when secateurs runs from a git checkout (``src/secateurs`` in a work tree)."""
    package = Path(__file__).resolve().parents[1]
    root = package.parents[1]
    if package.parent.name != "src" or not (root / "pyproject.toml").is_file() or not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src", "pyproject.toml"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A person-readable name of the device a run computes on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def environment(device: torch.device, *, deterministic: bool) -> dict[str, Any]:
    """The software and machine a run executes on (the fields ``reproduce`` compares)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        vision: str | None = version("torchvision")  # without importing it (seconds, and not needed)
    except PackageNotFoundError:
        vision = None
    git = _git_state()
    return {
        "secateurs": __version__,
        "git_commit": git["commit"] if git else None,
        "git_dirty": git["dirty"] if git else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": vision,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "deterministic": deterministic,
    }


# ------------------------------------------------------------------------------------------ data
def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Name, size and SHA-256 of one file."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def data_fingerprint(files: Sequence[Path], generator: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the run's data was: the files read (and one hash over them) or the generator's settings."""
    if generator is not None:
        return {"generator": dict(generator)}
    entries = [file_fingerprint(p) for p in files]
    whole = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()
    return {"files": entries, "sha256": whole}


def weights_fingerprint(source: str | None) -> dict[str, Any] | None:
    """The ``--from`` weights file a run started from (a run directory means its ``model.safetensors``)."""
    if not source:
        return None
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    return file_fingerprint(path) if path.is_file() else {"path": str(path), "missing": True}


# ------------------------------------------------------------------------------------------ the file
def start_record(out: Path, config_dict: Mapping[str, Any], origin: RunOrigin | None, *, device: torch.device,
                 deterministic: bool, data_files: Sequence[Path], data_generator: Mapping[str, Any] | None,
                 from_checkpoint: str | None, resume: bool, given_options: Collection[str] = (),
                 processes: int = 1) -> dict[str, Any]:
    """Write ``out/run.json`` as the run starts (a resumed run keeps its record and adds the resume).

    ``processes``: how many data-parallel processes train the run (``torchrun``), when more than one.
    """
    origin = origin or RunOrigin(argv=(), sources={})
    argv = list(origin.argv) if origin.argv else []
    env = environment(device, deterministic=deterministic)
    if processes > 1:
        env["processes"] = processes
    path = out / RECORD
    if resume and path.exists():
        record = read_record(out)
        record.setdefault("resumes", []).append({"argv": argv, "started": now(), "environment": env})
        record["finished"] = None
    else:
        record = {
            "record_version": RECORD_VERSION,
            "argv": argv,
            # A run started from Python (a bench cell, a script) has no command line of its own: the
            # process's says what started it.
            "process_argv": list(sys.argv),
            "cwd": os.getcwd(),  # relative paths in argv and the settings are relative to it
            "settings": settings_with_sources(config_dict, origin.sources, given_options),
            "config": dict(config_dict),
            "environment": env,
            "data": data_fingerprint(data_files, data_generator),
            "from_weights": weights_fingerprint(from_checkpoint),
            "started": now(),
            "finished": None,
        }
        if origin.reproduced_from:
            record["reproduced_from"] = origin.reproduced_from
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            record["environment"]["cublas_workspace_config"] = os.environ["CUBLAS_WORKSPACE_CONFIG"]
    save_json(record, path)
    return record


def finish_record(out: Path, record: dict[str, Any]) -> None:
    """Stamp the end time into ``out/run.json``."""
    record["finished"] = now()
    save_json(record, out / RECORD)


def read_record(run: str | Path) -> dict[str, Any]:
    """The record of a run directory (DamagedFileError when it is not a JSON object)."""
    path = Path(run) / RECORD
    record = read_json(path)
    if not isinstance(record, dict):
        raise DamagedFileError(f"{path} is damaged (not a JSON object)")
    return record


def json_text(record: Mapping[str, Any]) -> str:
    """The record as indented JSON (for ``inspect --record``)."""
    return json.dumps(record, indent=2)


# ------------------------------------------------------------------------------------------ display
def describe_environment(env: Mapping[str, Any]) -> str:
    """One line: software and machine (``secateurs 0.1.0 (git 9c53f6a, dirty) | torch ... | cpu: ...``)."""
    git = ""
    if env.get("git_commit"):
        git = f" (git {str(env['git_commit'])[:9]}{', dirty' if env.get('git_dirty') else ''})"
    parts = [f"secateurs {env.get('secateurs')}{git}", f"python {env.get('python')}", f"torch {env.get('torch')}"]
    if env.get("torchvision"):
        parts.append(f"torchvision {env['torchvision']}")
    parts.append(f"{env.get('device')}: {env.get('device_name')}, {env.get('threads')} threads"
                 + (", deterministic" if env.get("deterministic") else ""))
    return " | ".join(parts)


def describe_data(data: Mapping[str, Any]) -> str:
    """One line: the generator's settings or the files read and their combined hash."""
    if "generator" in data:
        gen = dict(data["generator"])
        name = gen.pop("name", "generator")
        return f"{name}(" + ", ".join(f"{k}={v}" for k, v in gen.items()) + ")"
    files = data.get("files") or []
    size = sum(int(f.get("size", 0)) for f in files)
    return f"{len(files)} files, {size:,} bytes, sha256 {str(data.get('sha256'))[:16]}"


def _process(record: Mapping[str, Any]) -> str:
    argv = record.get("process_argv") or []
    return f"(from Python, in the process: {' '.join(argv)})" if argv else "(from Python)"


def describe_record(record: Mapping[str, Any]) -> str:
    """The record as ``secateurs inspect`` shows it below the report."""
    changed = [f"{k}={v['value']!r} ({v['source']})" for k, v in record.get("settings", {}).items()
               if v.get("source") not in ("default", "run seed")]
    lines = [
        "",
        "run record (run.json)",
        f"  command      {' '.join(record.get('argv') or []) or _process(record)}",
        f"  environment  {describe_environment(record.get('environment', {}))}",
        f"  data         {describe_data(record.get('data', {}))}",
    ]
    weights = record.get("from_weights")
    if weights:
        lines.append(f"  from         {weights.get('path')}" + (f" (sha256 {weights['sha256'][:16]})" if "sha256" in weights
                                                                  else " (missing when recorded)"))
    lines.append(f"  time         {record.get('started')} -> {record.get('finished') or 'not finished'}"
                 + (f", resumed {len(record['resumes'])}x" if record.get("resumes") else ""))
    lines.append(f"  settings     {', '.join(changed) if changed else 'all defaults'}")
    if record.get("reproduced_from"):
        lines.append(f"  reproduces   {record['reproduced_from']}")
    return "\n".join(lines) + "\n"
