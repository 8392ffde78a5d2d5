"""tools/gpu_check.py --dry-run: the GPU check runs whole on a CPU, so it cannot rot.

On a GPU machine the same script runs the GPU tests, the bench, the GPU
page's cells and the statement checks; here each step runs on the CPU and
the statements that need CUDA are recorded as not checked.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    result = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return result, out


def test_the_dry_run_passes_and_writes_its_six_files(dry_run):
    result, out = dry_run
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(
        ["gpu_check.json", "cells.json", "bench.json", "bench.txt", "tests.xml",
         "tests.txt"]
    )  # fmt: skip


def test_the_gpu_tests_need_no_test_tool_beyond_pytest():
    # The GPU machines have torch, pytest, numpy, matplotlib and safetensors
    # only: the files the check runs import nothing else (hypothesis, babel).
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from gpu_check import gpu_test_files
    finally:
        sys.path.remove(str(ROOT / "tools"))
    files = gpu_test_files()
    assert "tests/test_timing.py" in files
    for name in files:
        text = (ROOT / name).read_text("utf-8")
        for tool in ("hypothesis", "babel", "nbformat", "sphinx"):
            assert f"import {tool}" not in text, (name, tool)
            assert f"from {tool}" not in text, (name, tool)


def test_each_step_ran_and_says_so(dry_run):
    _, out = dry_run
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    assert report["tests"]["ok"], report["tests"]
    assert "deselected" in report["tests"]["summary"]  # only the GPU-marked ran
    assert report["bench"]["ok"], report["bench"]
    assert json.loads((out / "bench.json").read_text())  # the bench's own JSON
    assert report["cells"]["ok"], report["cells"]


def test_every_cell_of_the_gpu_page_ran(dry_run):
    _, out = dry_run
    cells = json.loads((out / "cells.json").read_text())
    page = (ROOT / "docs" / "gpu.md").read_text("utf-8")
    visible = page.count("```{code-cell}") - page.count(":tags: [remove-cell]")
    assert len(cells) == visible
    assert all(c["ok"] for c in cells), [c for c in cells if not c["ok"]]


def test_every_statement_the_page_lists_has_a_verdict(dry_run):
    _, out = dry_run
    report = json.loads((out / "gpu_check.json").read_text())
    verdicts = {v["statement"]: v["verdict"] for v in report["statements"]}
    assert set(verdicts.values()) == {"not checked: no CUDA device"}
    page = (ROOT / "docs" / "gpu.md").read_text("utf-8")
    listed = page.split("have **not yet been checked on a GPU**")[1].split(":::")[0]
    items = [line for line in listed.splitlines() if line.startswith("- ")]
    # each listed statement is checked here, or by running its cells (step 3)
    assert len(verdicts) + 1 == len(items)


def test_without_a_gpu_and_without_dry_run_it_says_what_to_do():
    result = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--out", "unused"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert "no CUDA device: run with --dry-run" in result.stderr
    assert not (ROOT / "unused").exists()
