"""The public API: what dlcomp exports, and that every export has an example."""

import dataclasses
import importlib
import importlib.resources
import inspect
import typing
from pathlib import Path

import pytest

import dlcomp

# The modules whose public names dlcomp re-exports (one per chapter section).
TOPIC_MODULES = [
    "dlcomp.auditing",
    "dlcomp.blocks",
    "dlcomp.parameters",
    "dlcomp.lazy",
    "dlcomp.layers",
    "dlcomp.serialization",
    "dlcomp.distributed",
    "dlcomp.devices",
    "dlcomp.timing",
    "dlcomp.measurements",
]

# Result types are documented through the function that returns them, as
# PyTorch does: their docstrings name that function, whose example shows the
# result in use, and have no example of their own. Only these names may go
# without one; test_an_exempt_name_is_a_result_type checks each of them.
RESULT_TYPES = {
    "dlcomp.auditing": ["AuditCost", "AuditReport", "Finding"],  # audit, audit_cost
    "dlcomp.devices": ["DeviceInfo", "DeviceReport"],  # describe_devices
    "dlcomp.parameters": ["NormHistory", "ParameterRow", "ParameterTable"],
    # read_checkpoint, load_checkpoint, load_matching, resumable_training
    "dlcomp.serialization": [
        "Checkpoint",
        "CheckpointInfo",
        "MatchReport",
        "TrainingRun",
    ],
    # matmul_throughput, copy_bandwidth, logging_cost, sync_cost, two_devices
    "dlcomp.measurements": [
        "CopyRow",
        "LoggingCost",
        "MatmulRow",
        "SyncCost",
        "TwoDevices",
    ],
}


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


# Public modules not re-exported from dlcomp: imported by their own path.
OWN_PATH_MODULES = [
    "dlcomp.pitfalls",
    "dlcomp.bench",
    "dlcomp.models",
    "dlcomp.train_worker",
    "dlcomp.distributed_worker",
]


def test_every_public_module_is_checked_and_has_an_api_page():
    package = Path(dlcomp.__file__).parent
    public = {
        f"dlcomp.{p.stem}" for p in package.glob("*.py") if not p.stem.startswith("_")
    }
    assert public == set(TOPIC_MODULES) | set(OWN_PATH_MODULES)
    api = Path(__file__).parents[1] / "docs" / "api"
    pages = " ".join(
        page.read_text("utf-8") for page in [*api.glob("*.rst"), *api.glob("*.md")]
    )
    assert [m for m in sorted(public) if m not in pages] == []


@pytest.mark.parametrize("name", [*OWN_PATH_MODULES, *TOPIC_MODULES])
def test_every_public_object_has_a_doctest_example(name):
    module = importlib.import_module(name)
    for attr in module.__all__:
        if attr in RESULT_TYPES.get(name, ()):
            continue
        obj = getattr(module, attr)
        assert ">>>" in (inspect.getdoc(obj) or ""), f"{name}.{attr} has no example"


def _mentions(hint: object, cls: type) -> bool:
    """Whether a type hint is ``cls`` or has it inside (``tuple[cls, ...]``)."""
    return hint is cls or any(_mentions(arg, cls) for arg in typing.get_args(hint))


def _returns(function: object, cls: type) -> bool:
    """Whether ``function`` returns ``cls``, or a dataclass with a ``cls`` field."""
    returned = typing.get_type_hints(function).get("return")
    if _mentions(returned, cls):
        return True
    if not dataclasses.is_dataclass(returned):
        return False
    # The function's module names what the dataclass's hints name (some result
    # types say they are from "dlcomp", whose namespace does not hold them).
    hints = typing.get_type_hints(returned, localns=function.__globals__)
    return any(_mentions(hint, cls) for hint in hints.values())


@pytest.mark.parametrize(
    ("module_name", "name"),
    [(module, name) for module, names in RESULT_TYPES.items() for name in names],
)
def test_an_exempt_name_is_a_result_type(module_name, name):
    module = importlib.import_module(module_name)
    assert name in module.__all__
    cls = getattr(module, name)
    assert dataclasses.is_dataclass(cls), f"{name} is not a result type"
    returners = [
        attr
        for attr in module.__all__
        if inspect.isfunction(getattr(module, attr))
        and _returns(getattr(module, attr), cls)
    ]
    assert returners, f"no public function of {module_name} returns {name}"
    doc = inspect.getdoc(cls)
    assert ">>>" not in doc, f"{name} has its own example: it needs no exemption"
    assert any(f":func:`{attr}`" in doc for attr in returners), (
        f"{name}'s docstring names none of {returners}, whose examples show it"
    )


def test_package_is_typed():
    assert (importlib.resources.files("dlcomp") / "py.typed").is_file()
