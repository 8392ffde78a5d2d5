"""The gallery's notebook downloads: reST roles in their text become links.

sphinx-gallery writes each example's notebook (its ``.ipynb``, its zip and
the zip of all notebooks) from its reST text and leaves roles as they are;
they become Markdown links to the site (:mod:`dlcomp_links`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlcomp_links import link_resolver
from dlcomp_notebooks import RestToMarkdown, gallery_notebook
from sphinx.application import Sphinx


def _gallery_downloads(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: reST roles in the gallery's notebooks become Markdown links.

    sphinx-gallery writes each example's notebook from its reST text and
    leaves roles (``:func:`...```) as they are. The downloads (each
    notebook, each example's zip, and the zip of all notebooks) are
    rewritten here, the notebooks in a zip from the same converted text as
    the single download. Sphinx copies the downloads again on every build;
    the conversion changes nothing in a converted notebook.
    """
    if exception is not None or app.builder.format != "html":
        return
    if not hasattr(app.config, "sphinx_gallery_conf"):
        return
    downloads = Path(app.outdir) / "_downloads"
    labels = list(app.env.get_domain("std").labels)  # type: ignore[attr-defined]
    converted: dict[str, str] = {}  # docname of the example -> notebook text

    def convert(text: str, docname: str, depth: int) -> str:
        if docname not in converted:
            converter = RestToMarkdown(link_resolver(app, docname, depth), labels)
            notebook = gallery_notebook(json.loads(text), converter)
            converted[docname] = json.dumps(notebook, indent=2) + "\n"
        return converted[docname]

    files = sorted(app.env.dlfiles.items(), key=lambda item: item[0].suffix != ".ipynb")
    for source, (_docnames, dest) in files:
        path = downloads / dest
        folder = Path(source).parent.as_posix()
        if not path.is_file():
            continue
        if path.suffix == ".ipynb":
            docname = f"{folder}/{path.stem}"
            path.write_text(convert(path.read_text("utf-8"), docname, 2), "utf-8")
        elif path.suffix == ".zip":
            _rewrite_zip(
                path,
                lambda name, text, folder=folder: convert(
                    text, f"{folder}/{name.removesuffix('.ipynb')}", 2
                ),
            )


def _rewrite_zip(path: Path, convert: Callable[[str, str], str]) -> None:
    """Rewrite the notebooks in the zip at ``path`` with ``convert(name, text)``."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    if not any(info.filename.endswith(".ipynb") for info, _ in members):
        return
    temporary = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(temporary, "w") as archive:
        for info, data in members:
            if info.filename.endswith(".ipynb"):
                data = convert(info.filename, data.decode("utf-8")).encode("utf-8")
            archive.writestr(info, data)
    temporary.replace(path)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("build-finished", _gallery_downloads)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
