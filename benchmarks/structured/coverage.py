"""Architecture coverage of structural compaction over torchvision's classification models.

For each model (randomly initialised, at a small input): trace the coupled channel groups, check that
shrinking with nothing pruned reproduces the model exactly (0 % equivalence), then prune 30 % of the
channels of every exactly removable group (the same channels in all of a group's producers; groups
seen by LayerNorm are left to ``--approximate``), shrink (which verifies the shrunk model against the
masked one), check the forward pass and record parameters and MACs before/after against the prediction.

Each model runs in its own subprocess with a time and memory limit, so one failure or a huge model
cannot stop the sweep; results are appended to a JSONL file, one row per model (re-running skips
finished models; models named with ``--models`` are run again and their rows replaced).

    python benchmarks/structured/coverage.py --out benchmarks/structured/results/coverage.jsonl
    python benchmarks/structured/coverage.py --models vit_h_14 --memory-gb 18 --timeout 1800
    python benchmarks/structured/coverage.py --table benchmarks/structured/results/coverage.jsonl
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

SIZES = (64, 96, 224)  # smallest input first; some models need more (inception_v3, ViT, MaxViT)
PRUNE = 0.3


def _first_working_size(model, torch):
    for size in SIZES:
        x = torch.randn(1, 3, size, size)
        try:
            with torch.no_grad():
                model.eval()(x)
            return x
        except Exception:  # noqa: BLE001 - any failure means "try a larger input"
            continue
    raise RuntimeError(f"no input size in {SIZES} runs")


def measure(name: str) -> dict:
    """Run the coverage checks of one torchvision model in this process."""
    import torch
    import torchvision

    from secateurs.core.masks import MaskSet
    from secateurs.metrics import count_macs, count_params
    from secateurs.structured import coupled_channel_groups, group_filter_masks, shrink

    torch.manual_seed(0)
    torch.set_num_threads(1)
    row: dict = {"model": name}
    start = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None).eval()
    x = _first_working_size(model, torch)
    row["input"] = int(x.shape[-1])
    with torch.no_grad():
        dense_out = model(x)
    groups = coupled_channel_groups(model, x)
    row.update(groups=len(groups), removable=sum(g.removable for g in groups),
               approximate=sum(g.removable and not g.exact for g in groups))
    # 0 %: nothing pruned, the shrunk copy must be the same model.
    zero = shrink(model, MaskSet(), x, groups=groups)
    with torch.no_grad():
        row["zero_prune_diff"] = float((zero.model(x) - dense_out).abs().max())
    # 30 % of every removable group, the same channels in all of its producers.
    g = torch.Generator().manual_seed(0)
    keep = {}
    for group in groups:
        if group.removable and group.exact:  # LayerNorm-coupled groups need --approximate
            per_chunk = torch.rand(group.channels // group.chunks, generator=g) >= PRUNE
            per_chunk[0] = True
            keep[group.root] = per_chunk.repeat(group.chunks)
    masks = group_filter_masks(model, groups, keep)
    with torch.no_grad():
        for pname, entry in masks.items():
            model.get_parameter(pname).mul_(entry.full())
    result = shrink(model, masks, x, groups=groups)
    with torch.no_grad():
        out = result.model(x)
    macs_after = count_macs(result.model, x).dense
    row.update(
        params_before=result.prediction.params_before, params_after=count_params(result.model),
        macs_before=result.prediction.macs_before, macs_after=macs_after,
        params_predicted=result.prediction.params_after, macs_predicted=result.prediction.macs_after,
        channels_removed=result.plan.removed_channels,
        forward_ok=bool(out.shape == dense_out.shape and torch.isfinite(out).all()),
        # Relative to the output's scale: randomly initialised models can have huge logits.
        shrink_diff=None if result.max_abs_diff is None else result.max_abs_diff / max(1.0, float(out.abs().max())),
        seconds=round(time.perf_counter() - start, 1),
    )
    row["status"] = "ok" if (row["forward_ok"] and row["zero_prune_diff"] == 0.0 and row["channels_removed"] > 0
                             and row["params_after"] == row["params_predicted"]) else "check"
    return row


def _child(name: str, memory_gb: float) -> None:
    limit = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        row = measure(name)
    except Exception as exc:  # noqa: BLE001 - record the failure, keep sweeping
        last = traceback.extract_tb(exc.__traceback__)[-1]
        row = {"model": name, "status": "error",
               "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} "
                        f"({Path(last.filename).name}:{last.lineno})"}
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


_HEAVY = ("large", "_l_", "_h_", "v2_l", "v2_m", "128gf", "32gf", "16gf", "8gf", "_b5", "_b6", "_b7", "152",
          "101", "wide", "vgg", "_b_", "swin_b", "swin_v2_b", "densenet201", "densenet161")


def _cheap_first(names: list[str]) -> list[str]:
    # Small models first, so that a sweep cut short by time still covers most families.
    return sorted(names, key=lambda n: sum(key in n for key in _HEAVY))


def sweep(out: Path, timeout: float, memory_gb: float, only: list[str] | None) -> None:
    import torchvision

    names = only or _cheap_first(torchvision.models.list_models(module=torchvision.models))
    done = set()
    if out.exists() and not only:  # models named with --models are re-run and their rows replaced
        done = {json.loads(line)["model"] for line in out.read_text().splitlines() if line.strip()}
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in done:
            continue
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--memory-gb", str(memory_gb)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {
                "model": name, "status": "error", "error": (proc.stderr.strip().splitlines() or ["crashed"])[-1][:200]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "status": "timeout", "error": f"over {timeout:.0f} s"}
        kept = [line for line in (out.read_text().splitlines() if out.exists() else [])
                if line.strip() and json.loads(line)["model"] != name]
        out.write_text("".join(line + "\n" for line in [*kept, json.dumps(row)]))
        sys.stderr.write(f"{name}: {row['status']}\n")


def table(path: Path) -> str:
    """Markdown table of a coverage JSONL file."""
    by_model = {}
    for line in path.read_text().splitlines():  # one row per model: a re-run replaces the earlier row
        if line.strip():
            row = json.loads(line)
            by_model[row["model"]] = row
    rows = list(by_model.values())
    ok = sum(r["status"] == "ok" for r in rows)
    failing = sorted((r for r in rows if r["status"] != "ok"), key=lambda r: r["model"])
    lines = [f"**{ok} of {len(rows)} torchvision classifiers shrink with verified outputs** (forward after 30 %",
             "pruning, 0 % equivalence, parameters as predicted); Torch-Pruning's own sweep reports 77 of its 85",
             "(torchvision 0.13.1, detection and segmentation models included).",
             ""]
    if failing:
        lines += ["Failing:", ""]
        lines += [f"* `{r['model']}`: {r['status']}"
                  + (f" — `{r['error']}`" if r.get("error") else " (see the table)") for r in failing]
        lines.append("")
    else:
        lines += ["Failing: none.", ""]
    lines += ["| model | input | groups (removable / approx.) | params before → after | MACs before → after "
              "| MACs as predicted | max rel. diff vs masked | status |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["model"]):
        if r["status"] in ("error", "timeout"):
            lines.append(f"| {r['model']} | | | | | | | {r['status']} (see above) |")
            continue
        diff = "n/a (approx.)" if r["shrink_diff"] is None else f"{r['shrink_diff']:.1e}"
        macs_ok = "yes" if r["macs_after"] == r["macs_predicted"] else f"no ({r['macs_predicted'] / 1e6:.1f}M)"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['groups']} ({r['removable']} / {r['approximate']}) "
            f"| {r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M "
            f"| {r['macs_before'] / 1e6:.1f}M → {r['macs_after'] / 1e6:.1f}M | {macs_ok} | {diff} | {r['status']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/structured/results/coverage.jsonl"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per model")
    parser.add_argument("--memory-gb", type=float, default=12, help="address-space limit per model")
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, help="print the markdown table of a results file and exit")
    args = parser.parse_args()
    if args.one:
        _child(args.one, args.memory_gb)
    elif args.table:
        sys.stdout.write(table(args.table) + "\n")
    else:
        sweep(args.out, args.timeout, args.memory_gb, args.models)


if __name__ == "__main__":
    main()
