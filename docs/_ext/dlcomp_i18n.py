"""The site's translations: catalogs, their checks, and the language switcher.

English is the source language. A translated edition (``DLCOMP_LANGUAGE=zh_CN``)
takes its prose from the gettext catalogs in ``docs/locales/<lang>/LC_MESSAGES``
and its code, outputs and figures from the English build.

- Docstrings stay English: :class:`KeepDocstrings` marks their text
  untranslatable before Sphinx looks for translations (and before the
  gettext builder extracts messages).
- ``prune_templates(gettext_dir)``: after ``sphinx-build -b gettext``, drop
  the gallery's running-time line (its value changes at every run; the
  build translates it itself).
- ``check_catalog(path)``: the problems of one ``.po`` file (untranslated or
  fuzzy messages, markup that the translation lost, words the glossary
  rules out). ``python docs/_ext/dlcomp_i18n.py check FILE.po ...`` prints them.
- The Sphinx extension: in a translated build, every message of a page that
  the catalogs do not translate is a warning (an error under ``-W``), so an
  English change without its translation fails the build; every page gets
  links to the same page in the other editions.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
LOCALES = DOCS / "locales"
GLOSSARY = LOCALES / "glossary.csv"

#: The editions: language code, its name in that language, its folder on the
#: site relative to the English root ("" for English itself).
EDITIONS = {"en": ("English", ""), "zh_CN": ("简体中文", "zh_CN/")}

DOCSTRING = "docstring of"
# sphinx-gallery's running-time line, written into every example's page.
RUNNING_TIME = re.compile(
    r"^\*\*Total running time of the script:\*\* "
    r"\((?P<min>\d+) minutes (?P<sec>[\d.]+) seconds\)$"
)
RUNNING_TIME_ZH = "**脚本总运行时间：** {min} 分 {sec} 秒"


# -- catalogs -----------------------------------------------------------------


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
            if RUNNING_TIME.match(str(message.id)):
                catalog.delete(message.id, message.context)
        if not [m for m in catalog if m.id]:
            pot.unlink()
            continue
        with pot.open("wb") as f:
            write_po(f, catalog, width=0, sort_output=False)
        kept.append(pot)
    return kept


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
    found += [a or b for a, b in _LINK_TARGET.findall(text)]
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


# -- Sphinx -------------------------------------------------------------------


def _keep_docstrings_transform():
    from docutils import nodes
    from sphinx.transforms import SphinxTransform

    class KeepDocstrings(SphinxTransform):
        """Docstrings stay English: their text is not offered for translation."""

        default_priority = 10  # before sphinx.transforms.i18n.Locale (20)

        def apply(self, **kwargs) -> None:
            for node in self.document.findall(nodes.TextElement):
                if node.source and from_docstring(node.source):
                    node["translatable"] = False

    return KeepDocstrings


def _catalog_ids(app) -> dict[str, set[str]]:
    """Per textdomain (docname), the message ids its catalog translates."""
    from babel.messages.pofile import read_po

    ids: dict[str, set[str]] = {}
    root = Path(app.srcdir) / "locales" / app.config.language / "LC_MESSAGES"
    for po in root.rglob("*.po"):
        with po.open("rb") as f:
            catalog = read_po(f)
        domain = po.relative_to(root).with_suffix("").as_posix()
        ids[domain] = {
            str(m.id) for m in catalog if m.id and m.string and not m.fuzzy
        }
    return ids


def check_translated(app, doctree) -> None:
    """doctree-read: warn for each message of the page that is not translated."""
    from docutils import nodes
    from sphinx.util import logging
    from sphinx.util.nodes import extract_messages

    if app.config.language == "en" or app.builder.name == "gettext":
        return
    if not hasattr(app.env, "dlcomp_catalog_ids"):
        app.env.dlcomp_catalog_ids = _catalog_ids(app)
    known = app.env.dlcomp_catalog_ids.get(app.env.docname, set())
    logger = logging.getLogger(__name__)
    for node, message in extract_messages(doctree):
        if node.get("translated"):
            continue
        if RUNNING_TIME.match(message):
            text = RUNNING_TIME.sub(
                lambda m: RUNNING_TIME_ZH.format(**m.groupdict()), message
            )
            strong = node.next_node(nodes.strong)
            if strong is not None:
                strong.replace(strong.children[0], nodes.Text("脚本总运行时间："))
                tail = strong.parent.index(strong) + 1
                rest = text.split("**", 2)[2]
                for child in strong.parent.children[tail:]:
                    strong.parent.remove(child)
                strong.parent.append(nodes.Text(rest))
            continue
        if message in known:
            continue  # translated as itself (a title that is a name, a link)
        logger.warning(
            "not translated into %s: %r (run `nox -s translations`, then "
            "translate it in docs/locales/%s/LC_MESSAGES/%s.po)",
            app.config.language,
            message[:80],
            app.config.language,
            app.env.docname,
            location=node,
            type="dlcomp",
            subtype="i18n",
        )


def language_links(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: links to this page in the other editions."""
    here = app.config.language
    prefix = EDITIONS[here][1]
    depth = pagename.count("/") + prefix.count("/")
    up = "../" * depth
    links = []
    for code, (name, folder) in EDITIONS.items():
        links.append(
            {
                "code": code,
                "name": name,
                "lang": code.replace("_", "-"),
                "url": f"{up}{folder}{pagename}.html",
                "current": code == here,
            }
        )
    context["dlcomp_languages"] = links


def setup(app) -> dict:
    app.add_transform(_keep_docstrings_transform())
    app.connect("doctree-read", check_translated)
    app.connect("html-page-context", language_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "check":
        print("usage: python docs/_ext/dlcomp_i18n.py check FILE.po ...")
        return 2
    problems = [p for name in argv[1:] for p in check_catalog(Path(name))]
    print("\n".join(problems) or "no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
