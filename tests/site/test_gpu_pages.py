"""The built 5.6 GPU page and gallery show what the build machine ran (CPU only)."""

import re
from pathlib import Path

import pytest
from sitepages import cell_texts, output_texts, page_text

pytestmark = pytest.mark.site


def output_with(outputs: list[str], *phrases: str) -> str:
    """The first output that holds every phrase (the test fails if none does)."""
    for output in outputs:
        if all(phrase in output for phrase in phrases):
            return output
    pytest.fail(f"no cell output holds all of {phrases}")


def test_plain_pytorch_picks_the_device_before_the_helpers(site: Path):
    outputs = output_texts(site / "gpu.html", collapse=True)
    one_liner = output_with(outputs, "torch.accelerator.is_available(): False")
    assert "torch.accelerator.current_accelerator(): None" in one_liner
    assert "device: cpu" in one_liner
    helpers = output_with(outputs, "try_all_gpus(): [device(type='cpu')]")
    assert outputs.index(one_liner) < outputs.index(helpers)


def test_module_to_works_in_place_and_tensor_to_returns_a_new_tensor(site: Path):
    out = output_with(
        output_texts(site / "gpu.html", collapse=True), "module: returns itself: True"
    )
    assert "same Parameter object: True now torch.float64" in out
    assert "tensor: returns a new tensor: True torch.float64" in out
    assert "the original is kept: torch.float32" in out


def test_the_hand_written_loop_and_the_sync_mistake_ran(site: Path):
    outputs = output_texts(site / "gpu.html", collapse=True)
    loop = output_with(outputs, "A @ A, 512 x 512, on cpu: median", "of 25 runs")
    sync = output_with(outputs, "n=256: synchronized", "not synchronized")
    assert "n=512: synchronized" in sync
    assert re.search(r"On this machine \(cpu\) the two (agree|differ)", sync)
    assert outputs.index(loop) < outputs.index(sync)


def test_pinned_memory_cells_show_what_this_build_does(site: Path):
    outputs = output_texts(site / "gpu.html", collapse=True)
    # pin_memory() on this CPU-only build of torch 2.13
    output_with(outputs, "RuntimeError: Cannot access accelerator device when none")
    output_with(outputs, "no CUDA device here: no host-to-device copy to make")
    output_with(outputs, "no CUDA device here: no device-to-host copy to make")
    loader = output_with(outputs, "batch pinned: False")
    assert "UserWarning: 'pin_memory' argument is set as true" in loader


def test_event_cells_show_what_this_build_does(site: Path):
    outputs = output_texts(site / "gpu.html", collapse=True)
    output_with(outputs, "no CUDA device here: CUDA events need one")
    event = output_with(outputs, "event device: cpu")
    assert "RuntimeError: cpu backend doesn't support events." in event


def test_the_bench_run_on_the_page_has_the_sync_check(site: Path):
    bench = output_with(output_texts(site / "gpu.html", collapse=True), "dlcomp bench,")
    assert "sync check n=256" in bench
    assert "sync check n=512" in bench


def test_one_admonition_lists_the_statements_not_checked_on_a_gpu(site: Path):
    text = page_text(site / "gpu.html", collapse=True)
    assert text.count("not yet been checked on a GPU") == 1
    for statement in ("CUDA error", "non_blocking=True", "CUDA events", "exercise 4"):
        assert statement in text


def test_the_sync_gallery_script_measured_and_titled_its_plot(site: Path):
    text = page_text(
        site / "auto_examples" / "gpu" / "plot_04_sync.html", collapse=True
    )
    for n in (256, 512, 1024):
        assert re.search(rf"cpu n= ?{n}: [\d.]+ us synchronized", text), n
    assert "recorded run(s) found" in text
    found = r"title: (With or without|Not synchronized|A matrix product)"
    assert re.search(found, text)
    assert "sphx-glr-single-img" in (
        site / "auto_examples" / "gpu" / "plot_04_sync.html"
    ).read_text(encoding="utf-8")


def test_the_matmul_gallery_script_reaches_large_sizes(site: Path):
    text = page_text(
        site / "auto_examples" / "gpu" / "plot_01_matmul_throughput.html", collapse=True
    )
    assert "cpu n=3072:" in text
    assert "cpu: highest" in text
    assert re.search(
        r"cpu: (throughput levels off from n=\d+|the highest throughput is at the "
        r"largest size measured|matrix product throughput by size)",
        text,
    )


def test_the_copy_label_prints_what_it_says(site: Path):
    out = output_with(
        output_texts(site / "gpu.html", collapse=True), "already there, same object:"
    )
    assert "already there, same object: True" in out
    assert "copy=True, a new tensor: True" in out


def test_the_device_mismatch_a_reader_meets_from_a_layer_is_quoted(site: Path):
    text = page_text(site / "gpu.html", collapse=True)
    assert (
        "Expected all tensors to be on the same device, but got mat1 is on cpu, "
        "different from other tensors on cuda:0 (when checking argument in method "
        "wrapper_CUDA_addmm)" in text
    )
    # the stand-in shows its own message, from the same call net(X)
    output_with(
        output_texts(site / "gpu.html", collapse=True),
        "RuntimeError: Tensor on device cpu is not on the expected device meta!",
    )


def test_timings_run_on_one_thread_and_the_bench_run_too(site: Path):
    code = " ".join(cell_texts(site / "gpu.html", "cell_input", collapse=True))
    assert "torch.set_num_threads(1)" in code
    assert '"OMP_NUM_THREADS": "1"' in code
    outputs = output_texts(site / "gpu.html", collapse=True)
    table = output_with(outputs, "[", "matmul", "1 threads:")  # Compare's table
    assert "B @ B" in table
    assert "B.T @ B" in table


def test_the_training_loop_waits_once_per_epoch(site: Path):
    outputs = output_texts(site / "gpu.html", collapse=True)
    out = output_with(outputs, "epoch 0: mean loss", "epoch 2: mean loss")
    assert out.count("epoch") == 3
    output_with(outputs, "no sync: tensor([0.5000, 0.0000, 2.0000])")
    output_with(outputs, "float32 matmul precision: highest")


def test_exercise_4_compares_with_the_books_baseline(site: Path):
    text = page_text(site / "gpu.html", collapse=True)
    assert "in sequence on one GPU" in text
    assert "one after the other" not in text
    output_with(
        output_texts(site / "gpu.html", collapse=True),
        "with both in sequence on one",
    )


def test_no_page_or_script_says_gpu_runs_were_recorded(site: Path):
    gallery = sorted((site / "auto_examples" / "gpu").glob("*.html"))
    pages = [site / "gpu.html", *gallery]
    for page in pages:
        text = page_text(page, collapse=True)
        assert "recorded on real hardware" not in text, page.name
        assert "Recorded GPU runs from the repository are drawn" not in text, page.name
