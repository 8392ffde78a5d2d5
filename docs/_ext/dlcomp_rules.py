"""``{dlcomp-audit-rules}``: the audit's rules as a table, from ``auditing.RULES``.

One source for the rules: their ids, severities, what each finds and the
section that explains it live in ``RULES``; this directive writes them as the
Markdown table a page would hold (rule, severity, finds, explained in) and
parses it where the directive stands, so the table's cells are messages the
catalogs translate like any other text of the page.
"""

from __future__ import annotations

from typing import Any


def rules_table() -> str:
    """The rules of :func:`dlcomp.audit` as a MyST Markdown table."""
    from dlcomp.auditing import RULES

    rows = ["| rule | severity | finds | explained in |", "|---|---|---|---|"]
    for rule, spec in RULES.items():
        severity = spec.severity
        if spec.severity_note:
            severity += f" ({spec.severity_note})"
        if spec.needs:
            severity += f", with an {spec.needs}"
        anchor = spec.page.partition("#")[2]
        rows.append(
            f"| `{rule}` | {severity} | {spec.finds} "
            f"| {{ref}}`{spec.section} <{anchor}>` |"
        )
    return "\n".join(rows) + "\n"


def setup(app: Any) -> dict[str, Any]:
    from sphinx.util.docutils import SphinxDirective

    class AuditRules(SphinxDirective):
        """The directive: no arguments, no content."""

        def run(self) -> list[Any]:
            import dlcomp.auditing

            self.env.note_dependency(dlcomp.auditing.__file__)
            return self.parse_text_to_nodes(rules_table())

    app.add_directive("dlcomp-audit-rules", AuditRules)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
