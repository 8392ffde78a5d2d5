"""Section 5.6, "GPUs": the chapter's measurements, each returning data, never a plot.

Every measurement is timed with :func:`~dlcomp.benchmark` (or, for a
comparison, :func:`~dlcomp.interleaved`) and returns a frozen result type
whose ``as_dict()`` is the plain data ``python -m dlcomp bench`` writes as
JSON:

- :func:`~dlcomp.matmul_throughput`: GFLOP/s of square matrix products by
  size (exercise 1), a :class:`~dlcomp.MatmulRow` per size;
- :func:`~dlcomp.small_op_overhead`: the cost of one tiny operation;
- :func:`~dlcomp.copy_bandwidth`: host <-> device copies in GB/s, a
  :class:`~dlcomp.CopyRow` per size and kind of copy;
- :func:`~dlcomp.logging_cost`: logging with ``.item()`` every step or on
  the device (exercise 3), a :class:`~dlcomp.LoggingCost`;
- :func:`~dlcomp.sync_cost`: one product timed with and without
  synchronizing the device, a :class:`~dlcomp.SyncCost` per size;
- :func:`~dlcomp.two_devices`: two products on two accelerators at once
  or in sequence on one (exercise 4), a :class:`~dlcomp.TwoDevices`, or
  :class:`~dlcomp.MeasurementSkipped` on a machine with fewer than two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from dlcomp._checks import check_int, check_sizes
from dlcomp.devices import gpu, num_gpus
from dlcomp.timing import (
    Measurement,
    _check_counts,
    _check_seconds,
    benchmark,
    interleaved,
    synchronize,
)

__all__ = [
    "CopyRow",
    "LoggingCost",
    "MatmulRow",
    "MeasurementSkipped",
    "SyncCost",
    "TwoDevices",
    "copy_bandwidth",
    "logging_cost",
    "matmul_throughput",
    "small_op_overhead",
    "sync_cost",
    "two_devices",
]


class MeasurementSkipped(RuntimeError):
    """A measurement this machine cannot make; the message says why.

    Examples:
        >>> from dlcomp import num_gpus
        >>> try:
        ...     result = two_devices(n=64, steps=1, repeats=1)
        ... except MeasurementSkipped as why:
        ...     result = str(why)
        >>> num_gpus() >= 2 or result.startswith("needs two accelerators")
        True
    """


def _per(amount: float, seconds: float) -> float:
    """``amount / seconds``: inf (not an error) when a clock too coarse saw 0 s."""
    if seconds > 0:
        return amount / seconds
    return math.inf if amount > 0 else math.nan


@dataclass(frozen=True)
class MatmulRow:
    """One size of :func:`matmul_throughput`: the timing of ``n x n @ n x n``.

    Attributes:
        size: the matrix size ``n``.
        measurement: seconds per product.
    """

    size: int
    measurement: Measurement

    @property
    def gflops(self) -> float:
        """``2 n^3`` floating point operations over the median time, in GFLOP/s."""
        return _per(2 * self.size**3, self.measurement.median) / 1e9

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: ``size``, ``gflops`` and the measurement."""
        return {
            "size": self.size,
            "gflops": self.gflops,
            "measurement": self.measurement.as_dict(),
        }


def matmul_throughput(
    sizes: Iterable[int],
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    min_time: float = 0.1,
) -> list[MatmulRow]:
    """Matrix multiplication speed over square sizes, in GFLOP/s.

    An ``n x n`` by ``n x n`` product costs ``2 n^3`` floating point
    operations; GFLOP/s is that divided by the median time.

    Args:
        sizes: the ``n`` to measure.
        device: where to compute.
        dtype: the element type.
        min_time: seconds of timing per size.

    Returns:
        list[MatmulRow]: one per size, in order.

    Examples:
        >>> for row in matmul_throughput([16, 32], min_time=0.01):
        ...     print(f"{row.size:>3}: {row.gflops:.2f} GFLOP/s, IQR {row.measurement.iqr:.1e} s")  # doctest: +ELLIPSIS
         16: ... GFLOP/s, IQR ... s
         32: ... GFLOP/s, IQR ... s
    """  # noqa: E501
    device = torch.device(device)
    rows = []
    for n in check_sizes(sizes, "sizes", who="matmul_throughput"):
        A = torch.rand(n, n, device=device, dtype=dtype)
        B = torch.rand(n, n, device=device, dtype=dtype)

        def product(A: torch.Tensor = A, B: torch.Tensor = B) -> torch.Tensor:
            return A @ B

        m = benchmark(product, label=f"matmul {n}", device=device, min_time=min_time)
        rows.append(MatmulRow(n, m))
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


@dataclass(frozen=True)
class CopyRow:
    """One size and kind of copy of :func:`copy_bandwidth`.

    Attributes:
        size_mib: the tensor size in MiB.
        direction: ``"host->device"``, ``"device->host"`` or ``"host->host"``.
        memory: the host buffer, ``"pageable"`` or ``"pinned"``.
        non_blocking: whether the copy was asked not to block.
        measurement: seconds per copy.
    """

    size_mib: float
    direction: str
    memory: str
    non_blocking: bool
    measurement: Measurement

    @property
    def gbps(self) -> float:
        """Bytes copied over the median time, in GB/s."""
        return _per(self.size_mib * 2**20, self.measurement.median) / 1e9

    @property
    def kind(self) -> str:
        """What was copied, e.g. ``host->device, pinned, non_blocking``."""
        nb = ", non_blocking" if self.non_blocking else ""
        return f"{self.direction}, {self.memory}{nb}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the fields, ``gbps`` and the measurement."""
        return {
            "size_mib": self.size_mib,
            "direction": self.direction,
            "memory": self.memory,
            "non_blocking": self.non_blocking,
            "gbps": self.gbps,
            "measurement": self.measurement.as_dict(),
        }


def copy_bandwidth(
    sizes_mib: Iterable[float],
    device: torch.device | str,
    *,
    min_time: float = 0.1,
) -> list[CopyRow]:
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
        list[CopyRow]: per size, per direction, per configuration.

    Examples:
        >>> rows = copy_bandwidth([1], "cpu", min_time=0.01)
        >>> [row.kind for row in rows], rows[0].gbps > 0
        (['host->host, pageable'], True)
    """  # noqa: E501
    sizes = check_sizes(sizes_mib, "sizes_mib", who="copy_bandwidth", real=True)
    device = torch.device(device)
    rows = []
    for i, size in enumerate(sizes):
        n = int(size * 2**20 / 4)
        if n < 1:
            raise ValueError(
                f"copy_bandwidth: sizes_mib[{i}] is {size} MiB, less than one "
                "float32 (4 bytes): nothing to copy"
            )
        if device.type == "cpu":
            source, destination = torch.rand(n), torch.empty(n)
            m = benchmark(
                _copier(destination, source, False),
                label=f"copy_ {size} MiB", min_time=min_time,
            )  # fmt: skip
            rows.append(CopyRow(size, "host->host", "pageable", False, m))
            continue
        host = {"pageable": torch.rand(n), "pinned": torch.rand(n).pin_memory()}
        on_device = torch.rand(n, device=device)
        configs = [(memory, nb) for memory in host for nb in (False, True)]
        for direction in ("host->device", "device->host"):
            fns: dict[str, Callable[[], Any]] = {}
            for memory, nb in configs:
                dst, src = (
                    (on_device, host[memory])
                    if direction == "host->device"
                    else (host[memory], on_device)
                )
                label = f"{direction} {memory} non_blocking={nb} {size} MiB"
                fns[label] = _copier(dst, src, nb)
            timed = interleaved(fns, device=device, min_time=min_time)
            for (memory, nb), m in zip(configs, timed.values(), strict=True):
                rows.append(CopyRow(size, direction, memory, nb, m))
    return rows


def _copier(
    dst: torch.Tensor, src: torch.Tensor, non_blocking: bool
) -> Callable[[], torch.Tensor]:
    """``dst.copy_(src, non_blocking=...)`` as a statement to time."""
    return lambda: dst.copy_(src, non_blocking=non_blocking)


@dataclass(frozen=True)
class LoggingCost:
    """The two ways of logging of :func:`logging_cost`, timed interleaved.

    Attributes:
        item: seconds per run, ``.item()`` every step.
        on_device: seconds per run, the log kept on the device.
    """

    item: Measurement
    on_device: Measurement

    @property
    def ratio(self) -> float:
        """Median with ``.item()`` over median on the device."""
        return _per(self.item.median, self.on_device.median)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: ``{"item": ..., "on_device": ...}``, measurements."""
        return {"item": self.item.as_dict(), "on_device": self.on_device.as_dict()}


def logging_cost(
    device: torch.device | str = "cpu",
    *,
    steps: int = 1000,
    n: int = 100,
    repeats: int = 5,
) -> LoggingCost:
    """Exercise 3: log with ``.item()`` every step, or keep the log on the device.

    Runs ``steps`` independent matrix products ``A_i @ B_i`` of ``n x n``
    random matrices, all drawn before the timing starts (a new pair every
    step; not a chain ``X = X @ A``, whose entries shrink or grow
    geometrically until they underflow or overflow), and logs the Frobenius
    norm of each product, two ways:

    - ``item``: ``norm.item()`` every step, a copy to the host and a wait
      for the device, every step;
    - ``on_device``: append the norm tensor to a list and copy all of them
      to the host once, at the end.

    Both log the same numbers, one different norm per step (the matrices
    come from a generator seeded with 0). The two are timed interleaved (item, on_device, item, ...). On
    a GPU the per-step synchronization of ``item`` stalls the queue; on a
    CPU there is nothing to wait for.

    Returns:
        LoggingCost: seconds per whole run of ``steps`` steps, each way.

    Examples:
        >>> result = logging_cost(steps=10, n=8, repeats=3)
        >>> print(result.item)  # doctest: +ELLIPSIS
        log item on cpu: median ... (IQR ..., 3 runs x 1)
        >>> print(f".item() every step / log on the device: {result.ratio:.2f}x")  # doctest: +ELLIPSIS
        .item() every step / log on the device: ...x
    """  # noqa: E501
    steps = check_int(steps, "steps", minimum=1, who="logging_cost")
    n = check_int(n, "n", minimum=1, who="logging_cost")
    repeats = check_int(repeats, "repeats", minimum=1, who="logging_cost")
    with_item, on_device = _logging_runs(device, steps=steps, n=n)
    timed = interleaved(
        {"log item": with_item, "log on_device": on_device},
        device=device, warmup=1, min_runs=repeats, max_runs=repeats,
        min_time=0.0, min_block=0.0,
    )  # fmt: skip
    return LoggingCost(timed["log item"], timed["log on_device"])


def _logging_runs(
    device: torch.device | str, *, steps: int, n: int
) -> tuple[Callable[[], list[float]], Callable[[], list[float]]]:
    """The two ways of logging of :func:`logging_cost`; each returns its log.

    Both logs are lists of floats, one per step, from the same seeded matrices.
    """
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    # A new pair of matrices for every step, drawn before the timing starts.
    As = torch.rand(steps, n, n, generator=generator).to(device).unbind()
    Bs = torch.rand(steps, n, n, generator=generator).to(device).unbind()

    def with_item() -> list[float]:
        log = []
        for A, B in zip(As, Bs, strict=True):
            Y = A @ B  # (n, n), the product of this step's pair
            log.append(torch.linalg.norm(Y).item())
        return log

    def on_device() -> list[float]:
        log = []
        for A, B in zip(As, Bs, strict=True):
            Y = A @ B
            log.append(torch.linalg.norm(Y))
        values: list[float] = torch.stack(log).cpu().tolist()
        return values

    return with_item, on_device


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

    This is the result type of :func:`sync_cost`.
    """

    statement: str
    size: int
    synchronized: Measurement
    unsynchronized: Measurement

    @property
    def ratio(self) -> float:
        """Median synchronized time over median unsynchronized time."""
        return _per(self.synchronized.median, self.unsynchronized.median)

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
        >>> costs[0].ratio == costs[0].as_dict()["ratio"]
        True
    """
    warmup, min_runs, max_runs = _check_counts(
        "sync_cost", warmup=warmup, min_runs=min_runs, max_runs=max_runs
    )
    (min_time,) = _check_seconds("sync_cost", min_time=min_time)
    device = torch.device(device)
    wait = sync if sync is not None else (lambda: synchronize(device))
    results = []
    for n in check_sizes(sizes, "sizes", who="sync_cost"):
        A = torch.rand(n, n, device=device)
        B = torch.rand(n, n, device=device)
        for _ in range(max(warmup, 1)):
            A @ B
        with_sync: list[float] = []
        without: list[float] = []
        while (len(with_sync) < min_runs or sum(with_sync) < min_time) and len(
            with_sync
        ) < max_runs:
            wait()  # start from an idle device
            start = clock()
            A @ B
            returned = clock()  # the mistake: the call has only been queued
            wait()
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


@dataclass(frozen=True)
class TwoDevices:
    """The two ways of :func:`two_devices`: one device after the other, both at once.

    Attributes:
        sequential: seconds per run, both products in sequence on device 0.
        concurrent: seconds per run, one product on each device, issued in one loop.
    """

    sequential: Measurement
    concurrent: Measurement

    @property
    def speedup(self) -> float:
        """The sequential median over the concurrent median."""
        return _per(self.sequential.median, self.concurrent.median)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: both measurements and the speedup."""
        return {
            "sequential": self.sequential.as_dict(),
            "concurrent": self.concurrent.as_dict(),
            "speedup": self.speedup,
        }


def two_devices(*, n: int = 2048, steps: int = 20, repeats: int = 3) -> TwoDevices:
    """Exercise 4: two matrix products on two devices at once vs in sequence on one.

    Needs two accelerators. The book's comparison: ``X0 @ X0`` and
    ``X1 @ X1`` (``steps`` times each) computed in sequence on device 0,
    against the same products issued in one loop, ``X0 @ X0`` to device 0
    and ``X1 @ X1`` to device 1. PyTorch queues work asynchronously, so the
    loop keeps both devices busy at the same time; the book's hint expects
    an almost linear speedup (close to 2).

    Both ways compute the same products, from matrices drawn by a generator
    seeded with 0.

    Returns:
        TwoDevices: both measurements; ``speedup`` is the sequential median
        divided by the concurrent one.

    Raises:
        MeasurementSkipped: on a machine with fewer than two accelerators.

    Examples:
        >>> try:
        ...     print(f"speedup {two_devices(n=256, steps=2).speedup:.2f}")
        ... except MeasurementSkipped as why:
        ...     print("skipped:", why)  # doctest: +ELLIPSIS
        s...
    """
    n = check_int(n, "n", minimum=1, who="two_devices")
    steps = check_int(steps, "steps", minimum=1, who="two_devices")
    repeats = check_int(repeats, "repeats", minimum=1, who="two_devices")
    if num_gpus() < 2:
        raise MeasurementSkipped(
            f"needs two accelerators, this machine has {num_gpus()}: "
            "the exercise compares two products on two devices at once "
            "with both in sequence on one"
        )
    d0, d1 = gpu(0), gpu(1)
    _, sequential, concurrent, both = _two_device_runs(d0, d1, n=n, steps=steps)

    def timed(fn: Callable[[], Any], label: str) -> Measurement:
        return benchmark(
            fn, label=label, device=d0, warmup=1, min_runs=repeats,
            max_runs=repeats, min_time=0.0, min_block=0.0, sync=both,
        )  # fmt: skip

    return TwoDevices(
        timed(sequential, "in sequence on one device"),
        timed(concurrent, "both at once"),
    )


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
    X1_on_d0 = X1.to(d0)  # the second product's input, for the one-device way

    def both() -> None:
        synchronize(d0)
        synchronize(d1)

    def sequential() -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(steps):  # the book's baseline: in sequence on one device
            Y0 = X0 @ X0
            Y1 = X1_on_d0 @ X1_on_d0
        synchronize(d0)
        return Y0, Y1

    def concurrent() -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(steps):
            Y0 = X0 @ X0  # queued on device 0 ...
            Y1 = X1 @ X1  # ... while this one is queued on device 1
        both()
        return Y0, Y1

    return (X0, X1), sequential, concurrent, both
