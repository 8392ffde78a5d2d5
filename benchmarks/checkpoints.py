"""Time dlcomp's checkpoint files against safetensors and torch.save; peak memory too.

Run by ``nox -s bench_checkpoints`` (or ``python benchmarks/checkpoints.py``
with dlcomp importable and torchvision installed). Models: torchvision's
ResNet-50 (random weights, about 98 MiB), the same with an Adam state
(checkpoints only: three times the bytes, and 161 one-element ``step``
tensors), and a 256 MiB stack of 16 ``Linear(2048, 2048)``.

Every measurement runs in a fresh child process, which builds the model,
warms the method up on a tiny model (imports, thread pools), touches and
frees three times the checkpoint's size of memory (see ``_warm_memory``),
resets its peak-memory mark (``/proc/self/clear_refs``), runs the method once and
reports its time and its peak resident memory (``VmHWM``) above what it held
just before. The methods run interleaved: each repeat runs every method once,
in a rotated order. Every save includes its fsync (for ``save_file`` and
``torch.save`` the script fsyncs the file itself; dlcomp's writes also rename
and fsync the directory). Loads read files written beforehand by a separate
process, so the page cache is warm for every load method alike.

Prints a table of medians with their min-max spread and the ratios the
issue's targets name, and writes a JSON file with every run, the machine's
CPU model, the torch version and the date.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import mmap
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 2**20

# model -> the operations measured on it (the methods run_method knows).
SAVES = ["save_file+fsync", "torch.save+fsync", "save_checkpoint", "save_safetensors"]
LOADS = ["load_file", "load_file(pread)", "torch.load", "read_checkpoint"]
INTO = ["load_file+load_state_dict", "load_checkpoint"]
BACKGROUND = ["manager_sync", "manager_background"]
CASES = {
    "resnet50": SAVES + LOADS + INTO + BACKGROUND,
    "resnet50+adam": [
        "save_file+fsync",
        "torch.save+fsync",
        "save_checkpoint",
        *LOADS,
    ],
    "linear-256MiB": SAVES + LOADS + INTO + BACKGROUND,
}

# The targets: (what, baseline, limit on what / baseline).
TARGETS = [
    ("save_checkpoint", "save_file+fsync", 1.1),
    ("save_safetensors", "save_file+fsync", 1.1),
    ("read_checkpoint", "load_file", 1.3),
    ("read_checkpoint", "load_file(pread)", 1.3),
    ("load_checkpoint", "load_file+load_state_dict", 1.3),
    ("background save: blocking", "manager_sync", 0.25),
]


# --- the child: one method, once ----------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _warm_memory(size: int) -> None:
    """Touch ``size`` bytes of new memory and give it back to the kernel.

    A virtual machine whose free memory the hypervisor has taken back (free
    page reporting, ballooning) pays for fresh pages on first touch; on the
    build machine that made a 256 MiB write take 60 to 340 ms. Memory touched
    and freed just before is cheap to allocate again, for every method alike.
    """
    memory = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        memory[offset] = 1
    memory.close()


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _torchvision() -> Any:
    """Import torchvision; beside a torch it was not built for, its ops stand in.

    torchvision's compiled ops do not load beside the CPU torch of our build
    machines, and its import then fails registering fake kernels for
    ``torchvision::nms``; defining the two operators' schemas lets it import
    (classification models use neither).
    """
    import torch

    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            library.define(
                f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
        _torchvision.library = library  # type: ignore[attr-defined]  # keep it alive
        import torchvision
    return torchvision


def build(case: str, tiny: bool = False) -> tuple[Any, Any]:
    """The model of ``case`` (and its optimizer, or None), seeded; tiny for warm-ups."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if tiny:
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    elif case.startswith("resnet50"):
        model = _torchvision().models.resnet50(weights=None)
    else:
        model = nn.Sequential(*(nn.Linear(2048, 2048) for _ in range(16)))
    optimizer = None
    if case.endswith("+adam"):
        optimizer = torch.optim.Adam(model.parameters())
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()  # the state: exp_avg, exp_avg_sq, step of every parameter
        model.zero_grad(set_to_none=True)
    return model, optimizer


def flat_tensors(model: Any, optimizer: Any) -> dict[str, Any]:
    """Every tensor of the model's (and optimizer's) state, by a flat name."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"optimizer/{index}/{key}"] = value.contiguous()
    return tensors


def torch_object(model: Any, optimizer: Any) -> Any:
    """What torch.save writes: the state dict, or a checkpoint-like dict."""
    if optimizer is None:
        return model.state_dict()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def fsync_file(path: Path) -> None:
    """Fsync a file written by someone else (save_file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_seconds() -> float:
    """The CPU time of this process so far, every thread's, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class FsyncTimer:
    """Wraps ``os.fsync``: how long this process spent in it (every caller's)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._fsync = os.fsync
        os.fsync = self

    def __call__(self, fd: Any) -> None:
        """Fsync ``fd``, timed."""
        start = time.perf_counter()
        try:
            self._fsync(fd)
        finally:
            self.seconds += time.perf_counter() - start


def run_method(method: str, case: str, files: Path, out: Path, tiny: bool) -> dict:
    """Run ``method`` once; return its time and anything else measured."""
    import safetensors.torch
    import torch

    import dlcomp

    model = optimizer = None
    if method not in LOADS:  # a load builds what it returns
        model, optimizer = build(case, tiny)
    suffix = "-tiny" if tiny else ""
    given = {  # the files the loads read
        "safetensors": files / f"{case}{suffix}.safetensors",
        "torch": files / f"{case}{suffix}.pt",
        "v3": files / f"{case}{suffix}.ckpt",
    }
    result: dict[str, Any] = {"loadavg_1min": os.getloadavg()[0]}
    gc.collect()
    if not tiny:
        _warm_memory(3 * given["v3"].stat().st_size)
    tensors = flat_tensors(model, optimizer) if method == "save_file+fsync" else None
    before = _status("VmRSS")
    result["peak_reset"] = _reset_peak()
    fsyncs = FsyncTimer()
    cpu = _cpu_seconds()
    start = time.perf_counter()
    if method == "save_file+fsync":
        safetensors.torch.save_file(tensors, out)
        fsync_file(out)
    elif method == "torch.save+fsync":
        with open(out, "wb") as f:
            torch.save(torch_object(model, optimizer), f)
            f.flush()
            os.fsync(f.fileno())
    elif method == "save_checkpoint":
        dlcomp.save_checkpoint(out, model, optimizer, step=1)
    elif method == "save_safetensors":
        dlcomp.save_safetensors(out, model)
    elif method == "load_file":
        loaded = safetensors.torch.load_file(given["safetensors"])
    elif method == "load_file(pread)":
        loaded = safetensors.torch.load_file(given["safetensors"], backend="pread")
    elif method == "torch.load":
        loaded = torch.load(given["torch"], weights_only=True)
    elif method == "read_checkpoint":
        loaded = dlcomp.read_checkpoint(given["v3"])
    elif method == "load_file+load_state_dict":
        model.load_state_dict(safetensors.torch.load_file(given["safetensors"]))
    elif method == "load_checkpoint":
        dlcomp.load_checkpoint(given["v3"], model, optimizer)
    elif method == "manager_sync":
        # The first save of a manager is a warm-up; the second is timed.
        manager = dlcomp.CheckpointManager(out, keep=1)
        manager.save(1, model, optimizer)
        fsyncs.seconds = 0.0
        cpu = _cpu_seconds()
        start = time.perf_counter()
        manager.save(2, model, optimizer)
    elif method == "manager_background":
        # The first save allocates the host buffers the later ones reuse.
        manager = dlcomp.CheckpointManager(out, keep=1, background=True)
        manager.save(1, model, optimizer)
        result["first_blocking_s"] = time.perf_counter() - start
        manager.wait()
        result["first_total_s"] = time.perf_counter() - start
        fsyncs.seconds = 0.0
        cpu = _cpu_seconds()
        start = time.perf_counter()
        manager.save(2, model, optimizer)
        result["blocking_s"] = time.perf_counter() - start
        manager.wait()
    else:
        raise SystemExit(f"no method {method!r}")
    result["seconds"] = time.perf_counter() - start
    result["cpu_s"] = _cpu_seconds() - cpu
    result["fsync_s"] = fsyncs.seconds
    os.fsync = fsyncs._fsync
    result["peak_bytes"] = _status("VmHWM") - before
    result["rss_before_bytes"] = before
    if method in LOADS:
        count = len(loaded.model if method == "read_checkpoint" else loaded)
        result["tensors_loaded"] = count
    return result


def child(argv: list[str]) -> None:
    """``--child METHOD CASE FILES OUT``: warm up on a tiny model, then measure."""
    method, case, files, out = argv[0], argv[1], Path(argv[2]), Path(argv[3])
    warm = out.with_name(out.name + "-warm-up")
    run_method(method, case, files, warm, tiny=True)
    shutil.rmtree(warm) if warm.is_dir() else warm.unlink(missing_ok=True)
    print(json.dumps(run_method(method, case, files, out, tiny=False)))


def prepare(argv: list[str]) -> None:
    """``--prepare CASE FILES``: write the files the loads read, and their sizes."""
    import safetensors.torch
    import torch

    import dlcomp

    case, files = argv[0], Path(argv[1])
    sizes = {}
    for tiny in (True, False):
        model, optimizer = build(case, tiny)
        suffix = "-tiny" if tiny else ""
        tensors = flat_tensors(model, optimizer)
        safetensors.torch.save_file(tensors, files / f"{case}{suffix}.safetensors")
        torch.save(torch_object(model, optimizer), files / f"{case}{suffix}.pt")
        dlcomp.save_checkpoint(files / f"{case}{suffix}.ckpt", model, optimizer, step=1)
        if not tiny:
            sizes = {
                "weights_bytes": sum(
                    t.numel() * t.element_size() for t in tensors.values()
                ),
                "tensors": len(tensors),
                "file_bytes": {
                    kind: (files / f"{case}{ext}").stat().st_size
                    for kind, ext in (
                        ("safetensors", ".safetensors"),
                        ("torch", ".pt"),
                        ("v3", ".ckpt"),
                    )
                },
            }
    os.sync()  # the load inputs on disk (and in the page cache), before any timing
    print(json.dumps(sizes))


# --- the parent: interleave, repeat, summarize ---------------------------------------


def _run(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """The CPU model, core count, OS, and the versions that matter."""
    import safetensors
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in info
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        pass
    return {
        "device": "cpu",
        "cpu_model": cpu,
        "cpu_sha_extensions": " sha_ni" in flags,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "safetensors": safetensors.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def summarize(runs: list[dict], key: str = "seconds") -> dict[str, float]:
    """Median, min and max of one quantity over repeated runs."""
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(
    cases: list[str], repeats: int, work: Path, log: Any, only: list[str] | None
) -> dict[str, Any]:
    """Every case's methods, interleaved, ``repeats`` times; the raw runs and sizes."""
    results: dict[str, Any] = {}
    for case in cases:
        files = work / "inputs"
        files.mkdir(exist_ok=True)
        sizes = _run(["--prepare", case, str(files)])
        methods = [m for m in CASES[case] if only is None or m in only]
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for repeat in range(repeats):
            shift = repeat % len(methods)
            for method in methods[shift:] + methods[:shift]:  # rotated order
                out = work / f"out-{method}"
                result = _run(["--child", method, case, str(files), str(out)])
                shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)
                runs[method].append(result)
                log(
                    f"{case} repeat {repeat + 1}/{repeats} {method}: "
                    f"{result['seconds']:.3f} s"
                )
        for path in files.iterdir():
            path.unlink()
        results[case] = {**sizes, "runs": runs}
    return results


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each operation's median, spread, CPU and fsync time, and peak, by label."""
    rows: dict[str, dict[str, Any]] = {}
    for method, runs in data["runs"].items():
        peak = statistics.median(r["peak_bytes"] for r in runs)
        fsync = statistics.median(r["fsync_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        labels = [(method, "seconds", cpu, fsync)]
        if method == "manager_background":  # CPU and fsync: the whole save
            labels = [
                ("background save: blocking", "blocking_s", None, None),
                ("background save: blocking, 1st", "first_blocking_s", None, None),
                ("background save: until written", "seconds", cpu, fsync),
            ]
        for label, key, cpu_s, fsync_s in labels:
            rows[label] = {
                **summarize(runs, key),
                "cpu": cpu_s,
                "fsync": fsync_s,
                "peak": peak,
                "values": [r[key] for r in runs],
            }
    return rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A Markdown table (medians, spreads, fsync, peaks) and the targets' verdicts."""
    lines = [
        "| model | operation | median s | min-max s | CPU s | fsync s | peak above "
        "start |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for case, data in results.items():
        weights = data["weights_bytes"]
        rows = _rows(data)
        for label, row in rows.items():
            lines.append(
                f"| {case} | {label} | {row['median']:.3f} | "
                f"{row['min']:.3f}-{row['max']:.3f} | {_seconds(row['cpu'])} | "
                f"{_seconds(row['fsync'])} | "
                f"{row['peak'] / MiB:.0f} MiB ({row['peak'] / weights:.2f} W) |"
            )
        for what, baseline, limit in TARGETS:
            if what in rows and baseline in rows:
                ratio = rows[what]["median"] / rows[baseline]["median"]
                pairs = zip(rows[what]["values"], rows[baseline]["values"], strict=True)
                paired = [a / b for a, b in pairs]
                verdicts.append(
                    {
                        "model": case,
                        "what": what,
                        "baseline": baseline,
                        "ratio_of_medians": ratio,
                        "paired_min": min(paired),
                        "paired_max": max(paired),
                        "limit": limit,
                        "met": ratio <= limit,
                    }
                )
    lines.append("")
    lines.append(
        "W: the bytes of the tensors saved ("
        + ", ".join(
            f"{case} {data['weights_bytes'] / MiB:.1f} MiB in {data['tensors']} tensors"
            for case, data in results.items()
        )
        + ")"
    )
    lines.append("")
    lines.append("| model | ratio | of medians | per repeat | target | |")
    lines.append("|---|---|---:|---:|---:|---|")
    for v in verdicts:
        lines.append(
            f"| {v['model']} | {v['what']} / {v['baseline']} | "
            f"{v['ratio_of_medians']:.2f} | {v['paired_min']:.2f}-{v['paired_max']:.2f}"
            f" | {'<=':s} {v['limit']:.2f} | {'met' if v['met'] else 'missed'} |"
        )
    return "\n".join(lines), verdicts


def main() -> None:
    """Measure, print the table, write the JSON file."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare":
        return prepare(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--methods", nargs="+", default=None, help="measure only these (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("build/bench/checkpoints.json")
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to write the files (default: a temporary "
        "directory beside --out, on the same disk)",
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    where = args.dir or args.out.parent
    where.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["loadavg_1min_before"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dlcomp-bench-", dir=where) as work:
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        results = measure(args.cases, args.repeats, Path(work), log, args.methods)
    info["loadavg_1min_after"] = os.getloadavg()[0]
    text, verdicts = table(results)
    print(
        f"{info['cpu_model']}, {info['cores']} cores, torch {info['torch']}, "
        f"safetensors {info['safetensors']}, {info['date']}; median of "
        f"{args.repeats}, page cache warm for loads"
    )
    print(text)
    record = {
        "schema": "dlcomp-checkpoint-bench/1",
        **info,
        "repeats": args.repeats,
        "page_cache": "warm",
        "results": results,
        "targets": verdicts,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return None


if __name__ == "__main__":
    main()
