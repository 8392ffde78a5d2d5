"""The bench's sync figure and summary line; and the site's timing scripts run alone.

sync_cost itself (each call timed before and after synchronizing) is tested
in test_measurements.py.
"""

import pytest
import torch

from dlcomp import Measurement, SyncCost, sync_cost
from dlcomp.bench import _sync_title, plot_sync, summary


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
    # the results themselves draw the same figure as their JSON rows
    costs = sync_cost([16, 32], "cpu", min_time=0.005)
    fig, (from_results, from_json) = plt.subplots(1, 2)
    plot_sync(from_results, {"cpu": costs})
    plot_sync(from_json, {"cpu": [cost.as_dict() for cost in costs]})
    for one, two in zip(from_results.get_lines(), from_json.get_lines(), strict=True):
        assert one.get_xydata().tolist() == two.get_xydata().tolist()
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


def test_the_title_reads_the_largest_size_whatever_order_it_was_measured_in():
    from matplotlib.figure import Figure

    measured = rows(1000.0, 1.0)  # n=256 stopped 1000x early, n=512 agreed
    ax = Figure().add_subplot()
    largest_first = list(reversed(measured))
    assert plot_sync(ax, {"gpu": largest_first}) == plot_sync(
        Figure().add_subplot(), {"gpu": measured}
    )
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [256, 512]  # left to right
