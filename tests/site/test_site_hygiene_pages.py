"""The built site's hygiene: what it publishes, and what every page carries."""

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


def test_ids_are_unique(site):
    dupes = {}
    for page in pages(site):
        ids = re.findall(r'\sid=["\']([^"\']+)["\']', page.read_text("utf-8"))
        repeated = {i for i in ids if ids.count(i) > 1}
        if repeated:
            dupes[str(page.relative_to(site))] = sorted(repeated)[:5]
    assert dupes == {}
