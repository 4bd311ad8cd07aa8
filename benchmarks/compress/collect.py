"""Storage table of ``run_cpu.sh``: accuracy per stage, bytes on disk, and the references.

    python benchmarks/compress/collect.py runs/bench-compress

For each model: the dense, pruned and quantized runs' test accuracy; the compressed file's bytes on
disk against the dense fp32 state dict (``model.safetensors`` of the dense run holds exactly the
state dict's tensors); ``xz -9e`` of the masked state dict of the pruned (fp32) and quantized runs;
and Deep Compression's published whole-model ratios (Han et al., ICLR 2016, Table 1).
"""

from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

#: Deep Compression (pruning + 5-6 bit weight sharing + Huffman), Table 1 of the paper.
DEEP_COMPRESSION = {"mlp": "40x (LeNet-300-100, MNIST)", "lenet5": "39x (LeNet-5, MNIST)"}


def _report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())


def _xz(path: Path) -> int:
    return len(lzma.compress(path.read_bytes(), preset=9 | lzma.PRESET_EXTREME))


def main(out: Path) -> None:
    print("| model | dense acc % | pruned (fp32) acc % | quantized acc % | drop (points) | sparsity | bits "
          "| compressed bytes | ratio | xz of masked fp32 | xz of quantized | Deep Compression |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for compressed in sorted(out.glob("*-compressed")):
        quant = compressed.with_name(compressed.name.removesuffix("-compressed"))
        model = quant.name.split("-")[0]
        pruned = quant.with_name(quant.name.rsplit("-", 1)[0])
        dense = out / f"{model}-dense"
        if not all((p / "report.json").exists() for p in (compressed, quant, pruned, dense)):
            continue
        c = _report(compressed)["compressed"]
        rq, rp, rd = _report(quant), _report(pruned), _report(dense)
        ref = c["bytes_dense_fp32"]
        xz_pruned, xz_quant = _xz(pruned / "model.safetensors"), _xz(quant / "model.safetensors")
        bits = rq.get("quant_bits")
        print(f"| {model} | {rd['accuracy']:.2f} | {rp['accuracy']:.2f} | {rq['accuracy']:.2f} | "
              f"{rd['accuracy'] - rq['accuracy']:.2f} | {rq['achieved_sparsity']:.4f} | {bits} | "
              f"{c['bytes_on_disk']:,} ({'lossless' if c['lossless'] else 'lossy'}) | **{ref / c['bytes_on_disk']:.1f}x** | "
              f"{ref / xz_pruned:.1f}x ({xz_pruned:,} B) | {ref / xz_quant:.1f}x ({xz_quant:,} B) | "
              f"{DEEP_COMPRESSION.get(model, 'n/a')} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench-compress"))
