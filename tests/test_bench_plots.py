"""What ``python -m dlcomp bench`` draws and prints, checked on fabricated runs.

A fabricated run is a results dict that :func:`dlcomp.bench.check_results`
accepts, with the devices, sizes and spreads a test chooses: a GPU machine's
run can be checked here, on a CPU, and a noisy run made on purpose. The
figures are checked through their matplotlib objects (lines, labels, ticks),
not their pixels.
"""

import json
import sys

import pytest
from matplotlib.figure import Figure

import dlcomp.__main__
import dlcomp.bench
from dlcomp import (
    CopyRow,
    LoggingCost,
    MatmulRow,
    Measurement,
    SyncCost,
    logging_cost,
    num_gpus,
    try_gpu,
)
from dlcomp.bench import (
    NOISY,
    _figures,
    check_results,
    plot_copy,
    plot_logging,
    plot_matmul,
    plot_results,
    summary,
)


def measured(label, device, median, spread=0.05):
    """A measurement as a dict: five runs around ``median``, IQR ``spread * median``."""
    times = [median * (1 + spread * k / 2) for k in (-2, -1, 0, 1, 2)]
    return Measurement(label, device, tuple(times)).as_dict()


def fake_entry(device, *, spread=0.05, timer_ratio=1.0, copy_sizes=(1, 16, 256)):
    """One device's results; copy rows like :func:`dlcomp.copy_bandwidth` makes them."""
    if device == "cpu":
        kinds = [("host->host", "pageable", False)]
    else:
        kinds = [
            (direction, memory, nb)
            for direction in ("host->device", "device->host")
            for memory in ("pageable", "pinned")
            for nb in (False, True)
        ]
    copy = []
    for size in copy_sizes:
        for direction, memory, nb in kinds:
            gbps = (25.0 if memory == "pinned" else 10.0) * size / (size + 1)
            seconds = size * 2**20 / gbps / 1e9
            copy.append({
                "size_mib": size, "direction": direction, "memory": memory,
                "non_blocking": nb, "gbps": gbps,
                "measurement": measured(f"{direction} {memory} {size} MiB", device,
                                        seconds, spread),
            })  # fmt: skip
    sync = [
        SyncCost(
            "A @ B",
            n,
            Measurement("with", device, (n * 1e-7,) * 3),
            Measurement("without", device, (n * 1e-7 / 4,) * 3),
        ).as_dict()
        for n in (256, 1024)
    ]
    return {
        "matmul": [
            {
                "size": n,
                "gflops": 2 * n**3 / (n**2 * 1e-7) / 1e9,
                "measurement": measured(f"matmul {n}", device, n**2 * 1e-7, spread),
            }
            for n in (64, 256, 1024)
        ],
        "small_op": measured("1-element add", device, 5e-6, spread),
        "copy": copy,
        "logging": {
            "item": measured("log item", device, 0.04, spread),
            "on_device": measured("log on_device", device, 0.01, spread),
        },
        "timer_check": {
            "statement": "A @ A",
            "dlcomp_median": 1e-4 * timer_ratio,
            "torch_benchmark_median": 1e-4,
            "ratio": timer_ratio,
        },
        "sync": sync,
    }


def fake_run(devices=("cuda:0", "cpu"), **kwargs):
    """A run that :func:`check_results` accepts, on ``devices``."""
    names = {"cpu": "CPU (x86_64)"}
    data = {
        "schema": dlcomp.bench.SCHEMA,
        "date": "2026-11-24T03:00:00+00:00",
        "machine": {
            "devices": [
                {"device": d, "name": names.get(d, "NVIDIA H200")} for d in devices
            ],
            "torch": "2.13.0",
            "cuda": "12.8" if any(d != "cpu" for d in devices) else None,
        },
        "settings": dict(dlcomp.bench.FULL, quick=False),
        "results": {d: fake_entry(d, **kwargs) for d in devices},
        "two_devices": {"skipped": "needs two accelerators, this machine has 1"},
    }
    return check_results(json.loads(json.dumps(data)))


GPU_KINDS = [
    f"{direction}, {memory}{nb}"
    for direction in ("host->device", "device->host")
    for memory in ("pageable", "pinned")
    for nb in ("", ", non_blocking")
]


# --- copy.png ---------------------------------------------------------------


def test_copy_figure_has_one_line_per_kind_of_copy_and_device():
    ax = _figures(fake_run())["copy"].axes[0]
    lines = ax.get_lines()
    labels = [line.get_label() for line in lines]
    expected = [f"NVIDIA H200 (cuda:0): {k}" for k in GPU_KINDS]
    assert labels == [*expected, "CPU (x86_64): host->host, pageable"]
    for line in lines:  # a line through every size, not scattered points
        assert line.get_xdata().tolist() == [1, 16, 256]
        assert line.get_linestyle() != "None"
    # the legend: a heading per device, then one entry per line, none merged
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "NVIDIA H200 (cuda:0)",
        *GPU_KINDS,
        "CPU (x86_64)",
        "host->host, pageable",
    ]


def test_copy_lines_pinned_and_pageable_have_their_own_colours():
    ax = Figure().add_subplot()
    plot_copy(ax, {"here": fake_entry("cuda:0")["copy"]})
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(set(colours)) == len(colours) == 8
    # one series: lines labelled by kind, the series named by the legend's title
    assert [line.get_label() for line in ax.get_lines()] == GPU_KINDS
    assert ax.get_legend().get_title().get_text() == "here"


def test_the_same_kind_keeps_its_colour_across_series():
    ax = Figure().add_subplot()
    rows = fake_entry("cuda:0")["copy"]
    plot_copy(ax, {"this machine": rows, "recorded": rows})
    lines = ax.get_lines()
    assert [line.get_color() for line in lines[:8]] == [
        line.get_color() for line in lines[8:]
    ]
    assert {line.get_linestyle() for line in lines[:8]} == {"-"}
    assert {line.get_linestyle() for line in lines[8:]} == {"--"}


@pytest.mark.parametrize("sizes", [(1, 8), (1, 16, 256), (0.5, 4)])
def test_copy_ticks_at_the_sizes_measured(sizes):
    ax = Figure().add_subplot()
    plot_copy(ax, {"cpu": fake_entry("cpu", copy_sizes=sizes)["copy"]})
    assert ax.get_xscale() == "log"
    assert ax.get_xticks().tolist() == list(sizes)
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{s:g} MiB" for s in sizes]
    assert len(ax.xaxis.get_minorticklocs()) == 0


# --- matmul.png and sync.png: the other log axes ------------------------------


def test_every_log_axis_of_sizes_has_ticks_at_the_sizes_measured():
    figures = _figures(fake_run())
    for name, sizes in (("matmul", [64, 256, 1024]), ("sync", [256, 1024])):
        ax = figures[name].axes[0]
        assert ax.get_xscale() == "log", name
        assert ax.get_xticks().tolist() == sizes, name
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in sizes]
    ax = figures["matmul"].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "NVIDIA H200 (cuda:0)",
        "CPU (x86_64)",
    ]
    assert "torch 2.13.0, CUDA 12.8, 2026-11-24" in ax.get_title()


def test_matmul_lines_follow_the_sizes_in_order():
    ax = Figure().add_subplot()
    rows = [{"size": 256, "gflops": 3.0}, {"size": 64, "gflops": 1.0}]
    plot_matmul(ax, {"cpu": rows})
    (line,) = ax.get_lines()
    assert line.get_xdata().tolist() == [64, 256]


def test_matmul_marks_the_highest_throughput_of_the_series_asked_for():
    ax = Figure().add_subplot()
    here = [{"size": 64, "gflops": 1.0}, {"size": 256, "gflops": 3.0}]
    there = [{"size": 64, "gflops": 5.0}]
    plot_matmul(ax, {"here": here, "there": there}, highest=["here"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["here", "highest, here: 3 GFLOP/s", "there"]
    here_line, peak = lines["here"], lines["highest, here: 3 GFLOP/s"]
    assert list(peak.get_ydata()) == [3.0, 3.0]
    assert (peak.get_color(), peak.get_linestyle()) == (here_line.get_color(), ":")


def test_matmul_highest_takes_one_label_or_labels_it_has():
    here = [{"size": 64, "gflops": 1.0}, {"size": 256, "gflops": 3.0}]
    ax = Figure().add_subplot()
    plot_matmul(ax, {"here": here}, highest="here")  # a label, not its letters
    assert [line.get_label() for line in ax.get_lines()] == [
        "here",
        "highest, here: 3 GFLOP/s",
    ]
    with pytest.raises(ValueError, match=r"highest names \['there'\], which are not"):
        plot_matmul(Figure().add_subplot(), {"here": here}, highest=["there"])


# --- logging.png --------------------------------------------------------------


def test_logging_figure_labels_and_error_bars():
    ax = _figures(fake_run())["logging"].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        ".item() every step",
        "kept on the device, copied once at the end",
    ]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [
        "NVIDIA H200 (cuda:0)\n.item() / on device: 4.00x",
        "CPU (x86_64)\n.item() / on device: 4.00x",
    ]
    assert ax.get_ylabel().startswith("µs per logged step")
    bars = [c for c in ax.containers if c.__class__.__name__ == "BarContainer"]
    assert len(bars) == 2  # .item(), on the device
    for container in bars:
        assert container.errorbar is not None  # quartiles drawn on every bar
        assert len(container.patches) == 2  # one per device
    # the bar heights are the medians per step: 40 ms for 1000 steps
    assert bars[0].patches[0].get_height() == pytest.approx(40.0)


def test_logging_error_bars_span_the_quartiles():
    ax = Figure().add_subplot()
    group = {
        "item": measured("log item", "cpu", 2.0, spread=0.5),
        "on_device": measured("log on_device", "cpu", 1.0, spread=0.5),
    }
    plot_logging(ax, {"cpu": group}, steps=10)
    (container, _) = [c for c in ax.containers if hasattr(c, "patches")]
    (segments,) = container.errorbar.lines[2]
    (_, low), (_, high) = segments.get_segments()[0]
    # q1 and q3 of 2 s for 10 steps, in ms per step
    assert (low, high) == pytest.approx((150, 250))
    assert ax.get_ylabel().startswith("ms per logged step")


@pytest.mark.parametrize(
    ("steps", "error", "message"),
    [
        (0, ValueError, "plot_logging: steps must be an int >= 1, got 0"),
        (2.5, TypeError, "plot_logging: steps must be an int >= 1, got float"),
        ({"other": 10}, ValueError, r"steps has no entry for \['cpu'\]"),
    ],
)
def test_logging_steps_are_checked(steps, error, message):
    bars = {"cpu": logging_cost(steps=2, n=2, repeats=1)}
    with pytest.raises(error, match=message):
        plot_logging(Figure().add_subplot(), bars, steps=steps)


def test_logging_runs_of_different_lengths_compare_per_step():
    ax = Figure().add_subplot()
    short = {k: measured(k, "cpu", 0.1) for k in ("item", "on_device")}
    long = {k: measured(k, "cpu", 1.0) for k in ("item", "on_device")}
    plot_logging(ax, {"quick": short, "full": long}, steps={"quick": 100, "full": 1000})
    (item, _) = [c for c in ax.containers if hasattr(c, "patches")]
    heights = [patch.get_height() for patch in item.patches]
    assert heights == pytest.approx([1.0, 1.0])  # 1 ms per step, in ms


def test_plot_results_writes_the_four_pngs(tmp_path):
    paths = plot_results(fake_run(), tmp_path)
    assert [p.name for p in paths] == [
        "matmul.png",
        "copy.png",
        "logging.png",
        "sync.png",
    ]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG")


# --- the gallery draws results, bench their JSON: the same figures ------------


def drawn(ax):
    """What an Axes shows: each line's label and points, each bar's height."""
    lines = [(line.get_label(), line.get_xydata().tolist()) for line in ax.get_lines()]
    bars = [patch.get_height() for patch in ax.patches]
    return lines, bars, [t.get_text() for t in ax.get_xticklabels()]


def test_the_plots_draw_results_as_they_draw_their_json():
    m = Measurement("m", "cpu", (1e-3, 2e-3, 4e-3))
    matmul = [MatmulRow(64, m), MatmulRow(128, m)]
    copy = [CopyRow(1, "host->device", "pinned", False, m),
            CopyRow(4, "host->device", "pinned", False, m)]  # fmt: skip
    logs = LoggingCost(m, Measurement("n", "cpu", (1e-3,)))
    for plot, results, kwargs in (
        (plot_matmul, {"here": matmul}, {}),
        (plot_copy, {"here": copy}, {}),
        (plot_logging, {"here": logs}, {"steps": 10}),
    ):
        from_results, from_json = Figure().add_subplot(), Figure().add_subplot()
        plot(from_results, results, **kwargs)
        as_json = {
            name: r.as_dict() if hasattr(r, "as_dict") else [x.as_dict() for x in r]
            for name, r in results.items()
        }
        plot(from_json, json.loads(json.dumps(as_json)), **kwargs)
        assert drawn(from_results) == drawn(from_json), plot.__name__


def test_the_bench_timer_check_alternates_ours_and_timer(monkeypatch):
    import torch
    from torch.utils.benchmark import Timer

    calls = []
    real_benchmark, real_autorange = dlcomp.bench.benchmark, Timer.blocked_autorange

    def ours(*args, **kwargs):
        calls.append("ours")
        return real_benchmark(*args, **kwargs)

    def theirs(self, *args, **kwargs):
        calls.append("timer")
        return real_autorange(self, *args, **kwargs)

    monkeypatch.setattr(dlcomp.bench, "benchmark", ours)
    monkeypatch.setattr(Timer, "blocked_autorange", theirs)
    result = dlcomp.bench._timer_check(torch.device("cpu"), 32, min_time=0.01, rounds=3)
    assert calls == ["ours", "timer"] * 3
    assert result["ratio"] == result["dlcomp_median"] / result["torch_benchmark_median"]


# --- the printed summary ------------------------------------------------------


def lines_of(data):
    return [" ".join(line.split()) for line in summary(data).splitlines()]


def test_summary_gives_copy_bandwidth_per_kind_at_the_largest_size():
    lines = lines_of(fake_run())
    gbps = {"pageable": 10.0 * 256 / 257, "pinned": 25.0 * 256 / 257}
    for direction in ("host->device", "device->host"):
        for memory, value in gbps.items():
            expected = (
                f"copy {value:.1f} GB/s {direction}, {memory}, 256 MiB "
                f"(non_blocking: {value:.1f})"
            )
            assert expected in lines
    assert f"copy {10.0 * 256 / 257:.1f} GB/s host->host, pageable, 256 MiB" in lines


@pytest.mark.parametrize(
    ("ratio", "words"),
    [
        (0.98, "= 0.98: within 10%, the two timers agree"),
        (1.1, "= 1.10: within 10%, the two timers agree"),
        (1.35, "= 1.35: ours measured 35% longer; two timers of the same product "
               "should agree within 10%, so the load on the machine most likely "
               "changed while they ran"),
        (0.5, "= 0.50: Timer measured 50% longer"),
    ],
)  # fmt: skip
def test_summary_says_what_the_timer_check_means(ratio, words):
    text = " ".join(summary(fake_run(("cpu",), timer_ratio=ratio)).split())
    assert f"timer check ours / torch.utils.benchmark.Timer {words}" in text


def test_a_quiet_run_says_so():
    lines = lines_of(fake_run(spread=0.05))
    assert not any("WARNING" in line for line in lines)
    assert lines[-1].startswith(
        "noise: quiet run: every spread between repeats (IQR) is within 20% of its "
        "median (widest 5%"
    )


def test_a_noisy_run_is_flagged_with_its_reasons():
    data = fake_run(spread=0.3, timer_ratio=1.35)
    lines = lines_of(data)
    (at,) = [
        i for i, line in enumerate(lines) if line.startswith("WARNING: a noisy run")
    ]
    reasons = lines[at + 1 :]
    # every block-timed measurement: 3 matmul + 1 add + copies + 2 logging
    count = 2 * (3 + 1 + 2) + 8 * 3 + 1 * 3
    assert reasons[0].startswith(
        f"- {count} of {count} measurements spread more than 20% of their median"
    )
    assert "the widest: cuda:0: " in reasons[0]
    assert reasons[1:] == [
        f"- {d}: the two timers are 35% apart on the same product "
        "(timer check 1.35, expected within 10% of 1)"
        for d in ("cuda:0", "cpu")
    ]


@pytest.mark.parametrize(
    ("spread", "ratio", "warned"),
    [
        (NOISY - 0.01, 1.0, False),
        (NOISY + 0.01, 1.0, True),  # spread alone
        (0.05, 1.12, True),  # timers alone
        (0.05, 0.91, False),
    ],
)
def test_the_warning_thresholds(spread, ratio, warned):
    text = summary(fake_run(("cpu",), spread=spread, timer_ratio=ratio))
    assert ("WARNING: a noisy run" in text) is warned


def test_summary_of_a_real_quick_run_has_every_line():
    text = summary(dlcomp.bench.run_bench(quick=True, devices=["cpu"]))
    assert "GB/s host->host, pageable, 8 MiB" in text
    assert "timer check    ours / torch.utils.benchmark.Timer = " in text
    assert "noise:" in text or "WARNING: a noisy run" in text


# --- without matplotlib -------------------------------------------------------


def test_without_matplotlib_the_bench_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    monkeypatch.setattr(dlcomp.bench, "run_bench", lambda **kwargs: fake_run(("cpu",)))
    assert (
        dlcomp.__main__.main(["bench", "--device", "cpu", "--out", str(tmp_path)]) == 0
    )
    out, err = capsys.readouterr()
    hint = 'matplotlib is not installed: pip install "dlcomp[bench]" adds it'
    assert f"note: {hint}; measuring anyway" in err  # before measuring
    assert f"plots: none, {hint}" in out
    assert list(tmp_path.glob("*.png")) == []
    assert len(list(tmp_path.glob("bench-cpu-*.json"))) == 1


# --- on a GPU -----------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    num_gpus() == 0, reason="no accelerator here; the fabricated GPU runs above ran"
)
def test_on_an_accelerator_the_copy_figure_has_eight_lines(tmp_path):
    data = dlcomp.bench.run_bench(quick=True, devices=[str(try_gpu())])
    ax = _figures(data)["copy"].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == GPU_KINDS
    assert ax.get_xticks().tolist() == dlcomp.bench.QUICK["copy_sizes_mib"]
    text = summary(data)
    assert "GB/s host->device, pinned" in text
    assert "timer check" in text


@pytest.mark.parametrize("name", ["matmul", "sync"])
def test_log_axes_of_values_read_as_plain_numbers(name):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figures(fake_run())[name]
    FigureCanvasAgg(fig).draw()  # tick labels are made at draw time
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels(which="both")]
    shown = [text for text in labels if text]
    assert shown, "no labelled tick on the value axis"
    for text in shown:
        float(text)  # "0.02", "10": no "$10^{-2}$", no "2 x 10^1"


def test_show_saves_next_to_the_script_without_a_display(tmp_path, capsys):
    import matplotlib.pyplot as plt

    from dlcomp.bench import BUSY_NOTE, show

    fig, ax = plt.subplots()
    ax.set_title("finding")
    saved = show(fig, str(tmp_path / "plot_x.py"), busy=True)
    plt.close(fig)
    assert saved == tmp_path / "plot_x.png"
    assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert capsys.readouterr().out == f"figure saved to {saved}\n"
    assert ax.get_title() == f"finding\n{BUSY_NOTE}"


def test_show_leaves_a_figure_without_a_script_to_pyplot(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from dlcomp.bench import show

    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(True))
    fig, ax = plt.subplots()
    assert show(fig, None) is None  # the gallery's build, a notebook
    plt.close(fig)
    assert shown == [True]
    assert ax.get_title() == ""
    assert list(tmp_path.iterdir()) == []
