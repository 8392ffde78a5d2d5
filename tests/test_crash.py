"""Crash tests: training SIGKILLed at random instants resumes to the same weights.

Each child process is forked from a forkserver that imported torch once, so a
kill-and-resume cycle costs milliseconds, not a fresh interpreter. The
children pin torch to one thread; an uninterrupted child run is the
reference, compared bitwise.
"""

import multiprocessing
import multiprocessing.forkserver
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlcomp import CheckpointManager, load_checkpoint, read_checkpoint
from dlcomp.models import mlp

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGKILL and forkserver are POSIX-only"
)

STEPS, SAVE_EVERY, SEED = 60, 3, 0
MIN_KILLS = 20
# A guard against a hang, not a budget: on a loaded machine every run is
# slower, and the test goes on until it has killed MIN_KILLS times.
HANG_GUARD = 600.0


@pytest.fixture(scope="module")
def stderr_log(tmp_path_factory):
    """The file the children's stderr goes to (see ``ctx``)."""
    return tmp_path_factory.mktemp("children") / "stderr.txt"


@pytest.fixture(scope="module")
def ctx(stderr_log):
    sys.path.insert(0, str(Path(__file__).parent))  # for crash_faults in children
    import crash_faults  # noqa: F401

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dlcomp.train_worker", "crash_faults"])
    # The children inherit the forkserver's stderr, not this process's: start
    # the forkserver writing to a file, which failure messages quote.
    saved = os.dup(2)
    try:
        with open(stderr_log, "ab") as log:
            os.dup2(log.fileno(), 2)
        multiprocessing.forkserver.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return context


def exited(process, stderr_log):
    """A failure message: the child's exit code and the end of the children's stderr."""
    text = stderr_log.read_text(errors="replace") if stderr_log.exists() else ""
    return f"exit code {process.exitcode}; the children's stderr ends:\n{text[-3000:]}"


def final_state(folder):
    """Model state, optimizer state and loss history of the run's last checkpoint."""
    checkpoint = read_checkpoint(CheckpointManager(folder).latest())
    assert checkpoint.step == STEPS
    return checkpoint.model, checkpoint.optimizer, checkpoint.extra["losses"]


def assert_bitwise_equal(a, b):
    model_a, optim_a, losses_a = a
    model_b, optim_b, losses_b = b
    assert model_a.keys() == model_b.keys()
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    for i, state in optim_a["state"].items():
        assert torch.equal(
            state["momentum_buffer"], optim_b["state"][i]["momentum_buffer"]
        )
    assert losses_a == losses_b


def run_child(ctx, folder, ready=None, **kwargs):
    import crash_faults

    process = ctx.Process(
        target=crash_faults.train_signalling_start,
        args=(str(folder), STEPS, SAVE_EVERY, SEED, ready),
        kwargs=kwargs,
    )
    process.start()
    return process


@pytest.fixture(scope="module")
def reference(ctx, tmp_path_factory, stderr_log):
    """An uninterrupted run, and how long its training took."""
    folder = tmp_path_factory.mktemp("reference")
    ready = ctx.Event()
    process = run_child(ctx, folder, ready)
    assert ready.wait(60), exited(process, stderr_log)
    start = time.perf_counter()
    process.join(60)
    assert process.exitcode == 0, exited(process, stderr_log)
    return final_state(folder), time.perf_counter() - start


def temporaries(folder):
    if not folder.exists():  # killed before the first checkpoint was started
        return []
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
def test_training_killed_at_random_instants_resumes_bitwise(
    ctx, reference, tmp_path, capsys, background, stderr_log
):
    expected, duration = reference
    rng = random.Random(20261124)
    kills = kills_mid_write = finished_runs = 0
    deadline = time.monotonic() + HANG_GUARD
    while kills < MIN_KILLS and time.monotonic() < deadline:
        folder = tmp_path / f"run-{finished_runs}"
        while True:  # kill and resume this run until it finishes
            ready = ctx.Event()
            process = run_child(ctx, folder, ready, background=background)
            assert ready.wait(60), exited(process, stderr_log)
            if kills < MIN_KILLS and time.monotonic() < deadline:
                time.sleep(rng.uniform(0, duration))
                process.kill()  # SIGKILL: no cleanup of any kind
            process.join(60)
            if process.exitcode == 0:
                break  # finished before the kill
            assert process.exitcode == -signal.SIGKILL, exited(process, stderr_log)
            kills += 1
            kills_mid_write += bool(temporaries(folder))
            # After every kill the directory must restore (or be empty).
            model = mlp(20, 64, 1)  # the model of resumable_training
            if (latest := CheckpointManager(folder).latest()) is not None:
                load_checkpoint(latest, model)
        assert_bitwise_equal(final_state(folder), expected)
        finished_runs += 1
    with capsys.disabled():
        print(
            f"\ncrash test ({'background' if background else 'synchronous'} "
            f"saves): survived {kills} SIGKILLs ({kills_mid_write} during a "
            f"checkpoint write) over {finished_runs} runs; every run resumed to "
            "bitwise the same weights as the uninterrupted one"
        )
    assert kills >= MIN_KILLS


def test_a_kill_inside_a_checkpoint_write(ctx, reference, tmp_path, stderr_log):
    """Stall the 3rd checkpoint write inside fsync, kill there: the 2nd survives.

    Each save calls fsync twice (the file, then its directory), so the file
    fsync of the 3rd save is the 5th call.
    """
    expected, _ = reference
    import crash_faults

    stalled = ctx.Event()
    process = ctx.Process(
        target=crash_faults.train_stalling_in_fsync,
        args=(str(tmp_path), STEPS, SAVE_EVERY, SEED, 5, stalled),
    )
    process.start()
    assert stalled.wait(30), exited(process, stderr_log)
    process.kill()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL, exited(process, stderr_log)

    assert len(temporaries(tmp_path)) == 1  # the torn write, never renamed
    manager = CheckpointManager(tmp_path)
    assert [step for step, _ in manager.checkpoints()] == [3, 6]  # complete ones only
    model = mlp(20, 64, 1)  # the model of resumable_training
    assert manager.restore(model).step == 6

    process = run_child(ctx, tmp_path)  # resume to the end
    process.join(60)
    assert process.exitcode == 0, exited(process, stderr_log)
    assert temporaries(tmp_path) == []  # the next save removed the leftover
    assert_bitwise_equal(final_state(tmp_path), expected)


def test_a_write_past_the_file_size_limit(ctx, tmp_path, stderr_log):
    """RLIMIT_FSIZE fails the write part way: a clear error, the old file intact."""
    import crash_faults

    path = tmp_path / "c.pt"
    from dlcomp import save_checkpoint

    save_checkpoint(path, torch.nn.Linear(2, 2), step=1)
    old = path.read_bytes()
    results = ctx.Queue()
    process = ctx.Process(
        target=crash_faults.write_past_file_size_limit,
        args=(str(path), 64 * 1024, results),
    )
    process.start()
    process.join(60)
    assert process.exitcode == 0, exited(process, stderr_log)
    name, code, message = results.get(timeout=5)
    assert (name, code) == ("OSError", 27)  # EFBIG: File too large
    assert "could not write" in message
    assert "previous file, if any, is unchanged" in message
    assert path.read_bytes() == old
    assert temporaries(tmp_path) == []
    assert load_checkpoint(path, torch.nn.Linear(2, 2)).step == 1


def test_a_bad_option_is_a_usage_error_before_ready(tmp_path):
    """``python -m dlcomp.train_worker DIR --steps -1``: exit 2, no ``ready``."""
    command = [sys.executable, "-m", "dlcomp.train_worker", str(tmp_path / "run"),
               "--steps", "-1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, f"stderr ends:\n{result.stderr[-3000:]}"
    assert "argument --steps: --steps must be an int >= 1, got -1" in result.stderr, (
        f"stderr ends:\n{result.stderr[-3000:]}"
    )
    assert result.stdout == ""
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["dlcomp.train_worker", "dlcomp.distributed_worker"])
def test_a_dir_below_a_file_is_a_usage_error_before_ready(tmp_path, module):
    """Was: ``ready`` (or the job's start), then a traceback from mkdir."""
    file = tmp_path / "file"
    file.write_text("not a folder")
    command = [sys.executable, "-m", module, str(file / "run"), "--steps", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    tail = f"exit {result.returncode}; stderr ends:\n{result.stderr[-3000:]}"
    assert result.returncode == 2, tail
    assert "argument DIR: DIR must be a folder this process can write in" in (
        result.stderr
    ), tail
    assert "Traceback" not in result.stderr, tail
    assert result.stdout == "", tail  # neither "ready" nor the start event
