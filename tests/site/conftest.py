"""Fixtures for the checks of the built site (run by `nox -s docs` after the build)."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def site() -> Path:
    """The built HTML site; a missing build is a failure, not a skip."""
    path = Path(os.environ.get("DLCOMP_SITE", "build/html"))
    if not (path / "index.html").is_file():
        pytest.fail(f"no built site at {path}: run `nox -s docs` first")
    return path
