"""The built site in Chromium: pages, outputs, search, downloads, theme, navigation."""

import pytest

pytestmark = pytest.mark.browser

CHAPTERS = {
    "blocks.html": "5.1 Layers and blocks",
    "parameters.html": "5.2 Parameter management",
    "deferred-init.html": "5.3 Deferred initialization",
    "custom-layers.html": "5.4 Custom layers",
    "read-write.html": "5.5 Reading and writing files",
    "distributed-checkpoints.html": "5.5+ Checkpoints of models trained across",
    "gpu.html": "5.6 GPUs",
}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_pages_show_outputs_from_the_build(page, base_url, chapter):
    page.goto(f"{base_url}/{chapter}")
    assert CHAPTERS[chapter] in page.title()
    outputs = page.locator("div.cell_output")
    assert outputs.count() >= 7
    assert outputs.first.is_visible()
    assert page.locator("div.cell_output pre").first.inner_text().strip()


@pytest.mark.parametrize(
    "chapter", [c for c in CHAPTERS if c != "distributed-checkpoints.html"]
)
def test_exercise_answers_are_folded_and_open_on_click(page, base_url, chapter):
    page.goto(f"{base_url}/{chapter}")
    answers = page.locator("details.dlcomp-answer")
    assert answers.count() >= 2
    first = answers.first
    assert first.get_attribute("open") is None
    assert not first.locator("div.cell_output, p").first.is_visible()
    first.locator("summary").click()
    assert first.get_attribute("open") is not None
    assert first.locator("p").first.is_visible()


def test_an_audit_link_into_a_folded_answer_opens_it(page, base_url):
    # dlcomp.audit's hidden-module finding links into exercise 1's answer
    # (dlcomp.auditing.RULES; tests/site/test_audit_pages.py checks each target)
    target = "blocks.html#pitfall-plain-list"
    page.goto(f"{base_url}/{target}")
    anchor = page.locator(f"#{target.partition('#')[2]}")
    answer = page.locator("details.dlcomp-answer", has=anchor)
    assert answer.get_attribute("open") is not None
    assert anchor.locator("xpath=following-sibling::p[1]").first.is_visible()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_download_link_returns_the_executed_notebook(page, base_url, chapter):
    page.goto(f"{base_url}/{chapter}")
    link = page.locator("a.dlcomp-notebook-link")
    href = link.get_attribute("href")
    response = page.request.get(f"{base_url}/{href}")
    assert response.ok
    notebook = response.json()
    assert notebook["nbformat"] == 4
    assert any(
        cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code"
    )


@pytest.mark.parametrize(
    ("edition", "term", "expected"),
    [
        ("", "state_dict", "read-write.html"),
        ("", "LazyLinear", "deferred-init.html"),
        ("", "try_gpu", "gpu.html"),
        # The Chinese edition's index segments words (jieba, with the
        # glossary's terms as whole words); code names are found as well.
        ("zh_CN/", "参数", "parameters.html"),
        ("zh_CN/", "检查点", "read-write.html"),
        ("zh_CN/", "延后初始化", "deferred-init.html"),
        ("zh_CN/", "state_dict", "read-write.html"),
        # What Chinese readers type, without spaces: the query is cut into
        # the index's words (dlcomp_i18n's splitter).
        ("zh_CN/", "层和块", "blocks.html"),  # 5.1's own title
        ("zh_CN/", "保存模型", "read-write.html"),
        ("zh_CN/", "加载检查点", "read-write.html"),
        ("zh_CN/", "恢复训练", "read-write.html"),
    ],
)
def test_search_finds_the_right_page(page, base_url, edition, term, expected):
    page.goto(f"{base_url}/{edition}search.html?q={term}")
    results = page.locator("#search-results ul.search li a")
    results.first.wait_for(timeout=15000)
    hrefs = [
        results.nth(i).get_attribute("href") for i in range(min(results.count(), 5))
    ]
    assert any(h.split("?")[0].split("#")[0].endswith(expected) for h in hrefs), hrefs


def test_every_gallery_download_link_returns_the_file(page, base_url, site_dir):
    gallery_pages = sorted(
        p.relative_to(site_dir)
        for p in (site_dir / "auto_examples").rglob("plot_*.html")
    )
    assert len(gallery_pages) >= 9
    checked = set()
    for name in [*gallery_pages, "auto_examples/index.html"]:
        page.goto(f"{base_url}/{name}")
        links = page.locator("a.download, a.reference.download")
        for i in range(links.count()):
            url = links.nth(i).evaluate("a => a.href")
            if url in checked:
                continue
            response = page.request.get(url)
            assert response.ok, url
            assert len(response.body()) > 100, url
            checked.add(url)
    suffixes = {url.rsplit(".", 1)[-1] for url in checked}
    assert {"py", "ipynb", "zip"} <= suffixes


def test_dark_mode_toggle_changes_the_theme(page, base_url):
    page.goto(f"{base_url}/blocks.html")
    html = page.locator("html")
    light_background = page.evaluate(
        "() => getComputedStyle(document.body).backgroundColor"
    )
    for mode in ("dark", "light"):
        page.locator("button.theme-switch-button:visible").first.click()
        page.locator(f"button.theme-change-button[data-mode='{mode}']:visible").click()
        assert html.get_attribute("data-theme") == mode
        background = page.evaluate(
            "() => getComputedStyle(document.body).backgroundColor"
        )
        assert (background != light_background) == (mode == "dark")
    # the choice is remembered on the next page
    page.goto(f"{base_url}/gpu.html")
    assert html.get_attribute("data-theme") == "light"


def test_navigation_reaches_every_chapter_from_the_landing_page(page, base_url):
    for chapter, title in CHAPTERS.items():
        page.goto(f"{base_url}/index.html")
        page.locator(f"article a[href='{chapter}']").first.click()
        page.wait_for_load_state()
        assert page.url.endswith(chapter)
        assert title in page.title()


def test_404_page(page, base_url):
    response = page.goto(f"{base_url}/404.html")
    assert response.ok
    assert "Page not found" in page.locator("article").inner_text()
