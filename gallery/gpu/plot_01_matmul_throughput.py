"""
Matrix multiplication: GFLOP/s by size and device
=================================================

Time square matrix products of growing size with :func:`dlcomp.benchmark`
(device synchronized, warmed up, median of repeated runs) and plot the
throughput in GFLOP/s on log axes. You will see small products waste most of
the machine (fixed costs dominate) and large ones approach its peak. Recorded GPU runs
from the repository are drawn beside this machine's measurement.
"""

# %%
# Measure this machine
# --------------------
# Every accelerator PyTorch can use, else the CPU. Sizes stay small enough for
# a quick build on a CPU.
import torch

from dlcomp import matmul_throughput, try_all_gpus

sizes = [32, 64, 128, 256, 512]
measured = {str(d): matmul_throughput(sizes, d, min_time=0.1) for d in try_all_gpus()}
for device, rows in measured.items():
    for row in rows:
        m = row["measurement"]
        spread = m["q3"] - m["q1"]
        print(f"{device:6} n={row['size']:4}: {row['gflops']:8.1f} GFLOP/s "
              f"(median of {m['runs']} runs, IQR {spread:.2e} s)")  # fmt: skip

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
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
for device, rows in measured.items():
    ax.plot([r["size"] for r in rows], [r["gflops"] for r in rows], marker="o",
            label=f"this build: {device}, torch {torch.__version__}")  # fmt: skip
for data in recorded:
    for device, entry in data["results"].items():
        rows = entry["matmul"]
        ax.plot([r["size"] for r in rows], [r["gflops"] for r in rows], marker="s",
                linestyle="--", label=f"recorded: {label(data, device)}")  # fmt: skip
ax.set(xscale="log", yscale="log", xlabel="matrix size n (n x n times n x n)",
       ylabel="GFLOP/s (median)")  # fmt: skip
ax.set_xticks(sizes, [str(n) for n in sizes], minor=False)
ax.minorticks_off()
ax.set_title("Bigger products use the hardware better")
ax.legend(fontsize="small")
plt.show()

# %%
# See also
# --------
# - The chapter page: :doc:`/gpu` (exercise 1).
# - API: :func:`dlcomp.matmul_throughput`, :func:`dlcomp.benchmark`;
#   ``python -m dlcomp bench`` measures your machine.
