"""``secateurs reproduce RUN --out NEW``: rerun a run from its record and say whether it came out the same.

The rerun takes everything from ``RUN/run.json``: the resolved settings, the data files (checked
against their recorded hashes first), the ``--from`` weights (likewise), the device and the thread
count. The two runs are then compared: settings, masks, weights, the final report's numbers, every
epoch's metrics, and the environment. On the same environment (every recorded field equal) the
comparison is exact: same CPU, same seed, same software give byte-identical files. Across
environments it allows :data:`TOLERANCE`, since other kernels sum in other orders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secateurs.errors import UsageError
from secateurs.experiment.config import RunConfig
from secateurs.experiment.record import (
    PLACE_SETTINGS,
    RECORD,
    RECORD_VERSION,
    RunOrigin,
    file_fingerprint,
    flatten_settings,
    read_record,
)
from secateurs.utils.io import read_json, read_safetensors

__all__ = ["Comparison", "Difference", "TOLERANCE", "compare_runs", "reproduce"]

#: Allowed differences when the environments differ: accuracies (percent) within 0.5 points, other
#: numbers within 2 % (relative), masks with at most 1 % of their units flipped. Weights are then
#: not compared (they differ in the last bits as soon as one kernel does).
TOLERANCE = {"accuracy_points": 0.5, "relative": 0.02, "mask_units": 0.01}

#: Report fields that measure the machine's speed, not what the run computed.
_TIMING = ("train_seconds", "latency_ms_batch1", "seconds", "wall_seconds")


@dataclass(frozen=True)
class Difference:
    """One thing that differs between the recorded run and the rerun."""

    what: str
    recorded: str
    rerun: str


@dataclass
class Comparison:
    """The outcome of comparing a rerun with its recorded run."""

    run: Path
    rerun: Path
    same_environment: bool
    differences: list[Difference] = field(default_factory=list)
    environment: list[Difference] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        """Whether everything compared matched (exactly, or within tolerance across environments)."""
        return not self.differences

    def render(self, limit: int = 30) -> str:
        """``reproduced ...`` or a table of what differs and which environment fields differ."""
        how = ("exactly (same environment)" if self.same_environment else
               f"within tolerance (environments differ: accuracy ±{TOLERANCE['accuracy_points']} points, "
               f"other numbers ±{TOLERANCE['relative']:.0%}, masks ≤{TOLERANCE['mask_units']:.0%} of units)")
        lines = []
        if self.reproduced:
            what = "settings, masks, weights" if self.same_environment else "settings, masks"
            lines.append(f"reproduced {how}: {what}, final and per-epoch metrics of {self.run} match {self.rerun}")
        else:
            lines.append(f"not reproduced: {len(self.differences)} difference(s), compared {how}")
            lines += _table(self.differences[:limit], ("what", "recorded", "rerun"))
            if len(self.differences) > limit:
                lines.append(f"... and {len(self.differences) - limit} more")
        if self.environment:
            lines.append("environment fields that differ:")
            lines += _table(self.environment, ("field", "recorded", "rerun"))
        return "\n".join(lines)


def _table(rows: list[Difference], header: tuple[str, str, str]) -> list[str]:
    cells = [header, *((d.what, d.recorded, d.rerun) for d in rows)]
    widths = [min(max(len(c[i]) for c in cells), 48) for i in range(3)]
    return ["  " + "  ".join(c[i][:48].ljust(widths[i]) for i in range(3)).rstrip() for c in cells]


# ---------------------------------------------------------------------------------------------- rerun
def reproduce(run: str | Path, out: str | Path, *, show_progress: bool = False,
              argv: list[str] | None = None) -> Comparison:
    """Rerun ``run`` from its record into ``out`` and compare the two.

    Raises:
        UsageError: one line when the run cannot be rerun: no record (made by an older secateurs),
            a record of another layout version, an unfinished run, data or ``--from`` weights that
            are gone or changed, or an ``out`` that already holds a run.
    """
    from secateurs.experiment.run import execute, resolve_device

    run, out = Path(run), Path(out)
    record = _checked_record(run)
    config = _rerun_config(record)
    device = _rerun_device(record)
    config = config.with_overrides(device=str(device))
    origin = RunOrigin(argv=argv or ["secateurs", "reproduce", str(run), "--out", str(out)],
                       sources=_sources(record), reproduced_from=str(run.resolve()))
    resolve_device(str(device))
    with _threads(int(record.get("environment", {}).get("threads") or torch.get_num_threads())):
        execute(config, out, show_progress=show_progress, origin=origin)
    return compare_runs(run, out)


def _checked_record(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise UsageError(f"no run directory at {run}")
    if not (run / RECORD).exists():
        raise UsageError(f"{run} has no run record ({RECORD}): it was made by an older secateurs; rerun it by hand "
                         "from its config.yaml (secateurs prune --config ...)")
    record = read_record(run)
    version = record.get("record_version")
    if version != RECORD_VERSION:
        raise UsageError(f"{run}/{RECORD} is a record of version {version!r}; this secateurs reproduces version "
                         f"{RECORD_VERSION} (rerun it with the secateurs that made it)")
    if not (run / "report.json").exists() or not record.get("finished"):
        raise UsageError(f"{run} is not finished; finish it with --resume before reproducing it")
    for entry in (record.get("data") or {}).get("files", []):
        _check_file(entry, "data file")
    weights = record.get("from_weights")
    if weights:
        if weights.get("missing"):
            raise UsageError(f"the --from weights of {run} were missing when it ran ({weights.get('path')})")
        _check_file(weights, "--from weights")
    return record


def _check_file(entry: Mapping[str, Any], what: str) -> None:
    path = Path(entry["path"])
    if not path.is_file():
        raise UsageError(f"cannot reproduce: the {what} {path} is no longer there")
    if file_fingerprint(path)["sha256"] != entry.get("sha256"):
        raise UsageError(f"cannot reproduce: the {what} {path} changed since the run (its SHA-256 differs)")


def _rerun_config(record: Mapping[str, Any]) -> RunConfig:
    """The recorded config, with its data and ``--from`` paths pointing where the record found them."""
    raw = dict(record["config"])
    cwd = Path(record.get("cwd") or ".")
    files = (record.get("data") or {}).get("files") or []
    if files:
        raw["data_dir"] = str(Path(files[0]["path"]).parent)  # the folder the files were read from
    if raw.get("from_checkpoint"):
        raw["from_checkpoint"] = str(cwd / raw["from_checkpoint"])  # absolute paths stay as they are
    try:
        return RunConfig.from_dict(raw)
    except TypeError as exc:
        raise UsageError(f"the recorded settings are not valid here: {exc}") from None


def _rerun_device(record: Mapping[str, Any]) -> torch.device:
    recorded = str(record.get("environment", {}).get("device") or "cpu")
    device = torch.device(recorded)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")  # compared within tolerance then (the environments differ)
    return device


def _sources(record: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v.get("source")) for k, v in (record.get("settings") or {}).items() if isinstance(v, Mapping)}


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """Run with the recorded intra-op thread count (sums split over threads round differently)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(count, 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- compare
def compare_runs(run: str | Path, rerun: str | Path) -> Comparison:
    """Compare two finished run directories (a recorded run and its rerun)."""
    run, rerun = Path(run), Path(rerun)
    old_env = read_record(run).get("environment", {})
    new_env = read_record(rerun).get("environment", {})
    env = [Difference(k, _show(old_env.get(k)), _show(new_env.get(k)))
           for k in sorted(set(old_env) | set(new_env)) if old_env.get(k) != new_env.get(k)]
    result = Comparison(run, rerun, same_environment=not env, environment=env)
    exact = result.same_environment
    diffs = result.differences
    diffs += _settings(run, rerun)
    diffs += _masks(run, rerun, exact)
    if exact:
        diffs += _weights(run, rerun)
    diffs += _values("final", _report(run), _report(rerun), exact)
    old_epochs, new_epochs = _epochs(run), _epochs(rerun)
    if len(old_epochs) != len(new_epochs):
        diffs.append(Difference("epochs logged", str(len(old_epochs)), str(len(new_epochs))))
    for i, (a, b) in enumerate(zip(old_epochs, new_epochs)):
        diffs += _values(f"epoch {a.get('epoch', i + 1)}", a, b, exact)
    return result


def _settings(run: Path, rerun: Path) -> list[Difference]:
    """Settings as the two runs saved them (an edited record shows up here)."""
    from secateurs.experiment.config import load_recipe

    old = flatten_settings(load_recipe(run / "config.yaml"))
    new = flatten_settings(load_recipe(rerun / "config.yaml"))
    return [Difference(f"setting {k}", _show(old.get(k)), _show(new.get(k)))
            for k in sorted(set(old) | set(new)) if k not in PLACE_SETTINGS and old.get(k) != new.get(k)]


def _masks(run: Path, rerun: Path, exact: bool) -> list[Difference]:
    a, b = run / "masks.safetensors", rerun / "masks.safetensors"
    if not a.exists() and not b.exists():
        return []
    if not (a.exists() and b.exists()):
        return [Difference("masks.safetensors", "present" if a.exists() else "absent",
                           "present" if b.exists() else "absent")]
    if exact and a.read_bytes() == b.read_bytes():
        return []
    old, _ = read_safetensors(a)
    new, _ = read_safetensors(b)
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new or old[name].shape != new[name].shape:
            out.append(Difference(f"mask {name}", _shape(old.get(name)), _shape(new.get(name))))
            continue
        flipped = float((old[name] != new[name]).float().mean())
        if flipped > (0.0 if exact else TOLERANCE["mask_units"]):
            out.append(Difference(f"mask {name}", "-", f"{flipped:.2%} of units differ"))
    return out


def _weights(run: Path, rerun: Path) -> list[Difference]:
    a, b = run / "model.safetensors", rerun / "model.safetensors"
    if a.read_bytes() == b.read_bytes():
        return []
    old, _ = read_safetensors(a)
    new, _ = read_safetensors(b)
    out = []
    for name in sorted(set(old) | set(new)):
        x, y = old.get(name), new.get(name)
        if x is None or y is None or x.shape != y.shape:
            out.append(Difference(f"weights {name}", _shape(x), _shape(y)))
        elif not torch.equal(x, y):
            gap = float((x.double() - y.double()).abs().max()) if x.is_floating_point() else math.nan
            out.append(Difference(f"weights {name}", "-", f"max |difference| {gap:.3g}"))
    return out


def _untimed(value: Any) -> Any:
    """``value`` without measured durations at any depth (a report's allocation and search blocks
    carry their own ``seconds``): they differ between any two runs."""
    if isinstance(value, Mapping):
        return {k: _untimed(v) for k, v in value.items() if k not in _TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _report(run: Path) -> dict[str, Any]:
    report = read_json(run / "report.json")
    return _untimed({k: v for k, v in report.items() if k != "layers"}) if isinstance(report, dict) else {}


def _epochs(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [_untimed(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _values(where: str, old: Mapping[str, Any], new: Mapping[str, Any], exact: bool) -> list[Difference]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b or (not exact and _close(key, a, b)):
            continue
        out.append(Difference(f"{where} {key}", _show(a), _show(b)))
    return out


def _close(key: str, a: Any, b: Any) -> bool:
    numbers = (int, float)
    if not (isinstance(a, numbers) and isinstance(b, numbers)) or isinstance(a, bool) or isinstance(b, bool):
        return False
    if "accuracy" in key:
        return abs(a - b) <= TOLERANCE["accuracy_points"]
    return math.isclose(a, b, rel_tol=TOLERANCE["relative"], abs_tol=1e-12)


def _shape(t: torch.Tensor | None) -> str:
    return "absent" if t is None else "x".join(map(str, t.shape))


def _show(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
