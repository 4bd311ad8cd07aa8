"""Benchmark suites: a YAML grid of model x data x method x target x seed, run resumably.

Example:
    >>> from secateurs.bench import load_suite, run_suite
    >>> summary = run_suite(load_suite("benchmarks/smoke.yaml"), "/tmp/bench")  # doctest: +SKIP
"""

from secateurs.bench.grid import Cell
from secateurs.bench.results import RESULTS, read_results
from secateurs.bench.runner import BenchSummary, run_suite
from secateurs.bench.suite import Suite, load_suite, parse_suite

__all__ = ["RESULTS", "BenchSummary", "Cell", "Suite", "load_suite", "parse_suite", "read_results", "run_suite"]
