"""Code that links: names in the chapter pages' code cells lead to their API entries.

sphinx-codeautolink (docs/_ext/dlcomp_codelinks.py) links each name a cell
uses, after the imports of the page's earlier cells, to its entry in the API
reference, as sphinx-gallery does for the gallery's scripts. The gallery's
pages are left to sphinx-gallery: its links stay, none is added inside them.
"""

import os
import re
import textwrap
from pathlib import Path

import pytest
from sitepages import CHAPTER_PAGES, EXT, NOTEBOOK_HEADER, build_site

pytestmark = pytest.mark.site

# The code of a MyST-NB cell: <div class="cell_input ..."> ... <pre>code</pre>.
CELL_CODE = re.compile(
    r'<div class="cell_input[^"]*">\s*<div class="highlight-[^"]*">'
    r'<div class="highlight"><pre>(.*?)</pre>',
    re.DOTALL,
)
# Any code block's <pre> (the gallery's scripts are sphinx-gallery's blocks).
PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL)
LINK = re.compile(r"<a\b(?P<attrs>[^>]*)>(?P<body>.*?)</a>", re.DOTALL)
HREF = re.compile(r'href="(?P<href>[^"]+)"')
CODEAUTOLINK = "sphinx-codeautolink-a"  # the class of the links it adds


def cell_links(path: Path) -> dict[str, set[str]]:
    """Each linked name in the page's code cells, with the targets it links to."""
    found: dict[str, set[str]] = {}
    for code in CELL_CODE.findall(path.read_text(encoding="utf-8")):
        for link in LINK.finditer(code):
            name = re.sub(r"<[^>]+>", "", link["body"])
            href = HREF.search(link["attrs"])
            found.setdefault(name, set()).add(href["href"] if href else "")
    return found


def gallery_pages(site: Path) -> list[Path]:
    return sorted((site / "auto_examples").glob("*/plot_*.html"))


def test_parameter_table_in_a_cell_links_to_its_entry(site: Path):
    links = cell_links(site / "parameters.html")
    assert "api/parameters.html#dlcomp.parameter_table" in links.get(
        "dlcomp.parameter_table", set()
    ), sorted(links)


def test_every_chapter_page_links_its_dlcomp_names(site: Path):
    unlinked = []
    for page in CHAPTER_PAGES:
        links = cell_links(site / page)
        targets = {href for hrefs in links.values() for href in hrefs}
        if not any(href.startswith("api/") and "#dlcomp." in href for href in targets):
            unlinked.append(page)
    assert not unlinked, f"no code cell links to a dlcomp API entry on {unlinked}"


def test_every_link_in_a_cell_resolves(site: Path):
    broken = []
    for page in CHAPTER_PAGES:
        for name, hrefs in cell_links(site / page).items():
            for href in hrefs:
                if re.match(r"https?://", href):
                    continue
                file, _, anchor = href.partition("#")
                target = (site / page).parent / file
                found = target.is_file() and (
                    not anchor or f'id="{anchor}"' in target.read_text("utf-8")
                )
                if not file or not found:
                    broken.append(f"{page}: {name} -> {href}")
    assert not broken, "\n".join(broken[:20])


def test_gallery_code_keeps_its_own_links_only(site: Path):
    pages = gallery_pages(site)
    assert pages, "no gallery example pages were built"
    without_links, added, nested = [], [], []
    for path in pages:
        html = path.read_text(encoding="utf-8")
        blocks = PRE.findall(html)
        if not any("sphx-glr-backref" in block for block in blocks):
            without_links.append(path.name)
        if CODEAUTOLINK in html:
            added.append(path.name)
        if any("<a " in link["body"] for b in blocks for link in LINK.finditer(b)):
            nested.append(path.name)
    assert not without_links, f"sphinx-gallery links missing on {without_links}"
    assert not added, f"sphinx-codeautolink links on gallery pages {added}"
    assert not nested, f"a link inside a link in the code of {nested}"


# -- rebuilds keep the links, and a rebuild with nothing to do reads nothing --

LINKED_PAGE = (
    NOTEBOOK_HEADER
    + """\
# Linked

```{code-cell} ipython3
import minilib

minilib.answer()
```
"""
)


def linked_site(root: Path) -> None:
    docs = root / "docs"
    (docs / "_templates").mkdir(parents=True)
    (docs / "_templates" / "layout.html").write_text('{% extends "!layout.html" %}\n')
    (docs / "conf.py").write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(EXT)!r})
        extensions = ["sphinx.ext.autodoc", "myst_nb", "dlcomp_codelinks"]
        nb_execution_mode = "cache"
        templates_path = ["_templates"]
        """))  # fmt: skip
    (docs / "index.md").write_text(LINKED_PAGE + "\n```{toctree}\napi\n```\n")
    (docs / "api.rst").write_text("API\n===\n\n.. autofunction:: minilib.answer\n")
    library = root / "lib" / "minilib"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text(
        'def answer():\n    """42."""\n    return 42\n'
    )


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Sphinx colours its log on some terminals


def build_linked(root: Path) -> tuple[str, set[str]]:
    """Build the site; return its log (uncoloured) and the page's linked names."""
    result = build_site(
        root / "docs", root / "html", env={"PYTHONPATH": str(root / "lib")}
    )
    assert result.returncode == 0, result.stderr
    page = (root / "html" / "index.html").read_text("utf-8")
    return ANSI.sub("", result.stdout), cell_links_of(page)


def cell_links_of(text: str) -> set[str]:
    return {
        re.sub(r"<[^>]+>", "", link["body"])
        for code in CELL_CODE.findall(text)
        for link in LINK.finditer(code)
        if CODEAUTOLINK in link["attrs"]
    }


def test_rebuilds_keep_code_links_and_a_no_change_rebuild_reads_nothing(tmp_path):
    linked_site(tmp_path)
    _, links = build_linked(tmp_path)
    assert "minilib.answer" in links or "answer" in links, links
    # Nothing changed: no page is read (or written) again.
    again, same = build_linked(tmp_path)
    assert same == links
    assert "0 added, 0 changed, 0 removed" in again, again
    assert "reading sources... [" not in again, again
    # A newer template makes the builder write every page without a source
    # change: the Markdown page is read again, and keeps its links.
    template = tmp_path / "docs" / "_templates" / "layout.html"
    later = template.stat().st_mtime + 10
    os.utime(template, (later, later))
    rewritten, kept = build_linked(tmp_path)
    assert "reading sources... [" in rewritten, rewritten
    assert kept == links
    # Another page changes: the Markdown page is read again, and keeps them.
    api = tmp_path / "docs" / "api.rst"
    api.write_text(api.read_text() + "\nThe answer.\n")
    _, still = build_linked(tmp_path)
    assert still == links
