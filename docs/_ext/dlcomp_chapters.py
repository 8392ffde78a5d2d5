"""The chapter pages' furniture: folded answers and the notebook download.

Chapter pages (``dlcomp_chapter_pages`` in conf.py): each exercise's answer
under the "Exercises" heading is folded (``<details>``), and a link offers
the executed page as a Jupyter notebook, written next to the HTML when the
build finishes: plain Markdown with links to the hosted pages
(:mod:`dlcomp_links`), the code of each ``dlcomp-source`` block, and without
the site's hidden setup cell (:mod:`dlcomp_notebooks`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlcomp_i18n import site_text  # the text this extension writes, per language
from dlcomp_links import gallery_links, link_resolver
from dlcomp_notebooks import MystToMarkdown, chapter_notebook
from docutils import nodes
from sphinx.application import Sphinx

NOTEBOOKS = "_notebooks"  # folder of the built site that holds the .ipynb files


def _fold_answers(section: nodes.section, summary: Callable[[str], str]) -> None:
    """Wrap everything under each exercise's heading in a closed <details>.

    Its summary names the exercise (``summary(number)``): the number that
    starts the exercise's title ("2. A block that ..."), else its place
    among the exercises, so that the answers of a page read apart (a screen
    reader lists them by their summary).
    """
    place = 0
    for exercise in section.findall(nodes.section):
        if exercise is section:
            continue
        title = exercise.children[0]
        answer = exercise.children[1:]
        if not answer:
            continue
        place += 1
        numbered = re.match(r"\s*(\d+)[.\u3001\uff0e]", title.astext())
        number = numbered.group(1) if numbered else str(place)
        exercise.children = [
            title,
            nodes.raw(
                "",
                f'<details class="dlcomp-answer"><summary>{summary(number)}</summary>',
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
        if isinstance(title, nodes.title) and title.astext() == site_text(
            app.config.language, "Exercises"
        ):
            _fold_answers(
                section,
                lambda number: site_text(
                    app.config.language,
                    "Show the answer to exercise {number}",
                    number=number,
                ),
            )
    if app.config.dlcomp_notebook_links:
        top = next(iter(doctree.findall(nodes.section)), None)
        if top is not None:
            href = f"{NOTEBOOKS}/{docname}.ipynb"
            text = "Download this page as a Jupyter notebook (.ipynb)"
            link = nodes.reference(
                "", site_text(app.config.language, text), refuri=href
            )
            link["classes"].append("dlcomp-notebook-link")
            top.insert(1, nodes.paragraph("", "", link, classes=["dlcomp-notebook"]))


def _with_cached_outputs(app: Sphinx, notebook: dict[str, Any]) -> dict[str, Any]:
    """The notebook with its outputs, also when myst-nb took them from its cache.

    On a cache hit, myst-nb 1.4 renders the page from the cached outputs but
    writes the notebook it read (no outputs) to ``jupyter_execute``; the
    outputs are merged back here from the same cache.
    """
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    if app.config.nb_execution_mode != "cache" or any(c.get("outputs") for c in code):
        return notebook
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(app.env.mystnb_config.execution_cache_path)  # set by myst-nb
    _, merged = cache.merge_match_into_notebook(
        nbformat.reads(json.dumps(notebook), as_version=4)
    )
    return json.loads(nbformat.writes(merged))


def _copy_notebooks(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: the chapter pages' notebooks, for download next to the HTML.

    Each is the page's executed notebook made a plain Jupyter notebook (see
    ``dlcomp_notebooks.chapter_notebook``): Markdown instead of MyST, links
    to the hosted pages, the reference code the page shows, and no hidden
    cell that changes the reader's kernel.
    """
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
        glue_file = executed / f"{docname}.glue.json"
        glued = {}
        if glue_file.is_file():
            for key, output in json.loads(glue_file.read_text("utf-8")).items():
                plain = output.get("data", {}).get("text/plain", "")
                glued[key] = "".join(plain) if isinstance(plain, list) else plain
        depth = 1 + docname.count("/")  # _notebooks/<docname>.ipynb
        converter = MystToMarkdown(
            link_resolver(app, docname, depth),
            glued=glued,
            gallery=gallery_links(app, depth),
        )
        executed_nb = _with_cached_outputs(app, json.loads(source.read_text("utf-8")))
        notebook = chapter_notebook(executed_nb, converter)
        out = target / f"{docname}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        out.write_text(text, "utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("dlcomp_chapter_pages", [], "env")
    app.add_config_value("dlcomp_notebook_links", True, "env")
    app.connect("doctree-read", _chapter_page)
    app.connect("build-finished", _copy_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
