"""Fixtures for every test and doctest (tests/ and the docstrings in dlcomp/)."""

import pytest

try:
    import torch
except ModuleNotFoundError:  # `nox -s browser` tests the built site without torch
    torch = None


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Seed torch before each test and doctest so printed values are stable."""
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict) -> None:
    """Make ``torch`` and ``nn`` available in every doctest, as in PyTorch's docs."""
    if torch is not None:
        doctest_namespace["torch"] = torch
        doctest_namespace["nn"] = torch.nn
