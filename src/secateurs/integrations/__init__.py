"""Integrations of secateurs' methods into training frameworks that own the loop.

Each integration is a module of its own that imports its framework (an optional extra) only when it
is imported itself: ``import secateurs`` never imports them.

- :mod:`secateurs.integrations.lightning`: a Lightning ``Callback`` (extra ``lightning``).
"""
