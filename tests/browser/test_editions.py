"""The English and Chinese editions in Chromium: the switcher, the landing page, 404.

The other browser tests run over every page of both editions (they walk
build/html, and the Chinese edition is its zh_CN/ folder), and the search
test searches both; these test what only a reader of two editions does.
Screenshots of Chinese pages go to build/screenshots/zh_CN/, legible only
with a CJK font on the machine (the first test checks for one: CI installs
Debian's fonts-noto-cjk).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SHOTS = Path("build") / "screenshots" / "zh_CN"


def test_a_cjk_font_is_installed_and_chinese_renders_with_it(page, base_url):
    if shutil.which("fc-list") is None:
        pytest.fail("fc-list not found: install fontconfig and fonts-noto-cjk")
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert fonts.stdout.strip(), (
        "no CJK font: the Chinese pages would render as boxes "
        f"(apt-get install -y fonts-noto-cjk); fc-list said {fonts.stderr!r}"
    )
    page.goto(f"{base_url}/zh_CN/blocks.html")
    # A font with Chinese glyphs draws these characters at different widths
    # from the box a missing glyph becomes (each box is the same).
    widths = page.evaluate(
        """() => ["层", "块", "一"].map(ch => {
            const span = document.createElement("span");
            span.textContent = ch.repeat(10);
            span.style.fontSize = "40px";
            document.body.append(span);
            const w = span.getBoundingClientRect().width;
            span.remove();
            return w;
        })"""
    )
    assert all(w > 0 for w in widths), widths
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in ("index", "blocks", "read-write"):
        page.goto(f"{base_url}/zh_CN/{name}.html")
        page.screenshot(path=str(SHOTS / f"{name}.png"))


GALLERY_PAGE = "auto_examples/files/plot_01_resume_after_crash.html"


@pytest.mark.parametrize("name", ["blocks.html", "api/auditing.html", GALLERY_PAGE])
def test_switcher_goes_to_the_same_page_and_back(page, base_url, name):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base_url}/{name}")
    english_title = page.locator("h1").first.inner_text()
    page.locator(".dlcomp-languages a[hreflang='zh-CN']:visible").first.click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/zh_CN/{name}"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    chinese_title = page.locator("h1").first.inner_text()
    assert re.search(r"[\u4e00-\u9fff]", chinese_title), chinese_title
    page.locator(".dlcomp-languages a[hreflang='en']:visible").first.click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/{name}"
    assert page.locator("h1").first.inner_text() == english_title


def test_switcher_keeps_the_section_and_the_search(page, base_url):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base_url}/zh_CN/parameters.html#sharing-parameters")
    page.locator(".dlcomp-languages a[hreflang='en']:visible").first.click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/parameters.html#sharing-parameters"
    page.goto(f"{base_url}/zh_CN/search.html?q=state_dict")
    page.locator(".dlcomp-languages a[hreflang='en']:visible").first.click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/search.html?q=state_dict"
    page.locator("#search-results ul.search li a").first.wait_for(timeout=15000)


def test_switcher_is_reachable_on_a_phone(browser, base_url):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{base_url}/zh_CN/gpu.html")
    links = page.locator(".dlcomp-languages a[hreflang='en']")
    if not links.first.is_visible():  # behind the header's menu button
        page.locator("button.primary-toggle").first.click()
    assert page.locator(".dlcomp-languages a[hreflang='en']:visible").count() >= 1
    context.close()


@pytest.mark.parametrize(
    ("locale", "lands_on"),
    [
        ("zh-CN", "/zh_CN/index.html"),
        ("en-US", "/index.html"),
        ("zh-TW", "/index.html"),
    ],
)
def test_landing_page_follows_the_browser_language(browser, base_url, locale, lands_on):
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(f"{base_url}/index.html")
    page.wait_for_load_state()
    assert page.url == f"{base_url}{lands_on}"
    context.close()


def test_a_picked_language_wins_over_the_browser_language(browser, base_url):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.goto(f"{base_url}/index.html")
    assert page.url.endswith("/zh_CN/index.html")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.locator(".dlcomp-languages a[hreflang='en']:visible").first.click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/index.html"
    page.goto(f"{base_url}/index.html")  # again, later: stays English
    assert page.url == f"{base_url}/index.html"
    page.locator(".dlcomp-languages a[hreflang='zh-CN']:visible").first.click()
    page.wait_for_load_state()
    page.goto(f"{base_url}/index.html")
    assert page.url == f"{base_url}/zh_CN/index.html"
    context.close()


def test_chinese_404_page_at_any_depth(browser, base_url, site_dir):
    body = (site_dir / "zh_CN" / "404.html").read_bytes()
    context = browser.new_context()
    context.route(
        re.compile(r".*/zh_CN/no/such/place\.html$"),
        lambda route: route.fulfill(status=404, body=body, content_type="text/html"),
    )
    page = context.new_page()
    page.goto(f"{base_url}/zh_CN/no/such/place.html")
    assert "页面不存在" in page.locator("article").inner_text()
    page.locator("article a").first.click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/zh_CN/index.html"
    context.close()
