"""The audit's rules table is written once, in dlcomp.auditing.RULES.

The API page renders it with ``{dlcomp-audit-rules}`` (docs/_ext/dlcomp_rules.py),
and the module's docstring points to RULES instead of copying it.
"""

import sys
from pathlib import Path

import dlcomp.auditing
from dlcomp.auditing import RULES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
from dlcomp_rules import rules_table  # noqa: E402  (docs/_ext: the directive)


def test_every_rule_is_one_row_in_the_order_of_rules():
    rows = rules_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(RULES)


def test_each_row_links_to_the_section_that_explains_the_rule():
    rows = dict(zip(RULES, rules_table().splitlines()[2:], strict=True))
    for rule, spec in RULES.items():
        anchor = spec.page.partition("#")[2]
        assert rows[rule].endswith(f"| {{ref}}`{spec.section} <{anchor}>` |"), rule


def test_severity_says_when_it_differs_and_what_the_rule_needs():
    rows = dict(zip(RULES, rules_table().splitlines()[2:], strict=True))
    assert "| error (warning if they hold no state) |" in rows["hidden-module"]
    assert "| error, with an input |" in rows["no-gradient"]
    assert "| error, with an optimizer |" in rows["optimizer-missing"]
    assert "| note |" in rows["tied-parameters"]


def test_the_page_and_the_docstring_do_not_copy_the_table():
    page = (ROOT / "docs" / "api" / "auditing.md").read_text(encoding="utf-8")
    assert "```{dlcomp-audit-rules}" in page
    assert not [line for line in page.splitlines() if line.startswith("| `")]
    assert "hidden-module" not in (dlcomp.auditing.__doc__ or "")
    assert "RULES" in (dlcomp.auditing.__doc__ or "")
