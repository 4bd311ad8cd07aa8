"""Arguments of ``train`` and ``prune``, merged as defaults < ``--config`` recipe < flags.

Method-specific settings come as ``--option KEY=VALUE`` (repeatable); they are checked against the
method's typed config, so a misspelt key is an error that lists the valid ones.

Why argparse and not a dataclass-driven CLI library (jsonargparse, tyro): flags only collect values
here; types, ranges and help live once, in the config dataclasses (:mod:`secateurs.config_validation`,
which also generates ``--method NAME --help``). A method's options depend on ``--method``, which such
libraries express as subclass syntax (``--method.class_path``, ``--method.init_args.rounds``) that
would change every documented command, and their errors are multi-line usage dumps; the switch would
not make this file smaller.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secateurs.cli.catalogue import setting_help
from secateurs.cli.option_help import MethodHelpAction
from secateurs.config_validation import ConfigValueError, parse_yaml_value
from secateurs.errors import UsageError

if TYPE_CHECKING:
    from secateurs.experiment.config import RunConfig

# RunConfig and the recipe loader import torch: they are imported when a command runs, not when the
# parser is built, so --help and argument errors answer without torch (flag help: the catalogue).

__all__ = ["add_run_arguments", "parse_option", "run_config_from_args", "setting_sources"]

# flag destination -> (section of the recipe, key); section None = top level
_TRAIN_FLAGS = {
    "epochs": int, "batch_size": int, "lr": float, "optimizer": str, "lr_schedule": str,
    "weight_decay": float, "momentum": float, "warmup_epochs": float, "label_smoothing": float, "compile": str,
}
_TRAIN_SWITCHES = ("channels_last", "decay_bias_norm")
_TOP_FLAGS = {
    "model": str, "data": str, "seed": int, "device": str, "data_dir": str, "val_fraction": float,
    "limit_train": int, "limit_test": int, "round_to": int,
}
_HELP = {
    "seed": "the one seed of the run: initialisation, data order and augmentation, the method's sampler "
            "(a method's own -o seed=N overrides it for the method)",
}
_METHOD_FLAGS = {"sparsity": float, "granularity": str, "scope": str, "quant_bits": int}


def add_run_arguments(p: argparse.ArgumentParser, *, pruning: bool) -> None:
    """Add the flags of ``train`` (``pruning=False``) or ``prune``."""
    S = argparse.SUPPRESS  # unset flags stay out of the namespace, so the recipe's values win
    p.add_argument("--out", required=True, help="run directory to create (or resume)")
    p.add_argument("--config", help="recipe YAML with RunConfig keys; flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    for name, typ in {**_TOP_FLAGS, **_TRAIN_FLAGS}.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=S,
                       help=_HELP.get(name) or setting_help(name))
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=S,
                   help="channels-last (NHWC) weights and inputs (faster convolutions on GPUs)")
    p.add_argument("--decay-bias-norm", dest="decay_bias_norm", action=argparse.BooleanOptionalAction, default=S,
                   help="apply weight decay to biases and normalisation parameters too (default: off; recipe key "
                        "train.decay_bias_norm)")
    p.add_argument("--deterministic", action="store_true", default=S,
                   help="deterministic torch algorithms and cuDNN settings (recorded in run.json)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=S, help="no training augmentation")
    p.add_argument("--download", action="store_true", default=S, help="download a missing dataset with torchvision")
    if pruning:
        p.add_argument("-h", "--help", action=MethodHelpAction)
        p.add_argument("--method", default=S, help="pruning method (secateurs list methods)")
        p.add_argument("--sparsity", type=float, default=S, help="fraction of target weights removed, in [0, 1)")
        p.add_argument("--granularity", default=S, help="unstructured, kernel, filter or N:M")
        p.add_argument("--scope", default=S, help="tensor, global or group")
        p.add_argument("--quant-bits", dest="quant_bits", type=int, default=S, metavar="B",
                       help="joint B-bit weight quantization, for methods that support it (e.g. dpp)")
        p.add_argument("--from", dest="from_checkpoint", default=S, help="start from a trained run or weights file")
        p.add_argument("--include", action="append", default=S, help="glob of weight names to prune (repeatable)")
        p.add_argument("--exclude", action="append", default=S, help="glob of weight names to keep dense")
        p.add_argument("--option", "-o", action="append", default=S, metavar="KEY=VALUE",
                       help="a method option, e.g. -o rounds=4 (repeatable; --method NAME --help lists them); "
                            "-o seed=N overrides --seed for the method's own generator only")
        p.add_argument("--budget", dest="budgets", action="append", default=S, metavar="NAME<=VALUE",
                       help="a cost bound on the delivered model, e.g. 'macs<=25%%', 'latency_ms<=0.5x', "
                            "'params<=20000' (repeatable; replaces --sparsity)")
        p.add_argument("--allocation", default=S, help="per-layer allocator (secateurs list allocators)")
        p.add_argument("--allocation-option", dest="allocation_option", action="append", default=S,
                       metavar="KEY=VALUE", help="an allocator option, e.g. episodes=64 (repeatable)")
        p.add_argument("--search-episodes", dest="search_episodes", type=int, default=S, metavar="N",
                       help="reward evaluations of a search allocator (crl, random-search)")
        p.add_argument("--search-minutes", dest="search_minutes", type=float, default=S, metavar="M",
                       help="stop a search allocator after this many minutes")


def parse_option(text: str) -> tuple[str, Any]:
    """``"rounds=4"`` -> ``("rounds", 4)``: the value read as YAML reads it (numbers, true/false), else text.

    Types and ranges are checked by the method's config, like any other source of options.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"method options are KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), parse_yaml_value(value.strip())


def _section(value: Any, key: str, what: str) -> dict[str, Any]:
    """A recipe section that must be a mapping (``train``, ``method_options``); absent -> empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigValueError(key, value, f"a mapping of {what}")
    return dict(value)


def run_config_from_args(args: argparse.Namespace, *, pruning: bool) -> RunConfig:
    """Build the RunConfig of a ``train``/``prune`` invocation.

    When resuming, the saved one: settings given again (flags, ``--config``) must agree with it.
    """
    from secateurs.experiment.config import RunConfig, load_recipe
    from secateurs.experiment.resume import check_same_settings

    saved = Path(args.out) / "config.yaml"
    recipe: dict[str, Any] = dict(load_recipe(args.config)) if args.config else {}
    if args.resume and saved.exists():
        stored = dict(load_recipe(saved))
        config = RunConfig.from_dict(stored)
        requested = _config_from(_overlay(stored, recipe), vars(args), pruning=pruning)
        check_same_settings(config.to_dict(), requested.to_dict(), args.out)
        return config
    return _config_from(recipe, vars(args), pruning=pruning)


def _overlay(base: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a recipe's keys on top (its ``train`` and ``method_options`` merged key by key)."""
    out = {**base, **recipe}
    for section in ("train", "method_options"):
        if isinstance(base.get(section), Mapping) and isinstance(recipe.get(section), Mapping):
            out[section] = {**base[section], **recipe[section]}
    return out


def _config_from(raw: dict[str, Any], given: dict[str, Any], *, pruning: bool) -> RunConfig:
    """The RunConfig of the settings ``raw`` (a recipe) with the flags that were ``given`` on top."""
    from secateurs.experiment.config import RunConfig

    raw = dict(raw)
    train = _section(raw.pop("train", None), "train", "training settings (secateurs list settings)")
    options = _section(raw.pop("method_options", None), "method_options",
                       "the method's options (secateurs list methods NAME)")
    for name in _TOP_FLAGS:
        if name in given:
            raw[name] = given[name]
    for name in (*_TRAIN_FLAGS, *_TRAIN_SWITCHES):
        if name in given:
            train[name] = given[name]
    for name in ("augment", "download", "deterministic"):
        if name in given:
            raw[name] = given[name]
    if pruning:
        for name in ("method", "from_checkpoint", "include", "exclude"):
            if name in given:
                raw[name] = given[name]
        for name in _METHOD_FLAGS:
            if name in given:
                options[name] = given[name]
        for text in given.get("option", []):
            key, value = parse_option(text)
            options[key] = value
        for name in ("budgets", "allocation"):
            if name in given:
                raw[name] = given[name]
        search = dict(raw.pop("allocation_options", None) or {})
        for text in given.get("allocation_option", []):
            key, value = parse_option(text)
            search[key] = value
        for flag, key in (("search_episodes", "episodes"), ("search_minutes", "minutes")):
            if flag in given:
                search[key] = given[flag]
        raw["allocation_options"] = search
        if not raw.get("method"):
            raise UsageError("prune needs a method (--method NAME; see `secateurs list methods`)")
    else:
        if raw.get("method"):
            raise UsageError("train builds a dense model; use `secateurs prune` for a method")
        raw["method"] = None
    raw["train"] = train
    raw["method_options"] = options
    return RunConfig.from_dict(raw)


def setting_sources(args: argparse.Namespace, *, pruning: bool) -> dict[str, str]:
    """Where each setting of a ``train``/``prune`` invocation came from, for the run record.

    Keys are flattened config names (``seed``, ``train.lr``, ``method_options.rounds``); values are
    ``recipe`` (the ``--config`` file), ``flag`` or ``-o``. Settings missing here hold defaults.
    A resumed run keeps the sources of its first start (its record is not rewritten).
    """
    from secateurs.experiment.config import load_recipe

    given = vars(args)
    sources: dict[str, str] = {}
    if args.config and not args.resume:
        for key, value in load_recipe(args.config).items():
            if isinstance(value, dict):
                sources.update({f"{key}.{sub}": "recipe" for sub in value})
            else:
                sources[key] = "recipe"
    flags = [*_TOP_FLAGS, "augment", "download", "deterministic"]
    if pruning:
        flags += ["method", "from_checkpoint", "include", "exclude"]
    sources.update({name: "flag" for name in flags if name in given})
    sources.update({f"train.{name}": "flag" for name in (*_TRAIN_FLAGS, *_TRAIN_SWITCHES) if name in given})
    if pruning:
        sources.update({f"method_options.{name}": "flag" for name in _METHOD_FLAGS if name in given})
        for text in given.get("option", []):
            sources[f"method_options.{parse_option(text)[0]}"] = "-o"
    return sources
