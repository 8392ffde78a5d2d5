"""A small multi-process training run, for the distributed tests and gallery (private).

Run under torchrun (``torchrun --nproc_per_node=2 -m dlcomp._dist_worker DIR``)
or alone (one process, no process group). It trains a small MLP with Adam,
wrapped in FSDP2 (``--wrap fsdp``), DDP (``--wrap ddp``) or nothing, on
batches drawn from ``(seed, step)`` and split across the ranks, checkpoints
with :class:`dlcomp.DistributedCheckpointManager` and resumes from it. Torch
uses one thread per process, so every run computes bitwise the same numbers.

The distributed checkpoints page shows and runs this training loop as the
reader's own script, ``train.py``; this worker adds what the tests and the
gallery need (DDP, ``--load-only``, pid files, a pause). With ``--wrap fsdp``
and seed 0 it computes bitwise what ``train.py`` does: a test runs the page's
script and checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dlcomp.distributed import (
    DistributedCheckpointManager,
    destroy_process_group,
    init_process_group,
)


def build(wrap: str, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model (identical on every rank before wrapping) and its optimizer."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )
    if wrap == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    elif wrap == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def batch(seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the global batch of ``step``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    X = torch.randn(64, 16, generator=generator)
    y = X[:, :4].sum(dim=1, keepdim=True).sin()
    world, rank = (
        (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    )
    share = X.shape[0] // world
    return X[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Model and optimizer state, unsharded and on the CPU (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optim": optim_state}


def main() -> None:
    """Parse the arguments, then train (resuming if possible) or only load."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("--wrap", choices=["fsdp", "ddp", "none"], default="fsdp")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-only", action="store_true", help="restore, then stop")
    parser.add_argument("--state-out", help="write the final full state here (rank 0)")
    parser.add_argument("--pid-dir", help="write this worker's pid to PID_DIR/rank<r>")
    parser.add_argument(
        "--pause-at", type=int, help="rank 1 waits after this step, first attempt only"
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    distributed = init_process_group("gloo")  # survives torchrun's restarts
    rank = dist.get_rank() if distributed else 0
    if args.pid_dir:
        Path(args.pid_dir, f"rank{rank}").write_text(str(os.getpid()))

    model, optimizer = build(args.wrap if distributed else "none", args.seed)
    manager = DistributedCheckpointManager(args.directory, keep=2)
    restored = manager.restore(model, optimizer)
    start = restored.step if restored else 0
    losses = list(restored.extra["losses"]) if restored else []
    if rank == 0:
        print(json.dumps({"event": "start", "resumed_from": start}), flush=True)

    if not args.load_only:
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        for step in range(start, args.steps):
            X, y = batch(args.seed, step)
            loss = nn.functional.mse_loss(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = loss.detach().clone()
            if distributed:
                dist.all_reduce(value)
                value /= dist.get_world_size()
            losses.append(value.item())
            done = step + 1
            if done % args.save_every == 0 or done == args.steps:
                manager.save(done, model, optimizer, losses=losses)
            if done == args.pause_at and rank == 1 and attempt == 0:
                print(json.dumps({"event": "paused", "step": done}), flush=True)
                time.sleep(3600)

    if args.state_out:
        state = full_state(model, optimizer)
        if rank == 0:
            torch.save({**state, "losses": losses}, args.state_out)
    destroy_process_group()  # a barrier, then a teardown safe at exit


if __name__ == "__main__":
    main()
