"""Section 5.6, "GPUs": timing that is correct on an accelerator, and the chapter's measurements.

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
sides (A, B, A, B, ...) so that a change of load hits both alike.

The measurements the chapter needs, each returning data, never a plot:
:func:`~dlcomp.matmul_throughput`, :func:`~dlcomp.small_op_overhead`,
:func:`~dlcomp.copy_bandwidth`, :func:`~dlcomp.logging_cost` (exercise 3)
and :func:`~dlcomp.two_devices` (exercise 4).
"""  # noqa: E501

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from dlcomp.devices import cpu, gpu, num_gpus

__all__ = [
    "Measurement",
    "benchmark",
    "copy_bandwidth",
    "logging_cost",
    "matmul_throughput",
    "small_op_overhead",
    "synchronize",
    "two_devices",
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


def _interleaved(
    fns: dict[str, Callable[[], Any]],
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
    it fall on both. ``min_time`` is per statement; the keys of ``fns`` are
    the labels.
    """
    device = torch.device(device) if device is not None else cpu()
    sync = sync if sync is not None else (lambda: synchronize(device))
    for fn in fns.values():
        for _ in range(max(warmup, 1)):
            fn()
    sync()
    numbers = {
        name: _calibrate(fn, sync, clock, min_block)[0] for name, fn in fns.items()
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    total = 0.0
    while (rounds := len(next(iter(times.values())))) < max_runs and (
        rounds < min_runs or total < min_time * len(fns)
    ):
        for name, fn in fns.items():
            elapsed = _block(fn, numbers[name], sync, clock)
            times[name].append(elapsed / numbers[name])
            total += elapsed
    return {
        name: Measurement(name, str(device), tuple(times[name]), numbers[name])
        for name in fns
    }


# --- the chapter's measurements ------------------------------------------------------


def matmul_throughput(
    sizes: Iterable[int],
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    min_time: float = 0.1,
) -> list[dict[str, Any]]:
    """Matrix multiplication speed over square sizes, in GFLOP/s.

    An ``n x n`` by ``n x n`` product costs ``2 n^3`` floating point
    operations; GFLOP/s is that divided by the median time.

    Args:
        sizes: the ``n`` to measure.
        device: where to compute.
        dtype: the element type.
        min_time: seconds of timing per size.

    Returns:
        list[dict]: per size: ``size``, ``gflops``, and the
        :class:`Measurement` as a dict under ``"measurement"``.

    Examples:
        >>> for row in matmul_throughput([16, 32], min_time=0.01):
        ...     print(f"{row['size']:>3}: {row['gflops']:.2f} GFLOP/s")  # doctest: +ELLIPSIS
         16: ... GFLOP/s
         32: ... GFLOP/s
    """  # noqa: E501
    device = torch.device(device)
    rows = []
    for n in sizes:
        A = torch.rand(n, n, device=device, dtype=dtype)
        B = torch.rand(n, n, device=device, dtype=dtype)
        m = benchmark(
            lambda A=A, B=B: A @ B,
            label=f"matmul {n}",
            device=device,
            min_time=min_time,
        )
        rows.append(
            {"size": n, "gflops": 2 * n**3 / m.median / 1e9, "measurement": m.as_dict()}
        )
    return rows


def small_op_overhead(
    device: torch.device | str = "cpu", *, min_time: float = 0.1
) -> Measurement:
    """The cost of one tiny operation (adding two 1-element tensors), launch included.

    On a GPU this is mostly the fixed cost of launching a kernel, which is
    why many small operations are slow and one large one is fast.

    Examples:
        >>> m = small_op_overhead(min_time=0.01)
        >>> print(m)  # doctest: +ELLIPSIS
        1-element add on cpu: median ... (IQR ..., ... runs x ...)
        >>> print(f"about {1 / m.median:,.0f} such additions per second")  # doctest: +ELLIPSIS
        about ... such additions per second
    """  # noqa: E501
    device = torch.device(device)
    a = torch.ones(1, device=device)
    b = torch.ones(1, device=device)
    return benchmark(
        lambda: a + b, label="1-element add", device=device, min_time=min_time
    )


def copy_bandwidth(
    sizes_mib: Iterable[float],
    device: torch.device | str,
    *,
    min_time: float = 0.1,
) -> list[dict[str, Any]]:
    """Host <-> device copy speed in GB/s: pageable vs pinned, with and without ``non_blocking``.

    Every copy goes into a destination allocated beforehand
    (``destination.copy_(source)``), so the time is the transfer's, not an
    allocation's. The host side is a pageable or a pinned (page-locked)
    buffer: the source of a host-to-device copy, the destination of a
    device-to-host copy. The GPU can copy pinned memory directly, and only
    then can ``non_blocking=True`` overlap the copy with other work. For each
    direction and size, the four configurations are timed interleaved.
    With ``device="cpu"`` (no accelerator) only a host-to-host copy into a
    preallocated buffer is measured, as a reference.

    Args:
        sizes_mib: tensor sizes in MiB.
        device: the accelerator (or ``"cpu"``).
        min_time: seconds of timing per configuration.

    Returns:
        list[dict]: per size and configuration: ``size_mib``, ``direction``,
        ``memory`` (``"pageable"``/``"pinned"``: the host buffer), ``non_blocking``,
        ``gbps``, and the measurement.

    Examples:
        >>> rows = copy_bandwidth([1], "cpu", min_time=0.01)
        >>> [(r["direction"], r["memory"]) for r in rows]
        [('host->host', 'pageable')]
    """  # noqa: E501
    device = torch.device(device)
    rows = []
    for size in sizes_mib:
        n = int(size * 2**20 / 4)
        if device.type == "cpu":
            source, destination = torch.rand(n), torch.empty(n)
            m = benchmark(
                lambda d=destination, s=source: d.copy_(s),
                label=f"copy_ {size} MiB", min_time=min_time,
            )  # fmt: skip
            rows.append(_copy_row(size, "host->host", "pageable", False, m))
            continue
        host = {"pageable": torch.rand(n), "pinned": torch.rand(n).pin_memory()}
        on_device = torch.rand(n, device=device)
        configs = [(memory, nb) for memory in host for nb in (False, True)]
        for direction in ("host->device", "device->host"):
            fns = {}
            for memory, nb in configs:
                dst, src = (
                    (on_device, host[memory])
                    if direction == "host->device"
                    else (host[memory], on_device)
                )
                label = f"{direction} {memory} non_blocking={nb} {size} MiB"
                fns[label] = lambda dst=dst, src=src, nb=nb: dst.copy_(
                    src, non_blocking=nb
                )
            timed = _interleaved(fns, device=device, min_time=min_time)
            for (memory, nb), m in zip(configs, timed.values(), strict=True):
                rows.append(_copy_row(size, direction, memory, nb, m))
    return rows


def _copy_row(
    size: float, direction: str, memory: str, non_blocking: bool, m: Measurement
) -> dict[str, Any]:
    return {
        "size_mib": size,
        "direction": direction,
        "memory": memory,
        "non_blocking": non_blocking,
        "gbps": size * 2**20 / m.median / 1e9,
        "measurement": m.as_dict(),
    }


def logging_cost(
    device: torch.device | str = "cpu",
    *,
    steps: int = 1000,
    n: int = 100,
    repeats: int = 5,
) -> dict[str, Measurement]:
    """Exercise 3: log with ``.item()`` every step, or keep the log on the device.

    Runs ``steps`` independent matrix products ``A @ B`` of ``n x n`` random
    matrices (not a chain ``X = X @ A``, whose entries shrink or grow
    geometrically until they underflow or overflow) and logs the Frobenius
    norm of each product, two ways:

    - ``"item"``: ``norm.item()`` every step, a copy to the host and a wait
      for the device, every step;
    - ``"on_device"``: append the norm tensor to a list and copy all of them
      to the host once, at the end.

    Both log the same numbers (the matrices come from a generator seeded
    with 0). The two are timed interleaved (item, on_device, item, ...). On
    a GPU the per-step synchronization of ``"item"`` stalls the queue; on a
    CPU there is nothing to wait for.

    Returns:
        dict: ``{"item": Measurement, "on_device": Measurement}`` (seconds
        per whole run of ``steps`` steps).

    Examples:
        >>> result = logging_cost(steps=10, n=8, repeats=3)
        >>> print(result["item"])  # doctest: +ELLIPSIS
        log item on cpu: median ... (IQR ..., 3 runs x 1)
        >>> ratio = result["item"].median / result["on_device"].median
        >>> print(f".item() every step / log on the device: {ratio:.2f}x")  # doctest: +ELLIPSIS
        .item() every step / log on the device: ...x
    """  # noqa: E501
    with_item, on_device = _logging_runs(device, steps=steps, n=n)
    timed = _interleaved(
        {"log item": with_item, "log on_device": on_device},
        device=device, warmup=1, min_runs=repeats, max_runs=repeats,
        min_time=0.0, min_block=0.0,
    )  # fmt: skip
    return dict(zip(("item", "on_device"), timed.values(), strict=True))


def _logging_runs(
    device: torch.device | str, *, steps: int, n: int
) -> tuple[Callable[[], list[float]], Callable[[], list[float]]]:
    """The two ways of logging of :func:`logging_cost`; each returns its log.

    Both logs are lists of floats, one per step, from the same seeded matrices.
    """
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    A = torch.rand(n, n, generator=generator).to(device)
    B = torch.rand(n, n, generator=generator).to(device)

    def with_item() -> list[float]:
        log = []
        for _ in range(steps):
            Y = A @ B  # (n, n), a new product every step
            log.append(torch.linalg.norm(Y).item())
        return log

    def on_device() -> list[float]:
        log = []
        for _ in range(steps):
            Y = A @ B
            log.append(torch.linalg.norm(Y))
        return torch.stack(log).cpu().tolist()

    return with_item, on_device


def two_devices(*, n: int = 2048, steps: int = 20, repeats: int = 3) -> dict[str, Any]:
    """Exercise 4: matrix products on two devices at once vs one after the other.

    Needs two accelerators. PyTorch queues work asynchronously, so issuing
    the products for device 0 and device 1 in one loop keeps both busy at
    the same time; with one after the other, each waits for the other.

    Both ways compute the same products (``X0 @ X0`` on device 0 and
    ``X1 @ X1`` on device 1, ``steps`` times each, from matrices drawn by a
    generator seeded with 0); only the order in which they are issued differs.

    Returns:
        dict: with two devices, ``{"sequential": Measurement, "concurrent":
        Measurement, "speedup": float}`` (``speedup`` is the sequential
        median divided by the concurrent one); otherwise ``{"skipped": reason}``.

    Examples:
        >>> result = two_devices(n=256, steps=2)
        >>> speedup = "speedup" in result and f"speedup {result['speedup']:.2f}"
        >>> print("two devices:", speedup or result["skipped"])  # doctest: +ELLIPSIS
        two devices: ...
    """
    if num_gpus() < 2:
        return {
            "skipped": f"needs two accelerators, this machine has {num_gpus()}: "
            "the exercise compares running on both at once with one after the other"
        }
    d0, d1 = gpu(0), gpu(1)
    _, sequential, concurrent, both = _two_device_runs(d0, d1, n=n, steps=steps)
    kwargs = {
        "warmup": 1,
        "min_runs": repeats,
        "max_runs": repeats,
        "min_time": 0.0,
        "min_block": 0.0,
        "sync": both,
    }
    seq = benchmark(sequential, label="one after the other", device=d0, **kwargs)
    con = benchmark(concurrent, label="both at once", device=d0, **kwargs)
    return {"sequential": seq, "concurrent": con, "speedup": seq.median / con.median}


def _two_device_runs(
    d0: torch.device, d1: torch.device, *, n: int, steps: int
) -> tuple[
    tuple[torch.Tensor, torch.Tensor],
    Callable[[], tuple[torch.Tensor, torch.Tensor]],
    Callable[[], tuple[torch.Tensor, torch.Tensor]],
    Callable[[], None],
]:
    """The inputs ``(X0, X1)``, the two ways of :func:`two_devices`, and their sync.

    Each way returns its last products ``(X0 @ X0, X1 @ X1)``.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    X0 = torch.rand(n, n, generator=generator).to(d0)  # (n, n) on device 0
    X1 = torch.rand(n, n, generator=generator).to(d1)  # (n, n) on device 1

    def both() -> None:
        synchronize(d0)
        synchronize(d1)

    def sequential() -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(steps):
            Y0 = X0 @ X0
        synchronize(d0)
        for _ in range(steps):
            Y1 = X1 @ X1
        synchronize(d1)
        return Y0, Y1

    def concurrent() -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(steps):
            Y0 = X0 @ X0  # queued on device 0 ...
            Y1 = X1 @ X1  # ... while this one is queued on device 1
        both()
        return Y0, Y1

    return (X0, X1), sequential, concurrent, both
