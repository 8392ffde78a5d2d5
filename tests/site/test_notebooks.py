"""The notebooks the site offers for download are plain Jupyter notebooks.

Chapter pages: ``_notebooks/<page>.ipynb`` (Markdown, not MyST; the code the
page shows; no hidden cell of the site). Gallery: each example's
``.ipynb``, its zip and the zip of all notebooks (links, not reST roles).
"""

import itertools
import json
import re
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sitepages import CHAPTER_PAGES, EXT

pytestmark = pytest.mark.site

ROOT = Path(__file__).parents[2]
PAGES = [page.removesuffix(".html") for page in CHAPTER_PAGES]

sys.path.insert(0, str(EXT))  # docs/_ext: the notebook converter and what it uses
import dlcomp_notebooks as converter  # noqa: E402

MYST = re.compile(r"\{[\w:.-]+\}`|^[:`]{3,}\{", re.MULTILINE)  # a role or a directive
REST_ROLE = re.compile(r"(?<![\w`]):(?:py:)?(?:func|class|meth|mod|attr|ref|doc):`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown(notebook: dict) -> str:
    return "\n\n".join(
        "".join(cell["source"])
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
    )


def _code(notebook: dict) -> str:
    return "\n\n".join(
        "".join(cell["source"])
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
    )


def _prose(markdown: str) -> str:
    """Markdown without its fenced code blocks (quoted ones included)."""
    return re.sub(r"(?ms)^(?:> )?(`{3,})\w*\n.*?^(?:> )?\1\s*$", "", markdown)


def _load(path: Path) -> dict:
    import nbformat  # the docs environment's (myst-nb needs it), not the tests'

    text = path.read_text(encoding="utf-8")
    nbformat.validate(nbformat.reads(text, as_version=4))
    return json.loads(text)


@pytest.fixture(scope="module")
def chapter_notebooks(site: Path) -> dict[str, dict]:
    return {page: _load(site / "_notebooks" / f"{page}.ipynb") for page in PAGES}


@pytest.mark.parametrize("page", PAGES)
def test_chapter_notebook_is_markdown_not_myst(chapter_notebooks, page):
    notebook = chapter_notebooks[page]
    text = json.dumps(notebook)
    for marker in ["{dlcomp-source}", ":::{", "{func}", "dlcomp._notebook", "myst_nb"]:
        assert marker not in text, f"{page}.ipynb contains {marker!r}"
    markdown = _markdown(notebook)
    assert not MYST.findall(_prose(markdown)), MYST.findall(_prose(markdown))
    # the page's opening box, as a headed quote
    assert "> **What you will learn**" in markdown
    assert not {"file_format", "source_map"} & set(notebook["metadata"])


@pytest.mark.parametrize("page", PAGES)
def test_chapter_notebook_holds_the_code_its_page_shows(chapter_notebooks, page):
    shown = re.findall(
        r"^```\{dlcomp-source\}\s*(\S+)",
        (ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    markdown = _markdown(chapter_notebooks[page])
    for dotted in shown:
        code = converter.source_without_docstring(converter.resolve_object(dotted))
        assert f"```python\n{code}\n```" in markdown, f"{page}: {dotted} is missing"


@pytest.mark.parametrize("page", PAGES)
def test_chapter_notebook_runs_without_the_sites_setup(chapter_notebooks, page):
    notebook = chapter_notebooks[page]
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all("remove-cell" not in c["metadata"].get("tags", []) for c in code)
    counts = [c["execution_count"] for c in code if c["execution_count"] is not None]
    assert counts == list(range(1, len(counts) + 1))
    assert any(c["outputs"] for c in code)  # the build's outputs come along
    source = _code(notebook)
    assert "from myst_nb" not in source
    first_use = re.search(r"(?<!def )\bglue\(", source)
    if first_use:  # the stand-in for myst-nb's glue comes before its first use
        assert -1 < source.find("def glue(") < first_use.start()


@pytest.mark.parametrize("page", PAGES)
def test_chapter_notebook_links_to_the_hosted_pages(
    site: Path, chapter_notebooks, page
):
    links = LINK.findall(_markdown(chapter_notebooks[page]))
    assert links, f"{page}.ipynb links nowhere"
    for link in links:
        parts = urlsplit(link)
        if parts.scheme:  # html_baseurl set, or an outside page
            continue
        target = (site / "_notebooks" / parts.path).resolve()
        assert target.is_file(), f"{page}.ipynb: {link} is not a page of the site"


def test_read_write_notebook_links_the_api_and_the_gallery(chapter_notebooks):
    markdown = _markdown(chapter_notebooks["read-write"])
    assert re.search(r"\[`dlcomp\.serialization`\]\([^)]*api/", markdown)
    assert re.search(r"\[[^\]]+\]\([^)]*auto_examples/files/plot_01_", markdown)


def _gallery_downloads(site: Path) -> list[Path]:
    return sorted((site / "_downloads").glob("*/*.ipynb"))


def test_gallery_notebooks_have_links_not_rest_roles(site: Path):
    notebooks = _gallery_downloads(site)
    assert len(notebooks) >= 10
    for path in notebooks:
        markdown = _markdown(_load(path))
        assert not REST_ROLE.findall(markdown), (path.name, REST_ROLE.findall(markdown))
    resume = next(p for p in notebooks if p.name == "plot_01_resume_after_crash.ipynb")
    markdown = _markdown(_load(resume))
    assert re.search(r"\]\([^)]*read-write\.html\)", markdown)
    assert re.search(r"\[`dlcomp\.CheckpointManager`\]\([^)]*api/", markdown)


def test_gallery_zips_hold_the_same_notebooks_as_the_single_downloads(site: Path):
    single = {
        path.name: path.read_text(encoding="utf-8") for path in _gallery_downloads(site)
    }
    zips = sorted((site / "_downloads").glob("*/*.zip"))
    seen = 0
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".ipynb"):
                    seen += 1
                    text = archive.read(name).decode("utf-8")
                    assert text == single[Path(name).name], f"{path.name}: {name}"
    assert seen >= 2 * 10  # each example's zip, and the zip of all notebooks


@pytest.mark.parametrize("page", PAGES)
def test_chapter_notebook_shows_each_printed_line_once(chapter_notebooks, page):
    """A cell's printed text is one output per stream, as the page shows it:
    pieces in a row (the kernel sends them on a timer) are shown twice by a
    viewer that joins consecutive streams as it loads them."""
    pieces = []
    for number, cell in enumerate(chapter_notebooks[page]["cells"]):
        outputs = cell.get("outputs", [])
        for before, after in itertools.pairwise(outputs):
            if before["output_type"] == after["output_type"] == "stream" and (
                before["name"] == after["name"]
            ):
                pieces.append(f"cell {number}: {''.join(after['text'])[:60]!r}")
    assert not pieces, f"{page}: printed text in pieces:\n" + "\n".join(pieces)


def test_merge_streams_joins_pieces_in_a_row_and_keeps_the_order():
    out = [
        {"output_type": "stream", "name": "stdout", "text": ["a\n"]},
        {"output_type": "stream", "name": "stdout", "text": "b\nc\n"},
        {"output_type": "stream", "name": "stderr", "text": ["warn\n"]},
        {"output_type": "display_data", "data": {"text/plain": "fig"}},
        {"output_type": "stream", "name": "stdout", "text": ["d\n"]},
    ]
    merged = converter.merge_streams(out)
    assert [o.get("name") for o in merged] == ["stdout", "stderr", None, "stdout"]
    assert "".join(merged[0]["text"]) == "a\nb\nc\n"
    assert merged[0]["text"] == ["a\n", "b\n", "c\n"]
    assert converter.merge_streams(merged) == merged  # idempotent
