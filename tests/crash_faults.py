"""Fault injection for the crash tests: child-process entry points (not a test module).

The crash tests' forkserver imports this module by name (``tests/`` is put
on ``sys.path`` for it), so that its functions can be the targets of child
processes. They wrap the public worker, :func:`dlcomp.train_worker.train`,
with what only the tests need: an event set when training starts, a write
stalled inside ``fsync``, a file size limit.
"""

import os
import signal
import time

from torch import nn

from dlcomp import save_checkpoint
from dlcomp.train_worker import train


def train_signalling_start(directory, steps, save_every, seed, ready, background=False):
    """Set ``ready`` (an event, if given), then run (or resume) the training."""
    if ready is not None:
        ready.set()
    train(
        directory, steps=steps, save_every=save_every, seed=seed, background=background
    )


def train_stalling_in_fsync(directory, steps, save_every, seed, stall_on, stalled):
    """Train, but hang inside the ``stall_on``-th fsync after setting ``stalled``.

    The middle of a checkpoint write: the process then waits to be killed.
    """
    real_fsync, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] == stall_on:
            stalled.set()
            time.sleep(3600)
        real_fsync(fd)

    os.fsync = fsync
    train(directory, steps=steps, save_every=save_every, seed=seed)


def write_past_file_size_limit(path, limit, results):
    """Save a checkpoint larger than RLIMIT_FSIZE allows; report what happened."""
    import resource  # POSIX only

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG, not a fatal signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        save_checkpoint(path, nn.Linear(1000, 1000), step=2)
    except OSError as error:
        results.put((type(error).__name__, error.errno, str(error)))
    else:
        results.put(("no error", None, ""))
