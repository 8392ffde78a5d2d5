"""Turn the site's notebooks into notebooks a reader downloads and runs.

Loaded by ``dlcomp_chapters`` and ``dlcomp_downloads`` (not the library).
Plain Python: it needs neither Sphinx nor myst-nb, so its unit tests run
anywhere. What only a build knows (where a cross-reference points, what a
cell glued, which gallery examples exist) comes in as callbacks.

- :func:`chapter_notebook`: the executed notebook of a chapter page, as
  myst-nb wrote it, becomes a Jupyter notebook: MyST in the Markdown cells
  becomes Markdown (:class:`MystToMarkdown`), the hidden first cell that
  sets the site's display (``dlcomp._notebook.setup()``) is dropped, and
  ``from myst_nb import glue`` is replaced by a small stand-in, so that the
  notebook runs where myst-nb is not installed.
- :func:`gallery_notebook`: the Markdown cells of a sphinx-gallery
  notebook still hold reST roles (``:func:`...```); they become links.

Both are idempotent: converting a converted notebook changes nothing (the
build converts the downloads again on every run).
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dlcomp_source import resolve_object, source_without_docstring

# -- the source of a library object (the `dlcomp-source` directive) ----------


def fenced(code: str, language: str = "python") -> str:
    """``code`` in a Markdown fence longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code}\n{fence}"


def library_source(dotted: str) -> str:
    """Markdown for ``{dlcomp-source} dotted``: its name, then its code."""
    obj = resolve_object(dotted)
    name = f"{obj.__module__}.{obj.__qualname__}"
    return f"**`{name}`**\n\n{fenced(source_without_docstring(obj))}"


# -- glued values -------------------------------------------------------------


def format_glued(text: str, fmt_spec: str) -> str:
    """Format a glued ``text/plain`` value as myst-nb's ``{glue:text}`` does."""
    try:
        value: Any = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if fmt_spec == "":
        return str(value)
    kind = fmt_spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, fmt_spec)


# -- MyST to Markdown -----------------------------------------------------------


class UnsupportedMarkup(ValueError):
    """MyST that has no Markdown form here: extend the converter, or rewrite it."""


# (role, target, explicit title or None) -> (resolved title or None, URL or None)
LinkResolver = Callable[[str, str, "str | None"], "tuple[str | None, str | None]"]

ADMONITIONS = {
    "note": "Note",
    "tip": "Tip",
    "hint": "Hint",
    "important": "Important",
    "warning": "Warning",
    "caution": "Caution",
    "attention": "Attention",
    "danger": "Danger",
    "error": "Error",
    "seealso": "See also",
}
# Roles that only mark up their text.
LITERAL_ROLES = {"code", "literal", "file", "samp", "command", "program", "kbd"}
# Cross-reference roles: resolved by the build to a page of the site.
STD_ROLES = {"doc", "ref", "term", "numref", "keyword", "option", "envvar"}
PY_ROLES = {"func", "class", "meth", "mod", "attr", "data", "exc", "obj", "const"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[\w:.-]+)\}\s*(?P<argument>.*)$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_NOT_PARAGRAPH_END = r"(?:(?!\n[ \t]*\n).)"
# A code span (kept as it is) or a MyST role: {name}`content`.
_MYST_INLINE = re.compile(
    rf"(?P<code>(?P<ticks>`+){_NOT_PARAGRAPH_END}+?(?P=ticks))"
    rf"|\{{(?P<role>[\w:.-]+)\}}(?P<rticks>`+)(?P<content>{_NOT_PARAGRAPH_END}+?)"
    r"(?P=rticks)",
    re.DOTALL,
)
# A reST role as sphinx-gallery leaves it in a notebook: :name:`content`.
_REST_INLINE = re.compile(
    rf"(?P<code>(?P<ticks>`+){_NOT_PARAGRAPH_END}+?(?P=ticks))"
    r"|(?<![\w`]):(?P<role>(?:[a-z]+:)?[a-z]+):`(?P<content>[^`]+)`(?!_)",
    re.DOTALL,
)


def _markdown_text(text: str) -> str:
    """Escape what would end or start a Markdown link inside link text."""
    return re.sub(r"([\[\]])", r"\\\1", " ".join(text.split()))


class MystToMarkdown:
    """Convert the MyST of one page (a cell at a time) to plain Markdown.

    Args:
        link: resolves a cross-reference role (see :data:`LinkResolver`).
        glued: the ``text/plain`` of each value the page's cells glued.
        gallery: Markdown for ``.. minigallery::`` with the given arguments.
        source: Markdown for ``{dlcomp-source} dotted.name``.
    """

    def __init__(
        self,
        link: LinkResolver,
        *,
        glued: Mapping[str, str] | None = None,
        gallery: Callable[[list[str]], str] | None = None,
        source: Callable[[str], str] = library_source,
    ) -> None:
        self.link = link
        self.glued = dict(glued or {})
        self.gallery = gallery
        self.source = source

    # -- blocks --------------------------------------------------------------

    def convert(self, text: str) -> str:
        """The Markdown of one Markdown cell written in MyST."""
        lines = text.split("\n")
        out: list[str] = []
        prose: list[str] = []
        i = 0
        while i < len(lines):
            match = _FENCE.match(lines[i])
            if match is None:
                prose.append(lines[i])
                i += 1
                continue
            end = self._closing(lines, i, match)
            out.append(self._inline("\n".join(prose)))
            prose = []
            directive = _DIRECTIVE.match(match["info"].strip())
            if directive is None:  # a code block: copied as it is
                out.append("\n".join(lines[i : end + 1]))
            else:
                body = lines[i + 1 : end]
                out.append(
                    self._directive(directive["name"], directive["argument"], body)
                )
            i = end + 1
        out.append(self._inline("\n".join(prose)))
        result = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip("\n")
        return result + "\n" if text.endswith("\n") else result

    @staticmethod
    def _closing(lines: list[str], start: int, opening: re.Match[str]) -> int:
        """Index of the line that closes the fence opened at ``start``."""
        char, size = opening["fence"][0], len(opening["fence"])
        j = start + 1
        while j < len(lines):
            match = _FENCE.match(lines[j])
            if match is not None:
                fence = match["fence"]
                closes = fence[0] == char and len(fence) >= size
                if closes and not match["info"].strip():
                    return j
                if char == ":" and fence[0] != ":":  # a code block inside: skip it
                    j = MystToMarkdown._closing(lines, j, match)
            j += 1
        return len(lines)  # unclosed: CommonMark runs it to the end

    def _directive(self, name: str, argument: str, body: list[str]) -> str:
        _options, body = self._options(body)
        content = "\n".join(body)
        if name == "dlcomp-source":
            return self.source(argument.strip())
        if name in ("admonition", "dropdown") or name in ADMONITIONS:
            if name in ("admonition", "dropdown"):  # a fold: a headed quote here
                title = argument.strip()
            else:
                title = ADMONITIONS[name]
                content = "\n".join([argument, *body]) if argument.strip() else content
            return self._quote(title, self.convert(content))
        if name == "dropdown":  # sphinx-design: a fold on the site, a quote here
            return self._quote(argument.strip(), self.convert(content))
        if name == "eval-rst":
            return self._rst(content)
        if name in ("code-block", "code", "sourcecode"):
            return fenced(content, argument.strip())
        if name == "math":
            return f"$$\n{content.strip()}\n$$"
        if name == "list-table":
            return self._list_table(content)
        raise UnsupportedMarkup(
            f"the MyST directive {{{name}}} has no Markdown form in the notebook "
            "converter (docs/_ext/dlcomp_notebooks.py): add one, or write the page "
            "without it"
        )

    def _list_table(self, content: str) -> str:
        """``{list-table}`` (one line a cell, its first row the header): a table."""
        rows: list[list[str]] = []
        for line in content.split("\n"):
            item = re.match(r"^(\* )?\s*- ?(.*)$", line)
            if item is None:
                continue
            if item.group(1):
                rows.append([])
            rows[-1].append(self._inline(item.group(2).strip()).replace("|", "\\|"))
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)

    @staticmethod
    def _options(body: list[str]) -> tuple[dict[str, str], list[str]]:
        """Split a directive's options (``:key: value`` lines or YAML) from its body."""
        options: dict[str, str] = {}
        if body and body[0].strip() == "---":
            end = next((k for k in range(1, len(body)) if body[k].strip() == "---"), 0)
            for line in body[1:end]:
                key, _, value = line.partition(":")
                options[key.strip()] = value.strip()
            return options, body[end + 1 :]
        k = 0
        while k < len(body) and (match := _OPTION.match(body[k])):
            options[match["key"]] = match["value"]
            k += 1
        return options, body[k:]

    def _quote(self, title: str, body: str) -> str:
        """A headed quote: ``> **Title**``, a blank quoted line, the body."""
        lines = [f"> **{self._inline(title)}**", ">"]
        for line in body.strip("\n").split("\n"):
            lines.append(f"> {line}" if line.strip() else ">")
        return "\n".join(lines)

    def _rst(self, content: str) -> str:
        """``{eval-rst}``: only ``.. minigallery::`` has a Markdown form here."""
        match = re.fullmatch(r"\s*\.\. minigallery::\s*(?P<args>.+?)\s*", content)
        if match is None or self.gallery is None:
            raise UnsupportedMarkup(
                "an {eval-rst} block other than `.. minigallery::` has no Markdown "
                f"form in the notebook converter: {content.strip()!r}"
            )
        return self.gallery(match["args"].split())

    # -- inline ----------------------------------------------------------------

    def _inline(self, text: str) -> str:
        # MyST target labels, `(name)=`, and `%` comment lines show nothing.
        text = re.sub(r"(?m)^\([^)\s]+\)=[ \t]*\n?", "", text)
        text = re.sub(r"(?m)^%.*\n?", "", text)

        def replace(match: re.Match[str]) -> str:
            if match["code"] is not None:
                return match["code"]
            return self.role(match["role"], match["content"])

        return _MYST_INLINE.sub(replace, text)

    def role(self, name: str, content: str) -> str:
        """The Markdown of the role ``{name}`content```."""
        if name == "claim":
            match = _TITLED.match(content.strip())
            return match["title"] if match else content
        if name in ("glue", "glue:", "glue:any", "glue:text", "glue:md"):
            key, _, fmt_spec = content.strip().rpartition(":")
            if not key or name != "glue:text":
                key, fmt_spec = content.strip(), ""
            if key not in self.glued:
                raise UnsupportedMarkup(f"{{{name}}}`{content}`: nothing glued {key!r}")
            return format_glued(self.glued[key], fmt_spec)
        if name == "math":
            return f"${content}$"
        if name in LITERAL_ROLES:
            return f"`{content}`"
        if name in ("sub", "sup"):
            return f"<{name}>{content}</{name}>"
        if name == "abbr":
            return _TITLED.sub(r"\g<title>", content)
        return self.reference(name, content)

    def reference(self, name: str, content: str) -> str:
        """A cross-reference role as a Markdown link (plain text if unresolved)."""
        kind = name.rpartition(":")[2]
        if kind not in STD_ROLES | PY_ROLES:
            raise UnsupportedMarkup(
                f"the role {{{name}}} has no Markdown form in the notebook converter"
            )
        content = " ".join(content.split())
        explicit = _TITLED.match(content)
        title, target = (
            (explicit["title"], explicit["target"]) if explicit else (None, content)
        )
        if target.startswith("!"):  # no link wanted
            return f"`{target[1:]}`" if kind in PY_ROLES else target[1:]
        if kind in PY_ROLES:
            shown = target.lstrip("~.")
            if target.startswith("~"):
                shown = shown.rpartition(".")[2]
                target = target[1:]
            if kind in ("func", "meth") and title is None:
                shown += "()"
            resolved, url = self.link(name, target, title)
            text = f"`{title or shown}`"
        else:
            resolved, url = self.link(name, target, title)
            text = _markdown_text(title or resolved or target)
        return f"[{text}]({url})" if url else text


class RestToMarkdown(MystToMarkdown):
    """The reST roles left in a sphinx-gallery notebook's Markdown cells.

    sphinx-gallery turns ``:ref:`label``` into `` `label` ``: a code span
    that is exactly a label of the site (``labels``) becomes a link again.
    """

    def __init__(self, link: LinkResolver, labels: Iterable[str] = ()) -> None:
        super().__init__(link)
        self.labels = {label.lower() for label in labels}

    def convert(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match["code"] is None:
                return self.reference(match["role"], match["content"])
            inner = match["code"][1:-1] if match["ticks"] == "`" else None
            if inner is not None:
                label = _TITLED.match(inner)
                target = label["target"] if label else inner
                if target.lower() in self.labels:
                    return self.reference("ref", inner)
            return match["code"]

        return _REST_INLINE.sub(replace, text)


# -- notebooks --------------------------------------------------------------------

GLUE_IMPORT = re.compile(r"(?m)^from myst_nb import glue[ \t]*(?:#.*)?\n?")
GLUE_STAND_IN = """\
# On the site, `glue` (from myst-nb) hands a value that a cell computed to the
# text around it. In this notebook it keeps the values in `glued`.
glued = {}


def glue(name, value, display=True):
    glued[name] = value"""
# The hidden first cell of each chapter page: the site's display settings.
SITE_SETUP = "dlcomp._notebook"
# myst-nb's own keys in the notebook's metadata.
MYST_METADATA = ("source_map", "file_format", "mystnb", "jupytext")


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def merge_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One output for each run of printed text, as the page shows it.

    The kernel sends what a cell prints in pieces (on a timer, and after
    each whole line: ``dlcomp._notebook.WholeLines``), so the executed
    notebook holds one cell's printed lines as several stream outputs in a
    row. The page joins them (myst-nb's ``nb_merge_streams``); a notebook
    left with the pieces shows them as separate outputs, and a viewer that
    joins consecutive streams as it loads them may show lines twice.
    """
    merged: list[dict[str, Any]] = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and last is not None
            and last.get("output_type") == "stream"
            and last.get("name") == output.get("name")
        ):
            last["text"] = _lines(
                _source({"source": last["text"]})
                + _source({"source": output.get("text", "")})
            )
            continue
        merged.append(output)
    return merged


def chapter_notebook(
    notebook: Mapping[str, Any], converter: MystToMarkdown
) -> dict[str, Any]:
    """The downloadable notebook of a chapter page, from its executed notebook.

    The outputs are the build's, with each run of printed text in one output
    (:func:`merge_streams`). The setup cell and the cells the page hides
    (``remove-cell``: the glue calls) are left out, and execution counts are
    renumbered from 1.
    """
    result = copy.deepcopy(dict(notebook))
    cells: list[dict[str, Any]] = []
    for cell in result["cells"]:
        text = _source(cell)
        hidden = "remove-cell" in cell.get("metadata", {}).get("tags", [])
        if hidden or (cell["cell_type"] == "code" and SITE_SETUP in text):
            continue
        if cell["cell_type"] == "markdown":
            cell["source"] = _lines(converter.convert(text))
        elif cell["cell_type"] == "code" and GLUE_IMPORT.search(text):
            stand_in: dict[str, Any] = {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": _lines(GLUE_STAND_IN),
            }
            if "id" in cell:
                stand_in["id"] = "glue-stand-in"
            cells.append(stand_in)
            cell["source"] = _lines(GLUE_IMPORT.sub("", text))
        cells.append(cell)
    count = 0
    for cell in cells:
        if cell["cell_type"] == "code":
            cell["outputs"] = merge_streams(cell.get("outputs", []))
        if cell["cell_type"] != "code" or cell.get("execution_count") is None:
            continue
        count += 1
        cell["execution_count"] = count
        for output in cell.get("outputs", []):
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
    result["cells"] = cells
    for key in MYST_METADATA:
        result.get("metadata", {}).pop(key, None)
    return result


def gallery_notebook(
    notebook: Mapping[str, Any], converter: MystToMarkdown
) -> dict[str, Any]:
    """A sphinx-gallery notebook with its Markdown cells' roles made links."""
    result = copy.deepcopy(dict(notebook))
    for cell in result["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = _lines(converter.convert(_source(cell)))
    return result
