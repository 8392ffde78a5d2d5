"""
Logging every step: ``.item()`` vs keeping the log on the device
================================================================

The chapter's third exercise: 1000 independent products of 100 x 100
matrices, logging the Frobenius norm of each. Either call ``.item()`` every
step (a copy to the host and a wait for the device, each time) or append the
norm *tensor* to a list and copy everything once at the end.
:func:`dlcomp.logging_cost` times both, interleaved. You will see the ratio
this build measured; on a CPU there is no device to wait for, so it shows no
synchronization cost; recorded GPU runs (where present) show what the
per-step synchronization costs there.
"""

# %%
# Measure
# -------
import torch

from dlcomp import logging_cost, try_gpu

device = try_gpu()
result = logging_cost(device, steps=1000, n=100, repeats=5)
for measurement in result.values():
    print(measurement)
ratio = result["item"].median / result["on_device"].median
print(f".item() every step / log on the device: {ratio:.2f}x")

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
# Medians with error bars from the first to the third quartile.
import matplotlib.pyplot as plt

bars = [(f"this build\n{device}, torch {torch.__version__}", result["item"].as_dict(),
         result["on_device"].as_dict())]  # fmt: skip
for data in recorded:
    for dev, entry in data["results"].items():
        bars.append((label(data, dev).replace(", ", "\n", 1), entry["logging"]["item"],
                     entry["logging"]["on_device"]))  # fmt: skip

fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
for i, (_, item, on_device) in enumerate(bars):
    for offset, (kind, m) in enumerate((("item()", item), ("on device", on_device))):
        ax.bar(i + 0.4 * offset, m["median"], width=0.4, color=f"C{offset}",
               yerr=[[m["median"] - m["q1"]], [m["q3"] - m["median"]]],
               label=kind if i == 0 else None)  # fmt: skip
ax.set_xticks(
    [i + 0.2 for i in range(len(bars))], [b[0] for b in bars], fontsize="small"
)
ax.set_ylabel("seconds for 1000 logged steps (median)")
# A finding only if the medians differ by more than 10%, either way.
if ratio > 1.1:
    title = f"{device}: .item() every step took {ratio:.1f}x as long"
elif ratio < 1 / 1.1:
    title = f"{device}: .item() every step took less time ({ratio:.2f}x)"
else:
    title = f"{device}: the two ways of logging took as long (within 10%)"
ax.set_title(title)
ax.legend()
plt.show()

# %%
# See also
# --------
# - The chapter page: :doc:`/gpu` (exercise 3).
# - API: :func:`dlcomp.logging_cost`, :class:`dlcomp.Measurement`.
