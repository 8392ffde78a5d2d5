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
# ``python -m dlcomp._dist_worker`` trains an MLP with Adam, wrapped in
# ``fully_shard``, on batches drawn from a seed and split between the ranks,
# and checkpoints every 4 steps. ``--pause-at 23`` makes rank 1 stop after
# step 23 on the first attempt, so that this page kills it at the same step
# at every build; a real crash comes whenever it likes. The processes talk
# over gloo on this machine: no GPU needed.
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

workdir = Path(tempfile.mkdtemp())
STEPS = 60


def torchrun(folder, *options, restarts=0):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", f"--max-restarts={restarts}",
               "-m", "dlcomp._dist_worker", str(folder / "ckpt"), "--wrap", "fsdp",
               "--steps", str(STEPS), "--save-every", "4",
               "--state-out", str(folder / "final.pt"), *options]  # fmt: skip
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

a = torch.load(killed / "final.pt", weights_only=True)
b = torch.load(reference / "final.pt", weights_only=True)
same = all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
print("same final weights (bitwise):", same)
print("same loss at every step:     ", a["losses"] == b["losses"])

# %%
# Plot the two loss curves
# ------------------------
import matplotlib.pyplot as plt

steps = range(1, STEPS + 1)
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
ax.plot(steps, b["losses"], linewidth=4, alpha=0.35, label="uninterrupted, 2 processes")
ax.plot(steps, a["losses"], linewidth=1.2, color="C3",
        label="rank 1 killed at step 23, resumed from 20")  # fmt: skip
ax.axvline(23, color="k", linestyle=":")
ax.axvspan(20, 23, color="C3", alpha=0.15)
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("training loss (MSE, mean over ranks)")
ax.set_title("A sharded job resumed by torchrun retraces the uninterrupted one")
ax.legend(title=f"FSDP2 on 2 CPU processes (gloo), torch {torch.__version__}")
plt.show()

# %%
# See also
# --------
# - The chapter page: :doc:`/distributed-checkpoints`.
# - API: :class:`dlcomp.DistributedCheckpointManager`, :func:`dlcomp.consolidate`.
