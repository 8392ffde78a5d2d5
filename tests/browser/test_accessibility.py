"""Layout of the built site in Chromium (axe on every page: test_every_page.py).

The header stays one row wide enough for it, fragment links land their
heading in view, and a 390 px phone gets whole figures and whole output rows,
with a scrollbar where a row scrolls, on every chapter page and gallery
example.
"""

import re

import pytest

pytestmark = pytest.mark.browser

OUTSIDE = re.compile(r"^https?://(?!127\.0\.0\.1)")


HEADER_ROW_MAX = 80  # px: the theme's one-row header is 64 px


@pytest.mark.parametrize("width", [1024, 1280, 1920])
def test_header_is_one_row_and_fragments_land_in_view(browser, base_url, width):
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    for name in ("blocks.html", "parameters.html", "api/parameters.html"):
        page.goto(f"{base_url}/{name}")
        header = page.locator("header.bd-header")
        height = header.bounding_box()["height"]
        assert height <= HEADER_ROW_MAX, f"{name} at {width} px: header {height} px"
        ids = page.evaluate(
            "() => [...document.querySelectorAll('article section[id]')]"
            ".map(s => s.id).slice(1, 4).concat("
            "[...document.querySelectorAll('article dt[id]')]"
            ".map(s => s.id).slice(0, 3))"
        )
        assert ids, name
        for fragment in ids:
            page.goto(f"{base_url}/{name}#{fragment}")
            box = page.evaluate(
                """id => {
                  const e = document.getElementById(id);
                  const h = e.matches('section')
                    ? e.querySelector('h1, h2, h3, h4, h5, h6') : e;
                  const r = h.getBoundingClientRect();
                  const header = document.querySelector('header.bd-header');
                  return {top: r.top, bottom: r.bottom,
                          header: header.getBoundingClientRect().bottom,
                          max: document.documentElement.scrollHeight
                               - window.innerHeight - window.scrollY};
                }""",
                fragment,
            )
            assert box["top"] >= box["header"] - 1, (name, width, fragment, box)
            assert box["bottom"] <= 800, (name, width, fragment, box)
        # and through the page's own table of contents (in a drawer below 1200 px)
        page.goto(f"{base_url}/{name}")
        link = page.locator("nav.page-toc a.nav-link").nth(1)
        if width < 1200:
            continue
        target = link.get_attribute("href").split("#", 1)[1]
        link.click()
        page.wait_for_function(f"() => location.hash === '#{target}'")
        page.wait_for_timeout(600)  # smooth scrolling
        top = page.evaluate(
            "id => { const e = document.getElementById(id);"
            " return (e.matches('section') ? e.querySelector('h1,h2,h3,h4') : e)"
            ".getBoundingClientRect().top; }",
            target,
        )
        assert top >= height - 1, (name, width, target, top)
    context.close()


PHONE = {"width": 390, "height": 844}


NOT_CHAPTERS = {"index", "genindex", "py-modindex", "search", "404"}


def phone_pages(site_dir):
    """Every chapter page and every gallery example: the pages with outputs."""
    chapters = [p.name for p in site_dir.glob("*.html") if p.stem not in NOT_CHAPTERS]
    gallery = site_dir.glob("auto_examples/*/plot_*.html")
    examples = [str(p.relative_to(site_dir)) for p in gallery]
    return sorted(chapters) + sorted(examples)


# Each box that scrolls sideways: whether it shows a scrollbar (a classic
# scrollbar takes room below the content; an overlay one, a phone's default,
# appears only while the box scrolls, and nothing says the row goes on).
SIDEWAYS = """() => {
  const out = {scrolling: 0, hidden: []};
  for (const box of document.querySelectorAll(
      'div.cell_output, div.cell_output pre, div.sphx-glr-script-out pre')) {
    const style = getComputedStyle(box);
    if (box.scrollWidth <= box.clientWidth + 1) continue;
    if (!/auto|scroll/.test(style.overflowX)) continue;
    out.scrolling += 1;
    const bar = box.offsetHeight - box.clientHeight
      - parseFloat(style.borderTopWidth) - parseFloat(style.borderBottomWidth);
    if (bar < 2) out.hidden.push(box.textContent.trim().slice(0, 40));
  }
  return out;
}"""


def test_phone_figures_fit_and_output_rows_whole_with_a_scrollbar(
    browser_with_scrollbars, base_url, site_dir
):
    names = phone_pages(site_dir)
    assert len(names) >= 15, names
    context = browser_with_scrollbars.new_context(
        viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    problems, aligned, scrolling = [], 0, 0
    for name in names:
        page.goto(f"{base_url}/{name}")
        # The page itself never scrolls sideways; wide content scrolls in its box.
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth"
        )
        if overflow > 1:
            problems.append(f"{name}: page is {overflow} px wider than the phone")
        # Figures are scaled to the column: the whole figure is in view, none
        # cut at its box's edge.
        for img in page.locator("div.cell_output img, img.sphx-glr-single-img").all():
            right, edge = img.evaluate(
                "i => [i.getBoundingClientRect().right, Math.min(window.innerWidth,"
                " (i.closest('div.cell_output') || document.body)"
                ".getBoundingClientRect().right)]"
            )
            if right > edge + 1:
                problems.append(f"{name}: figure cut at {edge} px (it ends at {right})")
        # What scrolls sideways shows a scrollbar.
        sideways = page.evaluate(SIDEWAYS)
        scrolling += sideways["scrolling"]
        problems += [f"{name}: scrolls unseen: {t!r}" for t in sideways["hidden"]]
        # Column-aligned outputs keep each row on one line (they scroll sideways).
        styles = page.evaluate(
            "() => [...document.querySelectorAll("
            "'div.cell_output div.output:not(.traceback):not(.stderr) pre,"
            " div.sphx-glr-script-out pre')]"
            ".map(p => getComputedStyle(p).whiteSpace)"
        )
        aligned += len(styles)
        if set(styles) - {"pre"}:
            problems.append(f"{name}: outputs wrap ({set(styles)})")
    context.close()
    assert aligned >= 50, f"only {aligned} outputs found: the selectors are stale"
    assert scrolling >= 20, f"only {scrolling} wide outputs: the selectors are stale"
    assert problems == [], "\n".join(problems[:30])


def test_404_is_styled_at_any_depth_and_from_disk(browser, base_url, site_dir):
    body = (site_dir / "404.html").read_bytes()
    context = browser.new_context()
    context.route(OUTSIDE, lambda route: route.fulfill(status=204, body=""))
    # A host answers a missing URL, however deep, with 404.html.
    context.route(
        re.compile(r".*/no/such/place/missing\.html$"),
        lambda route: route.fulfill(status=404, body=body, content_type="text/html"),
    )
    page = context.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    for url in (
        f"{base_url}/no/such/place/missing.html",
        (site_dir / "404.html").resolve().as_uri(),
    ):
        failed.clear()
        page.goto(url)
        assert "Page not found" in page.locator("article").inner_text()
        if url.startswith("http"):
            # every file the page needs comes from the site root
            assert [u for u in failed if "missing.html" not in u] == [], url
        # the theme's stylesheet applies: the header is laid out as the theme's
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('header.bd-header'))"
                ".position"
            )
            == "sticky"
        ), url
        home = page.locator("article a", has_text="chapter map")
        href = home.evaluate("a => a.href")
        assert href.endswith("/index.html"), href
        assert "/no/such/" not in href, href
    context.close()
