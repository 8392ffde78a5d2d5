"""
Resume training after a crash
=============================

Train a small model in a separate process that checkpoints with
:class:`dlcomp.CheckpointManager`, kill that process with ``SIGKILL`` in the
middle of its run (no chance to clean up, like a power cut), start it again,
and let it resume from its last checkpoint. You will see that the resumed
run loses only the steps after its last checkpoint, and ends with exactly
the weights and the loss curve of a run that was never interrupted.
"""

# %%
# A training process we can kill
# ------------------------------
# ``python -m dlcomp.train_worker DIR`` (:mod:`dlcomp.train_worker`) runs
# :func:`dlcomp.resumable_training`: 200 steps of SGD with momentum, a
# checkpoint every 10 steps, resuming from ``DIR`` if it holds one. Its data
# and batches come from a seed, so every run computes the same numbers.
# ``--pause-at`` makes it stop and wait after a given step, so that this page
# kills it at the same step every time it is built; in real life the crash
# comes whenever it likes.
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from dlcomp import CheckpointManager, read_checkpoint

STEPS, EVERY = 200, 10
temporary = tempfile.TemporaryDirectory()  # removed in the last step
workdir = Path(temporary.name)


def start(folder, *options):
    command = [sys.executable, "-m", "dlcomp.train_worker", str(folder), "--steps",
               str(STEPS), "--save-every", str(EVERY), *options]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


# %%
# Run it and kill it at step 107
# ------------------------------
crashed = workdir / "crashed"
process = start(crashed, "--pause-at", "107")
lines = [process.stdout.readline().strip() for _ in range(2)]
process.kill()  # SIGKILL
process.wait()
process.stdout.close()
print(lines, "-> killed, exit code", process.returncode)
print(
    "checkpoints on disk:",
    [path.name for _, path in CheckpointManager(crashed).checkpoints()],
)

# %%
# The last complete checkpoint is step 100: steps 101 to 107 are lost, and
# nothing else.
#
# Start it again
# --------------
# The same command; it finds the checkpoint and resumes from step 100.
process = start(crashed)
process.communicate()
print("resumed run finished, exit code", process.returncode)

# %%
# The uninterrupted reference
# ---------------------------
# Each run's last checkpoint holds its final weights and, among its extras,
# the loss of every step. :func:`dlcomp.read_checkpoint` reads a checkpoint
# file and verifies it (its tensors' hashes, every field), without loading
# it into a model.
reference = workdir / "reference"
process = start(reference)
process.communicate()


def final(folder):
    checkpoint = read_checkpoint(CheckpointManager(folder).latest())
    return checkpoint.model, checkpoint.extra["losses"]


model_a, losses_a = final(crashed)
model_b, losses_b = final(reference)
print(
    "same final weights (bitwise):",
    all(torch.equal(model_a[k], model_b[k]) for k in model_a),
)
print("same loss at every step:     ", losses_a == losses_b)

# %%
# Plot the two loss curves
# ------------------------
# The resumed run's curve is drawn on top of the reference; the dotted line
# marks the kill and the shaded steps were computed twice (once before the
# kill, once after the restart).
import matplotlib.pyplot as plt

from dlcomp.bench import show

steps = range(1, STEPS + 1)
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
ax.plot(steps, losses_b, linewidth=4, alpha=0.35, label="uninterrupted")
ax.plot(
    steps, losses_a, linewidth=1.2, color="C3", label="killed at 107, resumed from 100"
)
ax.axvline(107, color="k", linestyle=":")
ax.axvspan(100, 107, color="C3", alpha=0.15)
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("training loss (MSE)")
ax.set_title("A resumed run retraces the uninterrupted one exactly")
ax.legend(title=f"torch {torch.__version__}, CPU")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# Clean up
# --------
# Both runs wrote their checkpoints into the temporary directory: remove it,
# and everything in it.
temporary.cleanup()

# %%
# See also
# --------
# - The chapter page: :doc:`/read-write` (why it works: atomic writes, safe
#   loading).
# - API: :class:`dlcomp.CheckpointManager`, :func:`dlcomp.resumable_training`,
#   :func:`dlcomp.read_checkpoint`, :mod:`dlcomp.train_worker`.
