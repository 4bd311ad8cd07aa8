"""Suite parsing and grid expansion: clear one-line errors, `all`, dense references, pretraining, N:M."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from secateurs.bench import load_suite, parse_suite
from secateurs.errors import UsageError
from secateurs.methods import METHODS
from secateurs.methods.base import MethodConfig
from secateurs.methods.random_pruning import RandomPruning


def suite(**changes):
    raw = {
        "name": "t",
        "base": {"data": "synthetic", "limit_train": 64, "train": {"epochs": 2}},
        "grid": {"model": ["mlp"], "method": ["dense", "magnitude", "random"], "sparsity": [0.5, 0.9], "seed": [0, 1]},
    }
    raw.update(changes)
    return raw


def test_grid_expands_seed_major_with_one_dense_reference_per_seed():
    s = parse_suite(suite())
    ids = [c.id for c in s.cells]
    assert len(ids) == len(set(ids))
    # 2 seeds x (1 dense + 2 methods x 2 sparsities)
    assert len(s.cells) == 10
    assert [c.seed for c in s.cells] == [0] * 5 + [1] * 5
    dense = [c for c in s.cells if c.method == "dense"]
    assert [c.target_kind for c in dense] == ["none", "none"]
    assert all(c.config.method is None for c in dense)
    pruned = [c for c in s.cells if c.method != "dense"]
    assert {(c.method, c.target_value) for c in pruned} == {(m, v) for m in ("magnitude", "random") for v in (0.5, 0.9)}
    # the method's own seed follows the cell's seed, and the budget is the same everywhere
    assert all(c.config.method_config().seed == c.seed == c.config.seed for c in pruned)
    assert {c.config.train.epochs for c in s.cells} == {2}


def test_all_expands_to_every_registered_method_and_aliases_resolve():
    # At the filter granularity every method runs (singularity prunes filters only).
    s = parse_suite(suite(grid={"model": "mlp", "method": ["all", "imp"], "sparsity": 0.5, "granularity": "filter"}))
    assert [c.method for c in s.cells] == METHODS.names()
    assert all(c.seed == 0 for c in s.cells)  # default seed


def test_method_options_apply_only_to_their_method():
    s = parse_suite(suite(method_options={"lottery": {"rounds": 2}},
                          grid={"model": "mlp", "method": ["lottery", "gmp"], "sparsity": 0.5}))
    by_method = {c.method: c.config.method_options for c in s.cells}
    assert by_method["lottery"].rounds == 2
    assert not hasattr(by_method["gmp"], "rounds")


def test_pretrain_cells_come_first_and_every_cell_starts_from_its_own():
    s = parse_suite(suite(pretrain={"train": {"epochs": 3, "lr": 0.2}}))
    pre = s.pretrain_cells
    assert [c.id for c in s.cells[:2]] == [c.id for c in pre]
    assert {c.seed for c in pre} == {0, 1}
    assert all(c.config.train.epochs == 3 and c.config.train.lr == 0.2 for c in pre)
    assert all(c.config.limit_train == 64 for c in pre)  # base still applies
    runs = [c for c in s.cells if c.role == "run"]
    assert all(c.pretrain == f"pretrain/mlp/synthetic/seed{c.seed}" and c.pretrain_epochs == 3 for c in runs)
    assert {c.config.train.epochs for c in runs} == {2}


def test_nm_granularity_implies_its_sparsity_once():
    s = parse_suite(suite(grid={"model": "mlp", "method": "magnitude", "granularity": ["2:4", "unstructured"],
                                "sparsity": [0.5, 0.9]}))
    kinds = [(c.granularity, c.target_kind, c.target_value) for c in s.cells]
    assert kinds == [("2:4", "implied", 0.5), ("unstructured", "sparsity", 0.5), ("unstructured", "sparsity", 0.9)]


def test_a_list_of_grids_is_their_union_without_duplicates():
    grids = [{"model": "mlp", "method": ["dense", "random"], "sparsity": 0.5},
             {"model": "mlp", "method": ["dense", "random"], "granularity": "filter", "macs": [0.5]}]
    s = parse_suite(suite(grid=grids))
    assert [(c.method, c.granularity, c.target_kind) for c in s.cells] == [
        ("dense", None, "none"), ("random", "unstructured", "sparsity"), ("random", "filter", "macs")]


def test_scope_axis_is_part_of_the_cell():
    s = parse_suite(suite(grid={"model": "mlp", "method": "magnitude", "sparsity": 0.5, "scope": ["tensor", "global"]}))
    assert [c.scope for c in s.cells] == ["tensor", "global"]
    assert len({c.id for c in s.cells}) == 2


@dataclass(frozen=True, kw_only=True)
class _NoFilterConfig(MethodConfig):
    def __post_init__(self) -> None:
        super().__post_init__()
        if str(self.granularity) == "filter":
            raise UsageError("this method supports no filter granularity")


class _NoFilter(RandomPruning):
    Config = _NoFilterConfig


@pytest.fixture
def no_filter_method(monkeypatch):
    """A method registered only for this test, which rejects the filter granularity."""
    monkeypatch.setitem(METHODS._items, "nofilter", _NoFilter)
    monkeypatch.setitem(METHODS._descriptions, "nofilter", "test only")
    return "nofilter"


def test_invalid_combination_from_all_is_not_applicable_but_explicit_is_an_error(no_filter_method):
    grid = {"model": "mlp", "method": "all", "granularity": ["unstructured", "filter"], "sparsity": 0.5}
    s = parse_suite(suite(grid=grid))
    not_applicable = dict(s.not_applicable)
    assert "runs/mlp/synthetic/nofilter/filter-s0.5/seed0" in not_applicable
    assert "filter" in not_applicable["runs/mlp/synthetic/nofilter/filter-s0.5/seed0"]
    # The other way round: singularity prunes filters only.
    assert set(not_applicable) == {"runs/mlp/synthetic/nofilter/filter-s0.5/seed0",
                                   "runs/mlp/synthetic/singularity/unstructured-s0.5/seed0"}
    assert any(c.method == "nofilter" and c.granularity == "unstructured" for c in s.cells)
    with pytest.raises(UsageError, match="nofilter at filter"):
        parse_suite(suite(grid={**grid, "method": ["nofilter"]}))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"grids": {}}, "unknown key 'grids' at the top level"),
        ({"grid": {"model": "mlp", "method": "random", "sparsity": 0.5, "seeds": [1]}}, "unknown axis 'seeds'"),
        ({"base": {"data": "synthetic", "epochs": 3}}, "base: unknown key 'epochs'"),
        ({"base": {"data": "synthetic", "train": {"epoch": 3}}}, "base.train: unknown key 'epoch'"),
        ({"base": {"data": "synthetic", "method": "gmp"}}, "base may not set 'method'"),
        ({"base": {"data": "synthetic", "seed": 1}}, "base may not set 'seed'"),
        ({"method_options": {"nope": {}}}, "unknown method 'nope'"),
        ({"method_options": {"lottery": {"round": 2}}}, "unknown option 'round'"),
        ({"method_options": {"lottery": {"sparsity": 0.5}}}, "'sparsity' is a grid axis"),
        ({"method_options": {"dense": {}}}, "dense reference has no method options"),
        ({"method_options": {"lottery": {"rounds": 0}}, "grid": {"model": "mlp", "method": "lottery", "sparsity": 0.5}},
         "rounds must be an integer >= 1"),
        ({"pretrain": {"model": "lenet5"}}, "pretrain may not set 'model'"),
        ({"pretrain": {"train": {"epochz": 1}}}, "pretrain.train: unknown key 'epochz'"),
        ({"grid": {"model": "mlp", "method": "nope", "sparsity": 0.5}}, "unknown method 'nope'"),
        ({"grid": {"model": "mlp", "method": "random", "sparsity": 1.0}}, "outside [0, 1)"),
        ({"grid": {"model": "mlp", "method": "random", "macs": 0.0}}, "outside (0, 1]"),
        ({"grid": {"model": "mlp", "method": "random", "sparsity": "high"}}, "targets are numbers"),
        ({"grid": {"model": "mlp", "method": "random"}}, "need grid.sparsity or grid.macs"),
        ({"grid": {"model": "mlp", "method": "random", "sparsity": 0.5, "seed": [0.5]}}, "seeds are integers"),
        ({"grid": {"method": "random", "sparsity": 0.5}}, "the grid needs model"),
        ({"grid": {"model": "nope", "method": "dense"}}, None),  # models are checked when the cell runs
        ({"grid": None}, "the suite needs a grid"),
        ({"grid": {"model": "mlp", "method": "random", "sparsity": 0.5, "granularity": "hexagon"}}, "granularity"),
        ({"grid": {"model": "mlp", "method": [], "sparsity": 0.5}}, "method is empty"),
    ],
)
def test_bad_suites_fail_with_one_clear_line(changes, needle):
    if needle is None:
        parse_suite(suite(**changes))
        return
    with pytest.raises(UsageError) as info:
        parse_suite(suite(**changes))
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_load_suite_file_errors(tmp_path):
    with pytest.raises(UsageError, match="no suite file"):
        load_suite(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_suite(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(UsageError, match="a suite is a mapping"):
        load_suite(listed)
    good = tmp_path / "mine.yaml"
    good.write_text("base: {data: synthetic}\ngrid: {model: mlp, method: dense}\n")
    assert load_suite(good).name == "mine"


@pytest.mark.parametrize("name", ["smoke", "fashion-lenet5", "fashion-resnet20"])
def test_shipped_suites_parse(name):
    from pathlib import Path

    s = load_suite(Path(__file__).parents[2] / "benchmarks" / f"{name}.yaml")
    runs = [c for c in s.cells if c.role == "run"]
    methods = {c.method for c in runs}
    assert set(METHODS.names()) <= methods  # every registered method takes part
    assert len({c.config.train.epochs for c in runs}) == 1  # the equal-budget rule
