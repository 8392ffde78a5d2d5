"""The ``python -m dlcomp bench`` measurements: run, store as JSON, check, plot.

A bench run measures, on each device, what section 5.6 talks about (matmul
throughput, small-op overhead, copy bandwidth, the cost of ``.item()``
logging, timing with and without synchronizing, two devices at once) with
:mod:`dlcomp.timing`, and records it with
the device names, torch/CUDA versions, the date and the settings, so that a
figure measured on one machine is always labelled with where and when.

- :func:`~dlcomp.bench.check_devices`: the devices to measure, checked
  against this machine's.
- :func:`~dlcomp.bench.sync_cost`: the same matrix product timed with and
  without synchronizing the device, as a :class:`~dlcomp.bench.SyncCost`.
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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    Measurement,
    benchmark,
    copy_bandwidth,
    logging_cost,
    matmul_throughput,
    small_op_overhead,
    synchronize,
    two_devices,
)

__all__ = [
    "SyncCost",
    "check_devices",
    "check_results",
    "find_recorded",
    "label",
    "load_results",
    "plot_results",
    "plot_sync",
    "run_bench",
    "summary",
    "sync_cost",
]

# Version 2 added the "sync" measurement (timing with and without synchronizing).
SCHEMA = "dlcomp.bench/2"

QUICK = {
    "sizes": [64, 128, 256],
    "copy_sizes_mib": [1, 8],
    "logging_steps": 100,
    "sync_sizes": [256, 512],
    "min_time": 0.05,
}
FULL = {
    "sizes": [64, 128, 256, 512, 1024, 2048, 4096],
    "copy_sizes_mib": [1, 16, 256],
    "logging_steps": 1000,
    "sync_sizes": [256, 1024, 4096],
    "min_time": 0.3,
}
# The CPU runs the smaller sizes only: its large products take seconds each.
CPU_MAX_SIZE = 1024


@dataclass(frozen=True)
class SyncCost:
    """One statement timed two ways from the same calls: with and without synchronizing.

    Every call is timed once, from the same start: ``unsynchronized`` reads
    the clock as soon as the call returns (what ``start = time.perf_counter();
    Y = A @ B; time.perf_counter() - start`` measures), ``synchronized`` reads
    it again after waiting for the device. On a GPU the call returns once the
    kernel is *queued*, so ``unsynchronized`` is the launch, not the work; on
    a CPU the call returns when the work is done and the two agree.

    Attributes:
        statement: what was timed.
        size: the matrix size ``n`` of the product.
        synchronized: seconds per call, clock read after synchronizing.
        unsynchronized: seconds per call, clock read as the call returned.

    Examples:
        >>> m = lambda label, times: Measurement(label, "cpu", times)
        >>> cost = SyncCost("A @ B", 64, m("with", (4.0, 4.0)), m("without", (1.0, 1.0)))
        >>> cost.ratio, cost.as_dict()["ratio"]
        (4.0, 4.0)
    """  # noqa: E501

    statement: str
    size: int
    synchronized: Measurement
    unsynchronized: Measurement

    @property
    def ratio(self) -> float:
        """Median synchronized time over median unsynchronized time."""
        return self.synchronized.median / self.unsynchronized.median

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: both measurements, with their runs, and the ratio."""
        return {
            "statement": self.statement,
            "size": self.size,
            "synchronized": self.synchronized.as_dict(),
            "unsynchronized": self.unsynchronized.as_dict(),
            "ratio": self.ratio,
        }


def sync_cost(
    sizes: Iterable[int],
    device: torch.device | str = "cpu",
    *,
    warmup: int = 2,
    min_time: float = 0.1,
    min_runs: int = 7,
    max_runs: int = 1000,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> list[SyncCost]:
    """Time ``A @ B`` with and without synchronizing the device, per size.

    The mistake this measures: reading the clock right after a call on an
    accelerator. Each timed call starts from an idle device (synchronized
    before the clock starts) and is read twice: as soon as the call returns,
    and after synchronizing. Both measurements therefore come from the same
    calls, interleaved by construction.

    Args:
        sizes: the ``n`` of the ``n x n`` products.
        device: where to compute.
        warmup: untimed calls first.
        min_time: seconds of timed calls to collect at least, per size.
        min_runs: timed calls at least, per size.
        max_runs: timed calls at most, per size.
        clock: the clock (tests pass a fake one).
        sync: the synchronization (default: :func:`~dlcomp.synchronize` on ``device``).

    Returns:
        list[SyncCost]: one per size, in order.

    Examples:
        >>> costs = sync_cost([32, 64], "cpu", min_time=0.01)
        >>> [c.size for c in costs], all(c.synchronized.runs >= 7 for c in costs)
        ([32, 64], True)
    """
    device = torch.device(device)
    sync = sync if sync is not None else (lambda: synchronize(device))
    results = []
    for n in sizes:
        A = torch.rand(n, n, device=device)
        B = torch.rand(n, n, device=device)
        for _ in range(max(warmup, 1)):
            A @ B
        with_sync: list[float] = []
        without: list[float] = []
        while (len(with_sync) < min_runs or sum(with_sync) < min_time) and len(
            with_sync
        ) < max_runs:
            sync()  # start from an idle device
            start = clock()
            A @ B
            returned = clock()  # the mistake: the call has only been queued
            sync()
            done = clock()
            without.append(returned - start)
            with_sync.append(done - start)
        where = str(device)
        results.append(
            SyncCost(
                f"A @ B, A and B of shape ({n}, {n}) on {where}",
                n,
                Measurement(f"matmul {n}, synchronized", where, tuple(with_sync)),
                Measurement(f"matmul {n}, not synchronized", where, tuple(without)),
            )
        )
    return results


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
        ('dlcomp.bench/2', ['cpu'])
    """
    settings = dict(QUICK if quick else FULL, quick=quick)
    targets = check_devices(devices or None)
    step = (
        _progress(6 * len(targets) + 1, progress) if progress else (lambda what: None)
    )
    results: dict[str, Any] = {}
    for device in targets:
        sizes = settings["sizes"]
        sync_sizes = settings["sync_sizes"]
        if device.type == "cpu":
            sizes = [n for n in sizes if n <= CPU_MAX_SIZE]
            sync_sizes = [n for n in sync_sizes if n <= CPU_MAX_SIZE]
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
        costs = sync_cost(sync_sizes, device, min_time=settings["min_time"])
        entry["sync"] = [cost.as_dict() for cost in costs]
        step(f"sync check on {device}")
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
    "sync": list,
}


def check_results(data: Any) -> dict[str, Any]:
    """Validate a bench results dict (as written to JSON); return it.

    Raises:
        ValueError: listing every missing or mistyped field.

    Examples:
        >>> check_results({"schema": "dlcomp.bench/2"})
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
        for row in entry.get("sync", []):
            if not _is_sync_row(row):
                problems.append(f"results[{name!r}].sync has a malformed row")
                break
    machine = data.get("machine")
    if isinstance(machine, dict) and not {"devices", "torch"} <= set(machine):
        problems.append("machine lacks devices or torch")
    if problems:
        raise ValueError("not a dlcomp bench result: " + ", ".join(problems))
    return data


def _is_sync_row(row: Any) -> bool:
    """A ``sync`` row: a size and two measurements, each with its runs."""
    return (
        isinstance(row, dict)
        and isinstance(row.get("size"), int)
        and all(
            isinstance(row.get(key), dict)
            and isinstance(row[key].get("times"), list)
            and len(row[key]["times"]) > 0
            and isinstance(row[key].get("median"), float | int)
            for key in ("synchronized", "unsynchronized")
        )
    )


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
        ['copy.png', 'logging.png', 'matmul.png', 'sync.png']
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

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    plot_sync(ax, {label(data, d): e["sync"] for d, e in data["results"].items()})
    paths.append(out / "sync.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def plot_sync(ax: Any, series: dict[str, list[dict[str, Any]]]) -> str:
    """Draw :func:`sync_cost` rows on a matplotlib ``ax``; title it; return the title.

    One colour per series: a solid line for the synchronized medians, a
    dashed one for the unsynchronized medians, each with its interquartile
    range as error bars. The title states a finding only when the data show
    it: the two agree (within 10% at every size of every series), or a
    series' clock stopped at least twice too early at its largest size;
    otherwise it names what is plotted.

    Args:
        ax: a matplotlib Axes.
        series: legend label -> the ``sync`` rows of a bench run
            (``SyncCost.as_dict()`` of each size).

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> rows = [c.as_dict() for c in sync_cost([32, 64], min_time=0.01)]
        >>> fig, ax = plt.subplots()
        >>> plot_sync(ax, {"cpu": rows}) == ax.get_title()
        True
        >>> plt.close(fig)
    """
    import matplotlib.ticker

    for i, (name, rows) in enumerate(series.items()):
        sizes = [row["size"] for row in rows]
        for key, style, kind in (
            ("synchronized", "-", "synchronized"),
            ("unsynchronized", "--", "not synchronized"),
        ):
            medians = [row[key]["median"] for row in rows]
            low = [row[key]["median"] - row[key]["q1"] for row in rows]
            high = [row[key]["q3"] - row[key]["median"] for row in rows]
            ax.errorbar(sizes, medians, yerr=[low, high], color=f"C{i}",
                        linestyle=style, marker="o", capsize=3,
                        label=f"{name}: {kind}")  # fmt: skip
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="matrix size n (n x n @ n x n)",
        ylabel="seconds per product (median)",
    )
    sizes = sorted({row["size"] for rows in series.values() for row in rows})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    title = _sync_title(series)
    ax.set_title(title)
    ax.legend(fontsize="x-small")
    return title


def _sync_title(series: dict[str, list[dict[str, Any]]]) -> str:
    """A title that states what the rows show, and only that."""
    ratios = [row["ratio"] for rows in series.values() for row in rows]
    if ratios and all(abs(r - 1) <= 0.10 for r in ratios):
        return "With or without synchronizing: the same times (within 10%)"
    early = [
        (rows[-1]["ratio"], name.split(",")[0], rows[-1]["size"])
        for name, rows in series.items()
        if rows and rows[-1]["ratio"] >= 2
    ]
    if early:
        ratio, name, n = max(early)
        return f"Not synchronized, {name} stopped the clock {ratio:.0f}x early (n={n})"
    return "A matrix product timed with and without synchronizing"


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
        for row in entry["sync"]:
            lines.append(
                f"  sync check     n={row['size']:<5} "
                f"{row['synchronized']['median'] * 1e6:10.1f} us synchronized, "
                f"{row['unsynchronized']['median'] * 1e6:.1f} us not "
                f"(ratio {row['ratio']:.2f})"
            )
    two = data["two_devices"]
    lines.append(
        "two devices:    "
        + (two["skipped"] if "skipped" in two else f"speedup {two['speedup']:.2f}x")
    )
    return "\n".join(lines)
