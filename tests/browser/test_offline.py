"""The site works with no network: nothing loads from another host, math renders.

Every request that leaves 127.0.0.1 is blocked (and recorded); every page must
still load without console errors or failed requests, and every formula must
be drawn as MathML (rendered when the site is built, docs/_ext/dlcomp_math.py):
no raw TeX such as ``\\(`` on the page, and no TeX shown instead of math.
"""

import re

import pytest

pytestmark = pytest.mark.browser

LOCAL = re.compile(r"^(?:https?://127\.0\.0\.1[:/]|data:|blob:|about:)")

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
    document.querySelectorAll('details').forEach((d) => { d.open = true; });
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


def all_pages(site_dir):
    skip = {"404.html"}  # served for missing URLs; loaded on its own below
    return sorted(
        str(p.relative_to(site_dir))
        for p in site_dir.rglob("*.html")
        if not p.relative_to(site_dir).parts[0].startswith("_") and p.name not in skip
    )


@pytest.fixture
def offline(browser):
    """A browser context where every request off 127.0.0.1 is blocked and noted."""
    context = browser.new_context()
    outside: list[str] = []

    def block(route):
        outside.append(route.request.url)
        route.abort("internetdisconnected")

    context.route(lambda url: not LOCAL.match(url), block)
    yield context, outside
    context.close()


def test_every_page_works_offline_with_rendered_math(offline, base_url, site_dir):
    context, outside = offline
    pages = [*all_pages(site_dir), "404.html"]
    assert len(pages) >= 20
    failures: dict[str, list[str]] = {}
    with_math = []
    for name in pages:
        page = context.new_page()
        problems: list[str] = []
        page.on(
            "console",
            lambda m, problems=problems: (
                problems.append(f"console {m.type}: {m.text}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e, p=problems: p.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r, p=problems: p.append(f"request failed: {r.url}"),
        )
        before = len(outside)
        page.goto(f"{base_url}/{name}", wait_until="load")
        state = page.evaluate(MATH_STATE)
        page.wait_for_load_state("networkidle")
        if state["scripts"]:
            problems.append("the page loads MathJax (math is MathML, built in)")
        if state["formulas"]:
            with_math.append(name)
            if state["typeset"] != state["formulas"]:
                problems.append(
                    f"{state['formulas'] - state['typeset']} of {state['formulas']} "
                    "formulas not drawn as MathML"
                )
        prose = page.evaluate(VISIBLE_PROSE)
        for raw in re.findall(r".{0,30}\\[(\[].{0,30}", prose):
            problems.append(f"raw TeX: {raw!r}")
        problems += [f"request to another host: {url}" for url in outside[before:]]
        if problems:
            failures[name] = problems
        page.close()
    report = "\n".join(f"{n}: {'; '.join(p[:5])}" for n, p in failures.items())
    assert not failures, f"{len(failures)} pages fail offline:\n{report}"
    # The chapter has formulas; a site where none is found tests nothing.
    assert len(with_math) >= 5, f"math found only on {with_math}"
