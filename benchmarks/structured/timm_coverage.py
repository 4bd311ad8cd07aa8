"""timm coverage of structural compaction: the smallest model of every timm family up to 60 M parameters.

A *family* is the timm module defining the model (``resnet``, ``efficientnet``, ``vision_transformer``...);
its smallest model is found by building every model of the family on the meta device (no memory,
no init) and counting parameters. For each chosen model (random weights, 10 classes, the smallest
of 64/96/224 pixels it runs on):

* ours: trace the coupled channel groups (timed), prune 30 % of the channels of every exactly
  removable group (the same channels in all its producers), ``shrink`` (which checks every group and
  leaves in place the ones whose removal breaks the model), then check that the shrunk model equals
  the masked one and has the predicted size;
* Torch-Pruning's own pruner on the same instance: ``MetaPruner`` with L2 magnitude importance at a
  30 % pruning ratio (classifier ignored, everything else default), then a forward pass.

Each model runs in its own subprocess with a time and memory limit; rows are appended to a JSONL
file (re-running skips finished models, so the sweep can be run in pieces with ``--limit``).

    python benchmarks/structured/timm_coverage.py --families   # writes results/timm_families.json
    python benchmarks/structured/timm_coverage.py --limit 10   # the next 10 families
    python benchmarks/structured/timm_coverage.py --minutes 20 # as many as start within 20 minutes
    python benchmarks/structured/timm_coverage.py --table      # markdown for docs/results.md
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FAMILIES = RESULTS / "timm_families.json"
ROWS = RESULTS / "timm_coverage.jsonl"
SIZES = (64, 96, 224, 240, 256)  # the last two for models built for them only (CrossViT, HaloNet)
PRUNE = 0.3
MAX_PARAMS = 60_000_000


def smallest_per_family() -> dict[str, dict]:
    """Family -> {"model", "params"}: the timm model with the fewest parameters, up to MAX_PARAMS."""
    import timm
    import torch

    best: dict[str, dict] = {}
    for name in timm.list_models():
        family = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        try:
            with torch.device("meta"):
                model = timm.create_model(name, num_classes=10)
        except Exception:  # noqa: BLE001 - a model that does not build is no family's smallest
            continue
        params = sum(p.numel() for p in model.parameters())
        if params <= MAX_PARAMS and (family not in best or params < best[family]["params"]):
            best[family] = {"model": name, "params": params}
    return dict(sorted(best.items()))


def _first_working_size(name: str):
    import torch

    from secateurs.models import build_model

    last = None
    for size in SIZES:
        try:
            model = build_model(f"timm:{name}", in_channels=3, num_classes=10, image_size=size).eval()
            x = torch.randn(2, 3, size, size)
            with torch.no_grad():
                model(x)
            return model, x
        except Exception as exc:  # noqa: BLE001 - any failure means "try a larger input"
            last = exc
    raise RuntimeError(f"no input size in {SIZES} runs ({type(last).__name__}: {str(last)[:120]})")


def _ours(model, x) -> dict:
    import torch

    from secateurs.metrics import count_macs, count_params
    from secateurs.structured import coupled_channel_groups, group_filter_masks, reference_model, shrink

    start = time.perf_counter()
    groups = coupled_channel_groups(model, x[:1])
    trace_s = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    keep = {}
    for group in groups:
        if group.removable and group.exact:
            per_chunk = torch.rand(group.channels // group.chunks, generator=g) >= PRUNE
            per_chunk[0] = True
            keep[group.root] = per_chunk.repeat(group.chunks)
    masks = group_filter_masks(model, groups, keep)
    with torch.no_grad():
        for pname, entry in masks.items():
            model.get_parameter(pname).mul_(entry.full())
    result = shrink(model, masks, x[:1], groups=groups)
    reference = reference_model(model, result.groups, result.plan)  # dead channels zeroed, LayerNorms masked
    with torch.no_grad():
        expected, got = reference.eval()(x), result.model.eval()(x)
    diff = float((got - expected).abs().max()) / max(1.0, float(expected.abs().max()))
    params_before, params_after = count_params(model), count_params(result.model)
    macs_after = count_macs(result.model, x[:1]).dense
    exact_prediction = params_after == result.prediction.params_after and macs_after == result.prediction.macs_after
    equal = diff <= 1e-4
    return {
        "groups": len(groups), "removable": sum(g.removable for g in groups),
        "exact": sum(g.removable and g.exact for g in groups), "refused": len(result.refused),
        "trace_s": round(trace_s, 1), "params": params_before,
        "removed": round(1 - params_after / params_before, 3), "rel_diff": diff,
        "prediction_exact": exact_prediction,
        "status": "pass" if equal and exact_prediction and result.plan.removed_channels > 0 else
                  ("nothing removed" if result.plan.removed_channels == 0 else "check"),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _torch_pruning(model, x) -> dict:
    import torch
    import torch_pruning as tp

    start = time.perf_counter()
    model = copy.deepcopy(model)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [m for m in ([classifier] if isinstance(classifier, torch.nn.Module) else [])]
    before = sum(p.numel() for p in model.parameters())
    try:
        pruner = tp.pruner.MetaPruner(model, x[:1], importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=PRUNE, ignored_layers=ignored)
        pruner.step()
        with torch.no_grad():
            model.eval()(x)
    except Exception as exc:  # noqa: BLE001 - its failure is the comparison
        return {"tp_status": "error", "tp_error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}",
                "tp_seconds": round(time.perf_counter() - start, 1)}
    after = sum(p.numel() for p in model.parameters())
    return {"tp_status": "runs", "tp_removed": round(1 - after / before, 3),
            "tp_seconds": round(time.perf_counter() - start, 1)}


def measure(family: str, name: str) -> dict:
    """Both sweeps on one model, in this process."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    row: dict = {"family": family, "model": name}
    model, x = _first_working_size(name)
    row["input"] = int(x.shape[-1])
    try:
        row.update(_ours(copy.deepcopy(model), x))
    except Exception as exc:  # noqa: BLE001 - a raw exception is what this sweep looks for
        last = traceback.extract_tb(exc.__traceback__)[-1]
        row.update(status="error", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''} "
                                         f"({Path(last.filename).name}:{last.lineno})")
    _emit(row)  # ours is on record even if Torch-Pruning's pruner then runs out of time
    row.update(_torch_pruning(model, x))
    return row


def _emit(row: dict) -> None:
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def _child(family: str, name: str, memory_gb: float) -> None:
    limit = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        row = measure(family, name)
    except Exception as exc:  # noqa: BLE001 - record the failure, keep sweeping
        row = {"family": family, "model": name, "status": "error", "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    _emit(row)


def sweep(limit: int | None, timeout: float, memory_gb: float, only: list[str] | None,
          minutes: float | None = None) -> None:
    """Measure the families not measured yet (or ``only`` these), appending to the results file;
    no new model starts after ``minutes`` (pieces that fit a turn at the benchmark lock)."""
    started = time.monotonic()
    families = json.loads(FAMILIES.read_text())
    done = set()
    if ROWS.exists():
        done = {json.loads(line)["family"] for line in ROWS.read_text().splitlines() if line.strip()}
    todo = [(f, v["model"]) for f, v in families.items() if (only and f in only) or (not only and f not in done)]
    for family, name in todo[:limit]:
        if minutes is not None and time.monotonic() - started > minutes * 60:
            break
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", family, name, "--memory-gb", str(memory_gb)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {
                "family": family, "model": name, "status": "error",
                "error": (proc.stderr.strip().splitlines() or ["crashed"])[-1][:200]}
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            row = ({**json.loads(lines[-1]), "tp_status": "timeout", "tp_error": f"over {timeout:.0f} s in all"}
                   if lines else {"family": family, "model": name, "status": "timeout", "error": f"over {timeout:.0f} s"})
        kept = [line for line in (ROWS.read_text().splitlines() if ROWS.exists() else [])
                if line.strip() and json.loads(line)["family"] != family]
        ROWS.write_text("".join(line + "\n" for line in [*kept, json.dumps(row)]))
        sys.stderr.write(f"{family} ({name}): {row['status']}\n")


def table() -> str:
    """Markdown table of the results file, one row per family."""
    rows = sorted((json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()),
                  key=lambda r: r["family"])
    passed = sum(r["status"] == "pass" for r in rows)
    unbuilt = sum(r["status"] == "error" and r.get("error", "").startswith("RuntimeError: no input size") for r in rows)
    errors = sum(r["status"] == "error" for r in rows) - unbuilt
    timeouts = sum(r["status"] == "timeout" for r in rows)
    tp_runs = sum(r.get("tp_status") == "runs" for r in rows)
    lines = [f"**{passed} of {len(rows)} families pass** (shrunk == masked within 1e-4 relative, params and MACs as "
             f"predicted, something removed); {errors} raw errors; {timeouts} over the time limit; {unbuilt} not "
             f"built at any tried input size; Torch-Pruning's MetaPruner runs on {tp_runs}.",
             "",
             "| family | model | input | params | groups (removable / exact) | refused | trace s | ours: removed "
             "| ours: result | TP: removed | total s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = r["status"] if r["status"] != "error" else f"error: `{r.get('error', '')[:80]}`"
        tp = f"{r['tp_removed']:.1%}" if r.get("tp_status") == "runs" else "timeout" if r.get("tp_status") == "timeout" else (
            f"fails: `{r.get('tp_error', '')[:60]}`" if r.get("tp_status") else "")
        if "groups" in r:
            lines.append(f"| {r['family']} | {r['model']} | {r['input']} | {r['params'] / 1e6:.1f}M "
                         f"| {r['groups']} ({r['removable']} / {r['exact']}) | {r['refused']} | {r['trace_s']} "
                         f"| {r['removed']:.1%} | {ours} | {tp} | {r['seconds']} |")
        else:
            lines.append(f"| {r['family']} | {r['model']} | {r.get('input', '')} | | | | | | {ours} | {tp} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", action="store_true", help=f"find each family's smallest model ({FAMILIES})")
    parser.add_argument("--limit", type=int, default=None, help="at most this many families in this piece")
    parser.add_argument("--only", nargs="*", help="(re)run these families")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model")
    parser.add_argument("--minutes", type=float, default=None, help="start no new model after this many minutes")
    parser.add_argument("--memory-gb", type=float, default=8, help="address-space limit per model")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--table", action="store_true", help="print the markdown table and exit")
    args = parser.parse_args()
    if args.one:
        _child(*args.one, args.memory_gb)
    elif args.families:
        RESULTS.mkdir(parents=True, exist_ok=True)
        FAMILIES.write_text(json.dumps(smallest_per_family(), indent=1) + "\n")
    elif args.table:
        sys.stdout.write(table() + "\n")
    else:
        sweep(args.limit, args.timeout, args.memory_gb, args.only, args.minutes)


if __name__ == "__main__":
    main()
