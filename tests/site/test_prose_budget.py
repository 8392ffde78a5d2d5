"""The main path stays short: the prose budgets of the chapter pages.

Measured on the built English site by tools/prose_budget.py (the words a
reader sees without opening a fold: outside code, outputs and <details>).
"""

import pytest
from sitepages import prose_budget

pytestmark = pytest.mark.site

BUDGETS = prose_budget.BUDGETS


@pytest.fixture(scope="module")
def pages(site):
    return prose_budget.measure(site)


@pytest.mark.parametrize("page", prose_budget.CHAPTER_PAGES)
def test_each_chapter_page_fits_its_unfolded_budget(pages, page):
    assert pages[page]["unfolded_words"] <= BUDGETS["page_unfolded_words"], pages[page]


def test_the_seven_pages_fit_their_unfolded_budget(pages):
    total = prose_budget.totals(pages)
    assert total["unfolded_words"] <= BUDGETS["all_unfolded_words"], total


def test_folding_did_not_pad_the_pages(pages):
    total = prose_budget.totals(pages)
    assert total["all_words"] <= BUDGETS["all_words"], total


def test_the_pages_teach_pytorch_not_dlcomp(pages):
    total = prose_budget.totals(pages)
    assert total["dlcomp_mentions"] <= BUDGETS["dlcomp_mentions"], total


def test_the_measure_sees_folds_code_and_outputs_apart(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(
        "<html><body><nav>menu words here</nav><article>"
        "<p>Two words dlcomp.blocks</p>"
        "<div class='cell_output'><pre>out out out</pre></div>"
        "<pre>code code</pre>"
        "<details><summary>More</summary><p>folded four words here</p></details>"
        "<p>Last<br>one</p></article></body></html>",
        encoding="utf-8",
    )
    figures = prose_budget.measure_page(page)
    assert figures == {"unfolded_words": 5, "folded_words": 5, "dlcomp_mentions": 1}
