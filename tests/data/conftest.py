"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the download cache at an empty directory so that no test sees a user's real cache."""
    cache = tmp_path_factory.mktemp("secateurs-cache")
    monkeypatch.setenv("SECATEURS_DATA", str(cache))
    return cache
