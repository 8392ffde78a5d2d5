"""MathJax served by the site itself: math renders with no network.

Sphinx's ``sphinx.ext.mathjax`` loads MathJax from a CDN by default: offline,
or behind a firewall, the pages show raw TeX. The ``sphinx-mathjax-offline``
package (PyPI) bundles MathJax 3; this extension points ``mathjax_path`` at
``_static/mathjax/tex-chtml.js`` and, when the HTML build finishes, copies
from that bundle what ``tex-chtml.js`` loads (its TeX extensions, fonts,
menu and accessibility parts), not the other combined builds it ships.

Sphinx adds the script only to pages that have math.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config

PACKAGE = "sphinx-mathjax-offline"  # its import name has hyphens
ENTRY = "tex-chtml.js"
# What tex-chtml.js loads on demand; the rest of the bundle is other builds.
PARTS = ("a11y", "adaptors", "input", "output/chtml", "sre", "ui")


def bundle() -> Path:
    """The ``mathjax`` folder of the installed sphinx-mathjax-offline."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{PACKAGE} is not installed (the docs dependency group)")
    path = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    if not (path / ENTRY).is_file():
        raise RuntimeError(f"{path / ENTRY} is missing: {PACKAGE} changed its layout")
    return path


def _point_at_the_site(app: Sphinx, config: Config) -> None:
    bundle()  # fail early, not after the whole build
    config.mathjax_path = f"mathjax/{ENTRY}"


def _copy(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = bundle()
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / ENTRY, target / ENTRY)
    for part in PARTS:
        shutil.copytree(source / part, target / part, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", _point_at_the_site)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
