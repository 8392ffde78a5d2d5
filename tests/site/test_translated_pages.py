"""The Chinese edition (build/html/zh_CN): each page in Chinese, same code and outputs.

The English site is the root of build/html; the Chinese edition is its
zh_CN/ folder. Each page exists in both, says its language in ``<html
lang>``, links to itself in the other edition, and shows the same code cells
and outputs (the Chinese build reuses the English build's execution). The
Chinese search index segments words, so the glossary's terms are found.
Last, a one-page site shows the build's gate: a message without its
translation fails the strict build, and a glued value works in a translation.
"""

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from sitepages import (
    CHAPTER_PAGES,
    EXT,
    NOTEBOOK_HEADER,
    build_site,
    cell_texts,
    page_text,
)

pytestmark = pytest.mark.site
sys.path.insert(0, str(EXT))  # dlcomp_outputs: the outputs' catalog

NOT_PAGES = {"_static", "_sources", "_downloads", "_images", "_notebooks", "zh_CN"}
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def zh(site: Path) -> Path:
    path = site / "zh_CN"
    if not (path / "index.html").is_file():
        pytest.fail(f"no Chinese edition at {path}: `nox -s docs` builds both")
    return path


def pages(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if p.relative_to(root).parts[0] not in NOT_PAGES
    )


def html_lang(path: Path) -> str:
    match = re.search(r"<html[^>]*\blang=\"([^\"]+)\"", path.read_text("utf-8"))
    assert match, f"{path}: no <html lang>"
    return match.group(1)


def switcher(path: Path) -> list[tuple[str, str]]:
    """(hreflang, href) of the language links in the page's header."""
    text = path.read_text("utf-8")
    block = text.split('<div class="dlcomp-languages">', 1)
    assert len(block) == 2, f"{path}: no language switcher"
    links = re.findall(
        r'<a [^>]*href="([^"]+)"[^>]*hreflang="([^"]+)"', block[1].split("</div>")[0]
    )
    return [(lang, href) for href, lang in links]


def prose(path: Path) -> str:
    """The page's article text without code and outputs."""
    text = path.read_text("utf-8")
    article = text.split("<article", 1)[1].split("</article>", 1)[0]
    article = re.sub(r"<pre\b.*?</pre>", " ", article, flags=re.S)
    article = re.sub(r"<code\b.*?</code>", " ", article, flags=re.S)
    return " ".join(page_text_of(article).split())


def page_text_of(markup: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def test_every_page_exists_in_both_editions(site: Path, zh: Path) -> None:
    english, chinese = pages(site), pages(zh)
    assert len(english) >= 40
    assert english == chinese, sorted(set(english) ^ set(chinese))


def test_html_lang_is_right_on_every_page(site: Path, zh: Path) -> None:
    wrong = [
        f"{n}: {html_lang(site / n)}"
        for n in pages(site)
        if html_lang(site / n) != "en"
    ]
    wrong += [
        f"zh_CN/{n}: {html_lang(zh / n)}"
        for n in pages(zh)
        if html_lang(zh / n) != "zh-CN"
    ]
    assert not wrong, wrong


GALLERY_PAGE = "auto_examples/files/plot_01_resume_after_crash.html"
SWITCHED = ["index.html", *CHAPTER_PAGES, "api/auditing.html", GALLERY_PAGE]


@pytest.mark.parametrize("name", SWITCHED)
def test_switcher_links_each_page_to_itself_in_the_other_edition(site, zh, name):
    english_links = switcher(site / name)
    assert english_links, name
    lang, href = english_links[0]
    assert lang == "zh-CN"
    assert (site / name).parent.joinpath(href).resolve() == (zh / name).resolve()
    lang, href = switcher(zh / name)[0]
    assert lang == "en"
    assert (zh / name).parent.joinpath(href).resolve() == (site / name).resolve()


def test_every_switcher_link_leads_to_a_page(site: Path, zh: Path) -> None:
    broken = []
    for root in (site, zh):
        for name in pages(root):
            if name == "404.html":
                continue  # its links are relative to the site's root (<base>)
            for _, href in switcher(root / name):
                if not (root / name).parent.joinpath(href).is_file():
                    broken.append(f"{root / name}: {href}")
    assert not broken, broken[:10]


@pytest.mark.parametrize("name", ["index.html", *CHAPTER_PAGES, "api/auditing.html"])
def test_chinese_pages_show_the_same_code_and_outputs(site, zh, name, tmp_path):
    # The outputs' table headers and summaries are in Chinese (outputs.po):
    # the English outputs with those words translated, and nothing else.
    import dlcomp_outputs

    words, patterns = dlcomp_outputs.output_catalog("zh_CN")
    assert words, "docs/locales/zh_CN/LC_MESSAGES/outputs.po is empty or missing"
    translated = tmp_path / "english.html"
    source = (site / name).read_text("utf-8")
    translated.write_text(
        dlcomp_outputs.translate_outputs_html(source, words, patterns), "utf-8"
    )
    for part in ("cell_input", "cell_output"):
        english = cell_texts(translated, part, collapse=True)
        chinese = cell_texts(zh / name, part, collapse=True)
        assert chinese == english, f"{name}: the {part}s differ between the editions"


# The API pages are left out: their docstrings stay English.
IN_CHINESE = ["index.html", *CHAPTER_PAGES, "auto_examples/index.html"]


@pytest.mark.parametrize("name", IN_CHINESE)
def test_chinese_pages_are_in_chinese(zh: Path, name: str) -> None:
    text = prose(zh / name)
    letters = [c for c in text if c.isalpha()]
    share = sum(bool(CJK.match(c)) for c in letters) / len(letters)
    # Names of code (`nn.Module`, `state_dict`) stay English inside the prose.
    assert share > 0.5, f"{name}: only {share:.0%} of the prose's letters are Chinese"
    title = re.search(r"<title>([^<]*)</title>", (zh / name).read_text("utf-8"))
    # "dlcomp" and "5.6 GPU" are the same in both editions
    assert CJK.search(title.group(1)) or name in ("index.html", "gpu.html"), title


def test_404_page_is_chinese_and_links_into_the_chinese_edition(zh: Path) -> None:
    text = (zh / "404.html").read_text("utf-8")
    assert "页面不存在" in page_text(zh / "404.html")
    assert re.search(r'<base href="[^"]*zh_CN/"', text), (
        "the 404 page's links point elsewhere"
    )


def search_terms(root: Path) -> dict[str, list[str]]:
    """Each term of the search index and the pages (docnames) that hold it."""
    raw = (root / "searchindex.js").read_text("utf-8")
    index = json.loads(raw[raw.index("(") + 1 : raw.rindex(")")])
    docs = index["docnames"]
    found: dict[str, list[str]] = {}
    for part in ("terms", "titleterms"):  # the browser searches both
        for term, where in index[part].items():
            where = [where] if isinstance(where, int) else where
            found.setdefault(term, []).extend(docs[i] for i in where)
    return found


@pytest.mark.parametrize(
    ("query", "page"),
    [("参数", "parameters"), ("检查点", "read-write"), ("延后初始化", "deferred-init"),
     ("自定义层", "custom-layers"), ("共享参数", "parameters")],
)  # fmt: skip
def test_chinese_search_index_holds_whole_terms(
    zh: Path, query: str, page: str
) -> None:
    terms = search_terms(zh)
    assert query in terms, f"{query!r} is not a term of the Chinese search index"
    assert page in terms[query], terms[query]


# -- the gate, on a one-page site ----------------------------------------------

PAGE = (
    NOTEBOOK_HEADER
    + """\
# Cached

```{code-cell} ipython3
from myst_nb import glue
glue("answer", 42, display=False)
```

The answer is {glue:text}`answer`.

A second paragraph.
"""
)

CATALOG = """\
msgid ""
msgstr ""
"Language: zh_CN\\n"
"Content-Type: text/plain; charset=UTF-8\\n"

msgid "Cached"
msgstr "缓存"

msgid "The answer is {glue:text}`answer`."
msgstr "答案是 {glue:text}`answer`。"
"""


def one_page(tmp_path: Path, catalog: str) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(EXT)!r})
        extensions = ["myst_nb", "dlcomp_i18n"]
        nb_execution_mode = "auto"
        nb_execution_raise_on_error = True
        language = "zh_CN"
        locale_dirs = ["locales/"]
        """))  # fmt: skip
    (source / "index.md").write_text(PAGE)
    messages = source / "locales" / "zh_CN" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    (messages / "index.po").write_text(catalog, "utf-8")
    return source


def test_an_untranslated_message_fails_the_build_every_time(tmp_path: Path) -> None:
    source = one_page(tmp_path, CATALOG)
    for build in ("first", "again, with nothing changed"):
        result = build_site(source, tmp_path / "out")
        assert result.returncode != 0, f"{build}: passed with a message untranslated"
        expected = "not translated into zh_CN: 'A second paragraph.'"
        assert expected in result.stderr, f"{build}:\n{result.stderr}"


def test_a_complete_catalog_builds_with_the_glued_value(tmp_path: Path) -> None:
    done = CATALOG + '\nmsgid "A second paragraph."\nmsgstr "第二段。"\n'
    result = build_site(one_page(tmp_path, done), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    text = page_text(tmp_path / "out" / "index.html", collapse=True)
    assert "答案是 42 。" in text or "答案是 42。" in text, text
    assert "第二段。" in text


def test_audit_links_on_chinese_pages_stay_in_the_chinese_edition(zh: Path) -> None:
    from dlcomp.auditing import SITE_URL

    # (a report printed as text shows the hosted address: an output, unchanged)
    link = f'href="{SITE_URL}'
    outside = [n for n in pages(zh) if link in (zh / n).read_text("utf-8")]
    assert not outside, f"links to the English site on {outside}"
    blocks = (zh / "blocks.html").read_text("utf-8")
    assert 'href="blocks.html#pitfall-module-key"' in blocks


def test_the_site_serves_one_wheel_in_both_editions(site: Path, zh: Path) -> None:
    english = sorted((site / "dist").glob("*.whl"))
    chinese = sorted((zh / "dist").glob("*.whl"))
    assert [w.name for w in english] == [w.name for w in chinese] != []
    assert all(
        a.read_bytes() == b.read_bytes() for a, b in zip(english, chinese, strict=True)
    )


def test_gallery_running_times_are_in_chinese(zh: Path) -> None:
    examples = sorted((zh / "auto_examples").glob("*/plot_*.html"))
    assert len(examples) >= 10
    for example in examples:
        text = page_text(example, collapse=True)
        assert "Total running time" not in text, example.name
        assert re.search(r"脚本总运行时间： \d+ 分 [\d.]+ 秒", text), example.name


def test_gallery_thumbnails_show_chinese_titles(zh: Path) -> None:
    text = (zh / "auto_examples" / "index.html").read_text("utf-8")
    titles = re.findall(r'sphx-glr-thumbnail-title">([^<]+)<', text)
    assert len(titles) >= 10
    english = [t for t in titles if not CJK.search(t)]
    assert not english, english
