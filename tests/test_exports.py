"""The public API: what dlcomp exports, and that every export has an example."""

import importlib
import importlib.resources
import inspect

import pytest

import dlcomp

# The modules whose public names dlcomp re-exports (one per chapter section).
TOPIC_MODULES = [
    "dlcomp.blocks",
    "dlcomp.parameters",
    "dlcomp.lazy",
    "dlcomp.layers",
    "dlcomp.serialization",
    "dlcomp.distributed",
    "dlcomp.devices",
    "dlcomp.timing",
]


def test_all_is_sorted():
    assert dlcomp.__all__ == sorted(dlcomp.__all__)


def test_all_matches_what_the_topic_modules_export():
    exported = set()
    for name in TOPIC_MODULES:
        module = importlib.import_module(name)
        assert module.__all__ == sorted(module.__all__), name
        exported |= set(module.__all__)
    assert set(dlcomp.__all__) == exported
    for name in dlcomp.__all__:
        assert hasattr(dlcomp, name), name


def test_pitfalls_are_not_reexported():
    from dlcomp import pitfalls

    assert not set(pitfalls.__all__) & set(dlcomp.__all__)


@pytest.mark.parametrize("name", ["dlcomp.pitfalls", "dlcomp.bench", *TOPIC_MODULES])
def test_every_public_object_has_a_doctest_example(name):
    module = importlib.import_module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        assert ">>>" in (inspect.getdoc(obj) or ""), f"{name}.{attr} has no example"


def test_package_is_typed():
    assert (importlib.resources.files("dlcomp") / "py.typed").is_file()
