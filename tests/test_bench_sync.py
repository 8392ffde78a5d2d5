"""The bench's sync measurement: each call timed before and after synchronizing."""

import json

import pytest
import torch

from dlcomp import Measurement, num_gpus, try_gpu
from dlcomp.bench import SyncCost, _sync_title, plot_sync, summary, sync_cost


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
    (cost,) = fake_sync_cost(device, min_runs=50, min_time=0, max_runs=6)
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


def rows(*ratios, unsync=1e-3):
    """Sync rows at sizes 256, 512, ... with the given ratios."""
    out = []
    for i, ratio in enumerate(ratios):
        m = Measurement
        cost = SyncCost(
            "A @ B",
            256 * 2**i,
            m("with", "x", (unsync * ratio,) * 3),
            m("without", "x", (unsync,) * 3),
        )
        out.append(cost.as_dict())
    return out


@pytest.mark.parametrize(
    ("series", "title"),
    [
        ({"cpu": rows(1.02, 0.97)}, "the same times (within 10%)"),
        (
            {"cpu": rows(1.0, 1.0), "NVIDIA H100 (cuda:0), torch": rows(1.5, 40.0)},
            "NVIDIA H100 (cuda:0) stopped the clock 40x early (n=512)",
        ),
        ({"cpu": rows(1.0, 1.3)}, "A matrix product timed with and without"),
        ({}, "A matrix product timed with and without"),
    ],
)
def test_the_title_states_only_what_the_rows_show(series, title):
    assert title in _sync_title(series)


def test_plot_and_summary_show_the_rows(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plot_sync(ax, {"cpu": rows(1.0, 1.0)}) == ax.get_title()
    assert len(ax.get_legend().get_texts()) == 2  # synchronized, not synchronized
    plt.close(fig)
    data = {
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"torch": torch.__version__},
        "results": {
            "cpu": {
                "matmul": [{"size": 8, "gflops": 1.0, "measurement": {}}],
                "small_op": {"median": 1e-6},
                "copy": [],
                "logging": {"item": {"median": 1.0}, "on_device": {"median": 1.0}},
                "timer_check": {"ratio": 1.0},
                "sync": rows(4.0),
            }
        },
        "two_devices": {"skipped": "one device"},
    }
    lines = [" ".join(line.split()) for line in summary(data).splitlines()]
    expected = "sync check n=256 4000.0 us synchronized, 1000.0 us not (ratio 4.00)"
    assert expected in lines


@pytest.mark.gpu
@pytest.mark.skipif(
    num_gpus() == 0, reason="no accelerator here; the CPU twins above ran instead"
)
def test_on_an_accelerator_the_unsynchronized_clock_stops_early():
    (cost,) = sync_cost([4096], try_gpu(), min_time=0.05)
    # a 4096 x 4096 product takes far longer than its launch
    assert cost.unsynchronized.median * 2 < cost.synchronized.median


# --- the site build runs timing scripts alone (docs/_ext/dlcomp_gallery.py) ---------


def gallery_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "_ext" / "dlcomp_gallery.py"
    spec = importlib.util.spec_from_file_location("dlcomp_gallery", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gallery_scripts_that_time_are_found():
    from pathlib import Path

    gallery = gallery_module()
    root = Path(__file__).resolve().parents[1]
    conf = {"src_dir": str(root / "docs"), "examples_dirs": "../gallery"}
    timing = {
        p.name
        for p in (root / "gallery").rglob("plot_*.py")
        if gallery.is_timing_example(conf, p.name)
    }
    gpu = {p.name for p in (root / "gallery" / "gpu").glob("plot_*.py")}
    assert gpu | {"plot_03_background_saves.py"} <= timing
    assert "plot_01_chimera.py" not in timing


@pytest.mark.parametrize(
    ("held", "script", "waits"),
    [
        ("shared", "plot_timing.py", True),  # a timing script waits for the others
        ("exclusive", "plot_plain.py", True),  # the others wait for a timing script
        ("shared", "plot_plain.py", False),  # ordinary scripts run together
    ],
)
def test_a_timing_script_runs_alone(tmp_path, held, script, waits):
    import fcntl
    import threading

    gallery = gallery_module()
    (tmp_path / "gallery").mkdir()
    (tmp_path / "gallery" / "plot_timing.py").write_text("benchmark(f)\n")
    (tmp_path / "gallery" / "plot_plain.py").write_text("print(1)\n")
    conf = {"src_dir": str(tmp_path / "docs"), "examples_dirs": "../gallery"}
    _, room = gallery._lock_paths(conf)
    with open(room, "ab") as other:  # another process's example, running
        fcntl.flock(other, fcntl.LOCK_SH if held == "shared" else fcntl.LOCK_EX)
        worker = threading.Thread(
            target=gallery.run_timing_alone, args=(conf, script, "before")
        )
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive() is waits
        fcntl.flock(other, fcntl.LOCK_UN)
        worker.join(timeout=5)
        assert not worker.is_alive()
    gallery.run_timing_alone(conf, script, "after")
    assert not gallery._held  # released
