"""Site hygiene for dlcomp: what the theme and extensions leave out or leave over.

- A folded code cell's label ("Show code cell") is a ``<span>`` in its
  ``<summary>``: myst-nb writes ``<p>``, which HTML does not allow there.
- Every page gets a ``<meta name="description">``: the page's front matter
  (MyST ``html_meta``) if it sets one, else its title and "What you will
  learn" list, else its first paragraph, else the project's description.
- The sidebar's expand/collapse toggles (``<summary>`` holding only an icon)
  get an accessible name, "Pages under <section>".
- After the build: 404.html uses links relative to the site root and sets
  its ``<base>`` when served over HTTP, so it is styled at any URL depth and
  when opened from disk; the gallery's thumbnails load lazily
  (``loading="lazy"``), so a page of them fetches only those in view before
  it is usable. (What other tools get wrong in the built HTML is fixed by
  :mod:`dlcomp_upstream`.)
- Scripts do not block the first paint: every script file loads with
  ``defer`` (run in order once the page is parsed, as the theme's own scripts
  already do), except ``documentation_options.js``, which the page's inline
  scripts assign to as they are parsed. Each script here waits for the page
  to be parsed before it acts (``DOMContentLoaded`` or its equivalent), so
  nothing changes but the order of loading and painting. The search page
  is left as it is: its search scripts need doctools.js to have run.
- Before the build: viewcode's module pages are deleted, so they are written
  again with the current templates and hooks. Viewcode rewrites a page only
  when its module's source is newer, so a template or extension change would
  otherwise leave them as an older build made them (a few seconds to redo).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

from dlcomp_i18n import site_text  # docs/_ext: the labels, in each language
from docutils import nodes
from sphinx.application import Sphinx

DESCRIPTION_CHARS = 155  # what search engines show
# The box that lists what a page teaches, in each edition (docs/locales).
LEARN_HEADINGS = {"What you will learn", "本节要点"}


def _summary(doctree: nodes.document) -> str:
    """The page's title and what it teaches, or its first real paragraph."""
    title = next(iter(doctree.findall(nodes.title)), None)
    for box in doctree.findall(nodes.admonition):
        heading = next(iter(box.findall(nodes.title)), None)
        if heading is not None and heading.astext() in LEARN_HEADINGS:
            items = box.findall(nodes.list_item)
            items = [" ".join(li.astext().split()) for li in items]
            if items and title is not None:
                return f"{title.astext()}. " + " ".join(items)
    for para in doctree.findall(nodes.paragraph):
        # skip paragraphs inside admonitions, tables, sidebars, figure legends
        if any(
            isinstance(p, nodes.Admonition | nodes.table | nodes.sidebar | nodes.legend)
            for p in _ancestors(para)
        ):
            continue
        if "dlcomp-notebook" in para.get("classes", []):
            continue  # the "download this page as a notebook" line
        text = " ".join(para.astext().split())
        if len(text) >= 60:
            return text
    return ""


def _ancestors(node: nodes.Node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def shorten(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """Cut ``text`` at a word boundary to at most ``limit`` characters."""
    if not text.isascii():
        limit = limit // 2  # a CJK character is worth about two Latin ones
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut and text.isascii():
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:，；：") + "…"


def add_description(app: Sphinx, pagename, templatename, context, doctree) -> None:
    metatags = context.get("metatags", "")
    if 'name="description"' in metatags:
        return  # the page's front matter sets one
    text = _summary(doctree) if doctree is not None else ""
    if not text:
        text = app.config.dlcomp_site_description
        if app.config.language != "en":
            text = app.config.dlcomp_site_descriptions.get(app.config.language, text)
    content = html.escape(shorten(text))
    context["metatags"] = f'{metatags}\n<meta name="description" content="{content}" />'


def label_sidebar_toggles(app: Sphinx, pagename, templatename, context, doctree):
    """Wrap the theme's sidebar generator so that each toggle has a name."""
    generate = context.get("generate_toctree_html")
    if generate is None or getattr(generate, "_dlcomp_labelled", False):
        return

    def generate_labelled(kind, *args, **kwargs):
        result = generate(kind, *args, **kwargs)
        if isinstance(result, str):
            return result
        for summary in result.select("summary"):
            if summary.get_text(strip=True) or summary.get("aria-label"):
                continue
            li = summary.find_parent("li")
            link = li.find("a", recursive=False) if li is not None else None
            name = link.get_text(" ", strip=True) if link is not None else "section"
            summary["aria-label"] = site_text(
                app.config.language, "Pages under {name}", name=name
            )
        return result

    generate_labelled._dlcomp_labelled = True
    context["generate_toctree_html"] = generate_labelled


# Inline scripts (DOCUMENTATION_OPTIONS.pagename = ...) run as they are parsed.
RUN_AT_ONCE = ("_static/documentation_options.js",)


def defer_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts or pagename == "search":
        # The search page's template loads searchtools.js without defer, and
        # it needs doctools.js (_ready) to have run: that page keeps the order.
        return
    deferred = []
    for script in scripts:
        attributes = getattr(script, "attributes", None)
        filename = getattr(script, "filename", None)
        if (
            attributes is None
            or not filename
            or "body" in attributes
            or {"defer", "async"} & attributes.keys()
            or attributes.get("type") == "module"
            or str(filename) in RUN_AT_ONCE
        ):
            deferred.append(script)
            continue
        deferred.append(
            type(script)(
                filename, priority=script.priority, **attributes, defer="defer"
            )
        )
    context["script_files"] = deferred


# -- after the build ---------------------------------------------------------


def _relative_404(outdir: Path, prefix: str) -> None:
    page = outdir / "404.html"
    if not page.is_file():
        return
    text = page.read_text("utf-8")
    # href="/dlcomp/_static/x" -> href="_static/x" (relative to the site root)
    text = re.sub(r'(\s(?:href|src)=["\'])' + re.escape(prefix), r"\1", text)
    # The <base> in the markup serves HTTP at any depth (the browser's
    # preload scanner sees it too); opened from disk, the script removes it
    # before any link is read, and the links are relative to this file.
    base = (
        f'<base href="{prefix}" />\n'
        "<script>"
        'if (location.protocol === "file:")'
        " document.currentScript.previousElementSibling.remove();"
        "</script>\n    "
    )
    text = text.replace("<title>", base + "<title>", 1)
    page.write_text(text, "utf-8")


def fresh_module_pages(app: Sphinx) -> None:
    if app.builder.format == "html":
        shutil.rmtree(Path(app.outdir) / "_modules", ignore_errors=True)


THUMBNAIL = re.compile(
    r'<img (?![^>]*\bloading=)([^>]*\bsrc="[^"]*sphx_glr_[^"]*_thumb\.[a-z]+")'
)


def _lazy_thumbnails(outdir: Path) -> None:
    for page in outdir.rglob("*.html"):
        if page.relative_to(outdir).parts[0] == "_static":
            continue
        text = page.read_text("utf-8")
        new = THUMBNAIL.sub(r'<img loading="lazy" decoding="async" \1', text)
        if new != text:
            page.write_text(new, "utf-8")


def tidy_output(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    _relative_404(outdir, app.config.notfound_urls_prefix or "/")
    _lazy_thumbnails(outdir)


def search_summaries(app: Sphinx, exception) -> None:
    """build-finished: each page's summary goes into the search index.

    Sphinx's search page downloads every page it lists to cut a snippet out
    of it (megabytes for one query); the site turns that off
    (``html_show_search_summary``) and ``_static/dlcomp-search.js`` shows
    the page's summary (its meta description's text) from the index instead.
    """
    if exception is not None or app.builder.format != "html":
        return
    path = Path(app.outdir) / "searchindex.js"
    if not path.is_file():
        return
    text = path.read_text("utf-8")
    start, end = text.index("(") + 1, text.rindex(")")
    index = json.loads(text[start:end])
    summaries = []
    for docname in index["docnames"]:
        try:
            doctree = app.env.get_doctree(docname)
        except FileNotFoundError:  # a page no longer there
            summary = ""
        else:
            summary = shorten(_summary(doctree), 2 * DESCRIPTION_CHARS)
        summaries.append(summary)
    index["dlcomp_summaries"] = summaries
    data = json.dumps(index, ensure_ascii=False, separators=(",", ":"))
    path.write_text(f"{text[:start]}{data}{text[end:]}", "utf-8")


def visit_hidden_cell(self, node: nodes.Element) -> None:
    """myst-nb's folded cell, with its labels as phrasing content.

    The same markup as ``myst_nb.sphinx_.visit_HideCellInput`` but ``<span>``
    for ``<p>``: a ``<summary>`` holds phrasing content only. The classes
    stay, and ``_static/dlcomp.css`` gives the spans the rules myst-nb's
    stylesheet gives ``p.collapsed`` and ``p.expanded``.
    """
    classes = " ".join(node["classes"])
    self.body.append(f'<details class="admonition hide {classes}">\n')
    self.body.append('<summary aria-label="Toggle hidden content">\n')
    for state, prompt in (("collapsed", "prompt_show"), ("expanded", "prompt_hide")):
        label = html.escape(node[prompt])
        self.body.append(f'<span class="{state} admonition-title">{label}</span>\n')
    self.body.append("</summary>\n")


def depart_hidden_cell(self, node: nodes.Element) -> None:
    self.body.append("</details>\n")


def setup(app: Sphinx) -> dict:
    from myst_nb.sphinx_ import HideCodeCellNode  # registered by myst_nb, loaded first

    app.add_node(
        HideCodeCellNode, override=True, html=(visit_hidden_cell, depart_hidden_cell)
    )
    app.add_config_value("dlcomp_site_description", "", "html", types=[str])
    # the same in the translated editions: {language: description}
    app.add_config_value("dlcomp_site_descriptions", {}, "html", types=[dict])
    app.connect("html-page-context", add_description)
    # after the theme has put its functions into the context
    app.connect("html-page-context", label_sidebar_toggles, priority=900)
    # after every extension has added its scripts for this page
    app.connect("html-page-context", defer_scripts, priority=950)
    app.connect("builder-inited", fresh_module_pages)
    app.connect("build-finished", tidy_output)
    app.connect("build-finished", search_summaries)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
