"""Sections 5.5 and 5.5+ as a learner reads them: true, copyable, short.

The read-write and distributed-checkpoints pages on the built site: no glue
in a cell a reader copies, the sentences that were wrong stay fixed (shown
by the cells that run), the main path fits its budget with the depth folded.
"""

import html
import re
from pathlib import Path

import pytest
from sitepages import cell_texts, page_text, prose_budget

pytestmark = pytest.mark.site

READ_WRITE = "read-write.html"
DISTRIBUTED = "distributed-checkpoints.html"


def _folded(site: Path, page: str) -> str:
    """The text inside the page's <details> folds, tags stripped."""
    source = (site / page).read_text(encoding="utf-8")
    folds = re.findall(r"<details\b.*?</details>", source, flags=re.S)
    text = " ".join(re.sub(r"<[^>]+>", "", fold) for fold in folds)
    return html.unescape(text).replace("\u2019", "'")  # Sphinx's smart quotes


@pytest.mark.parametrize("page", [READ_WRITE, DISTRIBUTED])
def test_no_cell_a_reader_sees_calls_glue(site: Path, page: str):
    for text in cell_texts(site / page, "cell_input"):
        assert "myst_nb" not in text, text[:200]
        assert not re.search(r"\bglue\(", text), text[:200]


def test_large_model_loading_meta_mmap_assign(site: Path):
    text = page_text(site / READ_WRITE)
    # without assign=True the copy into meta tensors does nothing, and warns
    assert (
        "without assign: meta | for hidden.weight: copying from a non-meta "
        "parameter in the checkpoint to a meta parameter in the current model, "
        "which is a no-op." in text
    )
    # with it, the mapped tensors become the parameters, and the model computes
    assert (
        "with assign:    cpu | a Parameter: True | the file's tensor itself: True"
        in text
    )
    assert 'torch.load("mlp.params", mmap=True, weights_only=True)' in text


def test_exercise_3_closed_form_replaces_the_loop_and_exports(site: Path):
    text = page_text(site / READ_WRITE)
    for name in [
        "sum about 20",
        "sum about 20000",
        "sum at most 1",
        "all zero",
        "just above 2**5",
    ]:
        assert re.search(rf"{re.escape(name)} +same as the loop: True", text), name
    assert "exported, same output: True" in text
    assert "compiled with fullgraph=True, same output: True" in text
    # torch.cond is named as what does not fit the loop, not as its fix
    collapsed = page_text(site / READ_WRITE, collapse=True)
    assert "torch.cond does not fit" in collapsed
    assert "torch.while_loop can, but it is a prototype" in collapsed
    # and the compiler the cells do not need, and what the default backend needs
    assert "these cells need no C++ compiler" in collapsed
    assert "the first call fails with InductorError" in collapsed  # not the cause
    assert "InvalidCxxCompiler: No working C++ compiler found" in collapsed


def test_exercise_3_the_exported_program_trains_but_its_mode_is_fixed(site: Path):
    text = page_text(site / READ_WRITE)
    collapsed = page_text(site / READ_WRITE, collapse=True)
    assert "is for inference" not in collapsed
    assert (
        "gradients: ['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias']" in text
    )
    assert (
        "program.train(): NotImplementedError: Calling train() is not supported yet."
        in text
    )


def test_the_plain_atomic_save_runs_before_dlcomp_is_named_for_it(site: Path):
    inputs = cell_texts(site / READ_WRITE, "cell_input")
    atomic = [i for i, t in enumerate(inputs) if "def atomic_save(" in t]
    assert len(atomic) == 1
    assert "os.replace(tmp, path)" in inputs[atomic[0]]
    assert "dlcomp" not in inputs[atomic[0]]
    assert "dlcomp._checkpoint" not in page_text(site / READ_WRITE)


def test_read_write_depth_is_folded_not_deleted(site: Path):
    folded = " ".join(_folded(site, READ_WRITE).split())
    for sentence in [
        "The hashes catch damage, not forgery",
        "Checkpoints of dlcomp 0.1 (format versions 1 and 2",
        "a DataLoader shuffles with torch's generator",
        "so no writer deletes what another just kept",
        "The test suite kills a training process with SIGKILL",
        "build the optimizer after the call",
    ]:
        assert sentence in folded, sentence


def test_distributed_page_says_what_a_full_state_dict_costs(site: Path):
    text = page_text(site / DISTRIBUTED, collapse=True)
    assert "sending each rank its shards" not in text
    assert (
        "each full tensor is broadcast, one at a time, to every rank, and each "
        "rank keeps its shard of it" in text
    )
    assert "rank 0 holds all of it in memory" in text


def test_distributed_page_cites_the_gloo_abort_accurately(site: Path):
    source = (site / DISTRIBUTED).read_text(encoding="utf-8")
    assert "190489" not in source
    assert 'href="https://github.com/pytorch/pytorch/pull/179291"' in source
    folded = " ".join(_folded(site, DISTRIBUTED).split())
    # the gloo and TCPStore operations notes: one fold
    assert "gloo at exit." in folded
    assert "Restarts under torchrun." in folded
    assert "keeps the barrier's work object alive until the process exits" in folded


@pytest.mark.parametrize(
    ("page", "unfolded", "mentions"),
    [("read-write", 1600, 14), ("distributed-checkpoints", 1500, 14)],
)
def test_the_files_pages_fit_their_budget(site: Path, page, unfolded, mentions):
    figures = prose_budget.measure_page(site / f"{page}.html")
    assert figures["unfolded_words"] <= unfolded, figures
    assert figures["dlcomp_mentions"] <= mentions, figures
