"""
Checkpoints that do not stall training
======================================

A synchronous :meth:`dlcomp.CheckpointManager.save` blocks the training loop
until the file is written, flushed to disk and renamed into place: a time
that grows with the size of the model. With ``background=True`` the manager
copies the state to host memory, hands the write to a worker thread and
returns, so the loop waits only for the copy. This script saves a model of
about 270 MB both ways, alternating the two (so that the load of the machine
hits both alike), and plots how long each ``save`` call blocked the caller.
"""

# %%
# A model of about 270 MB
# -----------------------
# Four 4096 x 4096 linear layers: 67 million float32 parameters.
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from dlcomp import CheckpointManager, read_checkpoint

model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(4)])
size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
print(f"model: {size_mb:.0f} MB of parameters")

# %%
# Time the two kinds of save, alternately
# ---------------------------------------
# Each round times one synchronous save, then one background save. The
# background write is then waited for, outside the timed part: between two
# checkpoints a real training loop runs many steps, long enough for the
# previous write to finish. (If it has not, the next ``save`` waits for it.)
ROUNDS = 5
temporary = tempfile.TemporaryDirectory()  # removed in the last step
folder = Path(temporary.name)
sync = CheckpointManager(folder / "sync", keep=1)
background = CheckpointManager(folder / "background", keep=1, background=True)

blocked = {"synchronous": [], "background": []}
for step in range(ROUNDS + 1):  # round 0 warms up (allocations, page cache)
    start = time.perf_counter()
    sync.save(step, model)
    sync_time = time.perf_counter() - start

    start = time.perf_counter()
    background.save(step, model)
    background_time = time.perf_counter() - start
    background.wait()  # not timed: training would run meanwhile

    if step > 0:
        blocked["synchronous"].append(sync_time)
        blocked["background"].append(background_time)

# %%
# The result
# ----------
# The median of the rounds, and the spread (smallest to largest).
for name, times in blocked.items():
    print(
        f"{name:>11}: save() blocked for {statistics.median(times):.3f} s "
        f"(median of {len(times)}; {min(times):.3f} to {max(times):.3f} s)"
    )
ratio = statistics.median(
    b / s for b, s in zip(blocked["background"], blocked["synchronous"], strict=True)
)
print(f"background / synchronous blocking time: {ratio:.2f} (median of the rounds)")

# %%
# Both files hold the same weights: the background copy was taken at the
# moment of ``save``.
a = read_checkpoint(sync.latest()).model
b = read_checkpoint(background.latest()).model
print("same weights in both files:", all(torch.equal(a[k], b[k]) for k in a))

# %%
# Plot the rounds
# ---------------
import matplotlib.pyplot as plt

from dlcomp.bench import show

fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
rounds = range(1, ROUNDS + 1)
for name, times in blocked.items():
    ax.plot(rounds, times, marker="o", label=name)
ax.set_yscale("log")
ax.set_xticks(list(rounds))
ax.set_xlabel("round (the two saves alternate)")
ax.set_ylabel("time save() blocked the caller (s)")
ax.set_title(f"Saving {size_mb:.0f} MB: the background save blocks only for a copy")
ax.legend(title=f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# Clean up
# --------
# The checkpoints were written into a temporary directory: remove it, and
# everything in it.
temporary.cleanup()

# %%
# See also
# --------
# - The chapter page: :doc:`/read-write` (atomic writes, safe loading, and
#   what a background save keeps of those guarantees).
# - API: :class:`dlcomp.CheckpointManager` (``background=True``,
#   :meth:`~dlcomp.CheckpointManager.wait`), :func:`dlcomp.read_checkpoint`.
