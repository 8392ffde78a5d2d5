"""The GPU check: one command that checks the chapter's GPU claims on a GPU machine.

Run from a checkout, with the machine's own Python and no install::

    PYTHONPATH=. python tools/gpu_check.py --out benchmarks/results/gpu-check-DATE

It needs torch, pytest, matplotlib, numpy and safetensors (no Sphinx, no
Jupyter, no network) and, on one H100, takes a few minutes. It

1. runs the GPU-marked tests (``pytest -m gpu`` over the test files that
   hold them, so that other test files' tools need not be installed);
2. runs ``python -m dlcomp bench --quick`` (every measurement, sync
   included) and keeps its JSON and summary;
3. runs the code cells of ``docs/gpu.md`` in order, in one namespace, as the
   page's build does (hidden setup cells left out), and records each cell's
   output or error;
4. checks each statement the GPU page lists as "not yet checked on a GPU"
   with code of its own, and records what happened;

and writes everything into ``--out`` (at most 8 files): ``gpu_check.json``
(the machine, the verdicts and what each step returned), ``tests.xml`` and
``tests.txt`` (the GPU tests), ``bench.json`` and ``bench.txt`` (the
bench), ``cells.json`` (the page's cells): six files. The exit status is 0 when every
step ran (a statement that does not hold is a finding, not a failure).

``--dry-run`` runs the same steps on the CPU (``nox -s tests`` runs it, so
the script cannot rot while no GPU is at hand): the bench on the CPU only,
and each statement recorded as not checked, since it needs CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "gpu.md"
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


def _run(cmd: list[str], timeout: float) -> dict[str, Any]:
    """A subprocess from the checkout (dlcomp importable), its output kept."""
    start = time.perf_counter()
    try:
        result = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        status, out = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as error:
        status = "timeout"
        out = f"{error.stdout or ''}{error.stderr or ''}"
    return {"command": cmd, "status": status, "seconds": time.perf_counter() - start,
            "output": out}  # fmt: skip


# --- 1 and 2: the GPU tests and the bench --------------------------------------------


def gpu_test_files() -> list[str]:
    """The test files that hold GPU-marked tests (``pytest.mark.gpu``)."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if "mark.gpu" in path.read_text("utf-8")
    )


def gpu_tests(out: Path, timeout: float) -> dict[str, Any]:
    """``pytest -m gpu`` over the files that hold them (on a CPU: all skipped)."""
    result = _run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-o", "addopts=",
         "-o", "minversion=0", "--import-mode=importlib", "-p", "no:cacheprovider",
         "-rs", f"--junitxml={out / 'tests.xml'}", *gpu_test_files()],
        timeout,
    )  # fmt: skip
    (out / "tests.txt").write_text(result.pop("output"))
    tail = (out / "tests.txt").read_text().strip().splitlines()[-1:] or [""]
    result["summary"] = tail[0]
    # pytest: 0 all passed, 5 none collected; both mean the step ran
    result["ok"] = result["status"] in (0, 5)
    return result


def bench(out: Path, dry_run: bool, timeout: float) -> dict[str, Any]:
    """``python -m dlcomp bench --quick``; its JSON and summary kept."""
    folder = out / "bench-run"
    cmd = [sys.executable, "-m", "dlcomp", "bench", "--quick", "--out", str(folder)]
    if dry_run:
        cmd += ["--device", "cpu"]
    result = _run(cmd, timeout)
    (out / "bench.txt").write_text(result.pop("output"))
    for path in sorted(folder.glob("*.json"))[:1]:
        (out / "bench.json").write_text(path.read_text())
    for path in folder.glob("*"):
        path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
    result["ok"] = result["status"] == 0 and (out / "bench.json").is_file()
    return result


# --- 3: the GPU page's cells ----------------------------------------------------------


def page_cells(text: str) -> list[dict[str, Any]]:
    """Each code cell of a MyST page: its source and tags, hidden setup ones marked."""
    cells = []
    for body in CELL.findall(text):
        tags: list[str] = []
        lines = body.splitlines()
        while lines and lines[0].startswith(":"):
            key, _, value = lines.pop(0)[1:].partition(":")
            if key.strip() == "tags":
                tags = [t.strip() for t in value.strip(" []").split(",") if t.strip()]
        cells.append({"source": "\n".join(lines).strip("\n"), "tags": tags})
    return cells


def run_cells(out: Path) -> dict[str, Any]:
    """Run the page's visible cells in order in one namespace; record each."""
    cells = page_cells(PAGE.read_text("utf-8"))
    sys.modules.setdefault("myst_nb", types.SimpleNamespace(glue=lambda *a, **k: None))  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"__name__": "__gpu_page__"}
    records = []
    for index, cell in enumerate(cells):
        if "remove-cell" in cell["tags"]:
            continue  # the build's own setup (display settings, glue)
        buffer = io.StringIO()
        start = time.perf_counter()
        error = None
        with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
            warnings.simplefilter("default")
            try:
                exec(
                    compile(cell["source"], f"<gpu.md cell {index}>", "exec"), namespace
                )
            except BaseException as exc:  # a cell's own error is its output
                if isinstance(exc, KeyboardInterrupt):
                    raise
                error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        expected = "raises-exception" in cell["tags"]
        records.append({
            "cell": index,
            "first_line": cell["source"].splitlines()[0] if cell["source"] else "",
            "seconds": round(time.perf_counter() - start, 3),
            "output": buffer.getvalue()[-4000:],
            "error": error,
            "expected_error": expected,
            "ok": error is None or expected,
        })  # fmt: skip
    (out / "cells.json").write_text(json.dumps(records, indent=1))
    unexpected = [r["cell"] for r in records if r["error"] and not r["expected_error"]]
    return {"cells": len(records), "unexpected_errors": unexpected,
            "ok": not unexpected}  # fmt: skip


# --- 4: the statements the page lists as not yet checked on a GPU ---------------------


def _median(fn: Callable[[], object]) -> float:
    """Seconds per call on the GPU: :func:`dlcomp.benchmark`'s median (synchronized)."""
    from dlcomp import benchmark

    return benchmark(fn, device="cuda", min_time=0.2, min_runs=5).median


def _error_text(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return "(no error)"


def check_two_devices(torch: Any) -> tuple[bool, dict[str, Any]]:
    """The error of a product and a sum across cuda and cpu."""
    X, Y = torch.ones(2, 3, device="cuda"), torch.ones(3, 2)
    seen = {
        "matmul": _error_text(lambda: X @ Y),
        "add": _error_text(lambda: X + torch.ones(2, 3)),
    }
    held = all(
        "Expected all tensors to be on the same device" in m for m in seen.values()
    )
    return held, seen


def check_syncs(torch: Any) -> tuple[bool, dict[str, Any]]:
    """Whether each operation makes the host wait (set_sync_debug_mode warns)."""
    X = torch.rand(1000, device="cuda")
    one = X[:1]
    ops = {
        "X.cpu()": lambda: X.cpu(),
        ".item()": lambda: one.item(),
        "print(X)": lambda: print(one, file=io.StringIO()),
        "if X": lambda: bool(one),
        "X.nonzero()": lambda: X.nonzero(),
    }
    seen = {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        for name, op in ops.items():
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                op()
            seen[name] = any("synchroniz" in str(w.message) for w in caught)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return all(seen.values()), seen


def check_non_blocking(torch: Any) -> tuple[bool, dict[str, Any]]:
    """Pinned and pageable host-to-device copies, and a device-to-host one."""
    n = 64 * 2**20  # 256 MiB of float32
    sync = torch.cuda.synchronize
    pinned, pageable = torch.rand(n).pin_memory(), torch.rand(n)
    pinned.to("cuda", non_blocking=True)
    sync()
    start = time.perf_counter()
    pinned.to("cuda", non_blocking=True)
    returned = time.perf_counter() - start
    sync()
    done = time.perf_counter() - start
    blocking = _median(lambda: pageable.to("cuda"))
    pageable_nb = _median(lambda: pageable.to("cuda", non_blocking=True))
    on_device = torch.rand(n, device="cuda")
    host = torch.empty(n, pin_memory=True)
    sync()
    host.copy_(on_device, non_blocking=True)
    finished_at_return = torch.cuda.current_stream().query()
    sync()
    seen = {
        "pinned H2D: seconds to return / to finish": [returned, done],
        "pageable H2D seconds: blocking, non_blocking": [blocking, pageable_nb],
        "D2H non_blocking finished when the call returned": finished_at_return,
    }
    held = (
        returned < 0.5 * done
        and pageable_nb <= blocking * 1.1
        and not finished_at_return
    )
    return held, seen


def check_pinning(torch: Any) -> tuple[bool, dict[str, Any]]:
    """pin_memory() then copy against copying directly; a DataLoader's batch."""
    from torch.utils.data import DataLoader, TensorDataset

    pageable = torch.rand(16 * 2**20)
    direct = _median(lambda: pageable.to("cuda"))
    pin_then = _median(lambda: pageable.pin_memory().to("cuda"))
    batch, _ = next(iter(DataLoader(TensorDataset(torch.rand(64, 8), torch.rand(64)),
                                    batch_size=16, pin_memory=True)))  # fmt: skip
    seen = {
        "seconds: direct, pin_memory() then copy": [direct, pin_then],
        "DataLoader(pin_memory=True) batch is pinned": batch.is_pinned(),
    }
    return pin_then >= direct and batch.is_pinned(), seen


def check_events(torch: Any) -> tuple[bool, dict[str, Any]]:
    """Both event classes time a matrix product on the device."""
    X = torch.rand(2048, 2048, device="cuda")
    seen = {}
    for name, make in (("torch.cuda.Event", torch.cuda.Event),
                       ("torch.Event", getattr(torch, "Event", None))):  # fmt: skip
        if make is None:
            seen[name] = "missing in this torch"
            continue
        start, end = make(enable_timing=True), make(enable_timing=True)
        start.record()
        X @ X
        end.record()
        end.synchronize()
        seen[name] = start.elapsed_time(end)
    held = all(isinstance(v, float) and v > 0 for v in seen.values())
    return held, seen


def check_sync_gap(torch: Any) -> tuple[bool, dict[str, Any]]:
    """The clock without synchronizing stops before the device has finished."""
    X = torch.rand(4096, 4096, device="cuda")
    for _ in range(3):
        X @ X
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        X @ X
    without = time.perf_counter() - start
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        X @ X
    torch.cuda.synchronize()
    with_sync = time.perf_counter() - start
    return without < with_sync, {
        "seconds: without sync, with sync": [without, with_sync]
    }


def check_two_gpus(torch: Any) -> tuple[bool | None, dict[str, Any]]:
    """Exercise 4 needs two GPUs: recorded, not checked, on one."""
    return None, {"devices": torch.cuda.device_count(), "why": "needs two GPUs"}


STATEMENTS: dict[str, Callable[[Any], tuple[bool | None, dict[str, Any]]]] = {
    "the text of the CUDA error for tensors on two devices": check_two_devices,
    "that X.cpu(), .item(), print(X), if X and X.nonzero() wait for the device":
        check_syncs,
    "what non_blocking=True does for pageable and pinned memory, in both "
    "directions": check_non_blocking,
    "what pinning memory costs, and that DataLoader(pin_memory=True) returns "
    "pinned batches": check_pinning,
    "timing with CUDA events (torch.cuda.Event) and with torch.Event": check_events,
    "the gap between timing with and without synchronizing": check_sync_gap,
    "the speedup of two GPUs working at once (exercise 4)": check_two_gpus,
}  # fmt: skip
"""Each statement of the page's "not yet checked" list with a check of its own;
the memory counters, TF32 and set_sync_debug_mode cells are checked by running
the page's cells (step 3)."""


def statements(cuda: bool) -> list[dict[str, Any]]:
    """A verdict for each statement: held, differs, not checked, check failed."""
    import torch

    verdicts = []
    for text, check in STATEMENTS.items():
        if not cuda:
            verdicts.append(
                {"statement": text, "verdict": "not checked: no CUDA device"}
            )
            continue
        try:
            held, seen = check(torch)
            verdict = "not checked" if held is None else "held" if held else "differs"
        except Exception as error:
            verdict, seen = "check failed", {"error": traceback.format_exc()[-2000:]}
            del error
        verdicts.append({"statement": text, "verdict": verdict, "seen": seen})
    return verdicts


def main(argv: list[str] | None = None) -> int:
    """Run the four steps; write the folder; 0 when every step ran."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="on the CPU: the steps run, CUDA statements are not checked",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=240, help="seconds per step")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        parser.error("no CUDA device: run with --dry-run to check the script on a CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "dry_run": args.dry_run,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "devices": torch.cuda.device_count() if cuda else 0,
    }
    report["tests"] = gpu_tests(args.out, args.timeout)
    report["bench"] = bench(args.out, args.dry_run, args.timeout)
    report["cells"] = run_cells(args.out)
    report["statements"] = statements(cuda and not args.dry_run)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    steps = ("tests", "bench", "cells")
    for step in steps:
        print(f"{step}: {'ok' if report[step]['ok'] else 'FAILED'}")
    for verdict in report["statements"]:
        print(f"{verdict['verdict']}: {verdict['statement']}")
    print(f"written: {args.out} ({report['seconds']} s)")
    return 0 if all(report[s]["ok"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
