"""Executed pages are never stale: the cache key includes the library's source.

myst-nb's cache (jupyter-cache) keys a page on the text of its code cells.
The build writes a hash of the library's source into each page's hidden setup
cell (``docs/_ext/dlcomp_cachekey.py``), so a change in the library re-executes
the pages, and an unchanged library reuses the cache. The first test proves
it on a one-page site and a one-module library: it builds, rebuilds, edits a
docstring and rebuilds again. The second checks the real site's pages carry
the hash of the library they were built with.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sitepages import CHAPTER_PAGES, EXT, NOTEBOOK_HEADER, build_site, one_page_site

pytestmark = pytest.mark.site

PAGE = (
    NOTEBOOK_HEADER
    + """\
# Cached

```{code-cell} ipython3
:tags: [remove-cell]

import dlcomp._notebook

dlcomp._notebook.setup()
```

```{code-cell} ipython3
import minilib

print(minilib.answer.__doc__)
```
"""
)

LIBRARY = '''\
def answer():
    """{doc}"""
    return 42
'''


def build(root: Path) -> subprocess.CompletedProcess[str]:
    """Build the one-page site (``root/docs``, library in ``root/lib``)."""
    # PYTHONPATH reaches Sphinx and the kernel it starts
    env = {"PYTHONPATH": str(root / "lib")}
    return build_site(root / "docs", root / "build" / "html", env=env)


def shown(root: Path) -> str:
    return (root / "build" / "html" / "index.html").read_text(encoding="utf-8")


def test_a_library_change_re_executes_the_page(tmp_path: Path):
    one_page_site(
        tmp_path / "docs", PAGE, execution="cache", dlcomp_source_packages=["minilib"]
    )
    library = tmp_path / "lib" / "minilib"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text(LIBRARY.format(doc="The first answer."))

    first = build(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Executed notebook" in first.stdout, first.stdout
    assert "The first answer." in shown(tmp_path)

    again = build(tmp_path)  # nothing changed: the cache serves the page
    assert again.returncode == 0, again.stderr
    assert "Executed notebook" not in again.stdout, again.stdout

    (library / "__init__.py").write_text(LIBRARY.format(doc="The second answer."))
    changed = build(tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert "Executed notebook" in changed.stdout, changed.stdout
    page = shown(tmp_path)
    assert "The second answer." in page
    assert "The first answer." not in page
    # The key rides in the hidden cell: the reader does not see it.
    assert "library source" not in page


def test_the_built_pages_are_keyed_on_this_library(site: Path):
    sys.path.insert(0, str(EXT))
    try:
        from dlcomp_cachekey import source_hash
    finally:
        sys.path.remove(str(EXT))
    key, _ = source_hash(["dlcomp"])
    executed = site.parent / "jupyter_execute"
    for page in CHAPTER_PAGES:
        name = page.removesuffix(".html")
        notebook = json.loads((executed / f"{name}.ipynb").read_text("utf-8"))
        sources = ["".join(cell["source"]) for cell in notebook["cells"]]
        keys = re.findall(r"# library source: (\w+)", "\n".join(sources))
        assert keys == [key], f"{name}: the setup cell is keyed on {keys}, not {key}"
