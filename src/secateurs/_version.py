"""The one place the version lives (read by pyproject.toml and ``secateurs.__version__``)."""

__version__ = "0.1.0"
