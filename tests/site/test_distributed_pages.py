"""The distributed checkpoints page shows the script each process runs, and ran it."""

from pathlib import Path

import pytest
from sitepages import cell_texts, page_text

pytestmark = pytest.mark.site

PAGE = "distributed-checkpoints.html"


def test_the_training_script_is_a_cell_of_the_page(site: Path):
    inputs = cell_texts(site / PAGE, "cell_input")
    scripts = [i for i, text in enumerate(inputs) if "%%writefile train.py" in text]
    assert len(scripts) == 1, "no cell (or several) writes train.py"
    script = inputs[scripts[0]]
    # what each rank runs, in the open: group, sharded model, optimizer, loop, save
    for line in [
        'sharded = dlcomp.init_process_group("gloo")',
        "fully_shard(model, mesh=mesh)",
        "torch.optim.Adam(model.parameters(), lr=0.01)",
        "restored = manager.restore(model, optimizer)",
        "for step in range(start, args.steps):",
        "loss.backward()",
        "optimizer.step()",
        "manager.save(step + 1, model, optimizer, losses=losses)",
        "dlcomp.destroy_process_group()",
    ]:
        assert line in script, line
    assert "dlcomp._" not in script  # a reader's copy needs public dlcomp only
    # the cells after it launch that script, and nothing hides the loop
    launches = [i for i, text in enumerate(inputs) if 'torchrun("train.py"' in text]
    assert len(launches) == 2, launches
    assert min(launches) > scripts[0], "train.py is run before the cell that writes it"
    assert "_dist_worker" not in page_text(site / PAGE)


def test_the_training_script_ran_on_two_processes(site: Path):
    outputs = "\n".join(cell_texts(site / PAGE, "cell_output"))
    # in this order: written, trained 0 -> 12 (rank 0's log, then the files of
    # 2 ranks), then a checkpoint of this notebook's one process resumed on 2
    expected = [
        "Writing train.py",
        '{"resumed_from": 0}',
        '{"saved": 12, "loss": ',
        "'__0_0.distcp', '__1_0.distcp'",
        '{"resumed_from": 12}',
        '{"saved": 16, "loss": ',
    ]
    missing = [text for text in expected if text not in outputs]
    assert not missing, missing
    found = [outputs.find(text) for text in expected]
    assert found == sorted(found), "the outputs are out of order"


def test_the_page_says_it_goes_beyond_the_book_and_cites_the_restart_issue(
    site: Path,
):
    source = (site / PAGE).read_text(encoding="utf-8")
    notes = source.split('<div class="admonition note">')[1:]
    assert any("This page goes beyond the book" in n.split("</div>")[0] for n in notes)
    assert 'href="https://github.com/pytorch/pytorch/issues/135712"' in source
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in page_text(site / PAGE)
