"""Sphinx helpers for the dlcomp site (loaded by conf.py; not part of the library).

- ``reset_torch``: sphinx-gallery's per-example reset, named by a dotted string
  in ``sphinx_gallery_conf["reset_modules"]``.
- ``.. dlcomp-source:: dotted.name``: shows the source of a dlcomp object
  *without* its docstring, read from the installed library (one source of
  truth), so a chapter page shows the code it then runs.
- ``.. dlcomp-api:: dlcomp.module``: documents every name in the module's
  ``__all__`` (autodoc), each followed by the gallery examples that use it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def reset_torch(gallery_conf: dict[str, Any], fname: str) -> None:
    """Seed torch before each gallery example, so every build prints the same."""
    import torch

    torch.manual_seed(0)


def _resolve(dotted: str) -> Any:
    module_name, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


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
                rst += ["   :members:"]
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


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("dlcomp-source", DlcompSource)
    app.add_directive("dlcomp-api", DlcompApi)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
