"""``secateurs inspect`` on an export: a compressed model file, or a ``secateurs shrink --out`` directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from secateurs.errors import UsageError

__all__ = ["describe_compressed_file", "describe_export_dir", "is_export_dir"]


def _table(tensors: dict[str, dict[str, Any]]) -> list[str]:
    width = max([len(n) for n in tensors] + [6])
    lines = [f"  {'tensor':<{width}}  {'positions':<9}  {'stored':>9}  {'values':<8}  {'bits':>4}  {'packed B':>9}"]
    for name, t in tensors.items():
        bits = t.get("code_bits", "")
        lines.append(f"  {name:<{width}}  {t['positions']:<9}  {t['stored']:>9,}  {t['values']:<8}  {bits!s:>4}  "
                     f"{t['bytes_packed']:>9,}")
    return lines


def _summary_lines(c: dict[str, Any]) -> list[str]:
    lossy = "lossless" if c["lossless"] else f"LOSSY: {', '.join(c['lossy_tensors'])}"
    return [f"bytes      {c['bytes_on_disk']:,} on disk ({c['bytes_packed']:,} packed before {c['codec']}) vs "
            f"{c['bytes_dense_fp32']:,} dense fp32: {c['compression']}x",
            f"storage    {lossy}"]


def describe_compressed_file(path: Path, *, as_json: bool = False) -> str:
    """Sizes and per-tensor encodings of a compressed model file (its checksum is verified)."""
    from secateurs.export.compressed import manifest_summary, read_manifest

    manifest, _ = read_manifest(path)
    summary = manifest_summary(manifest, path.stat().st_size)
    if as_json:
        return json.dumps(summary, indent=2)
    model = manifest.get("model") or {}
    lines = [f"file       {path}",
             f"model      {model.get('name', 'n/a')}{' (shrunk)' if manifest.get('arch') else ''}",
             *_summary_lines(summary), "", *_table(summary["tensors"])]
    return "\n".join(lines) + "\n"


def is_export_dir(directory: Path) -> bool:
    """Whether ``directory`` is a ``secateurs shrink --out`` directory (its report has no per-layer table)."""
    report = directory / "report.json"
    if not report.exists():
        return False
    try:
        data = json.loads(report.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "layers" not in data and ("compressed" in data or "sparse" in data
                                                                 or "params_after" in data)


def describe_export_dir(directory: Path, *, as_json: bool = False) -> str:
    """The shrink/compress report of an export directory, with the bytes on disk of each file."""
    from secateurs.utils.io import read_json

    report = read_json(directory / "report.json")
    if as_json:
        return json.dumps(report, indent=2)
    lines = [f"export     {directory} (from {report.get('run')})",
             f"model      {report.get('model')} on {report.get('dataset')}, {report.get('method')} "
             f"({report.get('granularity')})"]
    if "params_after" in report:
        lines.append(f"shrunk     params {report['params_before']:,} -> {report['params_after']:,}, "
                     f"model.safetensors {report['bytes_on_disk']:,} bytes")
    if "sparse" in report:
        s = report["sparse"]
        lines.append(f"sparse     {s['file']} {s['bytes_on_disk']:,} bytes ({s['compression']}x)")
    if "compressed" in report:
        c = report["compressed"]
        if not (directory / c["file"]).exists():
            raise UsageError(f"{directory} lists {c['file']} but the file is missing")
        lines.append(f"compressed {c['file']}")
        lines += _summary_lines(c)
        if not c["lossless"]:
            lines.append(f"           max output difference {c['max_abs_diff_vs_run']:.3g}, accuracy "
                         f"{c['accuracy_run']:.2f}% -> {c['accuracy_compressed']:.2f}%")
        lines += ["", *_table(c["tensors"])]
    return "\n".join(lines) + "\n"
