"""The nox sessions run their work in the session's environment, not in nox's.

A reader's venv holds nox alone (the README's ``pip install nox``): code a
session runs in nox's own interpreter can use nothing else.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_noxfile():
    spec = importlib.util.spec_from_file_location("dlcomp_noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeSession:
    """What a session calls on nox, recorded instead of run."""

    def __init__(self):
        self.posargs = []
        self.runs = []

    def install(self, *args, **kwargs):
        pass

    def run(self, *args, **kwargs):
        self.runs.append(args)

    def log(self, *args, **kwargs):
        pass


def test_translations_needs_nothing_but_nox_in_noxs_own_python(monkeypatch):
    noxfile = load_noxfile()
    for name in [n for n in sys.modules if n == "babel" or n.startswith("babel.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("babel", "sphinx_intl"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails
    session = FakeSession()
    noxfile.translations.func(session)
    commands = [" ".join(map(str, args)) for args in session.runs]
    assert any("dlcomp_catalogs.py update" in c for c in commands), commands
