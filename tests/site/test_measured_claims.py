"""A page cannot state a measured outcome that its own output contradicts.

Two rules, both checked here:

- An outcome sentence is written ``{claim}`sentence <key>``` and the cell that
  measured it glues a bool under ``key``; the build fails (a warning under
  ``-W``) when the bool is not ``True``. The first tests build a one-page site
  to show the check failing on a false sentence and passing on a true one.
- A measured value (a time, a rate, a ratio) in prose comes from a cell:
  printed by it, or pasted with ``{glue:text}``. The last test scans the prose
  of the built pages for a number with such a unit that no cell produced.
"""

import html
import re
import subprocess
from pathlib import Path

import pytest
from sitepages import CHAPTER_PAGES, NOTEBOOK_HEADER, build_site, one_page_site

pytestmark = pytest.mark.site

PAGE = (
    NOTEBOOK_HEADER
    + """\
# Claims

```{{code-cell}} ipython3
from myst_nb import glue

small, large = 3.0, 1.0  # seconds, as a cell would measure them
glue("small_is_slower", bool(small > large), display=False)
glue("small_is_faster", bool(small < large), display=False)
```

{sentence}
"""
)


# A number with a unit of time, rate or size per time, or a ratio ("0.11x").
MEASURED = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?\s*"
    r"(?:(?:ns|µs|us|ms|s|sec|seconds?|milliseconds?|microseconds?|minutes?)\b"
    r"|(?:[kMGT]i?B|[kMGT]FLOP)/s\b|GFLOPS\b"
    r"|[x\u00d7](?!\s*\d)(?=\W|$)"
    r"|(?:times|%)\s+(?:faster|slower|longer|shorter|more|less|fewer)\b)",
)


def build(tmp_path: Path, sentence: str) -> subprocess.CompletedProcess[str]:
    """Build a one-page site whose prose is ``sentence``, strictly (-W)."""
    one_page_site(tmp_path, PAGE.format(sentence=sentence), execution="force")
    return build_site(tmp_path, tmp_path / "_build")


def test_a_claim_its_cell_contradicts_fails_the_build(tmp_path: Path):
    # The cell measured the small additions as the slower ones; the sentence
    # states the opposite.
    run = build(tmp_path, "{claim}`the small additions were faster <small_is_faster>`")
    assert run.returncode != 0, "a contradicted claim built"
    assert "the page states 'the small additions were faster'" in run.stderr, run.stderr
    assert "glued small_is_faster=False" in run.stderr, run.stderr


def test_a_claim_its_cell_confirms_builds(tmp_path: Path):
    run = build(tmp_path, "{claim}`the small additions were slower <small_is_slower>`")
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "_build" / "index.html").read_text(encoding="utf-8")
    assert '<span class="dlcomp-claim">the small additions were slower</span>' in text


def test_a_claim_without_a_glued_value_fails_the_build(tmp_path: Path):
    run = build(tmp_path, "{claim}`it was fast <never_glued>`")
    assert run.returncode != 0
    assert "glued never_glued=<nothing: no cell glued this key>" in run.stderr


def _drop_elements(source: str, opening: str) -> str:
    """``source`` without every element that starts with ``opening`` (nesting-aware)."""
    tag = re.match(r"<(\w+)", opening).group(1)
    out, rest = [], source
    while (start := rest.find(opening)) != -1:
        out.append(rest[:start])
        depth, pos = 0, start
        for match in re.finditer(rf"<(/?){tag}\b[^>]*>", rest[start:]):
            depth += -1 if match.group(1) else 1
            if depth == 0:
                pos = start + match.end()
                break
        else:
            pos = len(rest)
        rest = rest[pos:]
    out.append(rest)
    return "".join(out)


def prose(path: Path) -> str:
    """The text a page writes itself: no code, no cell output, nothing pasted."""
    source = path.read_text(encoding="utf-8")
    source = source.partition('<main id="main-content"')[2] or source
    for opening in (
        '<div class="cell ',  # a notebook cell: its code and its outputs
        '<div class="sphx-glr-script-out',  # a gallery script's printed output
        '<div class="highlight',  # code
        "<pre",
        "<code",
        '<span class="pasted-text"',  # {glue:text}: a value the cell measured
        '<span class="math',
        '<p class="sphx-glr-timing"',  # sphinx-gallery's measured running time
        "<script",
        "<style",
    ):
        source = _drop_elements(source, opening)
    return html.unescape(re.sub(r"<[^>]+>", " ", source))


def gallery_pages(site: Path) -> list[Path]:
    return sorted((site / "auto_examples").glob("*/plot_*.html"))


def test_prose_states_no_measured_value_that_no_cell_produced(site: Path):
    pages = [site / page for page in CHAPTER_PAGES] + gallery_pages(site)
    assert len(pages) > len(CHAPTER_PAGES), "no gallery pages in the build"
    found = []
    for page in pages:
        text = " ".join(prose(page).split())
        for match in MEASURED.finditer(text):
            context = text[max(0, match.start() - 60) : match.end() + 30]
            found.append(f"{page.relative_to(site)}: ...{context}...")
    assert not found, "measured values written into prose:\n" + "\n".join(found)


def test_the_prose_scan_finds_a_written_measurement(tmp_path: Path):
    page = tmp_path / "page.html"
    page.write_text(
        '<main id="main-content"><p>Logging with .item() costs 0.11x as much, '
        "and copies reach 4.2 GB/s.</p>"
        '<div class="cell docutils"><div class="cell_output">0.64 GB/s</div></div>'
        '<p>It ran for <span class="pasted-text">3.5</span> units.</p></main>'
    )
    found = [m.group(0) for m in MEASURED.finditer(" ".join(prose(page).split()))]
    assert found == ["0.11x", "4.2 GB/s"]
