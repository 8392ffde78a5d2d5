"""The execution cache key of a page includes the library's source.

Each page's hidden setup cell (``dlcomp._notebook.setup()``) gets a comment
with a hash of every ``.py`` file of the packages in
``dlcomp_source_packages`` and of torch's version (``source-read``), and the
page depends on those files. myst-nb's cache (jupyter-cache) keys on the code
cells' text, so a change in the library re-reads and re-executes the pages
that run it; an unchanged library reuses the cache. sphinx-gallery keys its
scripts on their own text: when the library's hash differs from the one the
last build stored in the gallery's folder, every script runs again (its
``run_stale_examples``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from dlcomp_notebooks import SITE_SETUP
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


SETUP_CALL = re.compile(
    rf"^(?P<call>[ \t]*{re.escape(SITE_SETUP)}\.setup\(\))[^\n]*$", re.MULTILINE
)


def _package_sources(packages: list[str]) -> list[Path]:
    """Every ``.py`` file of the installed ``packages``, in a stable order."""
    files: list[Path] = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"dlcomp_source_packages: {package!r} is not a package")
        for location in spec.submodule_search_locations:
            files += sorted(Path(location).rglob("*.py"))
    return files


def source_hash(packages: list[str]) -> tuple[str, list[Path]]:
    """A hash of the source of ``packages`` and of torch's version, and the files.

    The torch version is part of it: outputs printed by another torch are
    run again (every page's footer names the torch that printed them).
    """
    import torch

    files = _package_sources(packages)
    digest = hashlib.sha256(f"torch {torch.__version__}\0".encode())
    for path in files:
        package_root = next(
            parent for parent in path.parents if not (parent / "__init__.py").is_file()
        )
        digest.update(path.relative_to(package_root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16], files


def _key_on_library_source(app: Sphinx, docname: str, source: list[str]) -> None:
    """source-read: put the library's source hash into the page's setup cell.

    jupyter-cache keys a notebook on its code cells' text, so the comment
    makes a changed library a cache miss; the noted dependencies make Sphinx
    read the page again when a library file changes.
    """
    if not app.config.dlcomp_source_packages:
        return
    text = source[0]
    if not SETUP_CALL.search(text):
        if docname in getattr(app.config, "dlcomp_chapter_pages", []):
            logger.warning(
                "%s: no `%s.setup()` cell, so its cached outputs would not be "
                "renewed when the library changes",
                docname,
                SITE_SETUP,
                location=docname,
                type="dlcomp",
                subtype="cache",
            )
        return
    key, files = source_hash(app.config.dlcomp_source_packages)
    for path in files:
        app.env.note_dependency(str(path))
    source[0] = SETUP_CALL.sub(
        lambda m: f"{m['call']}  # library source: {key}", text, count=1
    )


GALLERY_KEY = ".dlcomp-source"  # in the generated gallery folder: the last build's


def _gallery_key_file(app: Sphinx) -> Path | None:
    conf = getattr(app.config, "sphinx_gallery_conf", None)
    if not conf or not app.config.dlcomp_source_packages:
        return None
    galleries = conf["gallery_dirs"]
    first = galleries if isinstance(galleries, str) else galleries[0]
    return Path(app.srcdir) / first / GALLERY_KEY


def _rerun_gallery_on_library_change(app: Sphinx) -> None:
    """builder-inited: run every gallery script again if the library changed."""
    path = _gallery_key_file(app)
    if path is None or not path.parent.is_dir():
        return  # no gallery, or a first build: every script runs anyway
    key, _ = source_hash(app.config.dlcomp_source_packages)
    stored = path.read_text("utf-8").strip() if path.is_file() else ""
    if stored != key:
        logger.info("dlcomp: the library changed since the last build: "
                    "running every gallery script again")  # fmt: skip
        app.config.sphinx_gallery_conf["run_stale_examples"] = True


def _store_gallery_key(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: remember which library the gallery's outputs come from."""
    path = _gallery_key_file(app)
    if exception is not None or path is None or not path.parent.is_dir():
        return
    if not app.config.sphinx_gallery_conf.get("plot_gallery"):
        return  # nothing ran: the outputs are still those of the stored key
    key, _ = source_hash(app.config.dlcomp_source_packages)
    path.write_text(key + "\n", "utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    # Notebook kernels and gallery workers inherit this: with a fixed hash
    # seed, sets of strings print in the same order on every build (outputs
    # must be stable run to run, and the cache key holds only the source).
    os.environ["PYTHONHASHSEED"] = "0"
    app.add_config_value("dlcomp_source_packages", ["dlcomp"], "env")
    app.connect("source-read", _key_on_library_source)
    # after sphinx-gallery fills its configuration (10), before it runs (500)
    app.connect("builder-inited", _rerun_gallery_on_library_change, priority=100)
    app.connect("build-finished", _store_gallery_key)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
