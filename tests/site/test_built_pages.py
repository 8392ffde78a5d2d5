"""The built site shows outputs produced by the build, and links what it promises."""

import re
from pathlib import Path

import pytest
from sitepages import CHAPTER_PAGES, output_texts, page_text

pytestmark = pytest.mark.site


GALLERY = {
    "blocks": ["plot_01_chimera", "plot_02_forward_hooks"],
    "parameters": ["plot_01_tied_training", "plot_02_lazy_input_sizes"],
    "layers": ["plot_01_half_fourier"],
    "files": [
        "plot_01_resume_after_crash",
        "plot_02_sharded_resume_after_kill",
        "plot_03_background_saves",
    ],
    "gpu": [
        "plot_01_matmul_throughput",
        "plot_02_copy_bandwidth",
        "plot_03_logging_cost",
        "plot_04_sync",
    ],
}


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_chapter_page_shows_executed_outputs(site: Path, page: str):
    source = (site / page).read_text(encoding="utf-8")
    cells = source.count('class="cell_input')
    shown = source.count('class="cell_output')
    assert cells >= 8  # a chapter page runs its code, it does not only show it
    # Only set-up cells (imports, definitions) may lack output.
    assert shown >= 0.8 * cells, f"only {shown} of {cells} cells show output"


def test_blocks_page_shows_the_values_the_code_computes(site: Path):
    text = page_text(site / "blocks.html")
    # Printed by the cells: present only if they ran during the build.
    assert "torch.Size([2, 10])" in text
    assert 'can only concatenate str (not "Linear") to str' in text
    # LazyLinear.forward skips the pre-hook that materializes the weight
    assert "Attempted to use an uninitialized parameter" in text
    assert "optimizer got an empty parameter list" in text
    assert "rand_weight unchanged by the step: True" in text


def test_blocks_page_includes_the_library_source(site: Path):
    text = page_text(site / "blocks.html")
    assert "dlcomp.blocks.MySequential" in text
    assert "self.add_module(str(idx), module)" in text


@pytest.mark.parametrize(
    ("group", "script"), [(g, s) for g, scripts in GALLERY.items() for s in scripts]
)
def test_gallery_script_ran_and_drew_a_figure(site: Path, group: str, script: str):
    source = (site / "auto_examples" / group / f"{script}.html").read_text("utf-8")
    assert "sphx-glr-script-out" in source, f"{script} shows no printed output"
    assert (site / "_images" / f"sphx_glr_{script}_001.png").is_file()


def test_api_page_links_objects_to_the_gallery(site: Path):
    source = (site / "api" / "blocks.html").read_text(encoding="utf-8")
    assert 'id="dlcomp.MLP"' in source
    assert "plot_01_chimera.html" in source  # the mini-gallery of dlcomp.chimera


def test_parameters_page_shows_the_values_the_code_computes(site: Path):
    text = page_text(site / "parameters.html")
    assert "tied grad == sum of the untied grads: True" in text
    assert "121 parameters (193 counting each tied name separately)" in text
    assert "orthogonal: W @ W.T == I: True" in text
    # type(m) == nn.Linear skips the subclass; isinstance reaches it
    assert "MyDense   type(m) == nn.Linear: False  bias zeroed: False" in text
    assert "MyDense   type(m) == nn.Linear: False  bias zeroed: True" in text


@pytest.mark.parametrize(("page", "figures"), [("parameters.html", 2)])
def test_chapter_page_figures_were_drawn_by_the_build(site: Path, page, figures):
    source = (site / page).read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]+src="(_images/[^"]+\.png)"', source)
    assert len(images) >= figures
    assert all((site / image).is_file() for image in images)


def test_deferred_init_page_shows_lazy_shapes_materialized(site: Path):
    text = page_text(site / "deferred-init.html")
    assert "<UninitializedParameter>" in text
    assert "Can't access the shape of an uninitialized parameter" in text
    assert "Linear(in_features=20, out_features=256, bias=True)" in text
    assert "mat1 and mat2 shapes cannot be multiplied (2x30 and 20x256)" in text
    assert "MyLinear(in_units=5, units=3)" in text  # LazyMyLinear became MyLinear
    # the book's apply_init calls forward: the model's own hook never runs
    assert "book's apply_init: materialized: True, model's hook ran: 0" in text
    assert "dlcomp.init_lazy : materialized: True, model's hook ran: 1" in text


def test_custom_layers_page_shows_the_data_pitfall_and_the_checks(site: Path):
    text = page_text(site / "custom-layers.html")
    assert "gradient of the broken layer's weight: None" in text
    assert re.search(r"positive outputs: [1-9]", text)  # MyLinear does not look dead
    assert "broken weight unchanged by the step:   True" in text
    assert "matches einsum:         True" in text
    assert "signal recovered: True" in text


def test_read_write_page_shows_safety_and_resume(site: Path):
    text = page_text(site / "read-write.html")
    assert (
        "this ran while the file was being loaded" in text
    )  # weights_only=False ran it
    assert "Unsupported global: GLOBAL print" in text  # weights_only=True refused
    assert "would run code when unpickled" in text  # and load_checkpoint says so
    assert "model unchanged: True" in text
    assert "optimizer unchanged: True" in text
    assert "holds the state of a torch.optim.sgd.SGD" in text  # optimizer class
    assert "do not match their SHA-256" in text  # one flipped bit
    assert "gadget.pt refers to __builtin__.bytearray" in text  # 512 MiB, refused
    assert "the file is truncated" in text
    assert "which a checkpoint cannot store" in text  # the defaultdict extra
    assert "rng=True   resumed run bitwise the same: True" in text
    assert "rng=False  resumed run bitwise the same: False" in text
    assert "the file holds the weights of the moment of save: True" in text
    assert "same losses:  True" in text
    assert "dlcomp imported: False" in text  # the .pt2 file loaded without the class
    assert "Could not guard on data-dependent expression" in text
    assert "in forward | while X.abs().sum() > 1:" in text  # the book's loop, named
    # safetensors' save_model keeps one name of a tie, the other in the metadata
    assert "metadata: {'4.bias': '2.bias', '4.weight': '2.weight'}" in text


def test_resume_gallery_script_matches_the_uninterrupted_run(site: Path):
    page = site / "auto_examples" / "files" / "plot_01_resume_after_crash.html"
    text = page_text(page)
    assert "same final weights (bitwise): True" in text
    assert "same loss at every step:      True" in text


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_outputs_hold_nothing_that_changes_between_builds(site: Path, page: str):
    text = page_text(site / page)
    assert not re.findall(r"0x[0-9a-f]{6,}", text), "a memory address in an output"
    assert not re.findall(r"/tmp/tmp\w+", text), "a temporary path in an output"
    root = str(Path(__file__).resolve().parents[2])
    assert root not in text, "a path of the build machine on the page"
    assert "site-packages" not in text, "a path of the build machine on the page"


def test_gpu_page_ran_the_cpu_path_and_the_timer_check(site: Path):
    text = page_text(site / "gpu.html")
    assert "try_all_gpus():  [device(type='cpu')]" in text
    assert "already there, same object: True" in text
    assert "X is on cpu but Y is on meta" in text
    assert "ours / Timer:" in text
    assert "needs two accelerators, this machine has 0" in text


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_chapter_pages_show_their_gallery_scripts(site: Path, page: str):
    source = (site / page).read_text(encoding="utf-8")
    assert source.count("sphx-glr-thumbcontainer") >= 1  # the mini-gallery


def test_distributed_page_ran_two_processes(site: Path):
    text = page_text(site / "distributed-checkpoints.html")
    assert (
        "rank 1: weight is a DTensor, global shape (64, 16), this rank holds (32, 16)"
        in text
    )
    assert "'__0_0.distcp', '__1_0.distcp'" in text
    assert "weights equal:         True" in text
    assert '"resumed_from": 12' in text
    assert "unexpected keys: 4.weight, 4.bias" in text


def test_distributed_page_refused_the_crafted_checkpoint(site: Path):
    outputs = output_texts(site / "distributed-checkpoints.html")
    # restore read step 12 from its manifest: the crafted .metadata was never read
    assert any("restored step 12" in o for o in outputs)
    refusals = [o for o in outputs if "was not written by this dlcomp" in o]
    assert refusals, "consolidate did not refuse the directory plain DCP wrote"
    assert "at your own risk" in refusals[0]
    ran = [
        line for o in outputs for line in o.splitlines() if line.startswith("code ran:")
    ]
    # restore and consolidate ran nothing; plain DCP's read_metadata ran the payload
    assert len(ran) >= 3, ran
    assert all(o == "code ran: False" for o in ran[:-1]), ran
    assert ran[-1] == "code ran: True", ran
    # the manifest's entry of a tensor, printed: chunks with their SHA-256
    assert any('"sha256"' in o and '"chunks"' in o for o in outputs)


def test_sharded_resume_gallery_script_matches_the_uninterrupted_run(site: Path):
    page = site / "auto_examples" / "files" / "plot_02_sharded_resume_after_kill.html"
    text = page_text(page)
    assert "SIGKILL sent to rank 1" in text
    assert "same final weights (bitwise): True" in text
