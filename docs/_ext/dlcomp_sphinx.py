"""The site's own Sphinx extensions, one job each (loaded by conf.py).

Loading this one loads them all, in this order:

- :mod:`dlcomp_directives`: ``dlcomp-source``, ``dlcomp-api``, ``{claim}``;
- :mod:`dlcomp_chapters`: folded answers and the notebook download of each
  chapter page;
- :mod:`dlcomp_downloads`: links in the gallery's notebook downloads;
- :mod:`dlcomp_cachekey`: the library's source in the execution cache key;
- :mod:`dlcomp_upstream`: every workaround for the tools, with its gate.

``reset_torch`` is sphinx-gallery's per-example reset, named by a dotted
string in ``sphinx_gallery_conf["reset_modules"]``.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx

PARTS = (
    "dlcomp_directives",
    "dlcomp_chapters",
    "dlcomp_downloads",
    "dlcomp_cachekey",
    "dlcomp_upstream",
)


def reset_torch(gallery_conf: dict[str, Any], fname: str) -> None:
    """Seed torch before each gallery example, so every build prints the same."""
    import torch

    torch.manual_seed(0)


def setup(app: Sphinx) -> dict[str, Any]:
    for part in PARTS:
        app.setup_extension(part)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
