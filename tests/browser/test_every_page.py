"""Every page of the built site in Chromium, once: each check a page must pass.

One walk over every page (``sitepages.pages``: both editions, the highlighted
sources and the 404 page), in a browser with no network: every request that
leaves 127.0.0.1 is blocked and recorded. On each page, as loaded:

- no console error, page error, failed request or request to another host;
  every image loads (lazy thumbnails asked for at once);
- axe-core finds nothing serious or critical, in light and in dark mode
  (the theme follows the system setting: a second load in a dark context).
  The colours of highlighted code depend only on its kind of block (the
  lexer: Python cells, console examples, outputs, highlighted sources) and
  its tokens' classes, the same on every page: code is checked on the
  fewest pages that hold every (kind, token class) pair the site holds
  (:func:`code_cover`), the rest of every page on every page;
- each figure of an output has real alt text (not a file name);
- every formula is drawn as MathML (rendered when the site is built,
  docs/_ext/dlcomp_math.py; folded answers opened first), no MathJax is
  loaded and no raw TeX such as ``\\(`` is left in the prose.
"""

import re

import pytest
from sitepages import pages

pytestmark = pytest.mark.browser

LOCAL = re.compile(r"^(?:https?://127\.0\.0\.1[:/]|data:|blob:|about:)")

# Thumbnails load lazily (when scrolled near): ask for every image now, wait
# until each has loaded or failed, then list the ones that did not load.
LOAD_EVERY_IMAGE = """async () => {
    const images = [...document.images];
    await Promise.all(images.map((img) => {
        if (img.loading === 'lazy') img.loading = 'eager';
        if (img.complete) return null;
        return new Promise((done) => {
            img.addEventListener('load', done, {once: true});
            img.addEventListener('error', done, {once: true});
        });
    }));
    return images
        .filter((img) => !img.complete || img.naturalWidth === 0)
        .map((img) => img.src);
}"""

# Text of the page outside code and typeset math: raw TeX must not be there.
VISIBLE_PROSE = """() => {
    const main = document.querySelector('main') || document.body;
    const copy = main.cloneNode(true);
    copy.querySelectorAll('pre, code, script, style, math, .highlight')
        .forEach((node) => node.remove());
    return copy.textContent;
}"""

# A formula is drawn when its <math> has a size and its <annotation> (the
# TeX, kept for copying) takes no room: only the MathML is shown. Folded
# answers are opened first; a formula in a part still hidden (an unselected
# tab) must at least be MathML.
MATH_STATE = """() => {
    const closed = [...document.querySelectorAll('details')].filter((d) => !d.open);
    closed.forEach((d) => { d.open = true; });
    window.dlcompOpened = closed;  // closed again before axe runs
    const math = [...document.querySelectorAll('.math')];
    const drawn = (m) => {
        const el = m.querySelector('math');
        if (!el) return false;
        if (m.getClientRects().length === 0) return true;  // not rendered: hidden
        const box = el.getBoundingClientRect();
        const tex = el.querySelector('annotation');
        const texBox = tex ? tex.getBoundingClientRect() : {width: 0, height: 0};
        return box.width > 0 && box.height > 0 && texBox.width * texBox.height === 0;
    };
    return {
        formulas: math.length,
        typeset: math.filter(drawn).length,
        scripts: [...document.scripts].filter((s) => /mathjax/i.test(s.src)).length,
    };
}"""

FIGURES = "div.cell_output img, img.sphx-glr-single-img"
TOKEN = re.compile(r'<span class="([\w -]+)">')
BLOCK = re.compile(r'<div class="highlight">\s*<pre>(.*?)</pre>', re.DOTALL)
KIND = re.compile(r"highlight-([\w-]+)")
CODE = [["div.highlight"]]  # axe's selector for highlighted code


def code_pairs(text: str) -> set[tuple[str, str]]:
    """The (kind of block, token class) pairs of a page's highlighted code."""
    pairs = set()
    for block in BLOCK.finditer(text):
        kinds = KIND.findall(text, max(0, block.start() - 300), block.start())
        kind = kinds[-1] if kinds else "plain"
        pairs |= {(kind, token) for token in TOKEN.findall(block.group(1))}
        pairs.add((kind, ""))  # the block's own colours, tokens or not
    return pairs


def code_cover(site, names: list[str]) -> set[str]:
    """The fewest pages whose code holds every (kind, token class) pair.

    Greedy: take the page that adds the most pairs not yet held, until
    every pair of every page is held.
    """
    pairs = {n: code_pairs((site / n).read_text(encoding="utf-8")) for n in names}
    left, chosen = set().union(*pairs.values()), set()
    while left:
        best = max(sorted(pairs), key=lambda n: len(pairs[n] & left))
        chosen.add(best)
        left -= pairs[best]
    return chosen


def axe_findings(page, mode: str, *, code: bool) -> list[str]:
    """axe-core's serious and critical findings on the page (without its code)."""
    from axe_playwright_python.sync_playwright import Axe

    found = []
    context = None if code else {"exclude": CODE}
    results = Axe().run(page, context=context, options={"resultTypes": ["violations"]})
    for violation in results.response["violations"]:
        if violation["impact"] in ("serious", "critical"):
            found += [
                f"axe ({mode}): {violation['id']} ({violation['impact']}) "
                f"at {node['target']}"
                for node in violation["nodes"]
            ]
    return found


class Recorder:
    """A page's own errors and failed requests, noted while ``on``.

    One browser page loads every URL in turn (a new page per URL would start
    a new renderer each time); what it notes is taken per URL. axe's own
    requests (it fetches stylesheets to read them, and resolves their imports
    against the page) are not the page's: it runs with the recorder off.
    """

    def __init__(self, page):
        self.page, self.notes, self.on = page, [], False
        page.on("console", lambda m: self.note(f"console {m.type}: {m.text}")
                if m.type == "error" else None)  # fmt: skip
        page.on("pageerror", lambda e: self.note(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.note(f"request failed: {r.url}"))

    def note(self, text: str) -> None:
        if self.on:
            self.notes.append(text)

    def start(self) -> None:
        self.notes, self.on = [], True

    def stop(self) -> list[str]:
        self.on = False
        return self.notes


def check_page(recorder: Recorder, url: str, *, code: bool) -> tuple[list[str], bool]:
    """Every check of one page in light mode: its problems, and whether it has math."""
    page = recorder.page
    recorder.start()
    problems: list[str] = []
    response = page.goto(url, wait_until="load")
    if response is None or not response.ok:
        recorder.stop()
        return [f"HTTP {response.status if response else 'no response'}"], False
    problems += [f"broken image: {src}" for src in page.evaluate(LOAD_EVERY_IMAGE)]
    theme = page.locator("html").get_attribute("data-theme")
    if not url.endswith("/404.html") and theme != "light":
        problems.append(f"the theme is {theme!r} in a light system setting")
    for img in page.locator(FIGURES).all():
        alt = img.get_attribute("alt") or ""
        if len(alt) < 20 or re.search(r"\.(png|svg|jpg)$|_images/", alt):
            problems.append(f"figure without real alt text: {alt!r}")
    state = page.evaluate(MATH_STATE)
    page.wait_for_load_state("networkidle")
    if state["scripts"]:
        problems.append("the page loads MathJax (math is MathML, built in)")
    if state["formulas"] and state["typeset"] != state["formulas"]:
        problems.append(
            f"{state['formulas'] - state['typeset']} of {state['formulas']} "
            "formulas not drawn as MathML"
        )
    prose = page.evaluate(VISIBLE_PROSE)
    problems += [
        f"raw TeX: {raw!r}" for raw in re.findall(r".{0,30}\\[(\[].{0,30}", prose)
    ]
    # axe on the page as a reader first sees it (dark mode: dark_mode_findings).
    page.evaluate("() => window.dlcompOpened.forEach((d) => { d.open = false; })")
    problems = recorder.stop() + problems
    problems += axe_findings(page, "light", code=code)
    return problems, bool(state["formulas"])


def dark_mode_findings(page, url: str, *, code: bool) -> list[str]:
    """The page in a dark system setting: the theme follows it, axe finds nothing."""
    page.goto(url, wait_until="load")
    theme = page.locator("html").get_attribute("data-theme")
    problems = []
    if not url.endswith("/404.html") and theme != "dark":
        problems.append(f"the theme is {theme!r} in a dark system setting")
    return problems + axe_findings(page, "dark", code=code)


def test_every_page_passes_every_check_offline(browser, base_url, site_dir):
    names = pages(site_dir)
    assert len(names) >= 40, names
    assert any(n.startswith("_modules/") for n in names), "no highlighted sources"
    cover = code_cover(site_dir, names)
    assert any(n.startswith("_modules/") for n in cover), f"stale selectors: {cover}"
    outside: list[str] = []

    def block(route):
        outside.append(route.request.url)
        route.abort("internetdisconnected")

    light, dark = (browser.new_context(color_scheme=m) for m in ("light", "dark"))
    for context in (light, dark):
        context.route(lambda url: not LOCAL.match(url), block)
    recorder, dark_page = Recorder(light.new_page()), dark.new_page()
    failures: dict[str, list[str]] = {}
    with_math, figures = [], 0
    for name in names:
        url = f"{base_url}/{name}"
        code = name in cover
        before = len(outside)
        problems, has_math = check_page(recorder, url, code=code)
        figures += recorder.page.locator(FIGURES).count()
        problems += dark_mode_findings(dark_page, url, code=code)
        problems += [f"request to another host: {u}" for u in outside[before:]]
        if has_math:
            with_math.append(name)
        if problems:
            failures[name] = problems
    light.close()
    dark.close()
    report = "\n".join(f"{n}: {'; '.join(p[:8])}" for n, p in failures.items())
    assert not failures, f"{len(failures)} of {len(names)} pages fail:\n{report}"
    # The chapter has formulas and figures: a walk that finds none tests nothing.
    assert len(with_math) >= 5, f"math found only on {with_math}"
    assert figures >= 20, f"only {figures} figures found: the selector is stale"
