"""Tests of dlcomp.timing: the timer on a fake clock; the measurements, here."""

import math

import pytest
import torch

import dlcomp.timing
from dlcomp import (
    Measurement,
    benchmark,
    copy_bandwidth,
    cpu,
    gpu,
    logging_cost,
    matmul_throughput,
    num_gpus,
    small_op_overhead,
    synchronize,
    try_gpu,
    two_devices,
)
from dlcomp.timing import _interleaved, _logging_runs, _two_device_runs


class FakeClock:
    """Each call of the statement takes the next duration; events are recorded."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = iter(durations)
        self.events = []

    def clock(self):
        self.events.append("clock")
        return self.now

    def fn(self):
        self.events.append("call")
        self.now += next(self.durations)

    def sync(self):
        self.events.append("sync")


def test_statistics_on_a_fake_clock():
    # 2 warm-up calls (slow: first-call costs), then blocks of 1 call each
    durations = [9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 100.0]
    fake = FakeClock(durations)
    m = benchmark(
        fake.fn, clock=fake.clock, sync=fake.sync, min_runs=5, min_time=0, min_block=0.5
    )
    assert m.times == (1.0, 2.0, 3.0, 4.0, 100.0)  # warm-up excluded
    assert (m.median, m.q1, m.q3, m.iqr, m.runs, m.number) == (3.0, 2.0, 4.0, 2.0, 5, 1)


def test_synchronizes_before_every_clock_reading_at_the_end_of_a_block():
    fake = FakeClock([1.0] * 10)
    benchmark(
        fake.fn,
        clock=fake.clock,
        sync=fake.sync,
        warmup=2,
        min_runs=3,
        min_time=0,
        min_block=0.5,
    )
    events = fake.events
    assert events[:3] == ["call", "call", "sync"]  # warm-up, then wait for it
    for i, event in enumerate(events):
        if event == "clock" and i > 3 and events[i - 1] != "sync":
            assert events[i + 1] == "call", (
                f"clock read at {i} without a sync before it"
            )


def test_block_size_doubles_until_a_block_is_long_enough():
    fake = FakeClock([0.001] * 10_000)
    m = benchmark(
        fake.fn,
        clock=fake.clock,
        sync=fake.sync,
        warmup=1,
        min_block=0.01,
        min_runs=3,
        min_time=0,
    )
    assert m.number == 16  # 1, 2, 4, 8 calls take < 10 ms; 16 calls take 16 ms
    assert m.median == pytest.approx(0.001)


def test_repeats_until_min_time():
    fake = FakeClock([0.125] * 100)  # exact in binary: the sum reaches 1.0
    m = benchmark(
        fake.fn,
        clock=fake.clock,
        sync=fake.sync,
        warmup=1,
        min_block=0.0,
        min_runs=2,
        min_time=1.0,
    )
    assert m.runs == 8
    assert sum(m.times) == pytest.approx(1.0)


def test_quantiles_match_numpy():
    import numpy as np

    times = (0.5, 0.1, 0.9, 0.3, 0.7, 0.2)
    m = Measurement("x", "cpu", times)
    assert m.q1 == pytest.approx(np.quantile(times, 0.25))
    assert m.q3 == pytest.approx(np.quantile(times, 0.75))
    assert m.median == pytest.approx(np.median(times))
    assert "median 400 ms" in str(m)


def test_measurement_as_dict_round_trips_to_json():
    import json

    m = Measurement("x", "cpu", (1.0, 3.0), number=4)
    data = json.loads(json.dumps(m.as_dict()))
    assert data == {"label": "x", "device": "cpu", "times": [1.0, 3.0], "number": 4,
                    "median": 2.0, "q1": 1.5, "q3": 2.5, "runs": 2}  # fmt: skip


def test_synchronize_on_cpu_and_meta_is_a_no_op():
    synchronize("cpu")
    synchronize(torch.device("meta"))
    synchronize()


# --- the measurements, small, on this machine ---------------------------------


def test_matmul_throughput_rows():
    rows = matmul_throughput([8, 16], min_time=0.005)
    assert [r["size"] for r in rows] == [8, 16]
    for r in rows:
        assert r["gflops"] == pytest.approx(
            2 * r["size"] ** 3 / r["measurement"]["median"] / 1e9
        )


def test_small_op_overhead_is_a_measurement():
    m = small_op_overhead(min_time=0.005)
    assert m.label == "1-element add"
    assert m.runs >= 7


def test_copy_bandwidth_on_cpu_measures_a_copy_into_a_preallocated_buffer():
    rows = copy_bandwidth([0.5], "cpu", min_time=0.005)
    assert [(r["direction"], r["memory"], r["non_blocking"]) for r in rows] == [
        ("host->host", "pageable", False)
    ]
    assert rows[0]["gbps"] > 0
    assert rows[0]["measurement"]["label"].startswith("copy_")


def test_logging_cost_times_both_ways():
    result = logging_cost(steps=20, n=16, repeats=2)
    assert list(result) == ["item", "on_device"]
    assert [m.label for m in result.values()] == ["log item", "log on_device"]
    assert all(m.runs == 2 and m.number == 1 for m in result.values())


def test_logging_cost_logs_the_same_normal_nonzero_values_both_ways():
    # A chain X = X @ A with A = rand / 100 underflowed to 0.0 after ~67 steps
    # (through denormals): the exercise logs independent products instead.
    with_item, on_device = _logging_runs("cpu", steps=1000, n=100)
    logged, kept = torch.tensor(with_item()), torch.tensor(on_device())
    assert logged.shape == kept.shape == (1000,)
    assert torch.equal(logged, kept)  # the same values, not merely close
    # ... and the right ones: the norm of the product of the seeded matrices
    generator = torch.Generator().manual_seed(0)
    A = torch.rand(100, 100, generator=generator)
    B = torch.rand(100, 100, generator=generator)
    assert torch.equal(logged, torch.linalg.norm(A @ B).expand(1000))
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal float32
    assert all(math.isfinite(v) and v >= tiny for v in logged.tolist())


def test_interleaved_alternates_the_blocks():
    events = []
    now = [0.0]

    def make(name, seconds):
        def fn():
            events.append(name)
            now[0] += seconds

        return fn

    timed = _interleaved(
        {"A": make("A", 1.0), "B": make("B", 2.0)},
        clock=lambda: now[0],
        sync=lambda: None,
        warmup=1,
        min_runs=3,
        min_time=0,
        min_block=0.5,
    )
    # warm-up A, B; one calibration block each; then 3 rounds A, B
    assert events == ["A", "B", "A", "B"] + ["A", "B"] * 3
    assert timed["A"].times == (1.0, 1.0, 1.0)
    assert timed["B"].times == (2.0, 2.0, 2.0)


def test_two_devices_explains_when_it_cannot_run():
    if num_gpus() >= 2:
        pytest.skip("this machine has two accelerators: the real run is tested below")
    assert "needs two accelerators" in two_devices()["skipped"]


def check_waits_for_the_device(monkeypatch, device, *, real):
    """benchmark waits for the device it times at the end of every block."""
    waited = []
    real_synchronize = torch.accelerator.synchronize

    def spy(d=None):
        waited.append(torch.device(d))
        if real:
            real_synchronize(d)

    monkeypatch.setattr(torch.accelerator, "synchronize", spy)
    A = torch.rand(256, 256, device=device if real else "cpu")
    m = benchmark(lambda: A @ A, device=device, min_time=0.01)
    assert m.device == str(device)
    # after the warm-up, after each calibration block, after each timed block
    assert len(waited) >= 1 + m.runs
    assert set(waited) == {device}


@pytest.mark.gpu
@pytest.mark.skipif(
    num_gpus() == 0, reason="no accelerator here; the CPU twins ran instead"
)
def test_synchronized_timing_of_an_accelerator(monkeypatch):
    # Not "unsynchronized timing is faster": a comparison of speeds is no unit
    # test. The fake-clock tests above check the order: sync, then clock.
    check_waits_for_the_device(monkeypatch, try_gpu(), real=True)


def test_synchronized_timing_of_a_simulated_accelerator(monkeypatch):
    """The CPU twin: timing "on cuda:0" asks torch.accelerator to wait for it."""
    check_waits_for_the_device(monkeypatch, torch.device("cuda", 0), real=False)


def check_two_devices(d0, d1, *, n, steps, repeats):
    """What two_devices promises, on the devices it ran on (no claim about speed)."""
    result = two_devices(n=n, steps=steps, repeats=repeats)
    assert list(result) == ["sequential", "concurrent", "speedup"]
    seq, con = result["sequential"], result["concurrent"]
    assert (seq.label, con.label) == ("one after the other", "both at once")
    for m in (seq, con):
        assert m.device == str(d0)
        assert (m.runs, m.number) == (repeats, 1)
        assert m.median > 0
        assert m.iqr >= 0
    assert result["speedup"] == seq.median / con.median
    # both ways compute, on each device, what that device computes alone
    (X0, X1), sequential, concurrent, _ = _two_device_runs(d0, d1, n=n, steps=steps)
    alone = (X0 @ X0, X1 @ X1)
    for way in (sequential, concurrent):
        Y0, Y1 = way()
        assert (Y0.device, Y1.device) == (X0.device, X1.device)
        assert torch.equal(Y0, alone[0])
        assert torch.equal(Y1, alone[1])


@pytest.mark.gpu
@pytest.mark.skipif(num_gpus() < 2, reason="needs two accelerators")
def test_two_devices_concurrently():
    check_two_devices(gpu(0), gpu(1), n=1024, steps=10, repeats=2)


def test_two_devices_concurrently_on_a_simulated_two_device_machine(monkeypatch):
    """The CPU twin: two 'accelerators' that are both the CPU."""
    monkeypatch.setattr(dlcomp.timing, "num_gpus", lambda: 2)
    monkeypatch.setattr(dlcomp.timing, "gpu", lambda i: cpu())
    check_two_devices(cpu(), cpu(), n=32, steps=3, repeats=2)


def test_the_bench_timer_check_alternates_ours_and_timer(monkeypatch):
    from torch.utils.benchmark import Timer

    from dlcomp import bench

    calls = []
    real_benchmark, real_autorange = bench.benchmark, Timer.blocked_autorange

    def ours(*args, **kwargs):
        calls.append("ours")
        return real_benchmark(*args, **kwargs)

    def theirs(self, *args, **kwargs):
        calls.append("timer")
        return real_autorange(self, *args, **kwargs)

    monkeypatch.setattr(bench, "benchmark", ours)
    monkeypatch.setattr(Timer, "blocked_autorange", theirs)
    result = bench._timer_check(torch.device("cpu"), 32, min_time=0.01, rounds=3)
    assert calls == ["ours", "timer"] * 3
    assert result["ratio"] == result["dlcomp_median"] / result["torch_benchmark_median"]
