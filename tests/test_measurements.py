"""Tests of dlcomp.measurements: the chapter's measurements and their result types.

Small sizes on this machine; nothing here compares two speeds. The
GPU-marked tests have CPU twins that simulate the devices.
"""

import json
import math

import pytest
import torch

import dlcomp.measurements
from dlcomp import (
    CopyRow,
    LoggingCost,
    MatmulRow,
    Measurement,
    MeasurementSkipped,
    TwoDevices,
    copy_bandwidth,
    cpu,
    gpu,
    logging_cost,
    matmul_throughput,
    num_gpus,
    small_op_overhead,
    sync_cost,
    try_gpu,
    two_devices,
)
from dlcomp.measurements import _logging_runs, _two_device_runs


def frozen(result):
    """Whether ``result`` refuses a new value for a field (a frozen dataclass)."""
    field = next(iter(result.__dataclass_fields__))
    try:
        setattr(result, field, None)
    except AttributeError:  # dataclasses.FrozenInstanceError
        return True
    return False


def test_matmul_throughput_returns_a_frozen_row_per_size_with_its_gflops():
    rows = matmul_throughput([8, 16], min_time=0.005)
    assert all(isinstance(r, MatmulRow) and frozen(r) for r in rows)
    assert [r.size for r in rows] == [8, 16]
    for r in rows:
        assert r.measurement.label == f"matmul {r.size}"
        assert r.gflops == 2 * r.size**3 / r.measurement.median / 1e9


def test_a_matmul_row_as_dict_is_the_json_row_bench_writes():
    row = MatmulRow(64, Measurement("matmul 64", "cpu", (1e-3, 2e-3, 3e-3)))
    data = json.loads(json.dumps(row.as_dict()))
    assert data == {"size": 64, "gflops": row.gflops,
                    "measurement": row.measurement.as_dict()}  # fmt: skip


def test_small_op_overhead_is_a_measurement():
    m = small_op_overhead(min_time=0.005)
    assert isinstance(m, Measurement)
    assert m.label == "1-element add"
    assert m.runs >= 7


def test_copy_bandwidth_on_cpu_measures_a_copy_into_a_preallocated_buffer():
    rows = copy_bandwidth([0.5], "cpu", min_time=0.005)
    assert all(isinstance(r, CopyRow) and frozen(r) for r in rows)
    assert [(r.direction, r.memory, r.non_blocking) for r in rows] == [
        ("host->host", "pageable", False)
    ]
    assert rows[0].kind == "host->host, pageable"
    assert rows[0].gbps == 0.5 * 2**20 / rows[0].measurement.median / 1e9
    assert rows[0].measurement.label.startswith("copy_")


def test_a_copy_row_as_dict_is_the_json_row_bench_writes():
    m = Measurement("copy", "cuda:0", (1e-3,))
    row = CopyRow(16, "host->device", "pinned", True, m)
    assert row.kind == "host->device, pinned, non_blocking"
    assert json.loads(json.dumps(row.as_dict())) == {
        "size_mib": 16, "direction": "host->device", "memory": "pinned",
        "non_blocking": True, "gbps": row.gbps, "measurement": m.as_dict(),
    }  # fmt: skip


def test_logging_cost_times_both_ways():
    result = logging_cost(steps=20, n=16, repeats=2)
    assert isinstance(result, LoggingCost)
    assert frozen(result)
    assert [result.item.label, result.on_device.label] == ["log item", "log on_device"]
    assert all(m.runs == 2 and m.number == 1 for m in (result.item, result.on_device))
    assert result.ratio == result.item.median / result.on_device.median
    assert list(result.as_dict()) == ["item", "on_device"]
    assert result.as_dict()["item"] == result.item.as_dict()


def test_logging_cost_logs_independent_products_the_same_way_both_ways():
    # A chain X = X @ A with A = rand / 100 underflowed to 0.0 after ~67 steps
    # (through denormals): the exercise logs independent products instead.
    with_item, on_device = _logging_runs("cpu", steps=1000, n=100)
    logged, kept = torch.tensor(with_item()), torch.tensor(on_device())
    assert logged.shape == kept.shape == (1000,)
    assert torch.equal(logged, kept)  # the same values, not merely close
    # ... and the right ones: the norm of each step's product of the seeded
    # matrices drawn ahead, a new pair every step
    generator = torch.Generator().manual_seed(0)
    A = torch.rand(1000, 100, 100, generator=generator)
    B = torch.rand(1000, 100, 100, generator=generator)
    expected = torch.stack(
        [torch.linalg.norm(a @ b) for a, b in zip(A, B, strict=True)]
    )
    assert torch.equal(logged, expected)
    # independent products: the norms differ (a few may round to the same float32)
    assert logged.unique().numel() > 900
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal float32
    assert all(math.isfinite(v) and v >= tiny for v in logged.tolist())


def test_two_devices_explains_when_it_cannot_run():
    if num_gpus() >= 2:
        pytest.skip("this machine has two accelerators: the real run is tested below")
    with pytest.raises(MeasurementSkipped, match="needs two accelerators, this"):
        two_devices()


def test_measurement_skipped_is_a_runtime_error():
    assert issubclass(MeasurementSkipped, RuntimeError)


def check_two_devices(d0, d1, *, n, steps, repeats):
    """What two_devices promises, on the devices it ran on (no claim about speed)."""
    result = two_devices(n=n, steps=steps, repeats=repeats)
    assert isinstance(result, TwoDevices)
    assert frozen(result)
    seq, con = result.sequential, result.concurrent
    assert (seq.label, con.label) == ("in sequence on one device", "both at once")
    for m in (seq, con):
        assert m.device == str(d0)
        assert (m.runs, m.number) == (repeats, 1)
        assert m.median > 0
        assert m.iqr >= 0
    assert result.speedup == seq.median / con.median
    assert list(result.as_dict()) == ["sequential", "concurrent", "speedup"]
    # both ways compute the same two products: the book's baseline both on
    # device 0 in sequence, the concurrent way one on each device
    (X0, X1), sequential, concurrent, _ = _two_device_runs(d0, d1, n=n, steps=steps)
    alone = (X0 @ X0, X1 @ X1)
    for way, devices in ((sequential, (d0, d0)), (concurrent, (d0, d1))):
        Y0, Y1 = way()
        assert (Y0.device, Y1.device) == devices
        assert torch.equal(Y0.cpu(), alone[0].cpu())
        assert torch.equal(Y1.cpu(), alone[1].cpu())


@pytest.mark.gpu
@pytest.mark.skipif(num_gpus() < 2, reason="needs two accelerators")
def test_two_devices_concurrently():
    check_two_devices(gpu(0), gpu(1), n=1024, steps=10, repeats=2)


def test_two_devices_concurrently_on_a_simulated_two_device_machine(monkeypatch):
    """The CPU twin: two 'accelerators' that are both the CPU."""
    monkeypatch.setattr(dlcomp.measurements, "num_gpus", lambda: 2)
    monkeypatch.setattr(dlcomp.measurements, "gpu", lambda i: cpu())
    check_two_devices(cpu(), cpu(), n=32, steps=3, repeats=2)


# --- sync_cost: each call timed before and after synchronizing ---------------------


class FakeDevice:
    """A fake asynchronous device: a call queues work, a sync waits for it.

    Each call returns after ``launch`` seconds and leaves ``work`` seconds
    queued; ``sync`` advances the clock past the queued work.
    """

    def __init__(self, launch, work):
        self.now = 0.0
        self.queued = 0.0
        self.launch, self.work = launch, work
        self.events = []

    def clock(self):
        self.events.append("clock")
        return self.now

    def sync(self):
        self.events.append("sync")
        self.now += self.queued
        self.queued = 0.0

    def call(self):
        self.events.append("call")
        self.now += self.launch
        self.queued += self.work


def fake_sync_cost(device, **kwargs):
    """sync_cost on ``device`` (a FakeDevice), its products counted as calls."""

    class Tensor:
        def __matmul__(self, other):
            device.call()

    real_rand = torch.rand
    torch.rand = lambda *args, **kw: Tensor()
    try:
        return sync_cost([8], "cpu", clock=device.clock, sync=device.sync, **kwargs)
    finally:
        torch.rand = real_rand


def test_without_sync_the_clock_measures_the_launch():
    device = FakeDevice(launch=1.0, work=9.0)
    (cost,) = fake_sync_cost(device, warmup=1, min_runs=3, min_time=0)
    assert cost.unsynchronized.times == (1.0, 1.0, 1.0)  # queued, not done
    assert cost.synchronized.times == (10.0, 10.0, 10.0)  # launch + work
    assert cost.ratio == 10.0


def test_every_timed_call_starts_from_an_idle_device():
    device = FakeDevice(launch=1.0, work=9.0)
    fake_sync_cost(device, warmup=2, min_runs=2, min_time=0)
    # warm-up calls; then per run: wait, start, call, read, wait, read
    run = ["sync", "clock", "call", "clock", "sync", "clock"]
    assert device.events == ["call", "call", *run, *run]


def test_a_synchronous_device_gives_the_same_times_both_ways():
    device = FakeDevice(launch=5.0, work=0.0)  # the CPU: the call does the work
    (cost,) = fake_sync_cost(device, min_runs=4, min_time=0)
    assert cost.synchronized.times == cost.unsynchronized.times == (5.0,) * 4
    assert cost.ratio == 1.0


def test_runs_until_min_time_and_max_runs():
    device = FakeDevice(launch=1.0, work=1.0)
    (cost,) = fake_sync_cost(device, min_runs=1, min_time=10.0)
    assert cost.synchronized.runs == 5  # 5 runs of 2 s reach 10 s
    device = FakeDevice(launch=1.0, work=1.0)
    # 100 s would take 50 runs: max_runs stops it first
    (cost,) = fake_sync_cost(device, min_runs=1, min_time=100.0, max_runs=6)
    assert cost.synchronized.runs == 6


def test_on_this_machine_the_rows_are_json_with_their_runs():
    costs = sync_cost([16, 32], "cpu", min_time=0.005)
    rows = json.loads(json.dumps([c.as_dict() for c in costs]))
    assert [row["size"] for row in rows] == [16, 32]
    for row, cost in zip(rows, costs, strict=True):
        assert len(row["synchronized"]["times"]) == cost.synchronized.runs >= 7
        assert row["ratio"] == cost.ratio
        # the synchronized reading is taken after the other, from the same start
        pairs = zip(cost.synchronized.times, cost.unsynchronized.times, strict=True)
        assert all(s >= u for s, u in pairs)


@pytest.mark.gpu
@pytest.mark.skipif(
    num_gpus() == 0,
    reason="no accelerator here; the fake-device twins above ran instead",
)
def test_on_an_accelerator_the_unsynchronized_clock_stops_early():
    (cost,) = sync_cost([4096], try_gpu(), min_time=0.05)
    # a 4096 x 4096 product takes far longer than its launch
    assert cost.unsynchronized.median * 2 < cost.synchronized.median


def test_a_clock_that_sees_no_time_gives_inf_or_nan_not_an_error():
    # A clock too coarse to see a block (here: one that never moves).
    (cost,) = sync_cost([4], clock=lambda: 0.0, min_time=0, min_runs=1, max_runs=3)
    assert math.isnan(cost.ratio)  # 0 s / 0 s
    row = cost.as_dict()
    assert math.isnan(row["ratio"])
    m = Measurement("x", "cpu", (0.0, 0.0))
    assert MatmulRow(8, m).gflops == math.inf
