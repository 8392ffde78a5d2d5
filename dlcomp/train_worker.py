"""A training process to kill and restart: section 5.5's resume-after-a-crash run.

``python -m dlcomp.train_worker DIR`` runs (or resumes)
:func:`dlcomp.resumable_training` in ``DIR``: a small regression model
trained with SGD and momentum, checkpointed with
:class:`dlcomp.CheckpointManager`. Kill it at any instant (``SIGKILL``, a
power cut) and run the same command again: it resumes from its last complete
checkpoint and ends with bitwise the weights of a run that never stopped.
Torch computes on one thread while it trains, so every run computes the same
numbers. The gallery script
:ref:`sphx_glr_auto_examples_files_plot_01_resume_after_crash.py` starts it,
kills it and restarts it.

Options: ``--steps``, ``--save-every``, ``--seed`` (as
:func:`dlcomp.resumable_training`), ``--background`` (checkpoint from a
background thread), and ``--pause-at S``, which makes the run print
``paused at S`` after step ``S`` and wait there to be killed, so that a
demonstration kills it at the same step every time.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import torch

from dlcomp._checks import check_int
from dlcomp._cli import int_option, number, option, steps_option, writable_folder
from dlcomp.serialization import TrainingRun, resumable_training

__all__ = ["main", "train"]


def train(
    directory: str | os.PathLike[str],
    *,
    steps: int = 60,
    save_every: int = 5,
    seed: int = 0,
    pause_at: int | None = None,
    background: bool = False,
) -> TrainingRun:
    """Run (or resume) the training in ``directory`` on one thread.

    :func:`dlcomp.resumable_training` with torch set to one thread while it
    trains (the previous number of threads is restored on return), so that
    every run computes bitwise the same numbers.

    Args:
        directory: the folder where the checkpoints are kept (created if
            missing); not an empty path, not a file.
        steps: total number of training steps.
        save_every: checkpoint after every this many steps (and at the end).
        seed: the seed of the model and of the data, ``0 <= seed < 2**12``
            (see :func:`dlcomp.resumable_training`).
        pause_at: if given, print ``paused at S`` after step ``S`` and wait
            there (an hour), to be killed at a known step.
        background: checkpoint from a background thread
            (``CheckpointManager(..., background=True)``).

    Returns:
        TrainingRun: the model and the whole loss history.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> run = train(folder, steps=6, save_every=3)
        >>> run.resumed_from, len(run.losses)
        (None, 6)
        >>> more = train(folder, steps=9, save_every=3)  # resumes from step 6
        >>> more.resumed_from, len(more.losses), more.losses[:6] == run.losses
        (6, 9, True)
    """
    directory = _check_folder(directory, "directory", who="train")
    seed = _check_seed(seed, "seed", who="train")
    if pause_at is not None:
        pause_at = check_int(pause_at, "pause_at", minimum=1, who="train")

    def on_step(done: int) -> None:
        if done == pause_at:
            print(f"paused at {done}", flush=True)
            time.sleep(3600)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return resumable_training(
            directory,
            steps=steps,
            save_every=save_every,
            seed=seed,
            on_step=on_step,
            background=background,
        )
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> None:
    """Train (or resume) the run in DIR: ``python -m dlcomp.train_worker DIR``.

    Prints ``ready`` once it has parsed and checked its arguments, then
    trains with :func:`train`. A bad argument (``--steps -1``, a file as
    ``DIR``, a ``DIR`` below a file or in a folder this process cannot
    write in) is a usage error (exit status 2) that names the option,
    before ``ready``.

    Args:
        argv: the command-line arguments (default: ``sys.argv[1:]``):
            ``DIR [--steps N] [--save-every K] [--seed S] [--pause-at S]
            [--background]``.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> main([folder, "--steps", "4", "--save-every", "2"])
        ready
        >>> from dlcomp import CheckpointManager
        >>> [step for step, _ in CheckpointManager(folder).checkpoints()]
        [2, 4]
    """
    parser = argparse.ArgumentParser(
        prog="python -m dlcomp.train_worker",
        description="Train (or resume) a small model, checkpointing to DIR.",
    )
    parser.add_argument("directory", metavar="DIR", type=option(_folder_option, "DIR"))
    parser.add_argument("--steps", type=steps_option, default=60)
    parser.add_argument("--save-every", type=int_option("--save-every", 1), default=5)
    parser.add_argument("--seed", type=option(_seed_option, "--seed"), default=0)
    parser.add_argument(
        "--pause-at", type=int_option("--pause-at", 1), default=None, metavar="S"
    )
    parser.add_argument("--background", action="store_true")
    args = parser.parse_args(argv)
    print("ready", flush=True)
    train(
        args.directory,
        steps=args.steps,
        save_every=args.save_every,
        seed=args.seed,
        pause_at=args.pause_at,
        background=args.background,
    )


def _check_folder(path: object, name: str, who: str | None = None) -> str:
    """``path`` as a string if it can be a folder: not empty, not a file."""
    prefix = who + ": " if who else ""
    expected = f"{prefix}{name} must be a folder (created if missing)"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{expected}, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{expected}, got a bytes path {text!r}; give a str")
    if not text:
        raise ValueError(f"{expected}, got an empty path; give e.g. 'runs/ckpt'")
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError(f"{expected}, got {text!r}, which is a file")
    return text


def _folder_option(text: str, name: str) -> str:
    """``DIR``: a folder (created if missing) this process can write in."""
    return writable_folder(_check_folder(text, name), name)


def _check_seed(seed: object, name: str, who: str | None = None) -> int:
    """``seed`` as an int with ``0 <= seed < 2**12``, as resumable_training takes."""
    seed = check_int(seed, name, minimum=0, who=who)
    if seed >= 2**12:
        prefix = who + ": " if who else ""
        raise ValueError(f"{prefix}{name} must be an int < 2**12, got {seed}")
    return seed


def _seed_option(text: str, name: str) -> int:
    return _check_seed(number(text), name)


if __name__ == "__main__":
    main()
