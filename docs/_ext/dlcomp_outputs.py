"""A translated edition's outputs: the English build's, with their headers translated.

The pages' outputs are the English build's (one execution for both
editions). In a translated edition, the headers of dlcomp's tables and the
one-line summaries above them come from ``outputs.po``, the API pages'
docstring text is marked English, the audit's links point into the edition,
and the landing page says what of the outputs stays English.
"""

from __future__ import annotations

import re
from pathlib import Path

from dlcomp_i18n import LOCALES, site_text

_ENGLISH_TAG = re.compile(r'<(\w+) class="([^"]*\bdlcomp-en\b[^"]*)"(?! lang=)')


def mark_english_docstrings(page: str) -> str:
    """Docstring text (marked while read) of a translated page gets ``lang="en"``."""
    return _ENGLISH_TAG.sub(r'<\1 class="\2" lang="en"', page)


OUTPUTS_CATALOG = "outputs.po"  # in each language's LC_MESSAGES
NAME, NUMBER = r"[\w.]+", r"[\d,]+"  # what a {field} of a pattern matches
_OUTPUT_TABLE = re.compile(r'<table class="dlcomp-table">.*?</table>', re.DOTALL)
_HEADER_CELL = re.compile(r"<th>([^<]*)</th>")
_CAPTION = re.compile(r"<caption>([^<]*)")
_OUTPUT_PRE = re.compile(
    r'(<div class="output [^"]*">\s*<div class="highlight"><pre>)(.*?)(</pre>)',
    re.DOTALL,
)


def output_catalog(language: str) -> tuple[dict[str, str], list[tuple]]:
    """The outputs' words in ``language``: exact headers, and summary patterns.

    A message with ``{name}`` fields is a pattern: each field matches a
    model's name (``model``) or a number (any other), ``(s)`` an optional
    plural "s"; the longest patterns are tried first.
    """
    from babel.messages.pofile import read_po

    path = LOCALES / language / "LC_MESSAGES" / OUTPUTS_CATALOG
    if not path.is_file():
        return {}, []
    with path.open("rb") as f:
        catalog = read_po(f)
    words, patterns = {}, []
    for message in catalog:
        if not message.id or not message.string:
            continue
        source, text = str(message.id), str(message.string)
        if "{" not in source:
            words[source] = text
            continue
        regex = re.escape(source).replace(r"\(s\)", "s?")
        regex = re.sub(
            r"\\\{(\w+)\\\}",
            lambda m: f"(?P<{m[1]}>{NAME if m[1] == 'model' else NUMBER})",
            regex,
        )
        patterns.append((len(source), re.compile(regex), text))
    patterns.sort(key=lambda p: -p[0])
    return words, patterns


def translate_output_text(text: str, patterns: list[tuple], *, lines=False) -> str:
    """``text`` with a summary at its start in the catalog's words.

    With ``lines`` (printed text), each line that is a summary, alone or
    followed by a remark in brackets, and no other line.
    """

    def line(match: re.Match[str]) -> str:
        return match[1] + translate_output_text(match[2], patterns, lines=False)

    if lines:
        summary = "|".join(
            re.sub(r"\(\?P<\w+>", "(?:", regex.pattern) for _, regex, _ in patterns
        )
        if not summary:
            return text
        whole = re.compile(rf"(?m)^((?:<[^<>]*>)*[ \t]*)((?:{summary})(?: \(.*)?)$")
        return whole.sub(line, text)
    for _, regex, target in patterns:
        found = regex.match(text)
        if found:
            return target.format(**found.groupdict()) + text[found.end() :]
    return text


def translate_outputs_html(page: str, words: dict[str, str], patterns) -> str:
    """The outputs of one built page with their headers and summaries translated."""

    def table(match: re.Match[str]) -> str:
        html = _HEADER_CELL.sub(lambda m: f"<th>{words.get(m[1], m[1])}</th>", match[0])
        return _CAPTION.sub(
            lambda m: f"<caption>{translate_output_text(m[1], patterns)}", html
        )

    def pre(match: re.Match[str]) -> str:
        text = translate_output_text(match[2], patterns, lines=True)
        return match[1] + text + match[3]

    return _OUTPUT_PRE.sub(pre, _OUTPUT_TABLE.sub(table, page))


def rewrite_translated_pages(app, exception) -> None:
    """build-finished: one pass over a translated edition's built pages.

    The pages' outputs are the English build's (one execution for both
    editions); the headers of dlcomp's tables and the one-line summaries
    above them are taken from ``outputs.po``. The library's own messages (a
    finding, an error) stay English: the edition's landing page says so.
    The API pages' docstring text is marked English (``lang="en"``). And
    the audit's links stay in the edition: ``dlcomp.audit`` links each
    finding to the hosted English page that explains it; the outputs on a
    translated page point at the same section of this edition instead (the
    sections keep their ids).
    """
    if exception is not None or app.builder.format != "html":
        return
    if app.config.language == "en":
        return
    from dlcomp.auditing import SITE_URL

    words, patterns = output_catalog(app.config.language)
    audit_href = re.compile(r'href="' + re.escape(SITE_URL) + r'([^"#]*)')
    outdir = Path(app.outdir)
    for page in outdir.rglob("*.html"):
        folder = page.relative_to(outdir).parts[0]
        text = page.read_text("utf-8")
        new = text
        if folder not in ("_static", "_sources", "_modules"):
            if "cell_output" in text or "sphx-glr-script-out" in text:
                new = translate_outputs_html(new, words, patterns)
            if folder == "api":
                new = mark_english_docstrings(new)
        if SITE_URL in new:
            up = "../" * (len(page.relative_to(outdir).parts) - 1)
            new = audit_href.sub(rf'href="{up}\1', new)
        if new != text:
            page.write_text(new, "utf-8")


def outputs_note(app, doctree) -> None:
    """doctree-read: a translated landing page says what of the outputs is English."""
    from docutils import nodes

    if app.config.language == "en" or app.env.docname != app.config.root_doc:
        return
    if app.builder.name == "gettext":
        return
    note = site_text(app.config.language, "OUTPUTS_NOTE")
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not note:
        return
    para = nodes.paragraph(note, note, classes=["dlcomp-outputs-note"])
    para["translatable"] = False
    section.append(nodes.note("", para))


def setup(app) -> dict:
    app.connect("doctree-read", outputs_note)
    app.connect("build-finished", rewrite_translated_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
