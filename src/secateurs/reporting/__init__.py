"""Benchmark reports: Markdown and CSV tables, PNG plots and one HTML page from a bench directory.

Example:
    >>> from secateurs.reporting import write_report
    >>> files = write_report("/tmp/bench")  # doctest: +SKIP
    >>> files.html                           # doctest: +SKIP
    PosixPath('/tmp/bench/report/index.html')
"""

from secateurs.reporting.aggregate import Stat, SummaryRow, summarize
from secateurs.reporting.build import ReportFiles, write_report

__all__ = ["ReportFiles", "Stat", "SummaryRow", "summarize", "write_report"]
