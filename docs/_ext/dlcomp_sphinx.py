"""Sphinx helpers for the dlcomp site (loaded by conf.py; not part of the library).

- ``reset_torch``: sphinx-gallery's per-example reset, named by a dotted string
  in ``sphinx_gallery_conf["reset_modules"]``.
- ``.. dlcomp-source:: dotted.name``: shows the source of a dlcomp object
  *without* its docstring, read from the installed library (one source of
  truth), so a chapter page shows the code it then runs.
- ``.. dlcomp-api:: dlcomp.module``: documents every name in the module's
  ``__all__`` (autodoc), each followed by the gallery examples that use it.
- Chapter pages (``dlcomp_chapter_pages`` in conf.py): each exercise's answer
  under the "Exercises" heading is folded (``<details>``), and a link offers
  the executed page as a Jupyter notebook, copied next to the HTML when the
  build finishes.
- ``{claim}`sentence <key>```: a sentence stating an outcome that the page's
  own cell measured. The cell glues a bool under ``key`` (myst-nb ``glue``);
  the build warns (an error under ``-W``) when it is not ``True``, so a page
  cannot state an outcome that its output contradicts.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole


def reset_torch(gallery_conf: dict[str, Any], fname: str) -> None:
    """Seed torch before each gallery example, so every build prints the same."""
    import torch

    torch.manual_seed(0)


def _resolve(dotted: str) -> Any:
    """Import ``a.b.Class.method``: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ValueError(f"cannot import {dotted}")


def source_without_docstring(obj: Any) -> str:
    """Return the source of a class or function with its docstring(s) removed."""
    source = textwrap.dedent(inspect.getsource(obj))
    lines = source.splitlines()
    drop: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                first, last = body[0].lineno, body[0].end_lineno or body[0].lineno
                drop.update(range(first - 1, last))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    # A docstring followed by a blank line leaves that blank line first.
    out: list[str] = []
    for line in kept:
        if not line.strip() and out and out[-1].rstrip().endswith(":"):
            continue
        out.append(line)
    return "\n".join(out)


class DlcompSource(SphinxDirective):
    """``.. dlcomp-source:: dlcomp.blocks.MLP``: the object's code, no docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        dotted = self.arguments[0]
        obj = _resolve(dotted)
        path = inspect.getsourcefile(obj)
        if path:
            self.env.note_dependency(path)  # re-read this page when the code changes
        code = source_without_docstring(obj)
        block = nodes.literal_block(code, code, language="python")
        name = f"{obj.__module__}.{obj.__qualname__}"
        caption = nodes.caption("", "", nodes.literal(name, name))
        container = nodes.container(
            "", caption, block, classes=["literal-block-wrapper"]
        )
        container["literal_block"] = True
        self.set_source_info(container)
        return [container]


class DlcompApi(SphinxDirective):
    """``.. dlcomp-api:: dlcomp.blocks``: autodoc for every name in ``__all__``.

    Objects re-exported by :mod:`dlcomp` are documented as ``dlcomp.NAME``
    (the name readers import); others under their own module (``:as:``).
    """

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"as": directives.unchanged}

    def _has_examples(self, dotted: str) -> bool:
        """Whether sphinx-gallery found an example using ``dotted``."""
        conf = self.config.sphinx_gallery_conf
        path = self.env.srcdir / conf["backreferences_dir"] / f"{dotted}.examples"
        return path.is_file() and path.stat().st_size > 0

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        self.env.note_dependency(inspect.getsourcefile(module) or "")
        public = self.options.get("as", module_name)
        rst = [
            f".. automodule:: {module_name}",
            "   :no-members:",
            "",
            f".. currentmodule:: {public}",
            "",
            ".. autosummary::",
            "",
            *(f"   {name}" for name in module.__all__),
            "",
        ]
        for name in module.__all__:
            obj = getattr(module, name)
            kind = "autoclass" if inspect.isclass(obj) else "autofunction"
            rst += [f".. {kind}:: {name}"]
            if inspect.isclass(obj):
                # Members a class inherits from dlcomp's own (private) bases are
                # documented; those of PyTorch's and Python's bases are not.
                rst += [
                    "   :members:",
                    "   :inherited-members: Module, LazyModuleMixin, tuple, object, "
                    "BaseException",
                ]
            rst += [""]
            if self._has_examples(f"{public}.{name}"):
                rst += [
                    f".. rubric:: Gallery examples using ``{name}``",
                    "",
                    f".. minigallery:: {public}.{name}",
                    "",
                ]
        # Feed the generated reST back into the parser at this point of the
        # page (not into a container), so it is parsed like hand-written text.
        self.state_machine.insert_input(rst, f"<dlcomp-api {module_name}>")
        return []


NOTEBOOKS = "_notebooks"  # folder of the built site that holds the .ipynb files


def _fold_answers(section: nodes.section) -> None:
    """Wrap everything under each exercise's heading in a closed <details>."""
    for exercise in section.findall(nodes.section):
        if exercise is section:
            continue
        title = exercise.children[0]
        answer = exercise.children[1:]
        if not answer:
            continue
        exercise.children = [
            title,
            nodes.raw(
                "",
                '<details class="dlcomp-answer"><summary>Show the answer</summary>',
                format="html",
            ),
            *answer,
            nodes.raw("", "</details>", format="html"),
        ]
        for child in exercise.children:
            child.parent = exercise


def _chapter_page(app: Sphinx, doctree: nodes.document) -> None:
    """doctree-read: fold the answers, add the notebook download link."""
    docname = app.env.docname
    if docname not in app.config.dlcomp_chapter_pages:
        return
    for section in doctree.findall(nodes.section):
        title = section.children[0] if section.children else None
        if isinstance(title, nodes.title) and title.astext() == "Exercises":
            _fold_answers(section)
    if app.config.dlcomp_notebook_links:
        top = next(iter(doctree.findall(nodes.section)), None)
        if top is not None:
            href = f"{NOTEBOOKS}/{docname}.ipynb"
            link = nodes.reference(
                "", "Download this page as a Jupyter notebook (.ipynb)", refuri=href
            )
            link["classes"].append("dlcomp-notebook-link")
            top.insert(1, nodes.paragraph("", "", link, classes=["dlcomp-notebook"]))


def _copy_notebooks(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: put the executed notebooks next to the HTML pages."""
    if exception is not None or app.builder.format != "html":
        return
    if not app.config.dlcomp_notebook_links:
        return
    executed = Path(app.outdir).parent / "jupyter_execute"
    target = Path(app.outdir) / NOTEBOOKS
    target.mkdir(exist_ok=True)
    for docname in app.config.dlcomp_chapter_pages:
        source = executed / f"{docname}.ipynb"
        if not source.is_file():
            raise FileNotFoundError(
                f"{source} is missing: myst-nb did not write the executed notebook "
                f"of {docname}, so its download link would be broken"
            )
        shutil.copyfile(source, target / f"{docname}.ipynb")


logger = logging.getLogger(__name__)


class Claim(SphinxRole):
    """``{claim}`sentence <key>```: the sentence, checked against glued ``key``.

    ``key`` names a bool that a cell of the same page glued (``glue(key,
    bool(...), display=False)``). Anything but ``True`` is a warning naming
    the sentence and what the cell measured. With execution off (a prose-only
    build) there is nothing to check against, and the sentence is shown as is.
    """

    pattern = re.compile(r"^(?P<sentence>.+?)\s*<(?P<key>[\w.-]+)>$", re.DOTALL)

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        match = self.pattern.match(self.text.strip())
        if match is None:
            logger.warning(
                "claim %r: expected `sentence <key>`",
                self.text,
                location=self.get_location(),
                type="dlcomp",
                subtype="claim",
            )
            return [nodes.inline(self.text, self.text)], []
        sentence, key = match["sentence"], match["key"]
        node = nodes.inline(sentence, sentence, classes=["dlcomp-claim"])
        if self.config.nb_execution_mode == "off":
            return [node], []
        measured = self._glued(key)
        if measured != "True":
            logger.warning(
                "the page states %r, but the cell that measured it glued %s=%s",
                sentence,
                key,
                measured,
                location=self.get_location(),
                type="dlcomp",
                subtype="claim",
            )
            node["classes"].append("dlcomp-claim-false")
        return [node], []

    def _glued(self, key: str) -> str:
        """The text of the value glued under ``key`` on this page, or why none."""
        from myst_nb.core.variables import RetrievalError
        from myst_nb.ext.glue.utils import retrieve_glue_data

        try:
            data = retrieve_glue_data(self.inliner.document, key).data
        except RetrievalError:
            return "<nothing: no cell glued this key>"
        text = str(data.get("text/plain", "<no text>"))
        if text not in ("True", "False"):
            return f"{text} (not a bool)"
        return text


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_role("claim", Claim())
    app.add_directive("dlcomp-source", DlcompSource)
    app.add_directive("dlcomp-api", DlcompApi)
    app.add_config_value("dlcomp_chapter_pages", [], "env")
    app.add_config_value("dlcomp_notebook_links", True, "env")
    app.connect("doctree-read", _chapter_page)
    app.connect("build-finished", _copy_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
