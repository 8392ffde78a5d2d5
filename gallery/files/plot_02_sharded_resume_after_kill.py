"""
Resume a sharded (FSDP2) training job after a worker is killed
==============================================================

Train a small model on 2 processes with FSDP2 (each process holds half of
every parameter) under ``torchrun --max-restarts``, checkpointing with
:class:`dlcomp.DistributedCheckpointManager`. Kill one worker with
``SIGKILL`` in the middle of the run: torchrun stops the other one, starts
the group again, and the new workers resume from the last complete
checkpoint. You will see the resumed job end with exactly the weights and
the loss curve of a job that was never interrupted.
"""

# %%
# The job
# -------
# ``python -m dlcomp.distributed_worker`` (:mod:`dlcomp.distributed_worker`)
# trains an MLP with Adam, wrapped in ``fully_shard``, on batches drawn from
# a seed and split between the ranks, and checkpoints every 4 steps. It is
# the training loop of ``train.py`` on the chapter page
# :doc:`/distributed-checkpoints` (bitwise the same numbers: a test checks
# it), with two options for this demonstration: ``--pause-at 23`` makes rank
# 1 stop after step 23 on the first attempt, so that this page kills it at
# the same step at every build (a real crash comes whenever it likes), and
# ``--pid-dir`` tells this page the workers' process ids. The processes talk
# over gloo on this machine: no GPU needed.
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

temporary = tempfile.TemporaryDirectory()  # removed in the last step
workdir = Path(temporary.name)
STEPS = 60


def torchrun(folder, *options, restarts=0):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", f"--max-restarts={restarts}",
               f"--log-dir={folder / 'logs'}",  # not a new folder in /tmp per run
               "-m", "dlcomp.distributed_worker", str(folder / "ckpt"),
               "--wrap", "fsdp", "--steps", str(STEPS), "--save-every", "4",
               *options]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = subprocess.DEVNULL  # torchrun's own log
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=quiet)  # fmt: skip


# %%
# Kill a worker at step 23
# ------------------------
killed = workdir / "killed"
(killed / "pids").mkdir(parents=True)
job = torchrun(
    killed, "--pause-at", "23", "--pid-dir", str(killed / "pids"), restarts=2
)
for line in job.stdout:
    event = json.loads(line)
    print(event)
    if event["event"] == "paused":
        os.kill(int((killed / "pids" / "rank1").read_text()), signal.SIGKILL)
        print("SIGKILL sent to rank 1")
        break

# %%
# torchrun notices the dead worker, stops rank 0 and starts both again. The
# new workers find the last complete checkpoint, step 20, and go on from
# there: steps 21 to 23 are computed a second time.
for line in job.stdout:
    print(json.loads(line))
job.wait()
print("job finished, exit code", job.returncode)

# %%
# The uninterrupted reference
# ---------------------------
reference = workdir / "reference"
reference.mkdir()
run = torchrun(reference)
run.communicate()
print("reference job finished, exit code", run.returncode)

# %%
# Compare the two jobs' last checkpoints
# --------------------------------------
# Both jobs end with a checkpoint of step 60, written by 2 processes. Here,
# in this one process, :meth:`dlcomp.DistributedCheckpointManager.restore`
# loads each into a plain (unsharded) model and its Adam optimizer, and
# returns a :class:`dlcomp.CheckpointInfo`: the step, the number of
# processes that wrote it, and the extras of its manifest (the loss of every
# step).
from dlcomp import DistributedCheckpointManager
from dlcomp.distributed_worker import build


def final(folder):
    model, optimizer = build("none", seed=1)  # unwrapped, other initial values
    info = DistributedCheckpointManager(folder / "ckpt").restore(model, optimizer)
    return info, model, optimizer


info_a, model_a, optimizer_a = final(killed)
info_b, model_b, optimizer_b = final(reference)
print(f"killed job:    step {info_a.step}, written by {info_a.world_size} processes")
print(f"reference job: step {info_b.step}, written by {info_b.world_size} processes")
weights_a, weights_b = model_a.state_dict(), model_b.state_dict()
same = all(torch.equal(weights_a[k], weights_b[k]) for k in weights_b)
adam_a, adam_b = optimizer_a.state_dict()["state"], optimizer_b.state_dict()["state"]
same_adam = all(
    torch.equal(adam_a[i][name], adam_b[i][name])
    for i in adam_b
    for name in ("exp_avg", "exp_avg_sq")
)
losses_a, losses_b = info_a.extra["losses"], info_b.extra["losses"]
print("same final weights (bitwise):", same)
print("same Adam moments (bitwise): ", same_adam)
print("same loss at every step:     ", losses_a == losses_b)

# %%
# Plot the two loss curves
# ------------------------
import matplotlib.pyplot as plt

from dlcomp.bench import show

steps = range(1, STEPS + 1)
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
ax.plot(steps, losses_b, linewidth=4, alpha=0.35, label="uninterrupted, 2 processes")
ax.plot(steps, losses_a, linewidth=1.2, color="C3",
        label="rank 1 killed at step 23, resumed from 20")  # fmt: skip
ax.axvline(23, color="k", linestyle=":")
ax.axvspan(20, 23, color="C3", alpha=0.15)
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("training loss (MSE, mean over ranks)")
ax.set_title("A sharded job resumed by torchrun retraces the uninterrupted one")
ax.legend(title=f"FSDP2 on 2 CPU processes (gloo), torch {torch.__version__}")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# Clean up
# --------
# Both jobs wrote their checkpoints into the temporary directory: remove it,
# and everything in it.
temporary.cleanup()

# %%
# See also
# --------
# - The chapter page: :doc:`/distributed-checkpoints`.
# - API: :class:`dlcomp.DistributedCheckpointManager`, :func:`dlcomp.consolidate`,
#   :mod:`dlcomp.distributed_worker`.
