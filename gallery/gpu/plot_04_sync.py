"""
Timing without synchronizing: what the clock measures
=====================================================

The classic mistake: ``start = time.perf_counter(); Y = A @ B;
time.perf_counter() - start``. On a GPU the product is only *queued* when
the call returns, so the clock measures the launch, not the work.
:func:`dlcomp.sync_cost` times every call twice from the same start:
as soon as it returns, and after synchronizing the device. You will see the
two medians per matrix size for the machine that ran the script (on a CPU,
where a call returns when its work is done, the two should agree), beside
any runs recorded in the repository (the script prints how many it found).
The title states what the plotted numbers show.
"""

# %%
# Measure this machine
# --------------------
# The first accelerator, else the CPU. Larger products on an accelerator,
# where the gap between launch and work grows with the size.
import torch

from dlcomp import CpuShare, sync_cost, try_gpu

# One CPU thread for the timings: on a machine shared with other jobs, more
# threads than free cores can make them wrong by large factors. Leave the
# line out to measure with every core. CpuShare says whether other
# jobs took the CPU from the measurement anyway (on a CPU: one thread runs
# all the time it is not made to wait).
torch.set_num_threads(1)
with CpuShare() as cpu:
    device = try_gpu()
    sizes = [256, 1024, 4096] if device.type != "cpu" else [256, 512, 1024]
    costs = sync_cost(sizes, device, min_time=0.2)
    for cost in costs:
        print(f"{device} n={cost.size:4}: "
              f"{cost.synchronized.median * 1e6:9.1f} us synchronized, "
              f"{cost.unsynchronized.median * 1e6:9.1f} us not "
              f"(ratio {cost.ratio:.2f}, {cost.synchronized.runs} runs)")  # fmt: skip
busy = device.type == "cpu" and cpu.busy
if device.type == "cpu":
    print(cpu)

# %%
# Recorded runs from other machines
# ---------------------------------
# Runs of ``python -m dlcomp bench`` recorded in the repository's
# ``benchmarks/results/`` (schema ``dlcomp.bench/2`` and later carry this
# measurement). A script downloaded on its own finds none.
from pathlib import Path

from dlcomp.bench import find_recorded, label

recorded = find_recorded(Path(globals().get("__file__", ".")).resolve().parent)
print(f"{len(recorded)} recorded run(s) found")

# %%
# Plot
# ----
# Solid: the clock read after synchronizing; dashed: read as the call
# returned. Error bars: first to third quartile. :func:`dlcomp.bench.plot_sync`
# draws the lines and chooses the title from the numbers: a finding only when
# they show one.
import matplotlib.pyplot as plt

from dlcomp.bench import plot_sync, show

here = f"this machine ({device}, torch {torch.__version__})"
series = {here: costs}
for data in recorded:
    for dev, entry in data["results"].items():
        series[label(data, dev)] = entry["sync"]

fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
print("title:", plot_sync(ax, series))

# Shown here; saved next to the script when run with no display.
show(fig, globals().get("__file__"), busy=busy)

# %%
# See also
# --------
# - The chapter page: :doc:`/gpu` (timing code on an accelerator).
# - API: :func:`dlcomp.sync_cost`, :func:`dlcomp.benchmark`,
#   :func:`dlcomp.synchronize`; ``python -m dlcomp bench`` records this
#   measurement for every device it measures.
