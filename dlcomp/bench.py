"""The ``python -m dlcomp bench`` measurements: run, store as JSON, check, plot.

A bench run measures, on each device, what section 5.6 talks about (matmul
throughput, small-op overhead, copy bandwidth, the cost of ``.item()``
logging, timing with and without synchronizing, two devices at once) with
:mod:`dlcomp.measurements`, and records their ``as_dict()`` data with
the device names, torch/CUDA versions, the date and the settings, so that a
figure measured on one machine is always labelled with where and when.

- :func:`~dlcomp.bench.check_devices`: the devices to measure, checked
  against this machine's.
- :func:`~dlcomp.bench.run_bench`: measure, return the results as a dict.
- :func:`~dlcomp.bench.check_results`: validate a results dict (the schema).
- :func:`~dlcomp.bench.load_results`: read the recorded runs in a directory.
- :func:`~dlcomp.bench.plot_results`: the figures, as PNG files, each drawn
  by the function the gallery scripts use too:
  :func:`~dlcomp.bench.plot_matmul`, :func:`~dlcomp.bench.plot_copy`,
  :func:`~dlcomp.bench.plot_logging`, :func:`~dlcomp.bench.plot_sync`.
- :func:`~dlcomp.bench.summary`: the headline numbers in words, with a
  warning when the run was noisy.

Results recorded on other machines live in ``benchmarks/results/`` of the
repository; the gallery scripts plot them beside the numbers of the machine
that runs them.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dlcomp._checks import check_int
from dlcomp.devices import (
    cpu,
    current_accelerator,
    describe_devices,
    num_gpus,
    try_all_gpus,
)
from dlcomp.measurements import (
    CopyRow,
    LoggingCost,
    MatmulRow,
    MeasurementSkipped,
    SyncCost,
    copy_bandwidth,
    logging_cost,
    matmul_throughput,
    small_op_overhead,
    sync_cost,
    two_devices,
)
from dlcomp.timing import alternate, benchmark

__all__ = [
    "check_devices",
    "check_results",
    "find_recorded",
    "label",
    "load_results",
    "plot_copy",
    "plot_logging",
    "plot_matmul",
    "plot_results",
    "plot_sync",
    "run_bench",
    "show",
    "summary",
]

# Version 2 added the "sync" measurement (timing with and without synchronizing).
SCHEMA = "dlcomp.bench/2"

QUICK: dict[str, Any] = {
    "sizes": [64, 128, 256],
    "copy_sizes_mib": [1, 8],
    "logging_steps": 100,
    "sync_sizes": [256, 512],
    "min_time": 0.05,
}
FULL: dict[str, Any] = {
    "sizes": [64, 128, 256, 512, 1024, 2048, 4096],
    "copy_sizes_mib": [1, 16, 256],
    "logging_steps": 1000,
    "sync_sizes": [256, 1024, 4096],
    "min_time": 0.3,
}
# The CPU runs the smaller sizes only: its large products take seconds each.
CPU_MAX_SIZE = 1024


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

    The two alternate (:func:`~dlcomp.alternate`), ``rounds`` times each
    (ours, Timer, ours, Timer...), so that a change of load falls on both;
    each side's result is the median of its rounds' medians.
    """
    from torch.utils.benchmark import Timer

    A = torch.rand(n, n, device=device)
    # Timer runs on one thread unless told otherwise: give it as many as we use.
    timer = Timer("A @ A", globals={"A": A}, num_threads=torch.get_num_threads())
    each = min_time / rounds
    timed = alternate(
        {
            "dlcomp.benchmark": lambda: (
                benchmark(lambda: A @ A, device=device, min_time=each).median
            ),
            "torch.utils.benchmark.Timer": lambda: float(
                timer.blocked_autorange(min_run_time=each).median
            ),
        },
        rounds=rounds,
        device=device,
    )
    ours, theirs = (m.median for m in timed.values())
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
    settings: dict[str, Any] = dict(QUICK if quick else FULL, quick=quick)
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
        rows = matmul_throughput(sizes, device, min_time=settings["min_time"])
        entry["matmul"] = [row.as_dict() for row in rows]
        step(f"matmul on {device}")
        entry["small_op"] = small_op_overhead(
            device, min_time=settings["min_time"]
        ).as_dict()
        step(f"small op on {device}")
        copies = copy_bandwidth(
            settings["copy_sizes_mib"], device, min_time=settings["min_time"]
        )
        entry["copy"] = [row.as_dict() for row in copies]
        step(f"copies on {device}")
        logs = logging_cost(device, steps=settings["logging_steps"])
        entry["logging"] = logs.as_dict()
        step(f"logging on {device}")
        entry["timer_check"] = _timer_check(device, 256, settings["min_time"])
        step(f"timer check on {device}")
        costs = sync_cost(sync_sizes, device, min_time=settings["min_time"])
        entry["sync"] = [cost.as_dict() for cost in costs]
        step(f"sync check on {device}")
        results[str(device)] = entry
    try:
        pair: dict[str, Any] = two_devices().as_dict()
    except MeasurementSkipped as why:
        pair = {"skipped": str(why)}
    step("two devices")
    data = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": describe_devices().as_dict(),
        "settings": settings,
        "results": results,
        "two_devices": pair,
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
    return (
        f"{_where(data, device)}, torch {data['machine']['torch']}, {data['date'][:10]}"
    )


def plot_results(data: dict[str, Any], out: str | Path) -> list[Path]:
    """Write the figures of one bench run as PNG files into ``out``; return their paths.

    One figure per measurement, each drawn by the function the gallery
    scripts use too: :func:`plot_matmul`, :func:`plot_copy`,
    :func:`plot_logging`, :func:`plot_sync`. Needs matplotlib (the ``bench``
    extra: ``pip install "dlcomp[bench]"``).

    Examples:
        >>> import tempfile
        >>> paths = plot_results(run_bench(quick=True, devices=["cpu"]), tempfile.mkdtemp())
        >>> sorted(p.name for p in paths)
        ['copy.png', 'logging.png', 'matmul.png', 'sync.png']
    """  # noqa: E501
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in _figures(data).items():
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=120)
    return paths


def _figures(data: dict[str, Any]) -> dict[str, Any]:
    """The figures of :func:`plot_results`, as matplotlib Figures (no pyplot state)."""
    from matplotlib.figure import Figure

    results = data["results"]
    where = {device: _where(data, device) for device in results}
    run = _provenance(data)
    figures = {}

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    plot_matmul(ax, {where[d]: e["matmul"] for d, e in results.items()})
    ax.set_title(f"Matrix multiplication throughput\n{run}")
    figures["matmul"] = fig

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    plot_copy(ax, {where[d]: e["copy"] for d, e in results.items()})
    ax.set_title(f"Copy bandwidth by size\n{run}")
    figures["copy"] = fig

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    plot_logging(
        ax,
        {where[d]: e["logging"] for d, e in results.items()},
        steps=data["settings"]["logging_steps"],
    )
    ax.set_title(f"Logging every step: .item() or kept on the device\n{run}")
    figures["logging"] = fig

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    plot_sync(ax, {label(data, d): e["sync"] for d, e in results.items()})
    figures["sync"] = fig
    return figures


def _where(data: dict[str, Any], device: str) -> str:
    """The device's name and the device, e.g. ``NVIDIA H100 (cuda:0)``, ``CPU (x86_64)``."""  # noqa: E501
    names = {d["device"]: d["name"] for d in data["machine"]["devices"]}
    name = str(names.get(device, device))
    if name.lower().startswith(device.lower()):  # "CPU (x86_64)" names its device
        return name
    return f"{name} ({device})"


def _provenance(data: dict[str, Any]) -> str:
    """The torch (and CUDA) version and date of a run, for a figure's title."""
    machine = data["machine"]
    cuda = f", CUDA {machine['cuda']}" if machine.get("cuda") else ""
    return f"torch {machine['torch']}{cuda}, {data['date'][:10]}"


# Series after the first are told apart by line style and marker.
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")


def _ticks_at(axis: Any, values: Iterable[float], unit: str = "") -> None:
    """Ticks of a log ``axis`` at the measured ``values`` only, no minor ticks."""
    import matplotlib.ticker

    values = sorted(set(values))
    axis.set_ticks(values, [f"{v:g}{unit}" for v in values])
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def _plain_numbers(axis: Any) -> None:
    """Label a log ``axis`` with plain numbers (20, 6, 0.005), not powers of ten."""
    import matplotlib.ticker

    class Plain(matplotlib.ticker.LogFormatter):
        """Label the ticks LogFormatter labels, as 0.02, not 2e-02 or 2 x 10^-2."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


_Rows = Sequence[dict[str, Any]] | Sequence[MatmulRow] | Sequence[CopyRow]


def _plain(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows as plain data: a result's ``as_dict()``, or a recorded JSON row as is."""
    return [row.as_dict() if hasattr(row, "as_dict") else row for row in rows]


def _log_axes(
    ax: Any, at: Iterable[float], *, xlabel: str, ylabel: str, unit: str = ""
) -> None:
    """Log axes with ticks at the sizes measured (``at``); a log ``y`` in plain numbers.

    Without ``unit`` both axes are logarithmic (a time or a rate over sizes);
    with one (``" MiB"``), only ``x`` is, and ``y`` starts at 0.
    """
    ax.set(xscale="log", xlabel=xlabel, ylabel=ylabel)
    _ticks_at(ax.xaxis, at, unit)
    if unit:
        ax.set_ylim(bottom=0)
    else:
        ax.set_yscale("log")
        _plain_numbers(ax.yaxis)


def plot_matmul(
    ax: Any, series: Mapping[str, _Rows], *, highest: Iterable[str] = ()
) -> None:
    """Draw :func:`~dlcomp.matmul_throughput` rows on a matplotlib ``ax``: GFLOP/s by size.

    One line per series (the first solid, the others dashed, dotted...), on
    log axes with ticks at the sizes measured; for each series named in
    ``highest``, a dotted line in its colour at the highest throughput it
    measured. The caller sets the title.

    Args:
        ax: a matplotlib Axes.
        series: legend label -> the rows of :func:`~dlcomp.matmul_throughput`
            (:class:`~dlcomp.MatmulRow`), or the ``matmul`` rows of a
            recorded bench run (their ``as_dict()``).
        highest: labels of ``series`` whose highest throughput to mark.

    Examples:
        >>> from matplotlib.figure import Figure
        >>> from dlcomp import matmul_throughput
        >>> ax = Figure().add_subplot()
        >>> rows = matmul_throughput([64, 128], min_time=0.01)
        >>> plot_matmul(ax, {"cpu": rows})
        >>> [line.get_label() for line in ax.get_lines()]
        ['cpu']
        >>> [tick.get_text() for tick in ax.get_xticklabels()]  # the sizes measured
        ['64', '128']
        >>> plot_matmul(ax := Figure().add_subplot(), {"cpu": rows}, highest=["cpu"])
        >>> [line.get_label().split(":")[0] for line in ax.get_lines()]
        ['cpu', 'highest, cpu']
    """  # noqa: E501
    plain = {name: _plain(rows) for name, rows in series.items()}
    # one label is a label, not its letters
    marked = {highest} if isinstance(highest, str) else set(highest)
    if unknown := sorted(marked - set(series)):
        raise ValueError(
            f"plot_matmul: highest names {unknown}, which are not in series "
            f"(labels: {sorted(series)})"
        )
    for i, (name, rows) in enumerate(plain.items()):
        rows = sorted(rows, key=lambda r: r["size"])
        ax.plot([r["size"] for r in rows], [r["gflops"] for r in rows],
                color=f"C{i % 10}", linestyle=_STYLES[i % 4],
                marker=_MARKERS[i % 4], label=name)  # fmt: skip
        if name in marked and rows:
            peak = max(r["gflops"] for r in rows)
            ax.axhline(peak, color=f"C{i % 10}", linestyle=":", linewidth=1,
                       label=f"highest, {name}: {peak:.0f} GFLOP/s")  # fmt: skip
    _log_axes(
        ax,
        (r["size"] for rows in plain.values() for r in rows),
        xlabel="matrix size n (n x n @ n x n)",
        ylabel="GFLOP/s (median)",
    )
    ax.legend(fontsize="small")


def _copy_kind(row: dict[str, Any]) -> str:
    """``host->device, pinned, non_blocking``: what a copy row measured."""
    nb = ", non_blocking" if row["non_blocking"] else ""
    return f"{row['direction']}, {row['memory']}{nb}"


def plot_copy(ax: Any, series: Mapping[str, _Rows]) -> None:
    """Draw :func:`~dlcomp.copy_bandwidth` rows on a matplotlib ``ax``: GB/s by size.

    One line per series and kind of copy (direction, pageable or pinned host
    memory, with or without ``non_blocking``). A kind has one colour in
    every series, its ``non_blocking`` variant the lighter shade of it (and
    crosses for dots); the series are told apart by line style. With one
    series, the lines are labelled by kind and the legend's title names the
    series; with several, each line is labelled ``series: kind`` and the
    legend lists the kinds under a heading per series. The size axis is
    logarithmic, with ticks at the sizes measured. The caller sets the title.

    Args:
        ax: a matplotlib Axes.
        series: legend label -> the rows of :func:`~dlcomp.copy_bandwidth`
            (:class:`~dlcomp.CopyRow`), or the ``copy`` rows of a recorded
            bench run (their ``as_dict()``).

    Examples:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> rows = copy_bandwidth([1, 4], "cpu", min_time=0.01)
        >>> plot_copy(ax, {"cpu": rows})
        >>> [line.get_label() for line in ax.get_lines()]
        ['host->host, pageable']
        >>> ax.get_legend().get_title().get_text()
        'cpu'
        >>> [tick.get_text() for tick in ax.get_xticklabels()]  # the sizes measured
        ['1 MiB', '4 MiB']
    """
    import matplotlib
    from matplotlib.lines import Line2D

    palette = matplotlib.colormaps["tab20"]
    pairs: list[tuple[str, str]] = []  # (direction, memory), in order of first use
    one = len(series) == 1
    handles: list[Any] = []  # the legend: a heading per series, then its lines
    plain = {name: _plain(rows) for name, rows in series.items()}
    for i, (name, rows) in enumerate(plain.items()):
        if not one:
            handles.append(Line2D([], [], linestyle="none", label=name))
        for kind in dict.fromkeys(_copy_kind(r) for r in rows):
            chosen = sorted(
                (r for r in rows if _copy_kind(r) == kind), key=lambda r: r["size_mib"]
            )
            pair = (chosen[0]["direction"], chosen[0]["memory"])
            if pair not in pairs:
                pairs.append(pair)
            nb = chosen[0]["non_blocking"]
            (line,) = ax.plot(
                [r["size_mib"] for r in chosen], [r["gbps"] for r in chosen],
                color=palette(2 * (pairs.index(pair) % 10) + nb),
                linestyle=_STYLES[i % 4], marker="x" if nb else "o",
                label=kind if one else f"{name}: {kind}",
            )  # fmt: skip
            handles.append((line, kind))
    _log_axes(
        ax,
        (r["size_mib"] for rows in plain.values() for r in rows),
        xlabel="tensor size",
        ylabel="GB/s (median)",
        unit=" MiB",
    )
    legend = ax.legend(
        [h[0] if isinstance(h, tuple) else h for h in handles],
        [h[1] if isinstance(h, tuple) else h.get_label() for h in handles],
        fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1),
        title=next(iter(series)) if one else None, title_fontsize="x-small",
    )  # fmt: skip
    for handle, text in zip(handles, legend.get_texts(), strict=True):
        if not isinstance(handle, tuple):
            text.set_fontweight("bold")  # a series' heading


_LOGGING_KINDS = {
    "item": ".item() every step",
    "on_device": "kept on the device, copied once at the end",
}


def plot_logging(
    ax: Any,
    bars: Mapping[str, LoggingCost | dict[str, dict[str, Any]]],
    *,
    steps: int | Mapping[str, int],
) -> None:
    """Draw :func:`~dlcomp.logging_cost` results on a matplotlib ``ax``: two bars per group.

    Per group, the time per logged step of logging with ``.item()`` every
    step and of keeping the log on the device (medians, with error bars
    from the first to the third quartile); under each group, the ratio of
    the two medians. Per step, so that runs of different lengths compare.
    The caller sets the title.

    Args:
        ax: a matplotlib Axes.
        bars: group label (a device, a recorded run) -> the result of
            :func:`~dlcomp.logging_cost` (a :class:`~dlcomp.LoggingCost`), or
            the ``logging`` entry of a recorded bench run (its ``as_dict()``).
        steps: the logged steps per timed run: one number for every group,
            or one per group label.

    Examples:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> from dlcomp import logging_cost
        >>> plot_logging(ax, {"cpu": logging_cost(steps=10, n=8, repeats=3)}, steps=10)
        >>> [t.get_text() for t in ax.get_legend().get_texts()]
        ['.item() every step', 'kept on the device, copied once at the end']
    """  # noqa: E501
    # the logged steps per timed run, for each group: ints >= 1
    if isinstance(steps, Mapping):
        if missing := sorted(set(bars) - set(steps)):
            raise ValueError(f"plot_logging: steps has no entry for {missing}")
        counts = {
            name: check_int(
                steps[name], f"steps[{name!r}]", minimum=1, who="plot_logging"
            )
            for name in bars
        }
    else:
        count = check_int(steps, "steps", minimum=1, who="plot_logging")
        counts = dict.fromkeys(bars, count)
    # per group and kind: (median, q1, q3) in seconds per logged step
    per_step = {
        name: {
            kind: [group[kind][q] / counts[name] for q in ("median", "q1", "q3")]
            for kind in _LOGGING_KINDS
        }
        for name, group in ((name, _plain([bar])[0]) for name, bar in bars.items())
    }  # fmt: skip
    top = max((v[2] for g in per_step.values() for v in g.values()), default=1.0)
    unit, scale = _time_unit(top)
    for offset, (kind, text) in enumerate(_LOGGING_KINDS.items()):
        values = [g[kind] for g in per_step.values()]
        ax.bar([i + 0.4 * offset for i in range(len(bars))],
               [m * scale for m, _, _ in values], width=0.4, color=f"C{offset}",
               yerr=[[(m - q1) * scale for m, q1, _ in values],
                     [(q3 - m) * scale for m, _, q3 in values]],
               capsize=4, label=text)  # fmt: skip
    ticks = [
        f"{name}\n.item() / on device: {g['item'][0] / g['on_device'][0]:.2f}x"
        for name, g in per_step.items()
    ]
    ax.set_xticks([i + 0.2 for i in range(len(bars))], ticks, fontsize="small")
    ax.set_xlim(-0.7, len(bars) + 0.1)  # half a group of room on either side
    ax.set_ylim(0, top * scale * 1.35)  # room for the legend above the bars
    ax.set_ylabel(f"{unit} per logged step\n(median; error bars: quartiles)")
    ax.legend(fontsize="small", loc="upper center")


def _time_unit(seconds: float) -> tuple[str, float]:
    """The unit to show ``seconds`` in (s, ms or µs) and the factor to it."""
    if seconds >= 1:
        return "s", 1.0
    return ("ms", 1e3) if seconds >= 1e-3 else ("µs", 1e6)


def plot_sync(
    ax: Any, series: Mapping[str, Sequence[dict[str, Any]] | Sequence[SyncCost]]
) -> str:
    """Draw :func:`~dlcomp.sync_cost` results on ``ax``: title it, return the title.

    One colour per series: a solid line for the synchronized medians, a
    dashed one for the unsynchronized medians, each with its interquartile
    range as error bars. The title states a finding only when the data show
    it: the two agree (within 10% at every size of every series), or a
    series' clock stopped at least twice too early at its largest size;
    otherwise it names what is plotted.

    Args:
        ax: a matplotlib Axes.
        series: legend label -> the results of :func:`~dlcomp.sync_cost`
            (:class:`~dlcomp.SyncCost`, one per size), or the ``sync`` rows
            of a recorded bench run (their ``as_dict()``).

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> from dlcomp import sync_cost
        >>> fig, ax = plt.subplots()
        >>> plot_sync(ax, {"cpu": sync_cost([32, 64], min_time=0.01)}) == ax.get_title()
        True
        >>> plt.close(fig)
    """
    # by size, whatever order they were measured in: lines left to right, and
    # the title reads each series' largest size last
    plain = {
        name: sorted(_plain(rows), key=lambda row: row["size"])
        for name, rows in series.items()
    }
    for i, (name, rows) in enumerate(plain.items()):
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
    _log_axes(
        ax,
        (row["size"] for rows in plain.values() for row in rows),
        xlabel="matrix size n (n x n @ n x n)",
        ylabel="seconds per product (median)",
    )
    title = _sync_title(plain)
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


# Two medians agree when they are within 10% of each other: the timer check
# here, the titles of the sync and logging plots.
AGREE = 0.10
# A measurement is noisy when its IQR exceeds 20% of its median: the middle
# half of its repeats then spans more than the median +-10%, so the repeats
# alone differ by as much as the 10% by which two medians are called the same.
NOISY = 0.20


def summary(data: dict[str, Any]) -> str:
    """A plain-text summary of one run: the headline numbers, what they mean, and the noise.

    Per device: the highest matmul throughput, the cost of a 1-element add,
    the copy bandwidth of each kind of copy at the largest size, the two
    ways of logging, the timer check (:func:`dlcomp.benchmark` against
    ``torch.utils.benchmark.Timer`` on the same product, the two timed in
    turns) said in words, and the sync check. Then a verdict on the noise:
    a warning when a measurement's spread between repeats (IQR) exceeds 20%
    of its median, or the two timers are more than 10% apart; both usually mean
    that the load on the machine changed while it was measuring.

    Examples:
        >>> print(summary(run_bench(quick=True, devices=["cpu"])))  # doctest: +ELLIPSIS
        dlcomp bench, ..., torch ...
        cpu:
          matmul ... GFLOP/s at n=...
          1-element add ... us
          copy ... GB/s host->host, pageable, 8 MiB
          logging ...
          timer check    ours / torch.utils.benchmark.Timer = ...
        ...
        two devices:    needs two accelerators, this machine has 0: ...
        ...
    """  # noqa: E501
    lines = [f"dlcomp bench, {data['date']}, torch {data['machine']['torch']}"]
    for device, entry in data["results"].items():
        best = max(entry["matmul"], key=lambda r: r["gflops"])
        op = entry["small_op"]["median"]
        logs = entry["logging"]
        item, on_device = logs["item"]["median"], logs["on_device"]["median"]
        lines += [
            f"{device}:",
            f"  matmul         {best['gflops']:10.1f} GFLOP/s at n={best['size']}",
            f"  1-element add  {op * 1e6:10.2f} us",
            *_copy_lines(entry["copy"]),
            f"  logging        {item:10.4f} s with .item(), "
            f"{on_device:.4f} s on the device ({item / on_device:.2f}x)",
            f"  timer check    {_timer_words(entry['timer_check']['ratio'])}",
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
    lines += _noise_lines(data)
    return "\n".join(lines)


def _copy_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per direction and host memory: GB/s at the largest size, non_blocking beside."""
    if not rows:
        return ["  copy           not measured"]
    largest = max(r["size_mib"] for r in rows)
    at = {(r["direction"], r["memory"], r["non_blocking"]): r["gbps"]
          for r in rows if r["size_mib"] == largest}  # fmt: skip
    lines = []
    for direction, memory, non_blocking in at:
        if non_blocking and (direction, memory, False) in at:
            continue  # shown beside the blocking copy
        nb = at.get((direction, memory, True))
        beside = (
            f" (non_blocking: {nb:.1f})" if nb is not None and not non_blocking else ""
        )
        kind = f"{direction}, {memory}{', non_blocking' if non_blocking else ''}"
        gbps = at[direction, memory, non_blocking]
        lines.append(
            f"  copy           {gbps:10.1f} GB/s {kind}, {largest:g} MiB{beside}"
        )
    return lines


def _agrees(ratio: float) -> bool:
    """Whether a ratio, as printed (two decimals), is within ``AGREE`` of 1."""
    return abs(round(ratio, 2) - 1) <= AGREE + 1e-9


def _timer_words(ratio: float) -> str:
    """The timer check's ratio, and what it means."""
    said = f"ours / torch.utils.benchmark.Timer = {ratio:.2f}: "
    if _agrees(ratio):
        return said + f"within {AGREE:.0%}, the two timers agree"
    which = "ours" if ratio > 1 else "Timer"
    return said + (
        f"{which} measured {abs(ratio - 1):.0%} longer; two timers of the same "
        f"product should agree within {AGREE:.0%}, so the load on the machine "
        "most likely changed while they ran"
    )


def _spreads(data: dict[str, Any]) -> list[tuple[float, str]]:
    """IQR / median of every measurement timed in blocks, with what it measured.

    The sync check is left out: it times single calls, and the spread of a
    launch is part of what it shows.
    """
    found = []
    for device, entry in data["results"].items():
        measured = [
            *(r["measurement"] for r in entry["matmul"]),
            entry["small_op"],
            *(r["measurement"] for r in entry["copy"]),
            *entry["logging"].values(),
        ]
        for m in measured:
            if m.get("median", 0) > 0 and "q1" in m and "q3" in m:
                what = f"{device}: {m.get('label', 'a measurement')}"
                found.append(((m["q3"] - m["q1"]) / m["median"], what))
    return found


def _noise_lines(data: dict[str, Any]) -> list[str]:
    """A verdict on the noise of the run: a warning with its reasons, or a calm line."""
    spreads = _spreads(data)
    wide = sorted((s for s in spreads if s[0] > NOISY), reverse=True)
    timers = {device: entry["timer_check"]["ratio"]
              for device, entry in data["results"].items()}  # fmt: skip
    apart = {d: r for d, r in timers.items() if not _agrees(r)}
    if not wide and not apart:
        widest = max(spreads, default=(0.0, "none"))
        return [
            f"noise:          quiet run: every spread between repeats (IQR) is within "
            f"{NOISY:.0%} of its median (widest {widest[0]:.0%}, {widest[1]}), "
            "and the timers agree"
        ]
    lines = [
        "WARNING: a noisy run. Close other programs (on a shared GPU, wait for "
        "other jobs) and rerun before comparing these numbers with another run's:"
    ]
    if wide:
        worst = ", ".join(f"{what} {s:.0%}" for s, what in wide[:3])
        lines.append(
            f"  - {len(wide)} of {len(spreads)} measurements spread more than "
            f"{NOISY:.0%} of their median between repeats (IQR / median: wider "
            f"than the {AGREE:.0%} within which two medians count as equal); the "
            f"widest: {worst}"
        )
    for device, ratio in apart.items():
        lines.append(
            f"  - {device}: the two timers are {abs(ratio - 1):.0%} apart on the same "
            f"product (timer check {ratio:.2f}, expected within {AGREE:.0%} of 1)"
        )
    return lines


BUSY_NOTE = "(measured on a busy machine: times slowed unevenly)"


def show(figure: Any, script: str | None, *, busy: bool = False) -> Path | None:
    """Show a gallery script's figure, or save it where nothing can show it.

    Inside the gallery build or a notebook (``script`` is ``None``:
    ``globals().get("__file__")`` there) and with a display, ``plt.show()``.
    Run as ``python script.py`` with no display (matplotlib's Agg backend),
    the figure is saved next to the script as a PNG and the path printed.
    ``busy`` (a :class:`~dlcomp.CpuShare` said so) adds a note to the first
    title. Needs matplotlib.

    Returns:
        Path | None: the PNG written, or ``None`` when the figure was shown.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt, pathlib, tempfile
        >>> fig, ax = plt.subplots()
        >>> script = pathlib.Path(tempfile.mkdtemp()) / "plot_x.py"
        >>> show(fig, str(script)).name  # doctest: +ELLIPSIS
        figure saved to .../plot_x.png
        'plot_x.png'
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    if busy and figure.axes:
        first = figure.axes[0]
        first.set_title(f"{first.get_title()}\n{BUSY_NOTE}".lstrip("\n"))
    if script is not None and plt.get_backend().lower() == "agg":
        saved = Path(script).with_suffix(".png")
        figure.savefig(saved)
        print(f"figure saved to {saved}")
        return saved
    plt.show()
    return None
