"""Why a timm model shrinks little: its channel groups, one line each, biggest first.

For every group: root layer, channels, whether it is removable and exact (or why not), and the share
of the model's parameters that its channels hold (what removing all of them would take away). Then
``shrink`` runs as the coverage sweep does (30 % of the channels of every removable, exact group) and
the groups it refuses are listed with the reason.

    python benchmarks/structured/group_diagnosis.py coat_tiny cait_xxs24_224 --top 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def diagnose(name: str, top: int, run_shrink: bool) -> None:
    import torch

    from secateurs.structured import coupled_channel_groups, group_filter_masks, shrink
    from timm_coverage import PRUNE, _first_working_size

    torch.manual_seed(0)
    model, x = _first_working_size(name)
    total = sum(p.numel() for p in model.parameters())
    groups = coupled_channel_groups(model, x[:1])
    shapes = {n: p.shape for n, p in model.named_parameters()}
    rows = []
    for group in groups:
        held = 0
        for m in group.members:
            shape = shapes.get(m.param)
            if shape is None:
                continue
            positions = len({i % shape[m.dim] for i in m.index})
            held += shape.numel() // shape[m.dim] * positions
        state = "ok" if group.removable and group.exact else ("inexact" if group.removable else group.blocker)
        rows.append((held / total, group, state))
    rows.sort(key=lambda r: -r[0])
    reachable = sum(s for s, g, _ in rows if g.removable and g.exact)
    print(f"== {name}: {total / 1e6:.2f} M params, input {tuple(x.shape)}, {len(groups)} groups; "
          f"removable+exact groups hold {reachable:.1%} (30 % of them: {PRUNE * reachable:.1%})")
    for share, group, state in rows[:top]:
        norms = f" norms={len(group.norms)}" if group.norms else ""
        print(f"  {share:6.1%}  {group.root:45s} C={group.channels:<5d} chunks={group.chunks:<3d}{norms}  {state}")
    blocked = [(s, g, st) for s, g, st in rows if st != "ok"]
    print(f"  blocked/inexact: {sum(s for s, _, _ in blocked):.1%} of the params over {len(blocked)} groups")
    if not run_shrink:
        return
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
    after = sum(p.numel() for p in result.model.parameters())
    print(f"  shrink: removed {1 - after / total:.1%}, refused {len(result.refused)}")
    share = {g.root: s for s, g, _ in rows}
    for root, why in result.refused.items():
        print(f"    refused {root} ({share.get(root, 0):.1%}): {why[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--top", type=int, default=12, help="groups listed per model")
    parser.add_argument("--no-shrink", action="store_true", help="list the groups only")
    args = parser.parse_args()
    for name in args.models:
        try:
            diagnose(name, args.top, not args.no_shrink)
        except Exception as exc:  # noqa: BLE001 - one model's failure should not end the diagnosis
            print(f"== {name}: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
