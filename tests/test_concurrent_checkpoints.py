"""Several processes, one checkpoint directory: nothing lost, no reader tripped.

The rule (see dlcomp._checkpoint): each save writes a locked temporary file of
its own; renames and deletions happen under the directory's lock file; only
abandoned temporary files are removed; a reader skips a checkpoint deleted
after it listed it. Before that rule, two writers doing 60 saves each lost 34
of 120 (one writer removed the other's temporary file mid-write), and a
reader's restore failed with FileNotFoundError when a writer's cleanup removed
a file it had listed.
"""

import subprocess
import sys

import pytest
import torch
from torch import nn

from dlcomp import CheckpointManager, load_checkpoint

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the lock file uses fcntl.flock (POSIX)"
)

WRITER = """
import sys
import torch
from torch import nn
from dlcomp import CheckpointManager

directory, first, count, keep = sys.argv[1], *map(int, sys.argv[2:5])
torch.set_num_threads(1)
manager = CheckpointManager(directory, keep=keep)
model = nn.Linear(64, 64)
for i in range(count):
    manager.save(first + 2 * i, model, writer=first)
print("saved", count, flush=True)
"""

READER = """
import pathlib, sys, warnings
import torch
from torch import nn
from dlcomp import CheckpointManager

warnings.simplefilter("error")  # a skipped (damaged) checkpoint is a failure here
directory, stop = sys.argv[1], pathlib.Path(sys.argv[2])
torch.set_num_threads(1)
manager = CheckpointManager(directory, keep=2)
loaded = int(manager.restore(nn.Linear(64, 64)) is not None)
print("ready", flush=True)  # the test starts the writer only now
while not stop.exists():
    if manager.restore(nn.Linear(64, 64)) is not None:
        loaded += 1
print("loaded", loaded, flush=True)
"""


def start(script, *args):
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, (
        f"child exited with {process.returncode}; its stderr ends:\n{err[-3000:]}"
    )
    return out


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_two_writers_lose_nothing(tmp_path):
    writers = [start(WRITER, tmp_path, first, 60, 1000) for first in (0, 1)]
    outputs = [finish(w) for w in writers]
    assert all("saved 60" in out for out in outputs)
    manager = CheckpointManager(tmp_path, keep=1000)
    assert [step for step, _ in manager.checkpoints()] == list(range(120))
    for _, path in manager.checkpoints():
        load_checkpoint(path, nn.Linear(64, 64))
    assert leftovers(tmp_path) == []


def test_two_writers_with_a_keep_limit_keep_the_newest(tmp_path):
    writers = [start(WRITER, tmp_path, first, 60, 3) for first in (0, 1)]
    for w in writers:
        finish(w)
    steps = [step for step, _ in CheckpointManager(tmp_path).checkpoints()]
    # the three newest steps, and possibly the last one the slower writer wrote
    assert steps[-3:] == [117, 118, 119]
    assert len(steps) <= 4
    assert leftovers(tmp_path) == []


def test_a_reader_beside_a_writer_never_fails(tmp_path):
    stop = tmp_path / "stop"
    folder = tmp_path / "ckpt"
    CheckpointManager(folder).save(0, nn.Linear(64, 64))
    reader = start(READER, folder, stop)
    # Without this handshake a slow interpreter start on a loaded machine let
    # the writer finish before the reader's loop began: it loaded nothing.
    first_line = reader.stdout.readline()
    assert first_line == "ready\n", first_line + reader.stderr.read()[-3000:]
    writer = start(WRITER, folder, 1, 60, 2)
    finish(writer)
    stop.touch()
    out = finish(reader)
    assert int(out.split()[-1]) >= 1, out
    assert torch.equal(
        torch.tensor([s for s, _ in CheckpointManager(folder).checkpoints()]),
        torch.tensor([117, 119]),
    )
