"""What the checks of the built site share: the pages, and how to read them.

Importable by the tests in this folder (``pythonpath`` in pyproject.toml).
"""

import html
import re
from pathlib import Path

CHAPTER_PAGES = [
    "blocks.html",
    "parameters.html",
    "deferred-init.html",
    "custom-layers.html",
    "read-write.html",
    "distributed-checkpoints.html",
    "gpu.html",
]


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
