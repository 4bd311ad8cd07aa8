"""``secateurs search-tickets``: a lottery-ticket search over several settings of one method at once.

Example::

    secateurs search-tickets --model lenet5 --data fashion-mnist --epochs 8 \\
        --vary s0 --values -0.2,-0.1,0,0.1 --out runs/cs-tickets

Each value of ``--vary`` gets its own replica of the network, trained on the same batches (one pass
over the data); the flags of ``prune`` apply (``-o KEY=VALUE`` sets method options shared by all
replicas, ``--epochs`` is the budget of each replica: its search rounds plus the ticket training).
``--method`` is any method that declares a ticket search (``secateurs list methods``); the default
is the only such method when there is one. ``--vary`` and ``--values`` default to the method's own.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from secateurs.cli.command import Command as Subcommand
from secateurs.cli.run_args import add_run_arguments, run_config_from_args
from secateurs.config_validation import parse_yaml_value
from secateurs.errors import UsageError

__all__ = ["Command", "parse_values"]


def parse_values(text: str) -> list[Any]:
    """``"-0.1,0,0.1"`` -> ``[-0.1, 0, 0.1]`` (each item read as YAML, so numbers become numbers)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError("--values needs a comma-separated list, e.g. --values=-0.1,0,0.1")
    return [parse_yaml_value(item) for item in items]  # "1e-3" is a number; the config checks the types


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, pruning=True)
    p.add_argument("--vary", help="the method option varied across settings (default: the method's, s0 for cs)")
    p.add_argument("--values", help="comma-separated values (default: the method's); --values=-0.1,0 for negatives")
    p.add_argument("--imp", choices=["compute", "measure", "none"], default="compute",
                   help="IMP's cost for the same curve: compute it, measure it (runs lottery), or skip")


def _method(given: dict[str, Any]) -> str:
    from secateurs.experiment.ticket_search import ticket_methods
    from secateurs.methods import METHODS

    if given.get("method") is not None:
        return METHODS.canonical(given["method"])
    names = ticket_methods()
    if len(names) != 1:
        raise UsageError(f"give --method, one of the methods that search tickets: {', '.join(names)}")
    return names[0]


def _run(args: argparse.Namespace) -> int:
    from secateurs.experiment.resume import require_resumable
    from secateurs.experiment.ticket_search import CURVE, search_tickets, ticket_spec

    if args.resume:
        require_resumable(args.out, finished=CURVE)
    given = vars(args)
    args.method = _method(given)
    spec = ticket_spec(args.method)
    vary = (args.vary or spec.vary).replace("-", "_")
    values = parse_values(args.values) if args.values is not None else list(spec.values)
    options = [o for o in given.get("option", [])]
    if vary == "sparsity":
        args.sparsity = values[0]  # the base config must be valid; replicas override it
    elif "sparsity" not in given:  # the sparsity emerges from the varied setting
        options += [f"{k}={v}" for k, v in spec.untargeted.items()]
    args.option = options
    base = run_config_from_args(args, pruning=True)
    result = search_tickets(base, vary, values, args.out, resume=args.resume, imp=args.imp,
                            show_progress=sys.stderr.isatty())
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
Command = Subcommand("search lottery tickets at several settings of one method in one pass",
                      _add_arguments, _run)
