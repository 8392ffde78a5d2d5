"""
Copy bandwidth: host and device
===============================

Time copies of tensors from 1 to 64 MiB with :func:`dlcomp.copy_bandwidth`
and plot GB/s. Every copy goes into a destination allocated beforehand, so
the time is the transfer's, not an allocation's. On a machine with an
accelerator it measures host-to-device and device-to-host copies, the host
side a pageable or a pinned buffer, with and without ``non_blocking``, the
configurations timed interleaved; on a machine without one it measures a
copy into a preallocated host buffer, as the reference every device
transfer is compared with. You will see how the speed per byte depends on
the size of the copy on the machine that ran the script, beside any runs
recorded in the repository (the script prints how many it found).
"""

# %%
# Measure
# -------
import torch

from dlcomp import CpuShare, copy_bandwidth, try_gpu

# One CPU thread for the timings: on a machine shared with other jobs, more
# threads than free cores can make them wrong by large factors. Leave the
# line out to measure with every core. CpuShare says whether other
# jobs took the CPU from the measurement anyway (on a CPU: one thread runs
# all the time it is not made to wait).
torch.set_num_threads(1)
with CpuShare() as cpu:
    device = try_gpu()
    rows = copy_bandwidth([1, 4, 16, 64], device, min_time=0.05)
    for r in rows:
        print(f"{r.direction:12} {r.memory:8} non_blocking={r.non_blocking!s:5} "
              f"{r.size_mib:4} MiB: {r.gbps:6.1f} GB/s")  # fmt: skip
busy = device.type == "cpu" and cpu.busy
if device.type == "cpu":
    print(cpu)

# %%
# Recorded runs from other machines
# ---------------------------------
from pathlib import Path

from dlcomp.bench import find_recorded, label

recorded = find_recorded(Path(globals().get("__file__", ".")).resolve().parent)
print(f"{len(recorded)} recorded run(s) found")

# %%
# Plot
# ----
# :func:`dlcomp.bench.plot_copy` draws one line per kind of copy (the figure
# ``python -m dlcomp bench`` writes too): a colour per direction and host
# memory, its ``non_blocking`` variant lighter; this machine's lines solid,
# recorded runs dashed; ticks at the sizes measured.
import matplotlib.pyplot as plt

from dlcomp.bench import plot_copy, show

series = {f"this machine ({device}, torch {torch.__version__})": rows}
for data in recorded:
    for dev, entry in data["results"].items():
        series[label(data, dev)] = entry["copy"]

fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
plot_copy(ax, series)


# The title states a finding only if every configuration measured here shows
# it, comparing its smallest copy with its largest.
smallest = {r.kind: r.gbps for r in reversed(rows)}  # first row of each
largest = {r.kind: r.gbps for r in rows}  # last row of each
if all(largest[k] > smallest[k] for k in largest):
    title = f"{device}: the largest copies move the most bytes per second"
elif all(largest[k] < smallest[k] for k in largest):
    title = f"{device}: the smallest copies move the most bytes per second"
else:
    title = "Copy bandwidth by size"
ax.set_title(title)

# Shown here; saved next to the script when run with no display.
show(fig, globals().get("__file__"), busy=busy)

# %%
# See also
# --------
# - The chapter page: :doc:`/gpu` (transfers are slow).
# - API: :func:`dlcomp.copy_bandwidth`, :func:`dlcomp.bench.plot_copy`.
