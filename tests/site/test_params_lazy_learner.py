"""Sections 5.2 and 5.3 as a learner uses them: code copied from the page runs.

- Each reference box (``{dlcomp-source}``) of the two pages, pasted into a
  fresh interpreter after the imports the page shows, defines what it shows,
  and the object's own examples then run on the pasted code. The boxes hold
  no private helper of the library and no tool comment.
- No visible cell of the two pages glues a value (``myst_nb.glue``).
- The lazy layer the 5.3 page writes is the library's ``LazyMyLinear``.
- The built pages (marked ``site``) show what their new sentences state.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sitepages import page_text
from torch import nn

import dlcomp

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["parameters.md", "deferred-init.md"]

sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import dlcomp_notebooks as converter  # noqa: E402  (the site's notebook converter)

CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
BOX = re.compile(r"^```\{dlcomp-source\}\s*(\S+)", re.MULTILINE)


def _cells(page: str) -> list[tuple[list[str], str]]:
    """(tags, code) of every code cell of a page, in order."""
    cells = []
    for body in CELL.findall((ROOT / "docs" / page).read_text(encoding="utf-8")):
        tags: list[str] = []
        if body.startswith("---\n"):  # YAML options: mystnb's image and alt text
            body = body[body.index("\n---\n", 3) + 5 :]
        match = re.match(r":tags:\s*\[([^\]]*)\]\n", body)
        if match:
            tags = [t.strip() for t in match.group(1).split(",")]
            body = body[match.end() :]
        cells.append((tags, body))
    return cells


def visible_cells(page: str) -> list[str]:
    return [code for tags, code in _cells(page) if "remove-cell" not in tags]


def visible_imports(page: str) -> str:
    """The import statements of the page's visible cells, in order."""
    lines = []
    for code in visible_cells(page):
        for node in ast.parse(code).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                lines.append(ast.get_source_segment(code, node))
    return "\n".join(lines)


def boxes(page: str) -> list[str]:
    return BOX.findall((ROOT / "docs" / page).read_text(encoding="utf-8"))


PASTE_AND_RUN = """
import doctest, sys
namespace = {}
exec(compile(IMPORTS, "<the page's imports>", "exec"), namespace)
for dotted, code in BOXES:
    exec(compile(code, dotted, "exec"), namespace)
failed = 0
for dotted, code in BOXES:
    test = doctest.DocTestParser().get_doctest(
        DOCS[dotted], dict(namespace), dotted, dotted, 0
    )
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    runner.run(test, out=sys.stdout.write)
    failed += runner.failures + (runner.tries == 0)
sys.exit(1 if failed else 0)
"""


@pytest.mark.parametrize("page", PAGES)
def test_reference_boxes_run_when_pasted_after_the_pages_imports(page):
    shown = boxes(page)
    assert shown, f"{page} shows no reference box"
    sources = [
        (dotted, converter.source_without_docstring(converter.resolve_object(dotted)))
        for dotted in shown
    ]
    docs = {dotted: converter.resolve_object(dotted).__doc__ or "" for dotted in shown}
    # every box has examples to run (the pasted code, not the library's, runs them)
    assert all(">>> " in doc for doc in docs.values()), docs
    script = (
        f"IMPORTS = {visible_imports(page)!r}\nBOXES = {sources!r}\nDOCS = {docs!r}\n"
        + PASTE_AND_RUN
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("page", PAGES)
def test_reference_boxes_hold_no_private_helper_and_no_tool_comment(page):
    for dotted in boxes(page):
        code = converter.source_without_docstring(converter.resolve_object(dotted))
        names = {
            node.id if isinstance(node, ast.Name) else node.attr
            for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Name | ast.Attribute)
        }
        private = {
            n for n in names if (n.startswith("_") and not n.startswith("__"))
        } | {n for n in names if n.startswith("check_")}
        assert not private, f"{page}: {dotted} uses {sorted(private)}"
        comments = re.findall(r"#\s*(?:type:|noqa|fmt:|pragma)", code)
        assert not comments, f"{page}: {dotted} has {comments}"


@pytest.mark.parametrize("page", PAGES)
def test_no_visible_cell_glues_a_value(page):
    for code in visible_cells(page):
        assert "myst_nb" not in code, code
        assert not re.search(r"\bglue\(", code), code


# --- the lazy layer the 5.3 page writes is the library's ---------------------------


def _page_lazy_layer() -> type:
    page = "deferred-init.md"
    (code,) = [c for c in visible_cells(page) if "class LazyMyLinear(" in c]
    namespace: dict = {}
    exec(visible_imports(page), namespace)
    exec(code, namespace)
    return namespace["LazyMyLinear"]


def test_the_pages_lazy_layer_behaves_as_the_librarys():
    page_cls = _page_lazy_layer()
    for cls in (page_cls, dlcomp.LazyMyLinear):
        state = torch.get_rng_state()
        layer = cls(3)
        # built without a size, without memory and without random numbers
        assert torch.equal(state, torch.get_rng_state())
        assert repr(layer) == "LazyMyLinear(in_units=0, units=3)"
        assert isinstance(layer, dlcomp.MyLinear)
        assert isinstance(layer.weight, nn.UninitializedParameter)
    X = torch.rand(4, 5)
    outputs, layers = [], []
    for cls in (page_cls, dlcomp.LazyMyLinear):
        torch.manual_seed(0)
        layer = cls(3)
        outputs.append(layer(X))
        layers.append(layer)
    assert torch.equal(*outputs)
    for layer in layers:
        assert type(layer) is dlcomp.MyLinear
        assert repr(layer) == "MyLinear(in_units=5, units=3)"
    assert torch.equal(layers[0].weight, layers[1].weight)
    assert torch.equal(layers[0].bias, layers[1].bias)
    # device and dtype reach the placeholders; a state_dict loads into both
    for cls in (page_cls, dlcomp.LazyMyLinear):
        layer = cls(2, device="meta", dtype=torch.float64)
        layer(torch.rand(3, 4, device="meta", dtype=torch.float64))
        assert (layer.weight.device.type, layer.weight.dtype) == ("meta", torch.float64)
        fresh = cls(3)
        fresh.load_state_dict(layers[1].state_dict())
        assert torch.equal(fresh.weight, layers[1].weight)
        assert repr(fresh) == "LazyMyLinear(in_units=0, units=3)"  # until its 1st call


# --- the built pages ------------------------------------------------------------------


PARAMETERS, DEFERRED = "parameters.html", "deferred-init.html"


@pytest.mark.site
@pytest.mark.parametrize(
    ("page", "printed"),
    [
        # ParameterList / ParameterDict register; a Python list does not
        (PARAMETERS, "['weights.0', 'weights.1', 'scales.low']"),
        # named_parameters(remove_duplicate=False) lists the tied names too
        (PARAMETERS, "'2.weight', '2.bias', '4.weight', '4.bias'"),
        # LazyLinear is an nn.Linear subclass whose type changes at the first batch
        (DEFERRED, "isinstance: True | type(m) == nn.Linear: False"),
        (DEFERRED, "after the dry run, type(m) == nn.Linear: True"),
        # isinstance reaches the lazy layer, and nn.init refuses it, with the fix
        (DEFERRED, "Attempted to use an uninitialized parameter"),
        # the meta device: no memory, no random numbers; assign=True loads
        (DEFERRED, "random numbers drawn: False"),
        (DEFERRED, "cpu (256, 20) | within PyTorch's bound: True"),
        (DEFERRED, "without assign: meta | for 0.weight: copying from a non-meta"),
        (DEFERRED, "assign=True:    cpu | the checkpoint's own tensor: True"),
        # the page's own lazy layer
        (
            DEFERRED,
            "LazyMyLinear(in_units=0, units=3) LazyMyLinear <UninitializedParameter>",
        ),
        (DEFERRED, "MyLinear(in_units=5, units=3) MyLinear (5, 3)"),
    ],
)
def test_the_pages_show(site: Path, page: str, printed: str):
    assert printed in page_text(site / page)


@pytest.mark.site
def test_the_lazy_pitfall_has_one_home(site: Path):
    """The skipped-lazy-layer demonstration is on 5.3; 5.2 links to it."""
    parameters = (site / "parameters.html").read_text(encoding="utf-8")
    assert "deferred-init.html#pitfall-init-before-dry-run" in parameters
    assert "nn.LazyLinear(1000)" not in parameters
    assert "Attempted to use an uninitialized parameter" not in parameters


def test_the_downloaded_notebook_leaves_out_the_hidden_glue_cells():
    def code(source, tags=()):
        return {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": list(tags)},
            "outputs": [],
            "source": source,
        }

    page = {
        "cells": [
            code("import dlcomp._notebook\ndlcomp._notebook.setup()", ["remove-cell"]),
            code("within = True\nprint(within)"),
            code('from myst_nb import glue\n\nglue("k", within)', ["remove-cell"]),
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    out = converter.chapter_notebook(page, converter.MystToMarkdown(lambda *a: None))
    sources = ["".join(cell["source"]) for cell in out["cells"]]
    assert sources == ["within = True\nprint(within)"]


def test_a_link_into_the_book_may_point_at_the_readers_edition():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    from dlcomp_catalogs import markup

    english = (
        "[tied](https://d2l.ai/chapter_builders-guide/parameters.html#tied-parameters)"
    )
    chinese = "[共享参数](https://zh.d2l.ai/chapter_deep-learning-computation/parameters.html#id9)"
    assert markup(english) == markup(chinese)
    # any other link keeps its target
    assert markup("[a](https://example.com/a)") != markup("[a](https://example.com/b)")
