"""Runs: a typed RunConfig executed into a run directory with a report."""

from secateurs.experiment.config import RunConfig, load_recipe
from secateurs.experiment.run import execute

__all__ = ["RunConfig", "execute", "load_recipe"]
