"""Code that links: names in code link to their API entries (sphinx-codeautolink).

sphinx-codeautolink reads each page's Python code blocks (the chapter pages'
MyST-NB cells, the API pages' docstring examples), resolves the names they use
and links each to its entry in the API reference. This extension adapts it to
the site:

- The gallery's pages are skipped (``autolink-skip:: file`` put at the top of
  each at ``source-read``): sphinx-gallery links their code itself, and a
  second pass finds names already inside its links and cannot match them.
- Docstring examples are matched as Sphinx shows them: Sphinx removes
  ``# doctest: +FLAG`` comments from the HTML (``trim_doctest_flags``), so
  :func:`clean_pycon`, the ``pycon`` block reader named in conf.py, removes
  them from the source it matches too. sphinx-codeautolink replaces the
  dotted names in ``codeautolink_custom_blocks`` by the functions they name,
  which Sphinx cannot keep in its cached configuration (a warning): once it
  has read them, the setting gets its names back.
- Pages written in Markdown are read again on every build that reads or
  writes any page: what sphinx-codeautolink (0.20) found in a page lasts from
  one build to the next only for ``.rst`` sources, and a chapter page written
  without being read would lose its links. Their cells are not run again
  (myst-nb's cache). A build with nothing to read or write reads nothing.
"""

from __future__ import annotations

import re
from typing import Any

from dlcomp_config import in_gallery
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx_codeautolink.extension.block import clean_pycon as _codeautolink_pycon

SKIP_FILE = ".. autolink-skip:: file\n\n"
# Sphinx's own pattern (sphinx.ext.doctest.doctestopt_re) for the comments it hides.
DOCTEST_FLAGS = re.compile(r"[ \t]*#\s*doctest:.+$", re.MULTILINE)


def clean_pycon(source: str) -> tuple[str, str]:
    """A console example as the HTML shows it, and the Python code it runs."""
    return _codeautolink_pycon(DOCTEST_FLAGS.sub("", source))


def _skip_gallery_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    if in_gallery(app.config, docname):
        # After a leading ":orphan:": file-wide metadata must come first, or
        # it is shown as a field list (the gallery's index starts with it).
        orphan = ":orphan:\n\n"
        head = orphan if source[0].startswith(orphan) else ""
        source[0] = head + SKIP_FILE + source[0][len(head) :]


def _restore_names(app: Sphinx) -> None:
    # After sphinx-codeautolink's own builder-inited handler (priority 500).
    # It keeps the functions; the setting gets a new dict of their names.
    app.config.codeautolink_custom_blocks = {
        block: f"{read.__module__}.{read.__qualname__}" if callable(read) else read
        for block, read in app.config.codeautolink_custom_blocks.items()
    }


def _reread_markdown_pages(
    app: Sphinx,
    env: BuildEnvironment,
    added: set[str],
    changed: set[str],
    removed: set[str],
) -> list[str]:
    if not (added or changed or removed) and not _pages_to_write(app):
        return []  # nothing is read or written: every page keeps its links
    return [
        doc
        for doc in sorted(env.found_docs - added - changed)
        if env.doc2path(doc).suffix != ".rst"
    ]


def _pages_to_write(app: Sphinx) -> bool:
    """Whether the builder writes a page although no source changed.

    The HTML builder writes a page whose output is older than its source or
    the templates, and such a page must be read again to keep its links.
    Other builders (gettext) write every page they read: reread them all.
    """
    if app.builder.format != "html":
        return True
    outdated = app.builder.get_outdated_docs()
    if isinstance(outdated, str):  # a description: "all source files", ...
        return True
    return next(iter(outdated), None) is not None


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx_codeautolink")
    app.connect("builder-inited", _restore_names, priority=900)
    app.connect("source-read", _skip_gallery_pages)
    app.connect("env-get-outdated", _reread_markdown_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
