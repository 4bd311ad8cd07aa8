"""Analyses of a trained network that inform pruning decisions (no masks are changed here).

:mod:`secateurs.analysis.singularity` estimates, from the singular spectrum of a gradient matrix,
how many filters of each layer are effective and how far the network can be compressed.
"""
