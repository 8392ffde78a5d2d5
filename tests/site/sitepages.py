"""What the checks of the built site share: the pages, and how to read them.

Importable by the tests in this folder (``pythonpath`` in pyproject.toml).
"""

import html
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

# The site's own Sphinx extensions (dlcomp_sphinx, ...), for one-page sites.
EXT = Path(__file__).resolve().parents[2] / "docs" / "_ext"

# The front matter that makes a Markdown file a MyST-NB notebook (one-page sites).
NOTEBOOK_HEADER = """\
---
file_format: mystnb
kernelspec:
  name: python3
  display_name: Python 3
  language: python
---

"""

# tools/prose_budget.py (not a package): the chapter pages (read from conf.py)
# and the measure of their prose.
_SPEC = importlib.util.spec_from_file_location(
    "prose_budget", Path(__file__).resolve().parents[2] / "tools" / "prose_budget.py"
)
prose_budget = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(prose_budget)

CHAPTER_PAGES = [f"{page}.html" for page in prose_budget.CHAPTER_PAGES]

#: Folders of the built site that hold files, not pages a reader reads:
#: what Sphinx copies (static files, page sources, downloads, images) and the
#: notebooks.
NOT_PAGES = frozenset({"_static", "_sources", "_downloads", "_images", "_notebooks"})


def pages(site: Path) -> list[str]:
    """Every page of the built site, relative to it, sorted.

    Both editions, the highlighted sources (``_modules/``) and ``404.html``
    included: the one list the checks of every page walk.
    """
    return sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not NOT_PAGES.intersection(p.relative_to(site).parts)
    )


def page_text(path: Path, *, collapse: bool = False) -> str:
    """The visible text of a built page (tags stripped, entities decoded).

    With ``collapse``, every run of whitespace becomes one space.
    """
    text = html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))
    return " ".join(text.split()) if collapse else text


def cell_texts(path: Path, part: str, *, collapse: bool = False) -> list[str]:
    """The text of each cell's ``part`` ("cell_input" or "cell_output"), in order."""
    source = path.read_text(encoding="utf-8")
    texts = []
    for chunk in source.split(f'<div class="{part}')[1:]:
        depth = 1  # inside the part's <div>: read up to its closing tag
        for tag in re.finditer(r"<(/?)div\b", chunk):
            depth += -1 if tag.group(1) else 1
            if depth == 0:
                chunk = chunk[: tag.start()]
                break
        chunk = chunk.partition(">")[2]  # after the rest of the opening tag
        text = html.unescape(re.sub(r"<[^>]+>", "", chunk))
        texts.append(" ".join(text.split()) if collapse else text)
    return texts


def output_texts(path: Path, *, collapse: bool = False) -> list[str]:
    """The text of each cell output of a built page, in order (not the prose)."""
    return cell_texts(path, "cell_output", collapse=collapse)


def one_page_site(source: Path, page: str, *, execution: str, **config) -> None:
    """Write a one-page MyST-NB site into ``source``: ``index.md`` and a conf.py.

    The conf.py loads myst-nb and dlcomp_sphinx, executes in ``execution``
    mode (myst-nb's ``nb_execution_mode``), fails on a cell error, and sets
    the other ``config`` values as given.
    """
    source.mkdir(parents=True, exist_ok=True)
    extra = "".join(f"{name} = {value!r}\n" for name, value in config.items())
    (source / "conf.py").write_text(
        textwrap.dedent(f"""\
            import sys
            sys.path.insert(0, {str(EXT)!r})
            extensions = ["myst_nb", "dlcomp_sphinx"]
            nb_execution_mode = {execution!r}
            nb_execution_raise_on_error = True
            """)
        + extra
    )
    (source / "index.md").write_text(page)


def build_site(
    source: Path, out: Path, *, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """Build ``source`` into ``out`` strictly (-W --keep-going -n), in a child.

    Returns the finished process: its stdout holds myst-nb's log, its stderr
    the warnings, for the caller's assertion messages.
    """
    return subprocess.run(
        [
            *(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n"),
            *("-b", "html", str(source), str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
