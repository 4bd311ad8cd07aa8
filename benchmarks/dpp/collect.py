"""Markdown table of the runs written by benchmarks/dpp/run_cpu.sh.

Sizes use one accounting for every method (secateurs.quant.packed_size_bits): per output row the kept
values at their bit width (32 without quantization) plus the cheaper of an index list or a bitmap,
the scales, and every parameter outside the pruned weights at fp32.

    python benchmarks/dpp/collect.py runs/bench-dpp
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from secateurs.core.masks import MaskSet
from secateurs.quant import packed_size_bits


def sparse_fp32_bytes(run: Path, report: dict) -> int:
    """Size of a baseline run with fp32 values and per-row indices (masks may keep unequal counts)."""
    if not (run / "masks.safetensors").exists():
        return 4 * report["params_total"]
    masks = MaskSet.load(run / "masks.safetensors")
    bits, pruned_numel = 0, 0
    for entry in masks.values():
        rows = entry.full().reshape(entry.weight_shape[0], -1)
        n = rows.shape[1]
        pruned_numel += rows.numel()
        for kept in rows.sum(1).tolist():
            bits += packed_size_bits(1, n, int(kept), 1, 32, 0)
    return (bits + 7) // 8 + 4 * (report["params_total"] - pruned_numel)


def main(out: Path) -> None:
    print("| run | method | target sparsity | bits | accuracy % | non-zero params | size bytes | vs dense fp32 | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for report_path in sorted(out.glob("*/report.json")):
        run = report_path.parent
        r = json.loads(report_path.read_text())
        dense = 4 * r["params_total"]
        size = r.get("size_bytes") or sparse_fp32_bytes(run, r)
        bits = r.get("quant_bits") or 32
        scale = r.get("method_options", {}).get("quant_scale", "")
        bits_text = f"{bits} ({scale})" if r.get("quant_bits") else "fp32"
        print(f"| {run.name} | {r['method']} | {r['target_sparsity']:.2f} | {bits_text} | {r['accuracy']:.2f} | "
              f"{r['params_nonzero']:,} | {size:,} | {dense / size:.1f}x | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench-dpp"))
