"""What the site's extensions read from Sphinx's configuration, read one way.

The generated gallery's folder is sphinx-gallery's ``gallery_dirs`` (conf.py
takes it from ``[tool.dlcomp] gallery-dir`` in pyproject.toml, which nox
reads too): no extension writes its name.
"""

from __future__ import annotations

import re
from typing import Any


def gallery_dir(config: Any) -> str:
    """The generated gallery's folder below the source folder ("" if none)."""
    conf = getattr(config, "sphinx_gallery_conf", None) or {}
    dirs = conf.get("gallery_dirs") or ""
    first = dirs if isinstance(dirs, str) else dirs[0]
    return str(first).strip("/")


def in_gallery(config: Any, docname: str) -> bool:
    """Whether ``docname`` is a page of the generated gallery."""
    gallery = gallery_dir(config)
    return bool(gallery) and docname.startswith(gallery + "/")


def gallery_label(config: Any) -> str:
    """The part sphinx-gallery puts in its labels for the gallery's folder."""
    return re.sub(r"\W", "_", gallery_dir(config))
