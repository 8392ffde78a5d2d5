"""What a reader of the built pages sees and copies: code, folded answers.

Both editions: the Chinese pages are build/html/zh_CN.
"""

import os
import re
from pathlib import Path

import pytest
from sitepages import CHAPTER_PAGES, cell_texts

pytestmark = pytest.mark.site

EDITIONS = ["", "zh_CN/"]
NOT_PAGES = {"_static", "_sources", "_downloads", "_images", "_notebooks", "_modules"}
# myst-nb's glue, which only the build has: a reader who copies it gets an
# ImportError (no myst_nb) or a NameError (no glue).
BUILD_ONLY = re.compile(r"(?<![\w.])glue\(|\bmyst_nb\b")


def pages(site: Path) -> list[Path]:
    return sorted(
        p for p in site.rglob("*.html") if p.relative_to(site).parts[0] not in NOT_PAGES
    )


def test_no_code_a_reader_sees_calls_glue_or_imports_myst_nb(site: Path):
    """The input of every cell on a page (folded ones too: a reader opens and
    copies them) runs without myst-nb: glue belongs in a removed cell."""
    found = []
    for path in pages(site):
        for number, code in enumerate(cell_texts(path, "cell_input"), start=1):
            lines = [
                line.strip() for line in code.splitlines() if BUILD_ONLY.search(line)
            ]
            if lines:
                found.append(f"{path.relative_to(site)} cell {number}: {lines[0]}")
    assert not found, f"{len(found)} cells:\n" + "\n".join(found)


SUMMARY = re.compile(r'<details class="dlcomp-answer"><summary>(.*?)</summary>')
NAMED = {
    "": r"^Show the answer to exercise (\d+)$",
    "zh_CN/": r"^显示练习 (\d+) 的答案$",
}


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_each_folded_answer_names_its_exercise(site: Path, edition: str, page: str):
    source = (site / edition / page).read_text(encoding="utf-8")
    summaries = SUMMARY.findall(source)
    if page == "distributed-checkpoints.html" and not summaries:
        return  # no exercises on this page
    assert len(summaries) >= 2, summaries
    numbers = []
    for summary in summaries:
        named = re.match(NAMED[edition], summary)
        assert named, f"{edition}{page}: {summary!r} does not name its exercise"
        numbers.append(int(named.group(1)))
    assert numbers == list(range(1, len(numbers) + 1)), numbers


# -- page weight: alternates for search engines ---------------------------------

ROOT = Path(__file__).resolve().parents[2]
ONE_PAGE_CONF = """\
import sys
sys.path.insert(0, {ext!r})
extensions = ["dlcomp_i18n"]
templates_path = [{templates!r}]
html_baseurl = {base!r}
language = {language!r}
locale_dirs = ["locales/"]
gettext_compact = False
"""
CATALOGS = {
    "index.po": [("Home", "首页")],
    "api/page.po": [("Page", "页面"), ("Text.", "文字。")],
}


def _alternates(html: str) -> dict[str, str]:
    links = r'<link rel="alternate" hreflang="([^"]+)" href="([^"]+)"'
    return dict(re.findall(links, html))


@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_hreflang_alternates_are_absolute_when_the_base_url_is_known(
    tmp_path: Path, language: str
):
    from sitepages import build_site

    base = "https://example.org/dlcomp/"
    source = tmp_path / "docs"
    (source / "api").mkdir(parents=True)
    (source / "conf.py").write_text(
        ONE_PAGE_CONF.format(
            ext=str(ROOT / "docs" / "_ext"),
            templates=str(ROOT / "docs" / "_templates"),
            base=base,
            language=language,
        )
    )
    (source / "index.rst").write_text("Home\n====\n\n.. toctree::\n\n   api/page\n")
    (source / "api" / "page.rst").write_text("Page\n====\n\nText.\n")
    for name, messages in CATALOGS.items():  # the Chinese edition's text
        po = source / "locales" / "zh_CN" / "LC_MESSAGES" / name
        po.parent.mkdir(parents=True, exist_ok=True)
        entries = "".join(f'msgid "{a}"\nmsgstr "{b}"\n\n' for a, b in messages)
        po.write_text(f'msgid ""\nmsgstr ""\n"Language: zh_CN\\n"\n\n{entries}')
    done = build_site(source, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "out" / "api" / "page.html").read_text("utf-8")
    other = "zh-CN" if language == "en" else "en"
    folder = "zh_CN/" if language == "en" else ""
    assert _alternates(page) == {other: f"{base}{folder}api/page.html"}


def test_hreflang_alternates_of_the_built_site_point_at_the_other_edition(site: Path):
    """Without a base URL (a local build) they stay relative, and lead to a page."""
    for path in (site / "blocks.html", site / "zh_CN" / "api" / "auditing.html"):
        for href in _alternates(path.read_text("utf-8")).values():
            base = os.environ.get("DLCOMP_BASE_URL")
            if base:
                assert href.startswith(base), href
            else:
                assert (path.parent / href).resolve().is_file(), href


# -- the Chinese edition ----------------------------------------------------------

HAN = re.compile(r"[\u4e00-\u9fff]")
TABLE = re.compile(r'<table class="dlcomp-table">(.*?)</table>', re.DOTALL)


def test_chinese_output_tables_have_chinese_headers_and_summaries(site: Path):
    untranslated, tables = [], 0
    for path in pages(site / "zh_CN"):
        source = path.read_text("utf-8")
        for table in TABLE.findall(source):
            tables += 1
            headers = re.findall(r"<th>([^<]*)</th>", table)
            english = [h for h in headers if not HAN.search(h)]
            caption = re.search(r"<caption>([^<]*)", table)
            if caption and re.match(r"audit of |[\d,]+ parameters", caption[1]):
                english.append(caption[1][:50])
            if english:
                untranslated.append(f"{path.relative_to(site)}: {english}")
        for text in cell_texts(path, "cell_output"):
            for line in text.splitlines():
                if re.match(r"\s*audit of \w+: \d+ errors?, ", line):
                    untranslated.append(f"{path.relative_to(site)}: {line[:60]}")
    assert tables >= 10, f"only {tables} output tables: stale selectors"
    assert not untranslated, "\n".join(untranslated[:30])


def test_english_output_tables_stay_english(site: Path):
    source = (site / "deferred-init.html").read_text("utf-8")
    assert "<th>severity</th>" in source
    assert not HAN.search("".join(TABLE.findall(source)))


def test_chinese_landing_page_says_the_library_messages_stay_english(site: Path):
    text = (site / "zh_CN" / "index.html").read_text("utf-8")
    assert "dlcomp-outputs-note" in text
    assert "保持英文" in text


def test_chinese_api_pages_mark_docstring_text_english(site: Path):
    marked = 0
    for path in sorted((site / "zh_CN" / "api").glob("*.html")):
        source = path.read_text("utf-8")
        marked += len(re.findall(r'<p class="[^"]*dlcomp-en[^"]*" lang="en"', source))
        assert not re.search(r'class="[^"]*dlcomp-en[^"]*"(?! lang="en")', source), (
            path.name
        )
        # the page's own Chinese text is not marked
        assert 'lang="en">本 API' not in source
    assert marked >= 20


OWN_PAGES = ["index.html", "auto_examples/index.html", "api/index.html"]


def test_chinese_landing_page_first_sentence(site: Path):
    text = re.sub(r"<[^>]+>", "", (site / "zh_CN" / "index.html").read_text("utf-8"))
    assert "第 5 章" in text
    assert "第5章" not in text
    assert "的那一章" not in text


@pytest.mark.parametrize("name", OWN_PAGES)
def test_no_italics_on_chinese_text(site: Path, name: str):
    paths = [site / "zh_CN" / name]
    if name == "auto_examples/index.html":
        paths += sorted((site / "zh_CN" / "auto_examples").glob("*/index.html"))
    for path in paths:
        for em in re.findall(r"<em>(.*?)</em>", path.read_text("utf-8")):
            assert not HAN.search(em), f"{path.relative_to(site)}: <em>{em}</em>"
