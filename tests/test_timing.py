"""Tests of dlcomp.timing: the timer and the comparisons that interleave (fake clocks).

The chapter's measurements built on it are tested in test_measurements.py.
"""

import time

import pytest
import torch

from dlcomp import (
    CpuShare,
    Measurement,
    alternate,
    benchmark,
    interleaved,
    num_gpus,
    synchronize,
    try_gpu,
)


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


def test_interleaved_alternates_the_blocks():
    events = []
    now = [0.0]

    def make(name, seconds):
        def fn():
            events.append(name)
            now[0] += seconds

        return fn

    timed = interleaved(
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


def test_interleaved_keeps_going_until_every_statement_has_min_time():
    now = [0.0]

    def make(seconds):
        def fn():
            now[0] += seconds

        return fn

    timed = interleaved(
        {"A": make(1.0), "B": make(1.0)},
        clock=lambda: now[0], sync=lambda: None,
        warmup=1, min_runs=1, min_time=4.0, min_block=0.5,
    )  # fmt: skip
    # calibration block + rounds until 2 x 4 s have been timed: 4 blocks each
    assert [m.runs for m in timed.values()] == [4, 4]


def test_alternate_takes_the_measurements_in_turns():
    calls = []

    def measure(name, seconds):
        def run():
            calls.append(name)
            return seconds

        return run

    timed = alternate({"ours": measure("ours", 2.0), "theirs": measure("theirs", 1.0)},
                      rounds=3, device="cuda:0")  # fmt: skip
    assert calls == ["ours", "theirs"] * 3
    assert [m.label for m in timed.values()] == ["ours", "theirs"]
    assert timed["ours"].times == (2.0, 2.0, 2.0)
    assert (timed["theirs"].median, timed["theirs"].device) == (1.0, "cuda:0")


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


def fake_clocks(monkeypatch, wall, cpu):
    """time.perf_counter and time.process_time return these readings in turn."""
    walls, cpus = iter(wall), iter(cpu)
    monkeypatch.setattr(time, "perf_counter", lambda: next(walls))
    monkeypatch.setattr(time, "process_time", lambda: next(cpus))


def test_cpu_share_is_cpu_time_over_wall_time(monkeypatch):
    fake_clocks(monkeypatch, wall=[10.0, 12.0], cpu=[1.0, 2.5])
    with CpuShare() as cpu:
        pass
    assert cpu.share == 0.75
    assert cpu.busy
    assert str(cpu) == (
        "this process ran 75% of the time it measured: "
        "the machine was busy, the times are slowed unevenly"
    )


def test_cpu_share_of_a_process_that_ran_throughout_is_not_busy(monkeypatch):
    fake_clocks(monkeypatch, wall=[0.0, 1.0], cpu=[0.0, 0.95])
    with CpuShare() as cpu:
        pass
    assert not cpu.busy
    assert str(cpu) == "this process ran 95% of the time it measured"


def test_cpu_share_before_its_block_is_a_clear_error():
    with pytest.raises(RuntimeError, match="use it as `with CpuShare"):
        _ = CpuShare().busy
