"""The ``python -m dlcomp bench`` measurements: run, store as JSON, check, plot.

A bench run measures, on each device, what section 5.6 talks about (matmul
throughput, small-op overhead, copy bandwidth, the cost of ``.item()``
logging, two devices at once) with :mod:`dlcomp.timing`, and records it with
the device names, torch/CUDA versions, the date and the settings, so that a
figure measured on one machine is always labelled with where and when.

- :func:`~dlcomp.bench.check_devices`: the devices to measure, checked
  against this machine's.
- :func:`~dlcomp.bench.run_bench`: measure, return the results as a dict.
- :func:`~dlcomp.bench.check_results`: validate a results dict (the schema).
- :func:`~dlcomp.bench.load_results`: read the recorded runs in a directory.
- :func:`~dlcomp.bench.plot_results`: the figures, as PNG files.

Results recorded on other machines live in ``benchmarks/results/`` of the
repository; the gallery plots them beside the build machine's own numbers.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dlcomp.devices import (
    cpu,
    current_accelerator,
    describe_devices,
    num_gpus,
    try_all_gpus,
)
from dlcomp.timing import (
    benchmark,
    copy_bandwidth,
    logging_cost,
    matmul_throughput,
    small_op_overhead,
    two_devices,
)

__all__ = [
    "check_devices",
    "check_results",
    "find_recorded",
    "label",
    "load_results",
    "plot_results",
    "run_bench",
    "summary",
]

SCHEMA = "dlcomp.bench/1"

QUICK = {
    "sizes": [64, 128, 256],
    "copy_sizes_mib": [1, 8],
    "logging_steps": 100,
    "min_time": 0.05,
}
FULL = {
    "sizes": [64, 128, 256, 512, 1024, 2048, 4096],
    "copy_sizes_mib": [1, 16, 256],
    "logging_steps": 1000,
    "min_time": 0.3,
}


def _progress(total: int, stream: Any) -> Callable[[str], None]:
    done = [0]

    def step(what: str) -> None:
        done[0] += 1
        filled = round(30 * done[0] / total)
        stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done[0]}/{total} {what:<40}"
        )
        if done[0] == total:
            stream.write("\n")
        stream.flush()

    return step


def _timer_check(
    device: torch.device, n: int, min_time: float, rounds: int = 5
) -> dict[str, Any]:
    """Our timer and torch.utils.benchmark.Timer on the same statement.

    The two alternate, ``rounds`` times each (ours, Timer, ours, Timer...),
    so that a change of load falls on both; each side's result is the median
    of its rounds' medians.
    """
    from torch.utils.benchmark import Timer

    A = torch.rand(n, n, device=device)
    # Timer runs on one thread unless told otherwise: give it as many as we use.
    timer = Timer("A @ A", globals={"A": A}, num_threads=torch.get_num_threads())
    ours_rounds, theirs_rounds = [], []
    for _ in range(rounds):
        ours_rounds.append(
            benchmark(lambda: A @ A, device=device, min_time=min_time / rounds).median
        )
        theirs_rounds.append(
            timer.blocked_autorange(min_run_time=min_time / rounds).median
        )
    ours, theirs = statistics.median(ours_rounds), statistics.median(theirs_rounds)
    return {
        "statement": f"A @ A, A of shape ({n}, {n}) on {device}",
        "dlcomp_median": ours,
        "torch_benchmark_median": theirs,
        "ratio": ours / theirs,
    }


def _missing(device: torch.device) -> str | None:
    """Why this machine cannot measure on ``device``, or ``None`` if it can."""
    if device.type == "cpu":
        return None
    accelerator = current_accelerator()
    if accelerator is None or device.type != accelerator.type:
        return f"this machine has no {device.type} device that PyTorch can use"
    count = num_gpus()
    if device.index is not None and device.index >= count:
        return f"there is no {device}, this machine has {count} {device.type} device(s)"
    return None


def check_devices(names: list[str] | None = None) -> list[torch.device]:
    """The devices to measure on: ``names``, checked against this machine's devices.

    Args:
        names: device names such as ``"cuda:0"`` or ``"cpu"``; default
            (``None``) every accelerator, then the CPU for comparison.

    Returns:
        list[torch.device]: one device per name, in order.

    Raises:
        ValueError: for the first name that is not a device, or not one of
            this machine's; the message lists the devices there are.

    Examples:
        >>> check_devices(["cpu"])
        [device(type='cpu')]
        >>> check_devices(["nonsense"])
        Traceback (most recent call last):
        ...
        ValueError: cannot measure on 'nonsense': not a device name; the devices here are ...cpu
    """  # noqa: E501
    here = [d for d in try_all_gpus() if d.type != "cpu"] + [cpu()]
    if names is None:
        return here
    devices = []
    for name in names:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            problem: str | None = "not a device name"
        else:
            problem = _missing(device)
        if problem is not None:
            raise ValueError(
                f"cannot measure on {name!r}: {problem}; "
                f"the devices here are {', '.join(str(d) for d in here)}"
            )
        devices.append(device)
    return devices


def run_bench(
    *,
    quick: bool = False,
    devices: list[str] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run every measurement on every device; return the results with their provenance.

    Args:
        quick: small sizes and short timings (seconds, not minutes).
        devices: device names, checked by :func:`check_devices`; default
            every accelerator, plus the CPU for comparison.
        progress: a stream for the progress bar (e.g. ``sys.stderr``), or ``None``.

    Returns:
        dict: checked by :func:`check_results`.

    Raises:
        ValueError: for a device this machine does not have, before measuring.

    Examples:
        >>> data = run_bench(quick=True, devices=["cpu"])
        >>> check_results(data)["schema"], list(data["results"])
        ('dlcomp.bench/1', ['cpu'])
    """
    settings = dict(QUICK if quick else FULL, quick=quick)
    targets = check_devices(devices or None)
    step = (
        _progress(5 * len(targets) + 1, progress) if progress else (lambda what: None)
    )
    results: dict[str, Any] = {}
    for device in targets:
        sizes = settings["sizes"] if device.type != "cpu" else settings["sizes"][:5]
        entry: dict[str, Any] = {}
        entry["matmul"] = matmul_throughput(
            sizes, device, min_time=settings["min_time"]
        )
        step(f"matmul on {device}")
        entry["small_op"] = small_op_overhead(
            device, min_time=settings["min_time"]
        ).as_dict()
        step(f"small op on {device}")
        entry["copy"] = copy_bandwidth(
            settings["copy_sizes_mib"], device, min_time=settings["min_time"]
        )
        step(f"copies on {device}")
        logs = logging_cost(device, steps=settings["logging_steps"])
        entry["logging"] = {name: m.as_dict() for name, m in logs.items()}
        step(f"logging on {device}")
        entry["timer_check"] = _timer_check(device, 256, settings["min_time"])
        step(f"timer check on {device}")
        results[str(device)] = entry
    pair = two_devices()
    step("two devices")
    data = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": describe_devices().as_dict(),
        "settings": settings,
        "results": results,
        "two_devices": {
            k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in pair.items()
        },
    }
    return check_results(data)


_TOP = {
    "schema": str,
    "date": str,
    "machine": dict,
    "settings": dict,
    "results": dict,
    "two_devices": dict,
}
_PER_DEVICE = {
    "matmul": list,
    "small_op": dict,
    "copy": list,
    "logging": dict,
    "timer_check": dict,
}


def check_results(data: Any) -> dict[str, Any]:
    """Validate a bench results dict (as written to JSON); return it.

    Raises:
        ValueError: listing every missing or mistyped field.

    Examples:
        >>> check_results({"schema": "dlcomp.bench/1"})
        Traceback (most recent call last):
        ...
        ValueError: not a dlcomp bench result: missing date, missing machine, missing settings, missing results, missing two_devices
    """  # noqa: E501
    problems = []
    if not isinstance(data, dict):
        raise ValueError(
            f"not a dlcomp bench result: a {type(data).__name__}, not a dict"
        )
    for key, kind in _TOP.items():
        if key not in data:
            problems.append(f"missing {key}")
        elif not isinstance(data[key], kind):
            problems.append(
                f"{key} is a {type(data[key]).__name__}, not a {kind.__name__}"
            )
    if data.get("schema", SCHEMA) != SCHEMA:
        problems.append(f"schema {data['schema']!r}, expected {SCHEMA!r}")
    for name, entry in (data.get("results") or {}).items():
        for key, kind in _PER_DEVICE.items():
            if not isinstance(entry.get(key), kind):
                problems.append(f"results[{name!r}] lacks {key}")
        for row in entry.get("matmul", []):
            if not {"size", "gflops", "measurement"} <= set(row):
                problems.append(f"results[{name!r}].matmul has a malformed row")
                break
    machine = data.get("machine")
    if isinstance(machine, dict) and not {"devices", "torch"} <= set(machine):
        problems.append("machine lacks devices or torch")
    if problems:
        raise ValueError("not a dlcomp bench result: " + ", ".join(problems))
    return data


def load_results(directory: str | Path) -> list[dict[str, Any]]:
    """Every valid ``*.json`` bench result in ``directory`` (none if it does not exist).

    Files that are not bench results are skipped with a note on stderr.

    Examples:
        >>> load_results("/nonexistent")
        []
    """
    directory = Path(directory)
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            found.append(check_results(json.loads(path.read_text())))
        except (ValueError, json.JSONDecodeError) as error:
            print(f"skipping {path.name}: {error}", file=sys.stderr)
    return found


def find_recorded(start: str | Path | None = None) -> list[dict[str, Any]]:
    """The recorded runs in the nearest ``benchmarks/results/`` above ``start``.

    Gallery scripts call this with their own folder: inside a checkout of the
    repository they find the runs recorded on other machines; a script
    downloaded on its own finds none and shows only its own measurement.

    Examples:
        >>> find_recorded("/")
        []
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "benchmarks" / "results"
        if candidate.is_dir():
            return load_results(candidate)
    return []


def label(data: dict[str, Any], device: str) -> str:
    """A legend label that says where and when: device name, device, torch, date.

    Examples:
        >>> data = {"date": "2026-11-24T03:00:00+00:00", "machine": {"torch": "2.13.0",
        ...         "devices": [{"device": "cuda:0", "name": "NVIDIA H100"}]}}
        >>> label(data, "cuda:0")
        'NVIDIA H100 (cuda:0), torch 2.13.0, 2026-11-24'
    """
    names = {d["device"]: d["name"] for d in data["machine"]["devices"]}
    return f"{names.get(device, device)} ({device}), torch {data['machine']['torch']}, {data['date'][:10]}"  # noqa: E501


def plot_results(data: dict[str, Any], out: str | Path) -> list[Path]:
    """Write the figures of one bench run as PNG files into ``out``; return their paths.

    Examples:
        >>> import tempfile
        >>> paths = plot_results(run_bench(quick=True, devices=["cpu"]), tempfile.mkdtemp())
        >>> sorted(p.name for p in paths)
        ['copy.png', 'logging.png', 'matmul.png']
    """  # noqa: E501
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for device, entry in data["results"].items():
        rows = entry["matmul"]
        ax.plot(
            [r["size"] for r in rows],
            [r["gflops"] for r in rows],
            marker="o",
            label=label(data, device),
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="matrix size n (n x n @ n x n)",
        ylabel="GFLOP/s (median)",
    )
    ax.set_title("Matrix multiplication throughput")
    ax.legend(fontsize="small")
    paths.append(out / "matmul.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for device, entry in data["results"].items():
        for r in entry["copy"]:
            kind = f"{r['direction']}, {r['memory']}{', non_blocking' if r['non_blocking'] else ''}"  # noqa: E501
            ax.scatter(r["size_mib"], r["gbps"], label=f"{device}: {kind}")
    ax.set(
        xscale="log",
        xlabel="tensor size (MiB)",
        ylabel="GB/s (median)",
        title="Copy bandwidth",
    )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize="x-small")
    paths.append(out / "copy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    devices = list(data["results"])
    for i, name in enumerate(("item", "on_device")):
        values = [data["results"][d]["logging"][name]["median"] for d in devices]
        ax.bar(
            [j + 0.4 * i for j in range(len(devices))], values, width=0.4, label=name
        )
    ax.set_xticks([j + 0.2 for j in range(len(devices))], devices)
    steps = data["settings"]["logging_steps"]
    ax.set(
        ylabel=f"seconds per {steps} logged steps (median)",
        title="Logging with .item() vs on the device",
    )
    ax.legend()
    paths.append(out / "logging.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def summary(data: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers of one run.

    Examples:
        >>> print(summary(run_bench(quick=True, devices=["cpu"])))  # doctest: +ELLIPSIS
        dlcomp bench, ..., torch ...
        cpu:
          matmul ... GFLOP/s at n=...
        ...
        two devices:    needs two accelerators, this machine has 0: ...
    """
    lines = [f"dlcomp bench, {data['date']}, torch {data['machine']['torch']}"]
    for device, entry in data["results"].items():
        best = max(entry["matmul"], key=lambda r: r["gflops"])
        op = entry["small_op"]["median"]
        logs = entry["logging"]
        check = entry["timer_check"]
        lines += [
            f"{device}:",
            f"  matmul         {best['gflops']:10.1f} GFLOP/s at n={best['size']}",
            f"  1-element add  {op * 1e6:10.2f} us",
            f"  logging        {logs['item']['median']:10.4f} s with .item(), "
            f"{logs['on_device']['median']:.4f} s on the device",
            f"  timer check    ours / torch.utils.benchmark = {check['ratio']:.3f}",
        ]
    two = data["two_devices"]
    lines.append(
        "two devices:    "
        + (two["skipped"] if "skipped" in two else f"speedup {two['speedup']:.2f}x")
    )
    return "\n".join(lines)
