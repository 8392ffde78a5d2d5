"""The site's directives and roles: code and API from the library, checked claims.

- ``.. dlcomp-source:: dotted.name``: shows the source of a dlcomp object
  *without* its docstring, read from the installed library (one source of
  truth), so a chapter page shows the code it then runs.
- ``.. dlcomp-api:: dlcomp.module``: documents every name in the module's
  ``__all__`` (autodoc), each followed by the gallery examples that use it.
- ``{claim}`sentence <key>```: a sentence stating an outcome that the page's
  own cell measured. The cell glues a bool under ``key`` (myst-nb ``glue``);
  the build warns (an error under ``-W``) when it is not ``True``, so a page
  cannot state an outcome that its output contradicts.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, ClassVar

from dlcomp_source import resolve_object, source_without_docstring
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole

logger = logging.getLogger(__name__)


class DlcompSource(SphinxDirective):
    """``.. dlcomp-source:: dlcomp.blocks.MLP``: the object's code, no docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        dotted = self.arguments[0]
        obj = resolve_object(dotted)
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
    return {"parallel_read_safe": True, "parallel_write_safe": True}
