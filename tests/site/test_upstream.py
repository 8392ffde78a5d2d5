"""Every workaround for the site's tools has a gate that fails once it is not needed.

docs/_ext/dlcomp_upstream.py lists them; the build checks the gates when it
starts. These tests run with the docs' requirements (``nox -s docs``).
"""

import importlib
import importlib.metadata
import sys

import pytest
from sitepages import EXT

pytestmark = pytest.mark.site

sys.path.insert(0, str(EXT))
upstream = importlib.import_module("dlcomp_upstream")


def test_every_gate_passes_with_the_tools_installed():
    assert upstream.problems() == []


@pytest.mark.parametrize("workaround", upstream.WORKAROUNDS, ids=lambda w: w.where)
def test_each_workaround_names_its_code_its_link_and_a_bounded_range(workaround):
    assert workaround.link.startswith("https://")
    bound = upstream.docs_requirements()[workaround.package]
    assert "<" in bound, f"{workaround.package}{bound}: no upper bound"
    if not workaround.where.startswith("conf."):
        module, _, name = workaround.where.rpartition(".")
        assert hasattr(importlib.import_module(module), name), workaround.where


def test_a_fixed_upstream_fails_the_gate(monkeypatch):
    fixed = upstream.Workaround(
        "a fixed bug", "sphinx", "https://example.org/1",
        "dlcomp_upstream.one_tag_list", lambda: False,
    )  # fmt: skip
    monkeypatch.setattr(upstream, "WORKAROUNDS", (fixed,))
    assert upstream.problems() == [
        f"a fixed bug: sphinx {importlib.metadata.version('sphinx')} no longer has "
        "the problem (https://example.org/1): remove dlcomp_upstream.one_tag_list"
    ]


def test_a_release_outside_the_checked_range_fails_the_gate(monkeypatch):
    monkeypatch.setattr(upstream, "docs_requirements", lambda: {"sphinx": ">=1,<2"})
    installed = importlib.metadata.version("sphinx")
    outside = [line for line in upstream.problems() if "outside >=1,<2" in line]
    sphinx = [w for w in upstream.WORKAROUNDS if w.package == "sphinx"]
    assert len(outside) == len(sphinx) >= 1
    assert all(f"sphinx {installed} is installed" in line for line in outside)


def test_a_range_without_an_upper_bound_fails_the_gate(monkeypatch):
    monkeypatch.setattr(upstream, "docs_requirements", lambda: {"sphinx": ">=9.0"})
    assert any("with no upper bound" in line for line in upstream.problems())
