"""How much a reader reads on each chapter page of the built site.

For each chapter page of a built edition, counts the words of its article
text a reader sees without opening anything: everything inside the page's
``<article>`` except code (``pre``), cell outputs, folded ``<details>`` boxes
(the answers and the depth folded under "More"), scripts and MathML; and the
words inside folds, and how often ``dlcomp.`` is named in the unfolded text.

    python tools/prose_budget.py build/html          # a table
    python tools/prose_budget.py build/html --json   # the figures as JSON

The budgets the site holds (tests/site/test_prose_budget.py checks them on
the English build) are in ``BUDGETS``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path


def _chapter_pages() -> tuple[str, ...]:
    """The chapter pages, as conf.py lists them (``CHAPTER_PAGES``), unexecuted."""
    conf = Path(__file__).resolve().parents[1] / "conf.py"
    for node in ast.parse(conf.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CHAPTER_PAGES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"{conf} has no CHAPTER_PAGES list")


CHAPTER_PAGES = _chapter_pages()

BUDGETS = {
    "page_unfolded_words": 1600,  # each chapter page
    # The site before these budgets (2026-12-06): 12,661 words unfolded,
    # 2,789 folded, 138 "dlcomp." in the unfolded text.
    "all_unfolded_words": 9495,  # the seven: 75% of 12,661
    "all_words": 16995,  # unfolded and folded: 110% of 15,450 (the site before)
    "dlcomp_mentions": 80,  # "dlcomp." in the unfolded text of the seven
}

_SKIPPED_TAGS = {"pre", "script", "style", "math", "details", "svg", "button"}
_SKIPPED_CLASSES = {"cell_output", "headerlink", "copybtn", "dlcomp-notebook"}
_VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link",
    "meta", "source", "track", "wbr",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z0-9][\w'\u2019.\-/+]*|[\u4e00-\u9fff]")


class _Article(HTMLParser):
    """Collects the text of ``<article>``: unfolded, and inside folds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str]] = []  # (tag, why skipped or "")
        self.in_article = 0
        self.unfolded: list[str] = []
        self.folded: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag == "article":
            self.in_article += 1
        why = ""
        if tag == "details":
            why = "fold"
        elif tag in _SKIPPED_TAGS or classes & _SKIPPED_CLASSES:
            why = "skip"
        self.stack.append((tag, why))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        while self.stack:
            open_tag, _ = self.stack.pop()
            if open_tag == "article":
                self.in_article -= 1
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.in_article:
            return
        whys = [why for _, why in self.stack if why]
        if not whys:
            self.unfolded.append(data)
        elif "fold" in whys and "skip" not in whys:
            self.folded.append(data)


def measure_page(path: Path) -> dict[str, int]:
    """Words unfolded, words folded and ``dlcomp.`` mentions of one page."""
    parser = _Article()
    parser.feed(path.read_text(encoding="utf-8"))
    unfolded = " ".join(parser.unfolded)
    folded = " ".join(parser.folded)
    return {
        "unfolded_words": len(_WORD.findall(unfolded)),
        "folded_words": len(_WORD.findall(folded)),
        "dlcomp_mentions": unfolded.count("dlcomp."),
    }


def measure(site: Path) -> dict[str, dict[str, int]]:
    """The figures of every chapter page of the edition built in ``site``."""
    return {page: measure_page(site / f"{page}.html") for page in CHAPTER_PAGES}


def totals(pages: dict[str, dict[str, int]]) -> dict[str, int]:
    """The figures of the seven pages together."""
    unfolded = sum(p["unfolded_words"] for p in pages.values())
    folded = sum(p["folded_words"] for p in pages.values())
    return {
        "unfolded_words": unfolded,
        "folded_words": folded,
        "all_words": unfolded + folded,
        "dlcomp_mentions": sum(p["dlcomp_mentions"] for p in pages.values()),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures of a built edition."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="a built edition, e.g. build/html")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    pages = measure(args.site)
    total = totals(pages)
    if args.json:
        print(json.dumps({"pages": pages, "total": total}, indent=2))
        return 0
    print(f"{'page':<26}{'unfolded':>10}{'folded':>10}{'dlcomp.':>9}")
    for name, figures in pages.items():
        print(
            f"{name:<26}{figures['unfolded_words']:>10}"
            f"{figures['folded_words']:>10}{figures['dlcomp_mentions']:>9}"
        )
    print(
        f"{'all seven':<26}{total['unfolded_words']:>10}"
        f"{total['folded_words']:>10}{total['dlcomp_mentions']:>9}"
    )
    print(
        f"budgets: {BUDGETS['page_unfolded_words']} a page, "
        f"{BUDGETS['all_unfolded_words']} unfolded in all, "
        f"{BUDGETS['all_words']} with folds, "
        f"{BUDGETS['dlcomp_mentions']} 'dlcomp.'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
