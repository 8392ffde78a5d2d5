"""Sections 5.2, 5.4 and 5.5 on the built site: plain PyTorch first, the notes' typos.

Each string below is printed by a cell (none of them is in the cells' source),
so finding it proves the cell ran during the build.
"""

import re
from pathlib import Path

import pytest
from sitepages import page_text

pytestmark = pytest.mark.site


@pytest.mark.parametrize(
    ("page", "claims"),
    [("parameters.html", 4), ("custom-layers.html", 4), ("read-write.html", 7)],
)
def test_outcome_sentences_are_bound_to_their_cells(site: Path, page: str, claims):
    source = (site / page).read_text(encoding="utf-8")
    assert source.count("dlcomp-claim") >= claims
    assert "dlcomp-claim-false" not in source


def test_parameters_page_plain_pytorch_and_the_notes_typo(site: Path):
    text = page_text(site / "parameters.html")
    # the notes' nn.linear, run, and the fix
    assert "module 'torch.nn' has no attribute 'linear'" in text
    assert "nn has linear: False | nn has Sequencial: False" in text
    # the exact type test: the skipped layer is marked
    assert "bias zeroed: False  <- skipped: default init kept" in text
    assert "every |w| <= 1/sqrt(4): True" in text
    # values read with .detach(): no grad_fn in what the cell shows
    assert "tensor(100.)" in text
    # plain named_parameters() before parameter_table (exercise 1)
    assert "net.2.weight   (32, 64)" in text
    # plain training loop before track_norms (exercise 3)
    assert re.search(
        r"step 2: loss \S+  \|w\| \S+  \|grad\| \S+  same tensor as tied\[4\]: True",
        text,
    )
    # plain counts before the table's summary (exercise 4): tying shows in the
    # count by name, and an untied network with buffers differs in state_dict
    assert "tied:    parameters(): 121 | by name: 193 | state_dict: 193" in text
    assert "untied:  parameters(): 193 | by name: 193 | state_dict: 193" in text
    assert "buffers: parameters(): 65 | by name: 65 | state_dict: 82" in text


def test_custom_layers_page_runs_the_notes_mylinear_typo(site: Path):
    text = page_text(site / "custom-layers.html")
    assert "MyLinear():     NameError: name 'in_units' is not defined" in text
    assert "MyLinear.__init__() takes 1 positional argument but 3 were given" in text
    assert "arguments: ['in_units', 'units', 'device', 'dtype']" in text


def test_read_write_page_optimizer_state_before_the_checkpoint_helpers(site: Path):
    text = page_text(site / "read-write.html")
    assert "{'state': {0: {'momentum_buffer': tensor([[3., 3.]])}" in text
    assert "'params': [0, 1]}]}" in text
    assert "optimizer state restored: True   same weights after step 2: True" in text
    assert "optimizer state restored: False  same weights after step 2: False" in text


def test_read_write_page_strict_false_before_load_matching(site: Path):
    text = page_text(site / "read-write.html")
    assert "missing:    ['4.weight', '4.bias']" in text
    assert "unexpected: []" in text
    # shapes are still checked, after the entries that fit were copied
    assert (
        "RuntimeError: size mismatch for 4.weight: copying a param with shape "
        "torch.Size([10, 32]) from checkpoint" in text
    )
    assert "first layer overwritten all the same: True" in text
    # no name matches: nothing loaded, no error
    assert "missing:    ['hidden1.weight', 'hidden1.bias'," in text
    assert "unexpected: ['0.weight', '0.bias', '2.weight', '2.bias'," in text
    # load_matching refuses prefixes that select nothing in the model
    assert "the model has no entries named 0.weight, 0.bias, 2.weight, 2.bias" in text


def test_read_write_page_whole_model_pickle(site: Path):
    text = page_text(site / "read-write.html")
    assert (
        "UnpicklingError: WeightsUnpickler error: Unsupported global: "
        "GLOBAL dlcomp.blocks.MLP was not an allowed global by default" in text
    )
    assert "loaded: dlcomp.blocks.MLP" in text
    assert (
        "another program: AttributeError: Can't get attribute 'SmallNet' "
        "on <module '__main__'" in text
    )


def test_read_write_page_safetensors_names_are_sorted(site: Path):
    text = page_text(site / "read-write.html")
    groups = "[['2.bias', '4.bias'], ['2.weight', '4.weight']]"
    assert f"loading them again: {groups}" in text
    assert "A potential way to correctly save your model is to use `save_model`" in text


def test_read_write_page_shows_load_matching_refusing_a_state_dict_with_no_shared_name(
    site: Path,
):
    text = page_text(site / "read-write.html")
    assert "the state dict shares no name with the model" in text
