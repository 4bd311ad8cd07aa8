"""``secateurs search-tickets``: a Continuous Sparsification ticket search over several settings at once.

Example::

    secateurs search-tickets --model lenet5 --data fashion-mnist --epochs 8 \\
        --vary s0 --values -0.2,-0.1,0,0.1 --out runs/cs-tickets

Each value of ``--vary`` gets its own replica of the network, trained on the same batches (one pass
over the data); the flags of ``prune`` apply (``-o KEY=VALUE`` sets CS options shared by all
replicas, ``--epochs`` is the budget of each replica: its search rounds plus the ticket training).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from secateurs.cli.command import Command as Subcommand
from secateurs.cli.run_args import add_run_arguments, run_config_from_args
from secateurs.errors import UsageError

__all__ = ["Command", "parse_values"]

DEFAULT_VALUES = "-0.3,-0.2,-0.1,0.0,0.1"


def parse_values(text: str) -> list[Any]:
    """``"-0.1,0,0.1"`` -> ``[-0.1, 0, 0.1]`` (each item read as YAML, so numbers become numbers)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError("--values needs a comma-separated list, e.g. --values -0.1,0,0.1")
    out = []
    for item in items:
        try:
            out.append(yaml.safe_load(item))
        except yaml.YAMLError:
            out.append(item)
    return out


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, pruning=True)
    p.add_argument("--vary", default="s0", help="the CS option varied across settings (s0, lam, sparsity, ...)")
    p.add_argument("--values", default=DEFAULT_VALUES, help=f"comma-separated values (default {DEFAULT_VALUES})")
    p.add_argument("--imp", choices=["compute", "measure", "none"], default="compute",
                   help="IMP's cost for the same curve: compute it, measure it (runs lottery), or skip")


def _run(args: argparse.Namespace) -> int:
    from secateurs.experiment.ticket_search import METHOD, search_tickets

    given = vars(args)
    if given.get("method") not in (None, "cs", METHOD):
        raise UsageError("search-tickets searches with continuous sparsification; leave out --method")
    args.method = METHOD
    values = parse_values(args.values)
    options = [o for o in given.get("option", [])]
    if args.vary.replace("-", "_") == "sparsity":
        args.sparsity = values[0]  # the base config must be valid; replicas override it
    elif "sparsity" not in given:
        options.append("free=true")  # the paper's ticket search: sparsity emerges from the varied setting
    args.option = options
    base = run_config_from_args(args, pruning=True)
    result = search_tickets(base, args.vary.replace("-", "_"), values, args.out, resume=args.resume, imp=args.imp,
                            show_progress=sys.stderr.isatty())
    vary = result["vary"]
    lines = [f"{vary}={p['value']}: sparsity {p['sparsity']:.4f} ticket accuracy {p['accuracy']:.2f}%"
             for p in sorted(result["points"], key=lambda p: p["sparsity"])]
    c = result["cost"]
    lines.append(f"cost: {c['epochs']} replica-epochs in {c['sequential_epochs']} passes, {c['seconds']:.0f} s")
    if "imp" in result:
        lines.append(f"IMP for the same {len(result['points'])} points: {result['imp']['epochs']} sequential epochs "
                     f"({result['imp']['how'].split(':')[0]})")
    lines.append(f"curve: {args.out}/curve.json, curve.md, curve.png")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


#: The subcommand object, wired into ``COMMANDS`` as ``"search-tickets"``.
Command = Subcommand("search tickets with continuous sparsification at several settings in one pass",
                      _add_arguments, _run)
