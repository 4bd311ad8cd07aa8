"""Bad input, class by class: exit 2, exactly one line on stderr, no traceback, nothing written.

Each row of ``CASES`` is one class of bad input run through ``main(argv)``. The test snapshots the
test's directory before and after, so a refusal that leaves a stray run directory, a temporary file
or a changed file fails too.

Adding a row: ``Case(id, argv, needle, setup=...)``. ``{tmp}`` in ``argv`` is the test's own
directory; ``setup(tmp)`` prepares files first (a recipe, a damaged run directory, ...); ``needle``
is a piece of the expected message (case-insensitive). Keep rows fast: they must be refused before
any data loads or anything trains.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secateurs.cli.main import main

from _damaged import damaged, flip_bit, idx_files, mlp_weights, pruned_run, truncate  # noqa: E402 (tests/cli)

RUN = ["--model", "mlp", "--data", "synthetic", "--device", "cpu"]
PRUNE = ["prune", *RUN, "--method", "gmp", "--sparsity", "0.5"]


def _write(name: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).write_text(text)

    return setup


def _recipe(text: str) -> Callable[[Path], None]:
    return _write("recipe.yaml", text)


def _started_run(tmp: Path, *, checkpoint: bool = True) -> None:
    """A run directory of ``PRUNE`` as training leaves it (the checkpoint's content is not read)."""
    from secateurs.experiment.config import RunConfig

    RunConfig.from_dict({"model": "mlp", "data": "synthetic", "device": "cpu", "method": "gmp",
                         "method_options": {"sparsity": 0.5}}).save(tmp / "run" / "config.yaml")
    if checkpoint:
        (tmp / "run" / "checkpoint.pt").write_bytes(b"stands for a checkpoint")


def _torch_weights(tmp: Path) -> None:
    import torch

    from secateurs.utils.io import load_safetensors

    mlp_weights(tmp / "w.safetensors")
    torch.save(load_safetensors(tmp / "w.safetensors"), tmp / "w.pt")
    (tmp / "w.safetensors").unlink()


@dataclass(frozen=True)
class Case:
    """One class of bad input: its argv, a piece of the expected message, files it needs first."""

    id: str
    argv: list[str]
    needle: str
    setup: Callable[[Path], None] | None = field(default=None)


CASES = [
    # ------------------------------------------------------------ values of the wrong type or range
    Case("option-sparsity-text", [*PRUNE, "--out", "{tmp}/run", "-o", "sparsity=abc"], "method_options.sparsity"),
    Case("option-int-text", ["prune", *RUN, "--method", "lottery", "--sparsity", "0.5", "--out", "{tmp}/run",
                             "-o", "rounds=abc"], "method_options.rounds"),
    Case("option-int-float", [*PRUNE, "--out", "{tmp}/run", "-o", "updates=1.5"], "must be an integer"),
    Case("option-bool-text", ["prune", *RUN, "--method", "cs", "--sparsity", "0.5", "--out", "{tmp}/run",
                              "-o", "free=maybe"], "true or false"),
    Case("option-not-key-value", [*PRUNE, "--out", "{tmp}/run", "-o", "rounds"], "KEY=VALUE"),
    Case("option-unknown", [*PRUNE, "--out", "{tmp}/run", "-o", "lam=1"], "no option 'lam'"),
    Case("momentum-negative", [*PRUNE, "--out", "{tmp}/run", "--momentum", "-0.5"], "train.momentum"),
    Case("weight-decay-negative", [*PRUNE, "--out", "{tmp}/run", "--weight-decay", "-1"], "train.weight_decay"),
    Case("warmup-negative", [*PRUNE, "--out", "{tmp}/run", "--warmup-epochs", "-1"], "train.warmup_epochs"),
    Case("lr-nan", ["train", *RUN, "--out", "{tmp}/run", "--lr", "nan"], "finite"),
    Case("lr-inf", ["train", *RUN, "--out", "{tmp}/run", "--lr", "inf"], "finite"),
    Case("n-of-m-keeps-all", ["prune", *RUN, "--method", "gmp", "--granularity", "2:2", "--out", "{tmp}/run"],
         "N < M"),
    Case("device-unknown", ["train", *RUN, "--out", "{tmp}/run", "--device", "xyz"], "device"),
    Case("val-fraction-one", ["train", *RUN, "--out", "{tmp}/run", "--val-fraction", "1"], "val_fraction"),
    Case("limit-train-zero", ["train", *RUN, "--out", "{tmp}/run", "--limit-train", "0"], "limit_train"),
    # ------------------------------------------------------------------------------ recipe files
    Case("recipe-epochs-text", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "train.epochs",
         _recipe("model: mlp\ndata: synthetic\ntrain: {epochs: abc}\n")),
    Case("recipe-lr-quoted", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "train.lr",
         _recipe("model: mlp\ndata: synthetic\ntrain: {lr: '0.1'}\n")),
    Case("recipe-lr-nan", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "train.lr",
         _recipe("model: mlp\ndata: synthetic\ntrain: {lr: .nan}\n")),
    Case("recipe-train-scalar", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "train must be",
         _recipe("model: mlp\ndata: synthetic\ntrain: 5\n")),
    Case("recipe-options-list", ["prune", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "method_options",
         _recipe("model: mlp\ndata: synthetic\nmethod: gmp\nmethod_options: [1, 2]\n")),
    Case("recipe-options-type", ["prune", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"],
         "method_options.power", _recipe("model: mlp\ndata: synthetic\nmethod: gmp\n"
                                         "method_options: {sparsity: 0.5, power: [3]}\n")),
    Case("recipe-include-number", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "include",
         _recipe("model: mlp\ndata: synthetic\ninclude: 5\n")),
    Case("recipe-seed-text", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "seed",
         _recipe("model: mlp\ndata: synthetic\nseed: x\n")),
    Case("recipe-unknown-key", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "unknown config key",
         _recipe("model: mlp\ndata: synthetic\nepoch: 3\n")),
    Case("recipe-not-mapping", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "mapping",
         _recipe("- model\n- mlp\n")),
    Case("recipe-not-yaml", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "not valid YAML",
         _recipe("model: [mlp\n")),
    Case("recipe-options-dense", ["train", "--config", "{tmp}/recipe.yaml", "--out", "{tmp}/run"], "no method",
         _recipe("model: mlp\ndata: synthetic\nmethod_options: {sparsity: 0.5}\n")),
    Case("recipe-missing", ["train", "--config", "{tmp}/none.yaml", "--out", "{tmp}/run"], "no config file"),
    Case("recipe-directory", ["train", "--config", "{tmp}", "--out", "{tmp}/run"], "directory"),
    # ------------------------------------------------------------------------------ --resume
    Case("resume-no-directory", [*PRUNE, "--out", "{tmp}/run", "--resume"], "does not exist"),
    Case("resume-no-checkpoint", [*PRUNE, "--out", "{tmp}/run", "--resume"], "holds no checkpoint",
         lambda tmp: _started_run(tmp, checkpoint=False)),
    Case("resume-changed-flags", [*PRUNE, "--out", "{tmp}/run", "--resume", "--lr", "0.01", "-o", "power=2"],
         "method_options.power: 3.0 -> 2.0; train.lr: 0.1 -> 0.01", lambda tmp: _started_run(tmp)),
    Case("resume-changed-recipe", [*PRUNE, "--out", "{tmp}/run", "--resume", "--config", "{tmp}/recipe.yaml"],
         "train.epochs: 10 -> 20", lambda tmp: (_started_run(tmp), _recipe("train: {epochs: 20}\n")(tmp))),
    Case("search-resume-no-checkpoint", ["search-tickets", *RUN, "--out", "{tmp}/run", "--resume"],
         "holds no checkpoint", lambda tmp: (tmp / "run").mkdir()),
    # ------------------------------------------------------------------------ benchmark suites
    *[Case(f"suite-{name}", ["bench", "{tmp}/suite.yaml", "--out", "{tmp}/bench"], needle,
           _write("suite.yaml", "base: {model: mlp, data: synthetic}\ngrid: {method: [gmp], sparsity: [0.5]}\n" + extra))
      for name, extra, needle in (
          ("epochs-text", "base: {model: mlp, data: synthetic, train: {epochs: abc}}\n", "base.train.epochs"),
          ("lr-quoted", "base: {model: mlp, data: synthetic, train: {lr: '0.1'}}\n", "base.train.lr"),
          ("seed-text", "grid: {method: [gmp], sparsity: [0.5], seed: [x]}\n", "grid.seed"),
          ("options-list", "method_options: {gmp: [1]}\n", "method_options.gmp"),
          ("option-text", "method_options: {gmp: {updates: abc}}\n", "method_options.updates"),
          ("include-number", "base: {model: mlp, data: synthetic, include: 5}\n", "include"),
      )],
    # ---------------------------------------------------- output paths, checked before any work
    *[Case(f"{name}-out-is-file", [*argv, "--out", "{tmp}/file"], "is a file", _write("file", "x"))
      for name, argv in (("train", ["train", *RUN]), ("prune", PRUNE), ("shrink", ["shrink", "{tmp}"]),
                         ("bench", ["bench", "{tmp}/suite.yaml"]), ("search-tickets", ["search-tickets", *RUN]))],
    *[Case(f"{name}-out-under-file", [*argv, "--out", "{tmp}/file/run"], "lies under", _write("file", "x"))
      for name, argv in (("train", ["train", *RUN]), ("bench", ["bench", "{tmp}/suite.yaml"]))],
    # ------------------------------------------ refused late, after data and model: no directory left
    Case("rounds-beyond-epochs", ["prune", *RUN, "--method", "lottery", "--sparsity", "0.5", "--epochs", "2",
                                  "-o", "rounds=4", "--limit-train", "64", "--limit-test", "32",
                                  "--out", "{tmp}/run"], "needs at least"),
    # --------------------------------------------------------------------------- smaller ones
    Case("bench-device-unknown", ["bench", "{tmp}/suite.yaml", "--out", "{tmp}/bench", "--device", "xyz"],
         "unknown device"),
    Case("bench-data-dir-missing", ["bench", "{tmp}/suite.yaml", "--out", "{tmp}/bench", "--data-dir", "{tmp}/no"],
         "--data-dir"),
    Case("data-dir-empty-no-fallback", ["train", "--model", "mlp", "--data", "fashion-mnist", "--data-dir",
                                        "{tmp}/empty", "--out", "{tmp}/run"], "not found",
         lambda tmp: (tmp / "empty").mkdir()),
    Case("unsafe-checkpoint", [*PRUNE, "--from", "{tmp}/evil.pt", "--limit-train", "64", "--limit-test", "32",
                               "--out", "{tmp}/run"], "refused to load", lambda tmp: _evil_pickle(tmp / "evil.pt")),
    Case("shrink-unstructured-grammar", ["shrink", "{tmp}/done", "--out", "{tmp}/small"], "is an unstructured run",
         lambda tmp: _finished_run(tmp / "done")),
    # -------------------------------------------------- damaged files (truncated, a flipped bit, not the format)
    *[Case(f"damaged-{what}-{how}", argv, needle, damaged(prepare, target, damage))
      for what, argv, prepare, target in (
          ("from-safetensors", [*PRUNE, "--from", "{tmp}/w.safetensors", "--out", "{tmp}/new"],
           lambda t: mlp_weights(t / "w.safetensors"), "w.safetensors"),
          ("from-run-weights", [*PRUNE, "--from", "{tmp}/run", "--out", "{tmp}/new"],
           lambda t: pruned_run(t / "run"), "run/model.safetensors"),
          ("from-run-report", [*PRUNE, "--from", "{tmp}/run", "--out", "{tmp}/new"],
           lambda t: pruned_run(t / "run"), "run/report.json"),
          ("shrink-masks", ["shrink", "{tmp}/run", "--out", "{tmp}/small"],
           lambda t: pruned_run(t / "run"), "run/masks.safetensors"),
          ("shrink-weights", ["shrink", "{tmp}/run", "--out", "{tmp}/small"],
           lambda t: pruned_run(t / "run"), "run/model.safetensors"),
          ("shrink-report", ["shrink", "{tmp}/run", "--out", "{tmp}/small"],
           lambda t: pruned_run(t / "run"), "run/report.json"),
          ("inspect-report", ["inspect", "{tmp}/run"], lambda t: pruned_run(t / "run"), "run/report.json"),
          ("idx-gz", ["train", *RUN[:2], "--data", "mnist", "--data-dir", "{tmp}/mnist", "--out", "{tmp}/new"],
           lambda t: idx_files(t / "mnist"), "mnist/train-images-idx3-ubyte.gz"),
      )
      for how, damage, needle in (("truncated", truncate, "damaged"), ("bit-flip", flip_bit, "damaged"))
      if not (how == "bit-flip" and target.endswith(".json"))],  # a flipped bit in JSON text may stay valid JSON
    Case("damaged-report-not-json", ["inspect", "{tmp}/run"], "report.json is damaged",
         damaged(lambda t: pruned_run(t / "run"), "run/report.json", lambda p: p.write_bytes(b"\xff\xfe{"))),
    Case("damaged-from-pt-truncated", [*PRUNE, "--from", "{tmp}/w.pt", "--out", "{tmp}/new"], "w.pt is damaged",
         damaged(_torch_weights, "w.pt", truncate)),
]


class _Evil:
    def __reduce__(self):  # unpickling would run a command: a weights-only load must refuse it
        return (os.system, ("echo unpickled",))


def _evil_pickle(path: Path) -> None:
    import torch

    torch.save({"model": _Evil()}, path)


def _finished_run(path: Path) -> None:
    code = main([*PRUNE, "--limit-train", "64", "--limit-test", "32", "--epochs", "1", "--batch-size", "32",
                 "--out", str(path)])
    assert code == 0


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (directories included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns)
    return out


def assert_refused(argv: list[str], tmp: Path, capsys: pytest.CaptureFixture[str], needle: str | None) -> None:
    """``main(argv)`` exits 2 with one line on stderr (holding ``needle``) and changes nothing in ``tmp``."""
    before = _snapshot(tmp)
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err)
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert lines[0].startswith("secateurs: error: "), lines[0]
    if needle is not None:
        assert needle.lower() in lines[0].lower(), lines[0]
    assert _snapshot(tmp) == before, "the refused command wrote or changed files"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case.setup is not None:
        case.setup(tmp_path)
    capsys.readouterr()  # what the setup printed is not the refusal's
    argv = [arg.format(tmp=tmp_path) for arg in case.argv]
    assert_refused(argv, tmp_path, capsys, case.needle)


def test_unwritable_output_is_refused_first(tmp_path, capsys, monkeypatch):
    """A read-only place (faked: the tests may run as root, who can write anywhere) is one line."""
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    assert_refused(["train", *RUN, "--out", str(locked / "run")], tmp_path, capsys, "cannot be written")


# --------------------------------------------------------------------------------------- fuzzing
class _Accepted(Exception):
    """Raised instead of running: the config was valid."""


@pytest.fixture
def no_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid configs stop at ``execute`` (the fuzz tests are about parsing, not training)."""
    import secateurs.experiment.run as run

    def accept(*args: object, **kwargs: object) -> None:
        raise _Accepted

    monkeypatch.setattr(run, "execute", accept)


_KEYS = ["model", "data", "method", "method_options", "train", "seed", "device", "include", "exclude",
         "val_fraction", "limit_train", "augment", "epochs", "lr", "sparsity", "rounds", "granularity"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=12), st.sampled_from(["mlp", "synthetic", "gmp", "lottery", "2:4", "filter"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3)),
                       max_leaves=6)
_FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _outcome(argv: list[str], tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(tmp)
    try:
        code = main(argv)
    except _Accepted:
        capsys.readouterr()
        return
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("secateurs: error: "), (argv, captured.err)
    assert _snapshot(tmp) == before


@_FUZZ
@given(document=st.one_of(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6), _VALUES,
                          st.text(max_size=40)))
def test_fuzzed_recipes_are_accepted_or_refused_in_one_line(document, tmp_path, capsys, no_runs):
    import yaml

    text = document if isinstance(document, str) else yaml.safe_dump(document)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    for command in ("train", "prune"):
        _outcome([command, "--config", str(recipe), "--out", str(tmp_path / "run")], tmp_path, capsys)


_SUITE_KEYS = ["name", "base", "grid", "method_options", "pretrain", "model", "data", "method", "sparsity",
               "macs", "seed", "granularity", "scope", "train", "epochs", "lr", "gmp", "lottery", "rounds"]
_SUITE_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_SUITE_KEYS), inner, max_size=3)), max_leaves=8)


@_FUZZ
@given(document=st.one_of(st.dictionaries(st.sampled_from(_SUITE_KEYS), _SUITE_VALUES, max_size=5), _SUITE_VALUES))
def test_fuzzed_suites_are_listed_or_refused_in_one_line(document, tmp_path, capsys):
    import yaml

    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(document))
    before = _snapshot(tmp_path)
    code = main(["bench", str(suite), "--out", str(tmp_path / "bench"), "--dry-run"])
    captured = capsys.readouterr()
    if code != 0:
        lines = captured.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("secateurs: error: "), captured.err
    assert _snapshot(tmp_path) == before


@_FUZZ
@given(key=st.one_of(st.sampled_from(["sparsity", "rounds", "rewind_fraction", "granularity", "scope", "seed",
                                      "coupled", "power", "updates"]), st.text(max_size=8)),
       value=st.text(max_size=12), method=st.sampled_from(["gmp", "lottery", "cs", "dpp", "gibbs"]))
def test_fuzzed_method_options_are_accepted_or_refused_in_one_line(key, value, method, tmp_path, capsys, no_runs):
    argv = ["prune", *RUN, "--method", method, "--sparsity", "0.5", "--out", str(tmp_path / "run"),
            "-o", f"{key}={value}"]
    _outcome(argv, tmp_path, capsys)
