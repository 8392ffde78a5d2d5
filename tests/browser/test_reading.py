"""What a reader meets on the chapter pages, in Chromium: copy buttons, dark
mode's inline code, a phone's header, the page's weight, search snippets.

(Chinese search: test_site.py; a phone's figures and wide outputs:
test_accessibility.py.)"""

import re

import pytest
from sitepages import CHAPTER_PAGES  # tests/site: the chapter pages' names

pytestmark = pytest.mark.browser

CHAPTERS = CHAPTER_PAGES
PHONE = {"width": 390, "height": 844}
OUTSIDE = re.compile(r"^https?://(?!127\.0\.0\.1)")


def test_copy_buttons_sit_on_code_not_on_outputs(browser, base_url):
    context = browser.new_context()
    page = context.new_page()
    problems = []
    for name in [*CHAPTERS, "auto_examples/files/plot_01_resume_after_crash.html"]:
        page.goto(f"{base_url}/{name}")
        page.wait_for_load_state("load")
        counts = page.evaluate(
            """() => {
              const buttons = [...document.querySelectorAll('button.copybtn')];
              const onOutput = buttons.filter(b => b.closest(
                '.cell_output, div.output, .sphx-glr-script-out')).length;
              const inputs = [...document.querySelectorAll(
                '.cell_input div.highlight, div.highlight-Python div.highlight')];
              const bare = inputs.filter(h => !h.querySelector('button.copybtn'))
                .length;
              return {buttons: buttons.length, onOutput, inputs: inputs.length, bare};
            }"""
        )
        if counts["onOutput"] or counts["bare"] or not counts["inputs"]:
            problems.append(f"{name}: {counts}")
    context.close()
    assert not problems, "\n".join(problems)


def test_first_folded_answer_is_few_tab_stops_after_the_exercises(page, base_url):
    """With a button on every output, the first answer was Tab stop 143 on
    blocks: only the code's buttons and the links stand before it now."""
    page.goto(f"{base_url}/blocks.html")
    stops = page.evaluate(
        """() => {
          const focusable = [...document.querySelectorAll(
            'a[href], button, summary, input, select, textarea, [tabindex]')]
            .filter(e => e.tabIndex >= 0 && e.getClientRects().length);
          const first = document.querySelector('details.dlcomp-answer > summary');
          return {at: focusable.indexOf(first) + 1,
                  buttons: focusable.filter(e => e.matches('button.copybtn')
                    && e.compareDocumentPosition(first) & 4).length,
                  code: document.querySelectorAll('.cell_input div.highlight')
                    .length};
        }"""
    )
    assert stops["at"] > 0, stops
    # copy buttons before the first answer: at most one per code block
    assert stops["buttons"] <= stops["code"], stops


# The contrast of each inline code span in outputs and tables against the
# background it is drawn on (the first opaque background among its
# ancestors, translucent ones blended over it), as WCAG defines it.
CONTRAST = """() => {
  const rgba = (text) => {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => top.slice(0, 3).map(
    (c, i) => c * top[3] + below[i] * (1 - top[3])).concat([1]);
  const background = (element) => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let color = [255, 255, 255, 1];
    if (layers.length && layers[layers.length - 1][3] >= 1) color = layers.pop();
    while (layers.length) color = over(layers.pop(), color);
    return color;
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  return [...document.querySelectorAll(
      'div.cell_output code, table code, .sphx-glr-script-out code')]
    .filter((e) => e.getClientRects().length && e.textContent.trim())
    .map((e) => {
      const bg = background(e);
      const fg = over(rgba(getComputedStyle(e).color), bg);
      const [a, b] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
      return {text: e.textContent.slice(0, 30), ratio: (a + 0.05) / (b + 0.05)};
    });
}"""


@pytest.mark.parametrize("mode", ["dark", "light"])
def test_inline_code_in_outputs_and_tables_is_legible(browser, base_url, mode):
    context = browser.new_context(color_scheme=mode)
    context.route(OUTSIDE, lambda route: route.fulfill(status=204, body=""))
    page = context.new_page()
    low, seen = [], 0
    for name in [*CHAPTERS, "api/auditing.html", *(f"zh_CN/{c}" for c in CHAPTERS)]:
        page.goto(f"{base_url}/{name}")
        assert page.locator("html").get_attribute("data-theme") == mode
        for span in page.evaluate(CONTRAST):
            seen += 1
            if span["ratio"] < 4.5:
                low.append(f"{name}: {span['text']!r} {span['ratio']:.1f}:1")
    context.close()
    assert seen >= 20, f"only {seen} inline code spans in outputs: stale selectors"
    assert not low, f"{len(low)} spans under 4.5:1:\n" + "\n".join(low[:30])


def test_phone_header_holds_the_language_switcher(browser, base_url):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    for name, lang in (("gpu.html", "zh-CN"), ("zh_CN/gpu.html", "en")):
        page.goto(f"{base_url}/{name}")
        link = page.locator(f"header .dlcomp-languages a[hreflang='{lang}']:visible")
        assert link.count() == 1, name  # without opening the drawer
        box = link.bounding_box()
        header = page.locator("header.bd-header").bounding_box()
        assert box["y"] + box["height"] <= header["y"] + header["height"], name
        assert box["x"] + box["width"] <= PHONE["width"], name
        assert header["height"] <= 80, f"{name}: header {header['height']} px"
    context.close()


def test_pages_load_no_brand_icon_font(browser, base_url):
    """The GitHub link is an inline SVG: the 108 KiB brands font (one glyph)
    is not loaded. The theme's own icons still use its solid font."""
    context = browser.new_context()
    page = context.new_page()
    fonts = []
    page.on("request", lambda r: fonts.append(r.url) if ".woff" in r.url else None)
    for name in ("index.html", "blocks.html", "zh_CN/gpu.html"):
        page.goto(f"{base_url}/{name}")
        page.wait_for_load_state("networkidle")
    source = page.locator("header a[href*='github.com']:visible")
    assert source.count() >= 1
    assert source.first.locator("svg").count() == 1
    context.close()
    assert [f for f in fonts if "fa-brands" in f] == [], fonts


@pytest.mark.parametrize("edition", ["", "zh_CN/"])
def test_search_snippets_come_from_the_index(browser, base_url, edition):
    context = browser.new_context()
    page = context.new_page()
    pages = []
    page.on(
        "request",
        lambda r: (
            pages.append(r.url) if r.url.split("?")[0].endswith(".html") else None
        ),
    )
    page.goto(f"{base_url}/{edition}search.html?q=state_dict")
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=15000)
    page.wait_for_function(
        "() => !document.querySelector('#search-results h2 span')"
        "  || document.querySelector('#search-results .search-summary').textContent"
    )
    page.wait_for_load_state("networkidle")
    assert [u for u in pages if "search.html" not in u] == []
    snippets = page.locator("#search-results ul.search li p.context")
    assert snippets.count() >= 1
    assert len(snippets.first.inner_text()) > 20
    context.close()
