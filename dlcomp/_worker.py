"""Child processes for the crash tests and the resume demo (private).

The functions here run in a process of their own, started by
``multiprocessing`` (tests) or as ``python -m dlcomp._worker DIR ...`` (the
gallery). They pin torch to one thread, so that every run of
:func:`dlcomp.resumable_training` computes bitwise the same numbers.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

import torch
from torch import nn

from dlcomp.serialization import resumable_training, save_checkpoint


def train(
    directory: str,
    steps: int,
    save_every: int,
    seed: int,
    ready: Any = None,
    stall_on_fsync: int | None = None,
    stalled: Any = None,
    pause_at: int | None = None,
) -> None:
    """Run (or resume) the training.

    ``stall_on_fsync=n`` hangs inside the n-th fsync (the middle of a
    checkpoint write) after setting ``stalled``; ``pause_at=s`` hangs after
    step ``s`` after printing ``paused at s``. Either way the process waits
    to be killed.
    """
    torch.set_num_threads(1)
    if stall_on_fsync is not None:
        real_fsync, calls = os.fsync, [0]

        def fsync(fd: int) -> None:
            calls[0] += 1
            if calls[0] == stall_on_fsync:  # inside a checkpoint write
                stalled.set()
                time.sleep(3600)
            real_fsync(fd)

        os.fsync = fsync
    if ready is not None:
        ready.set()

    def on_step(done: int) -> None:
        if done == pause_at:
            print(f"paused at {done}", flush=True)
            time.sleep(3600)

    resumable_training(
        directory, steps=steps, save_every=save_every, seed=seed, on_step=on_step
    )


def write_past_file_size_limit(path: str, limit: int, results: Any) -> None:
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


def main() -> None:
    """Train (or resume) the demo run in DIR: ``python -m dlcomp._worker DIR``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause-at", type=int, default=None)
    args = parser.parse_args()
    print("ready", flush=True)
    train(
        args.directory,
        args.steps,
        args.save_every,
        args.seed,
        pause_at=args.pause_at,
    )


if __name__ == "__main__":
    main()
