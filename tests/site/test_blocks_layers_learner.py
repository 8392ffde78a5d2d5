"""Sections 5.1 and 5.4 as a learner copies them from the built site.

Every box of reference code pastes into a fresh interpreter after the page's
visible imports and runs: no private helper, no checker comment, and the code
a reader pastes computes what the library computes. No cell a reader sees or
copies calls ``glue``.
"""

import html
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sitepages import cell_texts

pytestmark = pytest.mark.site

PAGES = ["blocks.html", "custom-layers.html", "api/auditing.html"]

# What learner code must not hold: the library's private helpers, and comments
# written for checkers and formatters rather than for readers.
NOT_FOR_LEARNERS = re.compile(
    r"\bcheck_\w+\(|\b_describe\(|dlcomp\._|# type: ignore|# noqa|# fmt:"
)

# Each object a box defines, built from the pasted code and from the library
# with the same seed, and called on the same input: the same output.
SAME_AS_LIBRARY = {
    "blocks.html": [
        ("MLP()", "torch.rand(2, 20)"),
        (
            "MySequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 2))",
            "torch.rand(2, 20)",
        ),
        ("FixedHiddenMLP()", "torch.rand(2, 20)"),
        ("NestMLP()", "torch.rand(2, 20)"),
        ("chimera()", "torch.rand(2, 20)"),
    ],
    "custom-layers.html": [
        ("CenteredLayer()", "torch.rand(3, 4)"),
        ("MyLinear(5, 3)", "torch.rand(2, 5)"),
    ],
}


def boxes(path: Path) -> list[tuple[str, str]]:
    """(caption, code) of each box of reference code on a built page."""
    source = path.read_text(encoding="utf-8")
    found = []
    for chunk in source.split('<div class="literal-block-wrapper')[1:]:
        caption = re.search(r'<span class="caption-text">(.*?)</span>', chunk, re.S)
        pre = re.search(r"<pre>(.*?)</pre>", chunk, re.S)
        assert caption, f"a box without a caption on {path.name}"
        assert pre, f"a box without code on {path.name}"
        name = html.unescape(re.sub(r"<[^>]+>", "", caption.group(1))).strip()
        code = html.unescape(re.sub(r"<[^>]+>", "", pre.group(1)))
        found.append((name, code))
    return found


def visible_imports(path: Path) -> str:
    """The import lines of the page's first visible cell."""
    first = cell_texts(path, "cell_input")[0]
    return "\n".join(
        line for line in first.splitlines() if re.match(r"(import|from) \w", line)
    )


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("page", ["blocks.html", "custom-layers.html"])
def test_each_reference_box_pastes_into_a_fresh_interpreter(site: Path, page: str):
    imports = visible_imports(site / page)
    assert "import torch" in imports
    shown = boxes(site / page)
    assert len(shown) >= 5
    for name, code in shown:
        assert not NOT_FOR_LEARNERS.search(code), f"{name} shows {code}"
        result = run_fresh(imports + "\n\n" + code)
        assert result.returncode == 0, f"{name}:\n{result.stderr}"


@pytest.mark.parametrize("page", sorted(SAME_AS_LIBRARY))
def test_pasted_boxes_compute_what_the_library_computes(site: Path, page: str):
    imports = visible_imports(site / page)
    pasted = "\n\n".join(code for _, code in boxes(site / page))
    checks = "\n".join(
        textwrap.dedent(f"""
            torch.manual_seed(1); X = {example}
            torch.manual_seed(0); mine = {build}
            torch.manual_seed(0); theirs = dlcomp.{build}
            assert type(mine).__name__ == type(theirs).__name__
            assert list(mine.state_dict()) == list(theirs.state_dict())
            assert torch.equal(mine(X), theirs(X)), {build!r}
            print("same:", {build!r})
            """)
        for build, example in SAME_AS_LIBRARY[page]
    )
    code = imports + "\nimport dlcomp\n\n" + pasted + "\n" + checks
    result = run_fresh(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("same:") == len(SAME_AS_LIBRARY[page])


@pytest.mark.parametrize("page", PAGES)
def test_no_cell_a_reader_sees_calls_glue(site: Path, page: str):
    for cell in cell_texts(site / page, "cell_input"):
        assert "glue" not in cell, cell
