"""Small tables that print as aligned text and render as HTML in notebooks (private).

Used by :class:`dlcomp.ParameterTable`, :class:`dlcomp.DeviceReport` and
:class:`dlcomp.AuditReport`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["html_table", "text_table"]


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    footer: str,
    right: frozenset[int] = frozenset(),
) -> str:
    """Aligned columns, a rule under the header, and a footer line."""
    cells = [tuple(header), *map(tuple, rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, footer])


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str,
    markup: frozenset[int] = frozenset(),
) -> str:
    """The same table as HTML (styled by the docs' ``dlcomp-table`` class).

    Cells are escaped, except in the columns listed in ``markup``, which hold
    HTML the caller built (and escaped) itself, such as a link.
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{c if i in markup else html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<table class="dlcomp-table"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
