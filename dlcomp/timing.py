"""Section 5.6, "GPUs": timing that is correct on an accelerator.

Accelerators run asynchronously: ``Y = X @ X`` on a GPU returns as soon as
the work is *queued*. A timer that reads the clock then measures the queueing,
not the work. :func:`~dlcomp.benchmark` synchronizes the device before every
clock reading, warms up (the first call pays for allocation and kernel
selection), repeats until enough time has passed, and reports the median
with its interquartile range.

In torch 2.13, :class:`torch.utils.benchmark.Timer` synchronizes the
current accelerator too. This module exists beside it for what the chapter
needs: the same code on every device (synchronization through
:mod:`torch.accelerator`, a plain Python callable), explicit warm-up, the
median *with its interquartile range*, results as data
(:class:`~dlcomp.Measurement`) that the chapter's plots and ``python -m
dlcomp bench`` store as JSON, and comparisons that interleave their two
sides (A, B, A, B, ...) so that a change of load hits both alike:
:func:`~dlcomp.interleaved` for statements, :func:`~dlcomp.alternate` for
whole measurements (two timers, say).

The chapter's measurements built on this timer are in
:mod:`dlcomp.measurements`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from dlcomp._checks import check_callables, check_float, check_int
from dlcomp.devices import cpu

__all__ = [
    "CpuShare",
    "Measurement",
    "alternate",
    "benchmark",
    "interleaved",
    "synchronize",
]


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until all work queued on ``device`` has finished (nothing to do on a CPU).

    Examples:
        Read the clock only after the work is done, not when it is queued:

        >>> from dlcomp import try_gpu
        >>> device = try_gpu()
        >>> X = torch.rand(256, 256, device=device)
        >>> start = time.perf_counter()
        >>> Y = X @ X  # on an accelerator: queued, not yet done
        >>> synchronize(device)  # wait for it (on the CPU: returns at once)
        >>> seconds = time.perf_counter() - start
        >>> print(f"256x256 matmul on {device.type}: {seconds * 1e3:.3f} ms")  # doctest: +ELLIPSIS
        256x256 matmul on ...: ... ms
    """  # noqa: E501
    device = torch.device(device) if device is not None else cpu()
    if device.type in ("cpu", "meta"):
        return
    torch.accelerator.synchronize(device)


@dataclass(frozen=True)
class Measurement:
    """Times of repeated runs of one statement, and their statistics.

    Attributes:
        label: what was measured.
        device: where it ran.
        times: seconds per call, one entry per timed block.
        number: calls per timed block (the block time divided by it gives
            each entry of ``times``).

    Examples:
        >>> m = Measurement("demo", "cpu", (1.0, 2.0, 3.0, 4.0, 100.0), number=1)
        >>> m.median, m.iqr, m.runs
        (3.0, 2.0, 5)
    """

    label: str
    device: str
    times: tuple[float, ...]
    number: int = 1

    @property
    def runs(self) -> int:
        """How many timed blocks."""
        return len(self.times)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.times)

    @property
    def q1(self) -> float:
        """First quartile of the seconds per call."""
        return _quantile(self.times, 0.25)

    @property
    def q3(self) -> float:
        """Third quartile of the seconds per call."""
        return _quantile(self.times, 0.75)

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 - q1``: the spread of the middle half."""
        return self.q3 - self.q1

    def __str__(self) -> str:
        return (
            f"{self.label} on {self.device}: median {_fmt(self.median)} "
            f"(IQR {_fmt(self.iqr)}, {self.runs} runs x {self.number})"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the fields plus the statistics."""
        data = asdict(self)
        data["times"] = list(self.times)
        data.update(median=self.median, q1=self.q1, q3=self.q3, runs=self.runs)
        return data


def _quantile(values: Iterable[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _fmt(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _check_counts(
    who: str, *, warmup: int, min_runs: int, max_runs: int
) -> tuple[int, int, int]:
    """The block counts of a timing call, checked by the library's integer rule."""
    warmup = check_int(warmup, "warmup", minimum=0, who=who)
    min_runs = check_int(min_runs, "min_runs", minimum=1, who=who)
    max_runs = check_int(max_runs, "max_runs", minimum=1, who=who)
    if max_runs < min_runs:
        raise ValueError(
            f"{who}: max_runs must be >= min_runs ({min_runs}), got {max_runs}"
        )
    return warmup, min_runs, max_runs


def _check_seconds(who: str, **seconds: float) -> tuple[float, ...]:
    """Durations in seconds (min_time, min_block): finite numbers >= 0."""
    return tuple(check_float(v, k, minimum=0, who=who) for k, v in seconds.items())


def benchmark(
    fn: Callable[[], Any],
    *,
    label: str = "",
    device: torch.device | str | None = None,
    warmup: int = 2,
    min_time: float = 0.2,
    min_runs: int = 7,
    max_runs: int = 1000,
    min_block: float = 1e-3,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> Measurement:
    """Time ``fn()`` correctly on any device: synchronize, warm up, repeat, take the median.

    1. Warm up: call ``fn`` ``warmup`` times (at least once), then synchronize.
    2. Choose ``number``, the calls per timed block, doubling it until one
       block takes at least ``min_block`` seconds (so that a tiny statement
       is not lost in the clock's resolution).
    3. Time blocks, synchronizing the device before reading the clock at the
       end of each, until at least ``min_runs`` blocks and ``min_time``
       seconds (or ``max_runs`` blocks).

    Args:
        fn: the statement, as a callable without arguments.
        label: a name for it.
        device: the device to synchronize (default: the CPU, nothing to wait for).
        warmup: untimed calls first.
        min_time: timed seconds to collect at least.
        min_runs: timed blocks to collect at least.
        max_runs: timed blocks at most.
        min_block: the shortest acceptable block, in seconds.
        clock: the clock (tests pass a fake one).
        sync: the synchronization (default: :func:`synchronize` on ``device``).

    Returns:
        Measurement: seconds per call of every block, and their statistics.

    Examples:
        >>> x = torch.rand(64, 64)
        >>> m = benchmark(lambda: x @ x, label="64x64 matmul", min_time=0.01)
        >>> print(m)  # doctest: +ELLIPSIS
        64x64 matmul on cpu: median ... (IQR ..., ... runs x ...)
    """  # noqa: E501
    if not callable(fn):
        raise TypeError(f"benchmark: fn must be callable, got {type(fn).__name__}")
    warmup, min_runs, max_runs = _check_counts(
        "benchmark", warmup=warmup, min_runs=min_runs, max_runs=max_runs
    )
    min_time, min_block = _check_seconds(
        "benchmark", min_time=min_time, min_block=min_block
    )
    device = torch.device(device) if device is not None else cpu()
    sync = sync if sync is not None else (lambda: synchronize(device))
    for _ in range(max(warmup, 1)):
        fn()
    sync()
    number, elapsed = _calibrate(fn, sync, clock, min_block)
    times = [elapsed / number]
    total = elapsed
    while (len(times) < min_runs or total < min_time) and len(times) < max_runs:
        elapsed = _block(fn, number, sync, clock)
        times.append(elapsed / number)
        total += elapsed
    return Measurement(
        label or getattr(fn, "__name__", "fn"), str(device), tuple(times), number
    )


def _block(
    fn: Callable[[], Any],
    number: int,
    sync: Callable[[], None],
    clock: Callable[[], float],
) -> float:
    """Seconds for ``number`` calls of ``fn``, synchronized before the end."""
    start = clock()
    for _ in range(number):
        fn()
    sync()
    return clock() - start


def _calibrate(
    fn: Callable[[], Any],
    sync: Callable[[], None],
    clock: Callable[[], float],
    min_block: float,
) -> tuple[int, float]:
    """Calls per block, doubled until a block lasts ``min_block``; its time."""
    number = 1
    while (elapsed := _block(fn, number, sync, clock)) < min_block and number < 2**20:
        number *= 2
    return number, elapsed


def interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    device: torch.device | str | None = None,
    warmup: int = 2,
    min_time: float = 0.2,
    min_runs: int = 7,
    max_runs: int = 1000,
    min_block: float = 1e-3,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> dict[str, Measurement]:
    """:func:`benchmark` for statements to compare: their blocks alternate A, B, A, B...

    Timing all of A and then all of B lets a change of load (another job, a
    clock that throttles) fall on one side only; alternating the blocks lets
    it fall on both. Each statement is warmed up and gets its own calls per
    block (as in :func:`benchmark`); then rounds of one block of each, in
    the order of ``fns``, repeat until every statement has at least
    ``min_runs`` blocks and ``min_time`` seconds on average (or ``max_runs``
    blocks).

    Args:
        fns: label -> the statement, as a callable without arguments.
        device: the device to synchronize (default: the CPU).
        warmup: untimed calls of each statement first.
        min_time: timed seconds to collect at least, per statement.
        min_runs: timed blocks at least, per statement.
        max_runs: timed blocks at most, per statement.
        min_block: the shortest acceptable block, in seconds.
        clock: the clock (tests pass a fake one).
        sync: the synchronization (default: :func:`synchronize` on ``device``).

    Returns:
        dict[str, Measurement]: one per label, in the order of ``fns``, each
        with as many runs as the others.

    Examples:
        >>> one, many = torch.ones(1), torch.ones(1000)
        >>> timed = interleaved({
        ...     "1000 adds of 1 number": lambda: [one + one for _ in range(1000)],
        ...     "1 add of 1000 numbers": lambda: many + many,
        ... }, min_time=0.01)
        >>> small, large = timed.values()
        >>> print(small)  # doctest: +ELLIPSIS
        1000 adds of 1 number on cpu: median ... (IQR ..., ... runs x ...)
        >>> small.runs == large.runs
        True
    """
    check_callables(fns, "fns", who="interleaved")
    warmup, min_runs, max_runs = _check_counts(
        "interleaved", warmup=warmup, min_runs=min_runs, max_runs=max_runs
    )
    min_time, min_block = _check_seconds(
        "interleaved", min_time=min_time, min_block=min_block
    )
    device = torch.device(device) if device is not None else cpu()
    wait = sync if sync is not None else (lambda: synchronize(device))
    for fn in fns.values():
        for _ in range(max(warmup, 1)):
            fn()
    wait()
    numbers = {
        name: _calibrate(fn, wait, clock, min_block)[0] for name, fn in fns.items()
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    total = 0.0
    while (rounds := len(next(iter(times.values())))) < max_runs and (
        rounds < min_runs or total < min_time * len(fns)
    ):
        for name, fn in fns.items():
            elapsed = _block(fn, numbers[name], wait, clock)
            times[name].append(elapsed / numbers[name])
            total += elapsed
    return {
        name: Measurement(name, str(device), tuple(times[name]), numbers[name])
        for name in fns
    }


def alternate(
    measures: Mapping[str, Callable[[], float]],
    *,
    rounds: int = 7,
    device: torch.device | str | None = None,
) -> dict[str, Measurement]:
    """Whole measurements to compare, taken in turns, round after round.

    Each callable of ``measures`` measures once and returns seconds (a
    :func:`benchmark` median, a :class:`torch.utils.benchmark.Timer`
    median); a round calls each in the order of ``measures``, and the
    rounds repeat, so that a change of load falls on every side alike. Use
    it to compare timers, or statements that each need a whole measurement;
    to compare two statements, :func:`interleaved` alternates their blocks.

    Args:
        measures: label -> a measurement that returns seconds.
        rounds: how many times each is called.
        device: where they ran, for the measurements' ``device``
            (default: the CPU).

    Returns:
        dict[str, Measurement]: one per label, in order; its ``times`` are
        the seconds of each round.

    Examples:
        >>> A = torch.rand(64, 64)
        >>> timed = alternate({
        ...     "min_time 0.01": lambda: benchmark(lambda: A @ A, min_time=0.01).median,
        ...     "min_time 0.02": lambda: benchmark(lambda: A @ A, min_time=0.02).median,
        ... }, rounds=3)
        >>> [(m.label, m.runs) for m in timed.values()]
        [('min_time 0.01', 3), ('min_time 0.02', 3)]
    """
    check_callables(measures, "measures", who="alternate")
    rounds = check_int(rounds, "rounds", minimum=1, who="alternate")
    seconds: dict[str, list[float]] = {label: [] for label in measures}
    for _ in range(rounds):
        for label, measure in measures.items():
            seconds[label].append(measure())
    where = str(torch.device(device) if device is not None else cpu())
    return {
        label: Measurement(label, where, tuple(values))
        for label, values in seconds.items()
    }


class CpuShare:
    """Whether other jobs took the CPU from a measurement: a context manager.

    One thread that nothing makes wait runs all the wall-clock time it
    measures; on a machine shared with other jobs it runs less, and timings
    taken meanwhile are slowed unevenly. After the ``with`` block, ``share``
    is the process's CPU time over the wall-clock time, and ``str()`` says it
    in a line a page or a script prints. It means something for measurements
    on the CPU with one thread (``torch.set_num_threads(1)``): on an
    accelerator the process waits for the device, and with several threads
    the share may exceed 1.

    Examples:
        >>> with CpuShare() as cpu:
        ...     _ = sum(range(100_000))
        >>> 0 < cpu.share
        True
        >>> str(cpu).startswith("this process ran ")
        True
    """

    BUSY_BELOW = 0.9
    """A share below this counts as a busy machine."""

    def __init__(self) -> None:
        self.share: float | None = None
        self._start = (0.0, 0.0)

    def __enter__(self) -> CpuShare:
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = self._start
        elapsed = time.perf_counter() - wall
        self.share = (time.process_time() - cpu) / elapsed if elapsed > 0 else 1.0

    @property
    def busy(self) -> bool:
        """Whether other jobs took enough of the CPU to distort the timings."""
        if self.share is None:
            raise RuntimeError("CpuShare: use it as `with CpuShare() as cpu:` first")
        return self.share < self.BUSY_BELOW

    def __str__(self) -> str:
        busy = ": the machine was busy, the times are slowed unevenly"
        return f"this process ran {self.share:.0%} of the time it measured" + (
            busy if self.busy else ""
        )
