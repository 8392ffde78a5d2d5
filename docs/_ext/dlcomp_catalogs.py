"""The translation catalogs in docs/locales: read, updated and checked, without Sphinx.

One reader of ``.po`` files for the build (:mod:`dlcomp_i18n`), the check and
``nox -s translations``; it needs only babel, so it runs in any environment
that has the docs' requirements. From the command line::

    python docs/_ext/dlcomp_catalogs.py check FILE.po ...
    python docs/_ext/dlcomp_catalogs.py update GETTEXT_DIR LOCALES LANGUAGE

- ``prune_templates(gettext_dir)``: after ``sphinx-build -b gettext``, drop
  the gallery's running-time line (its value changes at every run; the
  build translates it itself) and images' paths (the editions share them),
  and the line numbers of the locations (an edit elsewhere on a page leaves
  its catalog as it is).
- ``check_catalog(path)``: the problems of one ``.po`` file (untranslated or
  fuzzy messages, markup that the translation lost, words the glossary
  rules out).
- ``update``: prune the templates, merge them into the language's catalogs
  with sphinx-intl (new messages empty, changed ones fuzzy with the old
  translation as a draft), delete the catalogs of pages that are gone, and
  print every message a translator has to look at and how its English
  changed.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
LOCALES = DOCS / "locales"
GLOSSARY = LOCALES / "glossary.csv"
#: Catalogs that belong to no page: the theme's labels, the outputs' words.
NOT_PAGES = ("sphinx.po", "outputs.po")

DOCSTRING = "docstring of"
# sphinx-gallery's running-time line, written into every example's page.
RUNNING_TIME = re.compile(
    r"^\*\*Total running time of the script:\*\* "
    r"\((?P<min>\d+) minutes (?P<sec>[\d.]+) seconds\)$"
)
# With images among the translated targets (for their alt text), Sphinx also
# offers each image's path, so that an edition could show its own picture.
# The editions share their figures: paths are not translated.
IMAGE_URI = re.compile(r"^\.\. image:: ")


def from_docstring(source: str) -> bool:
    """Whether a node's source is a docstring (autodoc, or autosummary's table)."""
    return DOCSTRING in source or "<autosummary>" in source


def prune_templates(gettext_dir: Path) -> list[Path]:
    """Drop untranslated messages from the .pot files; delete emptied ones.

    Returns the .pot files that remain.
    """
    from babel.messages.pofile import read_po, write_po

    kept = []
    for pot in sorted(gettext_dir.rglob("*.pot")):
        with pot.open("rb") as f:
            catalog = read_po(f)
        for message in list(catalog):
            if not message.id:
                continue
            if RUNNING_TIME.match(str(message.id)) or IMAGE_URI.match(str(message.id)):
                catalog.delete(message.id, message.context)
                continue
            # The file, not the line: an edit above a message does not
            # touch the catalog (the translator finds it by its text).
            message.locations = sorted({(name, None) for name, _ in message.locations})
        if not [m for m in catalog if m.id]:
            pot.unlink()
            continue
        with pot.open("wb") as f:
            write_po(f, catalog, width=0, sort_output=False)
        kept.append(pot)
    return kept


def translations_of(messages_dir: Path) -> dict[str, dict[str, str]]:
    """Per catalog (path below ``messages_dir``), each translation's English."""
    from babel.messages.pofile import read_po

    found: dict[str, dict[str, str]] = {}
    for po in sorted(messages_dir.rglob("*.po")):
        with po.open("rb") as f:
            catalog = read_po(f)
        found[po.relative_to(messages_dir).as_posix()] = {
            str(m.string): str(m.id) for m in catalog if m.id and m.string
        }
    return found


def what_changed(before: dict[str, dict[str, str]], messages_dir: Path) -> list[str]:
    """For each fuzzy message after an update, how its English changed.

    ``before`` is :func:`translations_of` from before the update: a fuzzy
    message keeps the old translation as a draft, which names the old English.
    """
    import difflib

    from babel.messages.pofile import read_po

    lines = []
    for name, old in before.items():
        po = messages_dir / name
        if not po.is_file():
            continue
        with po.open("rb") as f:
            catalog = read_po(f)
        for m in catalog:
            if not (m.id and m.fuzzy and str(m.string) in old):
                continue
            was, now = old[str(m.string)].split(), str(m.id).split()
            diff = difflib.ndiff(was, now)
            words = [d for d in diff if d[:1] in "+-"]
            lines.append(f"{name}: changed: {' '.join(words)}")
    return lines


def glossary() -> list[dict[str, str]]:
    """The glossary's rows: english, chinese, avoid (words separated by |), note."""
    with GLOSSARY.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# Markup a translation keeps exactly: roles with their targets, inline code,
# link targets and glued values.
_ROLE = re.compile(r"(\{[\w:.-]+\}|:[\w:.-]+:)`([^`]*)`")
_MYST_CODE = re.compile(r"(?<![`}:\w])`([^`]+)`(?!`)")
_RST_CODE = re.compile(r"``(.+?)``")
_LINK_TARGET = re.compile(r"\]\(([^)\s]+)\)|<([^<>\s]+)>`_")
# A link into the book may point at the edition in the reader's language
# (https://d2l.ai/... in English, https://zh.d2l.ai/... in Chinese).
_BOOK = re.compile(r"^https://(?:zh\.)?d2l\.ai/.*$")


# "1. What goes wrong if ..." (an exercise's heading): parsed alone, a
# translated message starting so becomes a list, and Sphinx drops it.
NUMBERED = re.compile(r"^(\d+)\. ")
# In reST, inline markup must not end right before an opening bracket or
# start right after a closing one (full-width ones included).
RST_TOUCHING = re.compile(r"`[（【《\u201c\u2018]|[）】》\u201d\u2019](?::[\w:]+:)?`")
NUMBERED_ESCAPED = re.compile(r"^\d+\\\. ")


def _role_target(content: str) -> str:
    match = re.search(r"<([^<>]+)>\s*$", content)
    return match.group(1) if match else content


def markup(text: str) -> list[str]:
    """The pieces of ``text`` that a translation must keep as they are."""
    found = []
    rest = text
    for role, content in _ROLE.findall(text):
        title = _role_target(content) != content
        found.append(f"{role}{'<' + _role_target(content) + '>' if title else content}")
    rest = _ROLE.sub(" ", text)
    found += [f"``{c}``" for c in _RST_CODE.findall(rest)]
    rest = _RST_CODE.sub(" ", rest)
    found += [f"`{c}`" for c in _MYST_CODE.findall(rest)]
    found += [
        _BOOK.sub("(a link into the book)", a or b)
        for a, b in _LINK_TARGET.findall(text)
    ]
    return sorted(found)


def check_catalog(path: Path) -> list[str]:
    """Everything wrong with one translated catalog, one line per problem."""
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        catalog = read_po(f)
    rules = [
        (row["english"], word)
        for row in glossary()
        for word in row["avoid"].split("|")
        if word
    ]
    problems = []
    for message in catalog:
        if not message.id:
            continue
        where = f"{path.name}: {str(message.id)[:60]!r}"
        if message.fuzzy:
            problems.append(f"{where}: fuzzy (check it, then remove the flag)")
        if not message.string:
            problems.append(f"{where}: not translated")
            continue
        source, text = str(message.id), str(message.string)
        rest = any(name.endswith((".rst", ".py")) for name, _ in message.locations)
        if rest and RST_TOUCHING.search(text):
            problems.append(
                f"{where}: reST markup touches a full-width bracket or quote, so "
                "it is not markup: put a space between them "
                f"({RST_TOUCHING.search(text).group(0)!r})"
            )
        if NUMBERED.match(source) and not NUMBERED_ESCAPED.match(text):
            problems.append(
                f"{where}: starts with a number and a dot, which Markdown reads as "
                "a numbered list when the translation is parsed alone: write "
                f"{NUMBERED.match(source).group(1)}\\. (an escaped dot)"
            )
        if markup(source) != markup(text):
            lost = sorted(set(markup(source)) ^ set(markup(text)))
            problems.append(f"{where}: markup differs from the English: {lost}")
        for english, word in rules:
            if word in text:
                problems.append(
                    f"{where}: uses {word!r}; the glossary's term for "
                    f"{english!r} is another (docs/locales/glossary.csv)"
                )
    return problems


def update(gettext_dir: Path, locales: Path, language: str) -> list[str]:
    """Merge the extracted templates into ``language``'s catalogs; what is left.

    Returns one line per message a translator has to look at, then how the
    English of each changed message changed.
    """
    prune_templates(gettext_dir)
    messages = locales / language / "LC_MESSAGES"
    before = translations_of(messages)
    subprocess.run(
        [sys.executable, "-m", "sphinx_intl", "update", "--pot-dir", str(gettext_dir),
         "--locale-dir", str(locales), "--language", language, "--line-width", "-1",
         "--no-obsolete"],
        check=True,
    )  # fmt: skip
    pots = {
        p.relative_to(gettext_dir).with_suffix("") for p in gettext_dir.rglob("*.pot")
    }
    notes = []
    for po in sorted(messages.rglob("*.po")):  # a page that is gone, its catalog too
        if po.name in NOT_PAGES:
            continue
        if po.relative_to(messages).with_suffix("") not in pots:
            notes.append(f"removed {po.relative_to(locales)}: no such page any more")
            po.unlink()
    problems = [p for po in sorted(messages.rglob("*.po")) for p in check_catalog(po)]
    return [*notes, *problems, *what_changed(before, messages),
            f"{len(problems)} messages to translate or check"]  # fmt: skip


USAGE = """usage: python docs/_ext/dlcomp_catalogs.py check FILE.po ...
       python docs/_ext/dlcomp_catalogs.py update GETTEXT_DIR LOCALES LANGUAGE"""


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "check":
        problems = [p for name in argv[1:] for p in check_catalog(Path(name))]
        print("\n".join(problems) or "no problems")
        return 1 if problems else 0
    if len(argv) == 4 and argv[0] == "update":
        print("\n".join(update(Path(argv[1]), Path(argv[2]), argv[3])))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
