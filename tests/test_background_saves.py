"""CheckpointManager(background=True): saves that do not stall training, none lost."""

import errno
import subprocess
import sys
import threading

import pytest
import torch
from torch import nn

from dlcomp import CheckpointManager, load_checkpoint, serialization


def test_the_file_holds_the_state_at_save_time(tmp_path):
    manager = CheckpointManager(tmp_path, background=True)
    model = nn.Linear(256, 256)
    at_save = {k: v.clone() for k, v in model.state_dict().items()}
    path = manager.save(1, model)
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on while the file is written
    assert manager.wait() == path
    target = nn.Linear(256, 256)
    load_checkpoint(path, target)
    assert torch.equal(target.weight, at_save["weight"])


def test_a_failed_background_write_is_raised_at_the_next_call(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, background=True)
    manager.save(1, nn.Linear(2, 2))
    manager.wait()

    failed = threading.Event()

    def disk_full(f, payload):
        failed.set()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(serialization, "write", disk_full)
    manager.save(2, nn.Linear(2, 2))  # returns: the write fails in the worker
    assert failed.wait(60)
    monkeypatch.undo()
    with pytest.raises(OSError, match=r"could not write .*step-000000002\.pt"):
        manager.save(3, nn.Linear(2, 2))
    assert manager.wait() is None  # raised once
    assert [s for s, _ in manager.checkpoints()] == [1]
    manager.save(3, nn.Linear(2, 2))
    manager.wait()
    assert [s for s, _ in manager.checkpoints()] == [1, 3]


def test_restore_waits_for_the_write_in_flight(tmp_path):
    manager = CheckpointManager(tmp_path, background=True)
    manager.save(7, nn.Linear(64, 64))
    assert manager.restore(nn.Linear(64, 64)).step == 7


EXIT_RIGHT_AFTER_SAVE = """
import sys
from torch import nn
from dlcomp import CheckpointManager, serialization
manager = CheckpointManager(sys.argv[1], background=True)
if sys.argv[2].startswith("fail"):
    def disk_full(f, payload):
        raise OSError(28, "No space left on device")
    serialization.write = disk_full
manager.save(5, nn.Linear(1024, 1024))
print("saved", flush=True)
if sys.argv[2] == "fail-and-drop":
    del manager  # the error must not go away with it
    import gc
    gc.collect()
"""


def run_child(*args):
    result = subprocess.run(
        [sys.executable, "-c", EXIT_RIGHT_AFTER_SAVE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    tail = f"exit {result.returncode}; stderr ends:\n{result.stderr[-3000:]}"
    return result, tail


def test_the_interpreter_exit_waits_for_the_write(tmp_path):
    result, tail = run_child(tmp_path, "ok")
    assert result.returncode == 0, tail
    assert (
        load_checkpoint(tmp_path / "step-000000005.pt", nn.Linear(1024, 1024)).step == 5
    )


def test_a_write_failing_at_exit_is_reported(tmp_path):
    result, tail = run_child(tmp_path, "fail")
    assert "saved" in result.stdout, tail
    assert "No space left on device" in result.stderr, tail
    assert "could not write" in result.stderr, tail
    assert not list(tmp_path.glob("step-*")), tail


def test_background_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="background must be True or False"):
        CheckpointManager(tmp_path, background="yes")


def test_tied_parameters_stay_tied_in_a_background_checkpoint(tmp_path):
    from dlcomp import read_checkpoint, tied_mlp

    manager = CheckpointManager(tmp_path, background=True)
    net = tied_mlp()
    path = manager.save(1, net)
    manager.wait()
    state = read_checkpoint(path).model
    names = [k for k in state if k.endswith("weight")]
    shared = {state[k].data_ptr() for k in names}
    assert len(shared) < len(names)  # the tied weights share one storage


def test_a_failed_write_of_a_dropped_manager_is_still_reported(tmp_path):
    result, tail = run_child(tmp_path, "fail-and-drop")
    assert "No space left on device" in result.stderr, tail


def test_buffers_of_other_dtypes_keep_their_dtype(tmp_path):
    class Buffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("a", torch.empty(0))
            self.register_buffer("b", torch.empty(0, dtype=torch.int64))
            self.register_buffer("c", torch.ones(4))
            self.register_buffer("d", self.c.view(torch.int32))

    from dlcomp import read_checkpoint

    manager = CheckpointManager(tmp_path, background=True)
    path = manager.save(1, Buffers())
    manager.wait()
    state = read_checkpoint(path).model
    assert [state[k].dtype for k in "abcd"] == [
        torch.float32,
        torch.int64,
        torch.float32,
        torch.int32,
    ]
    assert torch.equal(state["d"], torch.ones(4).view(torch.int32))


FORK_WHILE_WRITING = """
import os, sys, threading, time
from torch import nn
from dlcomp import CheckpointManager, serialization

started = threading.Event()
real_write = serialization.write
parent = os.getpid()

def slow_write(f, payload):  # the parent's write stays in flight while it forks
    if os.getpid() == parent:
        started.set()
        time.sleep(3)
    real_write(f, payload)

serialization.write = slow_write
manager = CheckpointManager(sys.argv[1], background=True)
manager.save(1, nn.Linear(4, 4))
assert started.wait(60)
pid = os.fork()
if pid == 0:  # the child: its own saves work, and it exits (atexit handlers run)
    print("child: started", file=sys.stderr, flush=True)
    assert manager.wait() is None  # the parent's write is not the child's
    print("child: did not wait for the parent's write", file=sys.stderr, flush=True)
    child = CheckpointManager(sys.argv[2], background=True)
    child.save(2, nn.Linear(4, 4))
    assert child.wait() is not None
    print("child: saved its own; exiting", file=sys.stderr, flush=True)
    sys.exit(0)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("child hung at exit", flush=True)
    sys.exit(1)
assert manager.wait() is not None  # the parent's own write completes
"""


def test_a_forked_child_exits_while_the_parent_writes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_WRITING, tmp_path / "a", tmp_path / "b"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    tail = f"exit {result.returncode}; stdout: {result.stdout!r}; stderr ends:\n"
    tail += result.stderr[-3000:]
    assert result.returncode == 0, tail
    assert "child exit 0" in result.stdout, tail
    steps = [step for step, _ in CheckpointManager(tmp_path / "a").checkpoints()]
    assert steps == [1], tail  # the parent's write, made once, by the parent
    steps = [step for step, _ in CheckpointManager(tmp_path / "b").checkpoints()]
    assert steps == [2], tail  # the child's own
