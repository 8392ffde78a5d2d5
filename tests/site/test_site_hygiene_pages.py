"""The built site's hygiene: what it publishes, and what every page carries."""

import gzip
import re

import pytest

pytestmark = pytest.mark.site

NOT_PAGES = {"_static", "_sources", "_downloads", "_images", "_notebooks"}


def pages(site):
    return sorted(
        p for p in site.rglob("*.html") if p.relative_to(site).parts[0] not in NOT_PAGES
    )


def test_no_theme_templates_are_published(site):
    # Jinja templates the theme keeps in its static folder (webpack-macros.html)
    templates = [
        str(p.relative_to(site))
        for p in (site / "_static").rglob("*.html")
        if "{%" in p.read_text("utf-8", errors="replace")
    ]
    assert not (site / "_static" / "webpack-macros.html").exists()
    assert templates == []


def test_every_page_has_a_meta_description(site):
    missing = []
    for page in pages(site):
        found = re.search(
            r'<meta name="description" content="([^"]*)"', page.read_text("utf-8")
        )
        if not found or len(found.group(1)) < 30:
            missing.append(str(page.relative_to(site)))
    assert missing == []


def test_chapter_pages_describe_themselves(site):
    text = (site / "parameters.html").read_text("utf-8")
    description = re.search(r'<meta name="description" content="([^"]*)"', text)
    index = (site / "index.html").read_text("utf-8")
    other = re.search(r'<meta name="description" content="([^"]*)"', index)
    assert description.group(1) != other.group(1)
    assert len(description.group(1)) <= 155


def test_gallery_sections_in_chapter_order(site):
    text = (site / "auto_examples" / "index.html").read_text("utf-8")
    titles = re.findall(r"<h2>(5\.\d)", text)
    assert titles == sorted(titles), titles
    assert titles[0] == "5.1"
    assert titles[-1] == "5.6"


def test_404_links_are_relative_to_the_site_root(site):
    text = (site / "404.html").read_text("utf-8")
    base = re.search(r'<base href="/[^"]*" />', text)
    assert base  # served over HTTP at any depth, links resolve from the root
    rest = text.replace(base.group(0), "")
    assert not re.search(r'\s(?:href|src)="/', rest)


def test_no_block_elements_inside_pre(site):
    bad = []
    for page in site.glob("_modules/**/*.html"):
        for pre in re.findall(r"<pre>.*?</pre>", page.read_text("utf-8"), re.DOTALL):
            if "<div" in pre:
                bad.append(str(page.relative_to(site)))
                break
    assert bad == []


def test_summaries_hold_only_phrasing_content(site):
    # html-validate (nox -s validate) refuses <p> or <div> in <summary>: a
    # folded cell's "show code" label is a <span>, not myst-nb's <p>.
    bad = []
    for page in pages(site):
        text = page.read_text("utf-8")
        for summary in re.findall(r"<summary\b.*?</summary>", text, re.DOTALL):
            if re.search(r"<(p|div|ul|ol|h[1-6]|pre|table)\b", summary):
                bad.append(f"{page.relative_to(site)}: {summary[:120]!r}")
    assert bad == []


def test_ids_are_unique(site):
    dupes = {}
    for page in pages(site):
        ids = re.findall(r'\sid=["\']([^"\']+)["\']', page.read_text("utf-8"))
        repeated = {i for i in ids if ids.count(i) > 1}
        if repeated:
            dupes[str(page.relative_to(site))] = sorted(repeated)[:5]
    assert dupes == {}


# -- weight: each page loads only what it uses, and paints before its scripts --

SEARCH_ASSETS = ("searchindex.js", "_static/searchtools.js", "_static/language_data.js")
HEAD_SCRIPT = re.compile(r"<script\b([^>]*)\bsrc=\"([^\"]+)\"[^>]*>")
STYLESHEET = re.compile(r"<link\b[^>]*\brel=\"stylesheet\"[^>]*>")


def _local(page, ref):
    """The file a page's relative reference points at (query string dropped)."""
    return (page.parent / ref.split("?")[0]).resolve()


def _head(page):
    text = page.read_text("utf-8")
    return text[: text.index("</head>")]


def test_no_page_shows_its_file_metadata(site):
    # ":orphan:" and other file-wide fields belong to the build, not the page
    field = re.compile(r'<dt class="field-\w+">orphan<')
    shown = [
        str(p.relative_to(site))
        for p in pages(site)
        if field.search(p.read_text("utf-8"))
    ]
    assert not shown, shown


def test_only_the_search_page_loads_the_search_index(site):
    loading = {}
    for page in pages(site):
        head = _head(page)
        found = [a for a in SEARCH_ASSETS if re.search(rf'src="[^"]*{a}', head)]
        if found:
            loading[str(page.relative_to(site))] = found
    # The search page of each edition still loads all three, so search works.
    assert loading.pop("search.html") == list(SEARCH_ASSETS)
    assert loading.pop("zh_CN/search.html") == list(SEARCH_ASSETS)
    assert loading == {}


def test_scripts_wait_for_the_page_except_the_options_inline_scripts_use(site):
    blocking = {}
    for page in pages(site):
        for attributes, src in HEAD_SCRIPT.findall(_head(page)):
            if "defer" in attributes or "async" in attributes:
                continue
            if src.split("?")[0].endswith("_static/documentation_options.js"):
                continue
            if page.name == "search.html":
                continue  # its search scripts need doctools.js run first
            blocking.setdefault(str(page.relative_to(site)), []).append(src)
    assert blocking == {}


def test_no_page_loads_mathjax(site):
    # Math is MathML, rendered at build time (docs/_ext/dlcomp_math.py).
    assert not (site / "_static" / "mathjax").exists()
    assert [p.name for p in pages(site) if "mathjax" in _head(p).lower()] == []


def test_math_is_mathml_with_its_tex_kept(site):
    text = (site / "parameters.html").read_text("utf-8")
    spans = re.findall(r'<span class="math notranslate">(.*?)</span>', text)
    assert len(spans) >= 10
    for span in spans:
        assert span.startswith("<math"), span[:80]
        assert span.endswith("</math>"), span[-80:]
        assert '<annotation encoding="application/x-tex">' in span
    # \text{fan\_in} reads fan_in, not fan\_in (latex2mathml keeps the backslash).
    assert "<mtext>fan_in</mtext>" in text
    assert "fan\\_in</mtext>" not in text


def test_gallery_thumbnails_load_lazily(site):
    thumbs = []
    for page in pages(site):
        thumbs += re.findall(r"<img\b[^>]*_thumb\.png[^>]*>", page.read_text("utf-8"))
    assert len(thumbs) >= 12
    assert [t for t in thumbs if 'loading="lazy"' not in t] == []


RENDER_BLOCKING_BUDGET_KIB = 100  # gzip: the theme's CSS is 63 of it


def test_what_blocks_the_first_paint_fits_the_budget(site):
    """Stylesheets and scripts without defer, gzip-compressed as hosts send them.

    The search page is left out: it loads the search index before it can
    show anything, by design.
    """
    worst = (0.0, "")
    for page in pages(site):
        if page.name == "search.html":
            continue
        head = _head(page)
        sheets = STYLESHEET.findall(head)
        refs = [re.search(r'href="([^"]+)"', tag).group(1) for tag in sheets]
        refs += [
            src
            for attributes, src in HEAD_SCRIPT.findall(head)
            if "defer" not in attributes
        ]
        files = {_local(page, r) for r in refs if "://" not in r}
        css_imports = set()
        for f in files:  # theme.css @imports basic.css
            if f.suffix == ".css":
                text = f.read_text("utf-8")
                for imp in re.findall(r'@import\s+(?:url\()?"([^"]+)"', text):
                    css_imports.add((f.parent / imp).resolve())
        size = sum(len(gzip.compress(f.read_bytes(), 6)) for f in files | css_imports)
        worst = max(worst, (size / 1024, str(page.relative_to(site))))
    assert worst[0] <= RENDER_BLOCKING_BUDGET_KIB, worst
