"""A training process to kill: the resume demo and the crash tests (private).

``python -m dlcomp._worker DIR`` runs (or resumes) :func:`dlcomp.resumable_training`
in ``DIR``; the crash tests start :func:`train` with ``multiprocessing``. Torch
is pinned to one thread, so that every run computes bitwise the same numbers.
(The tests' fault injection, such as a write stalled inside ``fsync``, lives
in the tests.)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from dlcomp.serialization import resumable_training


def train(
    directory: str,
    steps: int,
    save_every: int,
    seed: int,
    ready: Any = None,
    pause_at: int | None = None,
    background: bool = False,
) -> None:
    """Run (or resume) the training.

    ``ready`` (an event) is set when training starts. ``pause_at=s`` hangs
    after step ``s`` after printing ``paused at s``, and waits to be killed.
    ``background`` checkpoints with ``CheckpointManager(background=True)``.
    """
    torch.set_num_threads(1)
    if ready is not None:
        ready.set()

    def on_step(done: int) -> None:
        if done == pause_at:
            print(f"paused at {done}", flush=True)
            time.sleep(3600)

    resumable_training(
        directory,
        steps=steps,
        save_every=save_every,
        seed=seed,
        on_step=on_step,
        background=background,
    )


def main() -> None:
    """Train (or resume) the demo run in DIR: ``python -m dlcomp._worker DIR``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause-at", type=int, default=None)
    parser.add_argument("--background", action="store_true")
    args = parser.parse_args()
    print("ready", flush=True)
    train(
        args.directory,
        args.steps,
        args.save_every,
        args.seed,
        pause_at=args.pause_at,
        background=args.background,
    )


if __name__ == "__main__":
    main()
