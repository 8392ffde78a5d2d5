"""The converter behind the site's notebook downloads (docs/_ext/dlcomp_notebooks.py).

It needs neither Sphinx nor myst-nb: what the build resolves (links, glued
values, gallery examples) is given here by small stand-ins.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import dlcomp.blocks

EXT = Path(__file__).parents[1] / "docs" / "_ext"
sys.path.insert(0, str(EXT))  # dlcomp_source, which dlcomp_notebooks imports
PATH = EXT / "dlcomp_notebooks.py"
spec = importlib.util.spec_from_file_location("dlcomp_notebooks", PATH)
assert spec is not None
assert spec.loader is not None
nbx = importlib.util.module_from_spec(spec)
sys.modules["dlcomp_notebooks"] = nbx
spec.loader.exec_module(nbx)

TITLES = {"read-write": "5.5 Reading and writing files", "sphx_glr_gpu": "GPUs"}


def link(role: str, target: str, title: str | None) -> tuple[str | None, str | None]:
    """A site that knows dlcomp's objects and two pages, and nothing of torch."""
    kind = role.rpartition(":")[2]
    if target.startswith("torch"):
        return None, None
    if kind in ("doc", "ref"):
        name = target.strip("/")
        if name not in TITLES:
            return None, None
        return TITLES[name], f"https://site.example/{name}.html"
    return target, f"https://site.example/api.html#{target}"


def converter(**kwargs) -> "nbx.MystToMarkdown":
    return nbx.MystToMarkdown(link, **kwargs)


@pytest.mark.parametrize(
    ("myst", "markdown"),
    [
        (
            "{func}`dlcomp.try_gpu`",
            "[`dlcomp.try_gpu()`](https://site.example/api.html#dlcomp.try_gpu)",
        ),
        (
            "{class}`~dlcomp.blocks.MLP`",
            "[`MLP`](https://site.example/api.html#dlcomp.blocks.MLP)",
        ),
        (
            "{meth}`~dlcomp.CheckpointManager.wait`",
            "[`wait()`](https://site.example/api.html#dlcomp.CheckpointManager.wait)",
        ),
        (
            "{mod}`the blocks module <dlcomp.blocks>`",
            "[`the blocks module`](https://site.example/api.html#dlcomp.blocks)",
        ),
        (
            "{doc}`read-write`",
            "[5.5 Reading and writing files](https://site.example/read-write.html)",
        ),
        (
            "{doc}`the previous page <read-write>`",
            "[the previous page](https://site.example/read-write.html)",
        ),
        ("{ref}`sphx_glr_gpu`", "[GPUs](https://site.example/sphx_glr_gpu.html)"),
        # unresolved (torch, offline): the code, as the site shows it
        ("{func}`torch.save`", "`torch.save()`"),
        ("{mod}`torch.distributed.checkpoint`", "`torch.distributed.checkpoint`"),
    ],
)
def test_cross_references_become_links(myst, markdown):
    assert converter().convert(f"See {myst}.") == f"See {markdown}."


def test_a_role_may_span_lines_and_code_spans_stay_as_they_are():
    text = "See {doc}`the page\nbefore <read-write>`, not `{func}` in `code`."
    assert converter().convert(text) == (
        "See [the page before](https://site.example/read-write.html), "
        "not `{func}` in `code`."
    )


def test_claims_become_their_sentence_and_glue_its_value():
    text = (
        "We see {claim}`the loss going down\nand the weights moving <trains>`; "
        "the ratio is {glue:text}`ratio:.2f` and {glue:text}`name`."
    )
    out = converter(glued={"ratio": "3.14159", "name": "'cpu'"}).convert(text)
    assert out == (
        "We see the loss going down\nand the weights moving; the ratio is 3.14 and cpu."
    )


def test_glue_of_a_missing_key_is_an_error():
    with pytest.raises(nbx.UnsupportedMarkup, match="nothing glued 'ratio'"):
        converter().convert("{glue:text}`ratio:.2f`")


def test_admonitions_become_headed_quotes():
    text = (
        "Intro.\n\n"
        ":::{admonition} Pitfall: `.data`\n"
        ":class: warning\n\n"
        "It skips autograd: see {doc}`read-write`.\n\n"
        "```python\nw.data += 1\n```\n"
        ":::\n\n"
        ":::{note}\nBeyond the book.\n:::\n"
        "After."
    )
    assert converter().convert(text) == (
        "Intro.\n\n"
        "> **Pitfall: `.data`**\n"
        ">\n"
        "> It skips autograd: see "
        "[5.5 Reading and writing files](https://site.example/read-write.html).\n"
        ">\n"
        "> ```python\n> w.data += 1\n> ```\n\n"
        "> **Note**\n>\n> Beyond the book.\n"
        "After."
    )


def test_dropdowns_become_headed_quotes_inside_admonitions_too():
    text = (
        "Intro.\n\n"
        "::::{admonition} Built without a GPU\n"
        ":class: important\n\n"
        "Every cell ran.\n\n"
        ":::{dropdown} Not checked: `non_blocking`\n"
        ":icon: alert\n\n"
        "- pinned memory;\n"
        ":::\n"
        "::::\n"
    )
    assert converter().convert(text) == (
        "Intro.\n\n"
        "> **Built without a GPU**\n"
        ">\n"
        "> Every cell ran.\n"
        ">\n"
        "> > **Not checked: `non_blocking`**\n"
        "> >\n"
        "> > - pinned memory;\n"
    )


def test_dlcomp_source_becomes_the_code_of_the_library():
    out = converter().convert(
        "The block:\n\n```{dlcomp-source} dlcomp.blocks.MLP\n```\n\nThen."
    )
    code = nbx.source_without_docstring(dlcomp.blocks.MLP)
    assert (
        out
        == f"The block:\n\n**`dlcomp.blocks.MLP`**\n\n```python\n{code}\n```\n\nThen."
    )
    assert dlcomp.blocks.MLP.__doc__.strip().splitlines()[0] not in out
    assert "class MLP(nn.Module):" in out


def test_a_fence_is_longer_than_any_backticks_in_the_code():
    assert nbx.fenced("x = '```'") == "````python\nx = '```'\n````"


def test_code_blocks_math_and_other_markdown_stay_as_they_are():
    text = (
        "(my-label)=\n% a comment\n"
        "Math $\\frac{a}{N}$ and\n\n$$\ny = Wx\n$$\n\n"
        "```python\nprint('{func}`not a role`')\n```\n"
        "| a | b |\n|---|---|\n"
    )
    assert converter().convert(text) == (
        "Math $\\frac{a}{N}$ and\n\n$$\ny = Wx\n$$\n\n"
        "```python\nprint('{func}`not a role`')\n```\n"
        "| a | b |\n|---|---|\n"
    )


def test_minigallery_becomes_what_the_build_links():
    text = (
        "## See also\n\n```{eval-rst}\n.. minigallery:: ../gallery/gpu/plot_*.py\n```\n"
    )
    out = converter(gallery=lambda args: f"- [all of {args[0]}](gallery.html)").convert(
        text
    )
    assert out == "## See also\n\n- [all of ../gallery/gpu/plot_*.py](gallery.html)\n"


@pytest.mark.parametrize(
    "text",
    [
        "```{toctree}\nblocks\n```",
        "```{eval-rst}\n.. autofunction:: dlcomp.try_gpu\n```",
        "A {term}`word` and a {unknownrole}`x`.",
    ],
)
def test_markup_without_a_markdown_form_is_an_error(text):
    with pytest.raises(nbx.UnsupportedMarkup):
        converter(gallery=lambda args: "").convert(text)


def test_conversion_is_idempotent():
    text = (
        ":::{admonition} Title\n:class: tip\n\n- {class}`dlcomp.blocks.MLP`\n:::\n\n"
        "```{dlcomp-source} dlcomp.blocks.MLP\n```\n{doc}`read-write`"
    )
    once = converter().convert(text)
    assert converter().convert(once) == once


def cell(kind: str, source: str, **fields) -> dict:
    base = {"cell_type": kind, "id": f"c{abs(hash(source)) % 10**6}", "metadata": {}}
    if kind == "code":
        base |= {"execution_count": None, "outputs": []}
    return base | {"source": source} | fields


def executed_page() -> dict:
    """A notebook as myst-nb writes an executed chapter page."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "file_format": "mystnb",
            "source_map": [7, 30, 40],
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
        },
        "cells": [
            cell("markdown", "# Page\n\n:::{note}\nHi {func}`dlcomp.try_gpu`.\n:::"),
            cell(
                "code",
                "import dlcomp._notebook\n\ndlcomp._notebook.setup()",
                metadata={"tags": ["remove-cell"]},
                execution_count=1,
                outputs=[{"output_type": "stream", "name": "stdout", "text": "x\n"}],
            ),
            cell(
                "code",
                "import torch\nfrom myst_nb import glue\n\n"
                "glue('k', True, display=False)",
                execution_count=2,
            ),
            cell(
                "code",
                "1 / 0",
                metadata={"tags": ["raises-exception"]},
                execution_count=3,
                outputs=[
                    {
                        "output_type": "error",
                        "ename": "ZeroDivisionError",
                        "evalue": "division by zero",
                        "traceback": ["ZeroDivisionError: division by zero"],
                    }
                ],
            ),
            cell(
                "code",
                "2",
                execution_count=4,
                outputs=[
                    {
                        "output_type": "execute_result",
                        "execution_count": 4,
                        "data": {"text/plain": "2"},
                        "metadata": {},
                    }
                ],
            ),
        ],
    }


def test_chapter_notebook_drops_the_setup_cell_and_converts_the_markdown():
    out = nbx.chapter_notebook(executed_page(), converter())
    sources = ["".join(c["source"]) for c in out["cells"]]
    assert not any("dlcomp._notebook" in s for s in sources)
    assert sources[0] == (
        "# Page\n\n> **Note**\n>\n> Hi "
        "[`dlcomp.try_gpu()`](https://site.example/api.html#dlcomp.try_gpu)."
    )
    assert out["metadata"] == {
        "kernelspec": {"name": "python3", "display_name": "Python 3"}
    }
    # the build's outputs are kept; counts start at 1 without the setup cell
    code = [c for c in out["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == [None, 1, 2, 3]
    assert code[-1]["outputs"][0]["execution_count"] == 3
    assert code[2]["metadata"] == {"tags": ["raises-exception"]}
    assert code[2]["outputs"][0]["ename"] == "ZeroDivisionError"


def test_the_glue_import_becomes_a_stand_in_that_runs_without_myst_nb():
    out = nbx.chapter_notebook(executed_page(), converter())
    stand_in, importing = [
        "".join(c["source"]) for c in out["cells"] if c["cell_type"] == "code"
    ][:2]
    assert "myst_nb" not in importing
    assert importing == "import torch\n\nglue('k', True, display=False)"
    namespace: dict = {}
    exec(stand_in, namespace)
    namespace["glue"]("k", True, display=False)
    assert namespace["glued"] == {"k": True}


def test_the_converted_chapter_notebook_is_valid():
    import nbformat

    out = nbx.chapter_notebook(executed_page(), converter())
    nbformat.validate(nbformat.reads(json.dumps(out), as_version=4))


def test_the_input_notebook_is_left_unchanged():
    page = executed_page()
    before = json.dumps(page, sort_keys=True)
    nbx.chapter_notebook(page, converter())
    assert json.dumps(page, sort_keys=True) == before


def test_gallery_notebooks_rest_roles_become_links():
    rest = nbx.RestToMarkdown(link, labels=["sphx_glr_gpu"])
    notebook = {
        "cells": [
            cell(
                "markdown",
                "## See also\n- The chapter page: :doc:`/read-write`.\n"
                "- API: :class:`dlcomp.CheckpointManager`, "
                ":func:`dlcomp.read_checkpoint`,\n"
                "  :meth:`~dlcomp.CheckpointManager.wait`.\n"
                "- ``python -m dlcomp.train_worker DIR`` and `sphx_glr_gpu` and "
                "`GPU examples <sphx_glr_gpu>`, not `unknown_label`.\n"
                "- :func:`torch.save`",
            ),
            cell("code", "x = ':func:`not converted`'"),
        ]
    }
    out = nbx.gallery_notebook(notebook, rest)
    assert "".join(out["cells"][0]["source"]) == (
        "## See also\n"
        "- The chapter page: "
        "[5.5 Reading and writing files](https://site.example/read-write.html).\n"
        "- API: [`dlcomp.CheckpointManager`]"
        "(https://site.example/api.html#dlcomp.CheckpointManager), "
        "[`dlcomp.read_checkpoint()`]"
        "(https://site.example/api.html#dlcomp.read_checkpoint),\n"
        "  [`wait()`](https://site.example/api.html#dlcomp.CheckpointManager.wait).\n"
        "- ``python -m dlcomp.train_worker DIR`` and "
        "[GPUs](https://site.example/sphx_glr_gpu.html) and "
        "[GPU examples](https://site.example/sphx_glr_gpu.html), "
        "not `unknown_label`.\n"
        "- `torch.save()`"
    )
    assert out["cells"][1]["source"] == "x = ':func:`not converted`'"
    assert nbx.gallery_notebook(out, rest) == out  # idempotent


def test_format_glued_follows_myst_nb():
    assert nbx.format_glued("0.123456", ".1%") == "12.3%"
    assert nbx.format_glued("12", "d") == "12"
    assert nbx.format_glued("True", "") == "True"
    assert nbx.format_glued("'text'", "s") == "text"


def test_folds_become_headed_quotes_and_list_tables_tables():
    text = (
        "Intro.\n\n"
        ":::{dropdown} More: `mmap=True`\n"
        "Read when used.\n\n"
        "```{list-table}\n:header-rows: 1\n\n"
        "* -\n  - {class}`dlcomp.CheckpointManager`\n"
        "* - one checkpoint is\n  - one file, `a|b`\n"
        "```\n"
        ":::\n"
    )
    assert converter().convert(text) == (
        "Intro.\n\n"
        "> **More: `mmap=True`**\n"
        ">\n"
        "> Read when used.\n"
        ">\n"
        "> |  | [`dlcomp.CheckpointManager`]"
        "(https://site.example/api.html#dlcomp.CheckpointManager) |\n"
        "> |---|---|\n"
        "> | one checkpoint is | one file, `a\\|b` |\n"
    )


def test_the_cells_a_page_hides_are_left_out_of_its_notebook():
    page = executed_page()
    hidden = {
        "cell_type": "code",
        "execution_count": 5,
        "metadata": {"tags": ["remove-cell"]},
        "outputs": [],
        "source": "from myst_nb import glue\n\nglue('k', True, display=False)",
    }
    page["cells"].append(hidden)
    out = nbx.chapter_notebook(page, converter())
    sources = ["".join(c["source"]) for c in out["cells"]]
    assert (
        sources.count("from myst_nb import glue\n\nglue('k', True, display=False)") == 0
    )
    assert [c.get("execution_count") for c in out["cells"] if c["cell_type"] == "code"][
        -1
    ] == 3
