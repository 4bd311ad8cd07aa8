"""Effective-filter analysis by gradient-matrix singularities (Zhou et al., arXiv 2206.03596).

The construction follows the reconstruction in ``specs/crl_singularity.md`` part B (the paper's
method section was not available; see ``docs/methods/singularity.md`` for what is ours):

- :mod:`~secateurs.analysis.singularity.units`: which coupled channel groups are analysed;
- :mod:`~secateurs.analysis.singularity.gram`: the consumer-weighted gradient-matrix Gram;
- :mod:`~secateurs.analysis.singularity.spectrum`: effective filter counts from the spectrum;
- :mod:`~secateurs.analysis.singularity.estimate`: per-unit and network maxima;
- :mod:`~secateurs.analysis.singularity.selection`: level-1 counts and level-2 pivoted-QR choice;
- :mod:`~secateurs.analysis.singularity.compensate`: least-squares refit of the consumers.
"""

from secateurs.analysis.singularity.estimate import NetworkEstimate, UnitEstimate, analyse_units, estimate_network
from secateurs.analysis.singularity.gram import UnitGram, collect_grams
from secateurs.analysis.singularity.selection import cap_counts, find_alpha, pivot_order, removal_counts
from secateurs.analysis.singularity.spectrum import CRITERIA, Criterion, effective_filters, spectrum
from secateurs.analysis.singularity.units import AnalysisUnit, ConsumerRead, analysis_units

__all__ = [
    "CRITERIA", "AnalysisUnit", "ConsumerRead", "Criterion", "NetworkEstimate", "UnitEstimate", "UnitGram",
    "analyse_units", "analysis_units", "cap_counts", "collect_grams", "effective_filters", "estimate_network",
    "find_alpha", "pivot_order", "removal_counts", "spectrum",
]
