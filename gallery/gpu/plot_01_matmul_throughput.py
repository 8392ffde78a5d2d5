"""
Matrix multiplication: GFLOP/s by size and device
=================================================

Time square matrix products of growing size with :func:`dlcomp.benchmark`
(device synchronized, warmed up, median of repeated runs) and plot the
throughput in GFLOP/s on log axes, with the highest throughput measured
drawn as a line. Small products pay fixed costs that a large one spreads
over more work. The sizes go up to 3072, large enough for the throughput
of a small CPU to level off; the title says whether it did on the machine
that ran the script. Beside it, the script draws any runs of
``python -m dlcomp bench`` recorded in the repository's
``benchmarks/results/`` folder, and prints how many it found.
"""

# %%
# Measure this machine
# --------------------
# Every accelerator PyTorch can use, else the CPU. The largest sizes take
# most of the running time on a CPU.
import torch

from dlcomp import CpuShare, matmul_throughput, try_all_gpus

# One CPU thread for the timings: on a machine shared with other jobs, more
# threads than free cores can make them wrong by large factors. Leave the
# line out to measure with every core. CpuShare says whether other
# jobs took the CPU from the measurement anyway (on a CPU: one thread runs
# all the time it is not made to wait).
torch.set_num_threads(1)
with CpuShare() as cpu:
    sizes = [32, 64, 128, 256, 512, 1024, 2048, 3072]
    measured = {
        str(d): matmul_throughput(sizes, d, min_time=0.1) for d in try_all_gpus()
    }
    for device, rows in measured.items():
        for row in rows:
            m = row.measurement
            print(f"{device:6} n={row.size:4}: {row.gflops:8.1f} GFLOP/s "
                  f"(median of {m.runs} runs, IQR {m.iqr:.2e} s)")  # fmt: skip
on_cpu = all(torch.device(d).type == "cpu" for d in measured)
busy = on_cpu and cpu.busy
if on_cpu:
    print(cpu)

# %%
# What the numbers show
# ---------------------
# The title states a finding only if the numbers show it. The throughput
# *levels off* from the smallest size ``n`` from which every size reaches at
# least 85% of the highest throughput measured, if at least two sizes do and
# the smallest size reaches less than half of it.


def finding(device, rows):
    """One sentence on how GFLOP/s change with size, from ``rows`` alone."""
    gflops = [r.gflops for r in rows]
    peak = max(gflops)
    # the first size from which every size is near the peak (none: len(rows))
    high = [i for i in range(len(rows)) if min(gflops[i:]) >= 0.85 * peak]
    first = high[0] if high else len(rows)
    if gflops[0] < 0.5 * peak and first <= len(rows) - 2:
        n = rows[first].size
        return f"{device}: throughput levels off from n={n} (within 15% of its highest)"
    if gflops[-1] == peak and first == len(rows) - 1:
        return f"{device}: the highest throughput is at the largest size measured"
    return f"{device}: matrix product throughput by size"


findings = [finding(device, rows) for device, rows in measured.items()]
for device, rows in measured.items():
    print(f"{device}: highest {max(r.gflops for r in rows):.1f} GFLOP/s")
print("\n".join(findings))

# %%
# Recorded runs from other machines
# ---------------------------------
# :func:`dlcomp.bench.find_recorded` reads ``benchmarks/results/`` of the
# repository (JSON written by ``python -m dlcomp bench``). A script downloaded
# on its own finds none.
from pathlib import Path

from dlcomp.bench import find_recorded, label

here = Path(globals().get("__file__", ".")).resolve().parent
recorded = find_recorded(here)
print(f"{len(recorded)} recorded run(s) found")

# %%
# Plot
# ----
# :func:`dlcomp.bench.plot_matmul` draws the lines (the figure
# ``python -m dlcomp bench`` writes too): this machine's solid, recorded runs
# dashed, ticks at the sizes measured. The dotted lines mark the highest
# throughput measured here.
import matplotlib.pyplot as plt

from dlcomp.bench import plot_matmul, show

threads = f"{torch.get_num_threads()} thread(s)"
series = {f"this machine: {device}, {threads}, torch {torch.__version__}": rows
          for device, rows in measured.items()}  # fmt: skip
here = list(series)
for data in recorded:
    for device, entry in data["results"].items():
        series[f"recorded: {label(data, device)}"] = entry["matmul"]

fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
plot_matmul(ax, series, highest=here)
ax.set_title("\n".join(findings))

# Shown here; saved next to the script when run with no display.
show(fig, globals().get("__file__"), busy=busy)

# %%
# See also
# --------
# - The chapter page: :doc:`/gpu` (exercise 1).
# - API: :func:`dlcomp.matmul_throughput`, :func:`dlcomp.benchmark`,
#   :func:`dlcomp.bench.plot_matmul`; ``python -m dlcomp bench`` measures
#   your machine.
