"""A multi-process training job to kill and restart: section 5.5+'s sharded run.

``torchrun --nproc_per_node=2 -m dlcomp.distributed_worker DIR`` trains the
model of :func:`build` (an MLP, wrapped in FSDP2 by default) with Adam on
every process of the job, on batches that depend only on the seed and the
step, split between the ranks (:func:`batch`). It checkpoints into ``DIR``
with :class:`dlcomp.DistributedCheckpointManager` and, started again, resumes
from the newest checkpoint that loads: under ``torchrun --max-restarts``, a
job whose worker is killed resumes by itself. Started alone
(``python -m dlcomp.distributed_worker DIR``) it trains in one process,
wrapping nothing. Torch computes on one thread per process, so every run
computes bitwise the same numbers. With ``--wrap fsdp`` and seed 0 it
computes bitwise what ``train.py`` on the page :doc:`/distributed-checkpoints`
does; the gallery script
:ref:`sphx_glr_auto_examples_files_plot_02_sharded_resume_after_kill.py`
kills one of its workers and lets ``torchrun`` restart the job.

It prints JSON lines: rank 0 ``{"event": "start", "resumed_from": STEP}``
once it has restored, and rank 1 ``{"event": "paused", "step": S}`` where
``--pause-at`` makes it wait.

Options: ``--wrap {fsdp,ddp,none}``, ``--steps N``, ``--save-every K``,
``--seed S``; ``--state-out FILE`` (rank 0 writes the final full state there,
see :func:`full_state`); ``--pid-dir DIR`` (each worker writes its process id
to ``DIR/rank<r>``); ``--pause-at S`` (rank 1 waits after step ``S`` on the
job's first attempt, to be killed at a known step).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dlcomp._checks import check_int
from dlcomp._cli import (
    folder_problem,
    int_option,
    number,
    option,
    steps_option,
    writable_folder,
)
from dlcomp.distributed import (
    DistributedCheckpointManager,
    destroy_process_group,
    init_process_group,
)
from dlcomp.models import mlp

__all__ = ["batch", "build", "full_state", "main"]

WRAPS = ("fsdp", "ddp", "none")


def build(wrap: str = "none", seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The job's model, wrapped as asked, and its Adam optimizer.

    The model is ``mlp(16, 64, 64, 1, seed=seed)`` (:func:`dlcomp.models.mlp`),
    the same on every rank before it is wrapped.

    Args:
        wrap: ``"fsdp"`` (FSDP2: every ``nn.Linear`` sharded on its own, then
            the whole model), ``"ddp"`` (``DistributedDataParallel``) or
            ``"none"``. ``"fsdp"`` and ``"ddp"`` need a process group.
        seed: the seed of the initial parameters, an int with
            ``0 <= seed < 2**63``.

    Returns:
        The model and ``torch.optim.Adam(model.parameters(), lr=0.01)``.

    Examples:
        Unwrapped, in one process, a model to restore a checkpoint of the
        job into:

        >>> model, optimizer = build("none", seed=0)
        >>> model[0], type(optimizer).__name__
        (Linear(in_features=16, out_features=64, bias=True), 'Adam')
    """
    if wrap not in WRAPS:
        raise ValueError(f"build: wrap must be one of {WRAPS}, got {wrap!r}")
    if wrap != "none" and not dist.is_initialized():
        raise RuntimeError(
            f"build: wrap={wrap!r} needs a process group; call "
            "dlcomp.init_process_group() first, or use wrap='none'"
        )
    seed = _check_seed(seed, "seed", who="build", below=2**63)
    model: nn.Module = mlp(16, 64, 64, 1, seed=seed)
    if wrap == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in model.children():
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    elif wrap == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def batch(seed: int, step: int) -> tuple[Tensor, Tensor]:
    """This rank's share of the 64 examples of ``step``: inputs and targets.

    The global batch depends only on ``(seed, step)``; each of the ``world``
    ranks takes its ``64 // world`` consecutive examples (all of them without
    a process group). The target is ``sin`` of the sum of the first 4 inputs.

    The examples are drawn from ``torch.Generator().manual_seed(seed * 2**20 +
    step)``. The CPU generator uses only the low 32 bits of its seed, so
    ``seed < 2**12`` and ``step < 2**20`` keep every pair ``(seed, step)``
    on a generator seed of its own (seed 0 draws from ``manual_seed(step)``).

    Args:
        seed: the seed of the data, an int with ``0 <= seed < 2**12``.
        step: the training step, an int with ``0 <= step < 2**20``.

    Examples:
        >>> X, y = batch(seed=0, step=3)  # no process group: the whole batch
        >>> X.shape, y.shape
        (torch.Size([64, 16]), torch.Size([64, 1]))
        >>> torch.equal(X, batch(seed=0, step=3)[0])
        True
    """
    seed = _check_seed(seed, "seed", who="batch", below=2**12)
    step = check_int(step, "step", minimum=0, who="batch")
    if step >= 2**20:
        raise ValueError(f"batch: step must be an int < 2**20, got {step}")
    generator = torch.Generator().manual_seed(seed * 2**20 + step)
    X = torch.randn(64, 16, generator=generator)  # (64, 16)
    y = X[:, :4].sum(dim=1, keepdim=True).sin()  # (64, 1)
    world, rank = (
        (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    )
    share = X.shape[0] // world
    return X[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Model and optimizer state, whole (not sharded) and on the CPU.

    With a process group, every rank must call it (it gathers the shards).
    ``optimizer`` must be the model's: every parameter it updates is one of
    ``model.parameters()`` (build it after wrapping the model).

    Returns:
        ``{"model": model_state_dict, "optim": optimizer_state_dict}``, as
        ``torch.distributed.checkpoint.state_dict.get_state_dict`` gives them
        with ``full_state_dict=True``.

    Examples:
        >>> model, optimizer = build("none", seed=0)
        >>> state = full_state(model, optimizer)
        >>> sorted(state), torch.equal(state["model"]["0.weight"], model[0].weight)
        (['model', 'optim'], True)
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"full_state: model must be an nn.Module, got {type(model).__name__}"
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "full_state: optimizer must be a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}"
        )
    own = {id(p) for p in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    foreign = sum(id(p) not in own for p in held)
    if foreign:
        raise ValueError(
            f"full_state: the optimizer is not the model's: {foreign} of the "
            f"{len(held)} parameters it updates are not parameters of the model; "
            "build the optimizer from model.parameters() after wrapping the model"
        )
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optim": optim_state}


def main(argv: Sequence[str] | None = None) -> None:
    """Train the job (resuming if a checkpoint loads): the worker's command line.

    Joins the process group ``torchrun`` set up (none when started alone),
    restores the newest checkpoint in ``DIR`` that loads, trains to step
    ``--steps``, checkpointing every ``--save-every`` steps and at the end
    (the extras hold the mean loss over the ranks of every step), then
    leaves the group. A bad argument (``--save-every 0``, a file as ``DIR``,
    a ``--pid-dir`` that does not exist, a ``DIR``, ``--state-out`` or
    ``--pid-dir`` below a file or in a folder this process cannot write in)
    is a usage error (exit status 2) that names the option, before the job
    starts.

    Args:
        argv: the command-line arguments (default: ``sys.argv[1:]``):
            ``DIR [--wrap W] [--steps N] [--save-every K] [--seed S]
            [--state-out FILE] [--pid-dir DIR] [--pause-at S]``.

    Examples:
        Alone, in one process: 4 steps, then 2 more from its checkpoint.

        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> main([folder, "--steps", "4", "--save-every", "2"])
        {"event": "start", "resumed_from": 0}
        >>> main([folder, "--steps", "6", "--save-every", "2"])
        {"event": "start", "resumed_from": 4}
        >>> [step for step, _ in DistributedCheckpointManager(folder).checkpoints()]
        [4, 6]
    """
    parser = argparse.ArgumentParser(
        prog="python -m dlcomp.distributed_worker",
        description="Train a small MLP on every process of a torchrun job, with "
        "checkpoints in DIR; resume from the newest one that loads.",
    )
    parser.add_argument("directory", metavar="DIR", type=option(_check_folder, "DIR"))
    parser.add_argument("--wrap", choices=WRAPS, default="fsdp")
    parser.add_argument("--steps", type=steps_option, default=30)
    parser.add_argument("--save-every", type=int_option("--save-every", 1), default=3)
    parser.add_argument("--seed", type=option(_seed_option, "--seed"), default=0)
    parser.add_argument(
        "--state-out",
        type=option(_check_file_out, "--state-out"),
        help="where rank 0 writes the final full state (in a folder that exists)",
    )
    parser.add_argument(
        "--pid-dir",
        type=option(_check_pid_dir, "--pid-dir"),
        help="write each worker's pid to PID_DIR/rank<r> (a folder that exists)",
    )
    parser.add_argument(
        "--pause-at",
        type=int_option("--pause-at", 1),
        help="rank 1 waits after this step, first attempt only",
    )
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> None:
    distributed = init_process_group("gloo")  # survives torchrun's restarts
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.pid_dir:
        Path(args.pid_dir, f"rank{rank}").write_text(str(os.getpid()))

    model, optimizer = build(args.wrap if distributed else "none", args.seed)
    manager = DistributedCheckpointManager(args.directory, keep=2)
    restored = manager.restore(model, optimizer)  # None if there is none yet
    start = restored.step if restored else 0
    losses = list(restored.extra["losses"]) if restored else []
    if rank == 0:
        print(json.dumps({"event": "start", "resumed_from": start}), flush=True)

    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    for step in range(start, args.steps):
        X, y = batch(args.seed, step)
        loss = nn.functional.mse_loss(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mean = loss.detach().clone()
        if distributed:
            dist.all_reduce(mean)  # the sum over the ranks
            mean /= world
        losses.append(mean.item())
        done = step + 1
        if done % args.save_every == 0 or done == args.steps:
            manager.save(done, model, optimizer, losses=losses)
        if done == args.pause_at and rank == 1 and attempt == 0:
            print(json.dumps({"event": "paused", "step": done}), flush=True)
            time.sleep(3600)

    if args.state_out:
        state = full_state(model, optimizer)  # a collective: every rank takes part
        if rank == 0:
            torch.save({**state, "losses": losses}, args.state_out)
    destroy_process_group()  # a barrier, then a teardown safe at exit


def _check_seed(seed: object, name: str, *, who: str | None, below: int) -> int:
    """``seed`` as an int with ``0 <= seed < below``."""
    seed = check_int(seed, name, minimum=0, who=who)
    if seed >= below:
        prefix = who + ": " if who else ""
        limit = f"2**{below.bit_length() - 1}"
        raise ValueError(f"{prefix}{name} must be an int < {limit}, got {seed}")
    return seed


def _check_folder(text: str, name: str) -> str:
    """The job's folder: not empty, not a file (created if missing), writable."""
    expected = f"{name} must be a folder (created if missing)"
    if not text:
        raise ValueError(f"{expected}, got an empty path; give e.g. 'runs/ckpt'")
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError(f"{expected}, got {text!r}, which is a file")
    return writable_folder(text, name)


def _check_file_out(text: str, name: str) -> str:
    """A file to write at the end: in a folder that exists now and can be written."""
    folder = os.path.dirname(text) or "."
    if not text or os.path.isdir(text):
        raise ValueError(f"{name} must be a file name, got {text!r}, which is a folder")
    if not os.path.isdir(folder):  # below a file, say, or just missing
        why = folder_problem(Path(folder)) or f"create {folder!r} first"
        raise ValueError(
            f"{name} must be a file in a folder that exists, got {text!r}: {why}"
        )
    if problem := folder_problem(Path(folder)):
        raise ValueError(
            f"{name} must be a file in a folder this process can write in, got "
            f"{text!r}: {problem}"
        )
    return text


def _check_pid_dir(text: str, name: str) -> str:
    if not text or not os.path.isdir(text):
        raise ValueError(f"{name} must be a folder that exists, got {text!r}")
    return writable_folder(text, name)


def _seed_option(text: str, name: str) -> int:
    """``--seed``: a seed :func:`batch` takes (``0 <= seed < 2**12``)."""
    return _check_seed(number(text), name, who=None, below=2**12)


if __name__ == "__main__":
    main()
