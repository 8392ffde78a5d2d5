"""The audit on the site: its links land on sections, the pitfall boxes end with it."""

import re
from pathlib import Path

import pytest
from sitepages import output_texts

from dlcomp.auditing import RULES, SITE_URL

pytestmark = pytest.mark.site

DOCS = Path(__file__).resolve().parents[2] / "docs"

# Pitfall boxes the audit cannot find, and the sentence on the page that says so.
NOT_A_MODEL = {
    ("parameters.md", "Pitfall: editing through `.data`"): (
        "cannot see it. The error above is the check."
    ),
    # the lazy half of this pitfall has its home, and its audit, on 5.3
    ("parameters.md", "Pitfall: `type(m) == nn.Linear` skips layers without a word"): (
        "cannot see a skipped subclass."
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_links_to_a_section_of_the_built_site(site, rule):
    page, _, anchor = RULES[rule].page.partition("#")
    path = site / page
    assert path.is_file(), f"{rule}: {SITE_URL}{page} is not a page of the site"
    assert f'id="{anchor}"' in path.read_text("utf-8"), (
        f"{rule}: {page} has no element with id {anchor!r}"
    )


def sections(source: str):
    """(title of the section's pitfall box or heading, the section's text)."""
    chunks = re.split(r"\n(?=#{2,3} )", source)  # ## and ### headings
    for chunk in chunks:
        heading = chunk.splitlines()[0]
        for title in re.findall(r":::\{admonition\} (Pitfall: [^\n]+)", chunk):
            yield title, chunk
        if heading.startswith("### Pitfall: ") and ":::{admonition}" not in chunk:
            yield heading.removeprefix("### "), chunk


CHAPTER_SOURCES = [
    "blocks.md",
    "parameters.md",
    "deferred-init.md",
    "custom-layers.md",
    "read-write.md",
    "gpu.md",
]


def test_every_pitfall_box_ends_with_the_audit_that_finds_it():
    missing = []
    boxes = 0
    for name in CHAPTER_SOURCES:
        for title, text in sections((DOCS / name).read_text("utf-8")):
            if title.startswith("Pitfall: lazy layers draw"):
                continue  # a heading about the random state: no model defect
            boxes += 1
            said = NOT_A_MODEL.get((name, title))
            if said is not None:
                assert said in text, f"{name}: {title!r} must say why no audit"
            elif "dlcomp.audit(" not in text:
                missing.append(f"{name}: {title}")
    assert boxes >= 7  # 5.1: 2, 5.2: 2, 5.3: 2, 5.4: 1
    assert missing == []


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (
            "blocks.html",
            [
                "[non-string-key]",
                "[tensor-attribute]",
                "[hidden-module]",
                "[tied-parameters]",
                "[dry-run-failed]",
            ],
        ),
        ("parameters.html", ["[tied-parameters]"]),
        (
            "deferred-init.html",
            ["[uninitialized]", "[optimizer-foreign]", "[optimizer-missing]"],
        ),
        ("custom-layers.html", ["[no-gradient]"]),
        ("gpu.html", ["[mixed-devices]"]),
    ],
)
def test_the_pages_show_the_audit_finding_each_pitfall(site, page, expected):
    outputs = " ".join(output_texts(site / page))
    assert [rule for rule in expected if rule.strip("[]") not in outputs] == []
    assert "audit of " in outputs
