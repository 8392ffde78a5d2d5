"""
Logging every step: ``.item()`` vs keeping the log on the device
================================================================

The chapter's third exercise: 1000 independent products of 100 x 100
matrices (1000 pairs, drawn before the timing starts), logging the
Frobenius norm of each. Either call ``.item()`` every step (a copy to the
host and a wait for the device, each time) or append the norm *tensor* to a
list and copy everything once at the end. :func:`dlcomp.logging_cost` times
both, interleaved. You will see the ratio the machine that ran the script
measured. On a CPU there is no device to wait for, so the ratio holds no
synchronization cost, and the lesson of the exercise does not show; runs
recorded on a GPU in the repository, if any, are drawn beside it.
"""

# %%
# Measure
# -------
import torch

from dlcomp import CpuShare, logging_cost, try_gpu

# One CPU thread for the timings: on a machine shared with other jobs, more
# threads than free cores can make them wrong by large factors. Leave the
# line out to measure with every core. CpuShare says whether other
# jobs took the CPU from the measurement anyway (on a CPU: one thread runs
# all the time it is not made to wait).
torch.set_num_threads(1)
with CpuShare() as cpu:
    device = try_gpu()
    result = logging_cost(device, steps=1000, n=100, repeats=5)
    print(result.item)
    print(result.on_device)
    ratio = result.ratio  # the median with .item() over the median on the device
    print(f".item() every step / log on the device: {ratio:.2f}x")
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
# :func:`dlcomp.bench.plot_logging` draws the bars (the figure
# ``python -m dlcomp bench`` writes too): medians per logged step, so that
# recorded runs of other lengths compare, with error bars from the first to
# the third quartile.
import matplotlib.pyplot as plt

from dlcomp.bench import plot_logging, show

here = f"this machine\n{device}, torch {torch.__version__}"
bars = {here: result}
steps = {here: 1000}
for data in recorded:
    for dev, entry in data["results"].items():
        name = label(data, dev).replace(", ", "\n", 1)
        bars[name] = entry["logging"]
        steps[name] = data["settings"]["logging_steps"]

fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
plot_logging(ax, bars, steps=steps)
# A finding only if the medians differ by more than 10%, either way.
if ratio > 1.1:
    title = f"{device}: .item() every step took {ratio:.1f}x as long"
elif ratio < 1 / 1.1:
    title = f"{device}: .item() every step took less time ({ratio:.2f}x)"
else:
    title = f"{device}: the two ways of logging took as long (within 10%)"
ax.set_title(title)

# Shown here; saved next to the script when run with no display.
show(fig, globals().get("__file__"), busy=busy)

# %%
# See also
# --------
# - The chapter page: :doc:`/gpu` (exercise 3).
# - API: :func:`dlcomp.logging_cost`, :class:`dlcomp.LoggingCost`,
#   :func:`dlcomp.bench.plot_logging`.
