"""Section 5.5, beyond one machine: checkpoints of models trained across processes.

A model wrapped in FSDP2 (``fully_shard``) keeps only a *shard* of each
parameter in each process, as a DTensor; a DDP model keeps a full copy in
each. ``torch.save(model.state_dict())`` on one rank then saves either a
fragment or a redundant copy, and cannot be loaded into a different number
of processes. :mod:`torch.distributed.checkpoint` (DCP) solves this: every
rank writes its own part (``__<rank>_0.distcp``) and one ``.metadata`` file
describes how the parts make up the whole, so a checkpoint can be loaded by
any number of processes ("resharding"), or by one, into a plain model.

:class:`~dlcomp.DistributedCheckpointManager` gives DCP checkpoints the
guarantees of :class:`~dlcomp.CheckpointManager`:

- a checkpoint directory is complete or ignored: all ranks write into a
  staging directory; after a barrier, rank 0 adds a manifest
  (``dlcomp.json``), fsyncs, and renames the directory into place;
- the newest ``keep`` checkpoints are kept, older ones deleted only after
  the new one is in place;
- :meth:`~dlcomp.DistributedCheckpointManager.restore` resumes from the
  newest complete checkpoint, whatever the number of processes that wrote it.

:func:`~dlcomp.consolidate` turns a DCP checkpoint into one ``torch.save``
or ``.safetensors`` file of the model's full weights.

Works with or without an initialized process group (one process needs none).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcomp.serialization import (
    CheckpointError,
    _check_step,
    _fsync_directory,
    _StepCheckpoints,
)

__all__ = ["DistributedCheckpointManager", "consolidate", "init_process_group"]

MANIFEST = "dlcomp.json"


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init_process_group(backend: str = "gloo") -> bool:
    """Join the process group torchrun set up, in a way that survives restarts.

    Under ``torchrun --max-restarts``, the workers of every attempt share the
    agent's key-value store, which outlives a restart: a plain
    ``torch.distributed.init_process_group()`` in a restarted worker can read
    the peer addresses of the *dead* attempt, fail to connect ("Gloo
    connectFullMesh failed ... Connection refused") and use up the restarts.
    This gives each attempt its own prefix in the store.

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (NVIDIA GPUs).

    Returns:
        bool: ``True`` if a group was initialized, ``False`` in a single process
        (``WORLD_SIZE`` unset or 1), which needs none.

    Examples:
        >>> init_process_group()  # not under torchrun: one process, no group
        False
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False
    )
    dist.init_process_group(
        backend,
        store=dist.PrefixStore(f"dlcomp-attempt-{attempt}", store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
    return True


def _needs_group(model: nn.Module) -> bool:
    """Whether the model's state lives in several processes (DTensor or DDP)."""
    from torch.distributed.tensor import DTensor

    if isinstance(model, nn.parallel.DistributedDataParallel):
        return True
    return any(isinstance(p, DTensor) for p in model.parameters())


def _check_group(model: nn.Module, what: str) -> None:
    if _needs_group(model) and _dist() is None:
        raise RuntimeError(
            f"cannot {what} a model sharded or replicated across processes (FSDP "
            "or DDP) without an initialized process group: call "
            "torch.distributed.init_process_group() first, in every process "
            "(torchrun sets up the environment for it)"
        )


def _rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else 0


def _world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def _barrier() -> None:
    dist = _dist()
    if dist:
        dist.barrier()


def _states(
    model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
    )

    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


class DistributedCheckpointManager(_StepCheckpoints):
    """Save and resume DDP, FSDP2 or plain models with DCP, atomically per checkpoint.

    Every process calls :meth:`save` and :meth:`restore` (they are collective
    when a process group is initialized). Checkpoints are directories named
    ``step-000000120``; a directory without its manifest (a save that did not
    finish) or a staging directory is never chosen.

    Args:
        directory: where the checkpoints go; the same path in every process
            (a shared file system when the processes are on several machines).
        keep: how many of the newest checkpoints to keep, at least 1.

    Attributes:
        restored (dict | None): what the last :meth:`restore` loaded:
            ``{"step": ..., "world_size": ..., **extra}``, or ``None``.

    Examples:
        >>> import tempfile
        >>> manager = DistributedCheckpointManager(tempfile.mkdtemp(), keep=2)
        >>> net = nn.Linear(4, 2)
        >>> for step in (1, 2, 3):
        ...     _ = manager.save(step, net, note="one process, no group")
        >>> [path.name for _, path in manager.checkpoints()]
        ['step-000000002', 'step-000000003']
        >>> sorted(p.name for p in manager.latest().iterdir())
        ['.metadata', '__0_0.distcp', 'dlcomp.json']
        >>> manager.restore(nn.Linear(4, 2)), manager.restored["note"]
        (3, 'one process, no group')
    """

    _PATTERN = re.compile(r"step-(\d{9})")

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        super().__init__(directory, keep)
        if _rank() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
        _barrier()

    def _complete(self, path: Path) -> bool:
        return (path / MANIFEST).is_file() and (path / ".metadata").is_file()

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        **extra: Any,
    ) -> Path:
        """Write the checkpoint of ``step`` from every process; return its path.

        ``extra`` must be JSON-serializable (numbers, strings, lists, dicts):
        it goes into the manifest, which any process can read without torch.
        """
        _check_step(step)
        json.dumps(extra)  # fail early, in every rank, on what JSON cannot hold
        _check_group(model, "save")
        import torch.distributed.checkpoint as dcp

        final = self.directory / f"step-{step:09d}"
        staging = self.directory / f".staging-step-{step:09d}"
        if _rank() == 0:
            shutil.rmtree(staging, ignore_errors=True)  # left by a crash
        _barrier()
        with _single_process_quietly():
            dcp.save(_states(model, optimizer), checkpoint_id=staging)
        _barrier()  # every rank's part is written
        if _rank() == 0:
            manifest = {"step": step, "world_size": _world_size(), "extra": extra}
            with open(staging / MANIFEST, "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            _fsync_directory(staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)  # the commit: complete, or not there
            _fsync_directory(self.directory)
            for _, old in self.checkpoints()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            for stale in self.directory.glob(".staging-step-*"):
                if stale != staging:
                    shutil.rmtree(stale, ignore_errors=True)
        _barrier()
        return final

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> int | None:
        """Load the newest complete checkpoint into ``model`` (and ``optimizer``).

        The checkpoint may have been written by any number of processes: DCP
        reshards it to this one's layout (a plain model in one process, DDP,
        or FSDP2 over any number of ranks).

        Returns:
            The step of the checkpoint, or ``None`` if there is none.

        Raises:
            CheckpointError: the checkpoint does not fit the model (another
                architecture) or holds no optimizer state.
            RuntimeError: the model is sharded or replicated but no process
                group is initialized.
        """
        _check_group(model, "restore")
        self.restored = None
        latest = self.latest()
        if latest is None:
            return None
        manifest = json.loads((latest / MANIFEST).read_text())
        _load(latest, model, optimizer)
        self.restored = {
            "step": manifest["step"],
            "world_size": manifest["world_size"],
            **manifest["extra"],
        }
        return manifest["step"]


@contextlib.contextmanager
def _single_process_quietly() -> Iterator[None]:
    """Without a process group, silence DCP's notice that it runs in one process.

    That is intended here (one process needs no group); with a group, nothing
    changes.
    """
    with warnings.catch_warnings():
        if _dist() is None:
            warnings.filterwarnings(
                "ignore",
                message="torch.distributed is disabled, unavailable or uninitialized",
                category=UserWarning,
            )
        yield


def _check_fits(path: Path, states: dict[str, Any], model: nn.Module) -> None:
    """Compare the checkpoint's keys and shapes with the model's, before loading."""
    import torch.distributed.checkpoint as dcp

    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    in_file = {
        k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")
    }
    wanted = states["model"]
    missing = [k for k in wanted if k not in in_file]
    unexpected = [k for k in in_file if k not in wanted]
    shapes = [
        f"{k}: {tuple(in_file[k].size)} in the checkpoint, "
        f"{tuple(v.shape)} in the model"
        for k, v in wanted.items()
        if k in in_file
        and hasattr(in_file[k], "size")
        and tuple(in_file[k].size) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}")
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:8]))
    if problems:
        raise CheckpointError(
            f"the checkpoint {path.name} does not fit this {type(model).__name__} "
            f"(another architecture?). {'. '.join(problems)}. Nothing was loaded"
        )
    if "optim" in states and not any(k.startswith("optim.") for k in saved):
        raise CheckpointError(f"the checkpoint {path.name} holds no optimizer state")


def _load(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_state_dict,
    )

    states = _states(model, optimizer)
    _check_fits(path, states, model)
    with _single_process_quietly():
        dcp.load(states, checkpoint_id=path)
    if optimizer is None:
        set_model_state_dict(model, states["model"])
    else:
        set_state_dict(
            model,
            optimizer,
            model_state_dict=states["model"],
            optim_state_dict=states["optim"],
        )


def consolidate(
    checkpoint: str | os.PathLike[str], path: str | os.PathLike[str]
) -> Path:
    """Write the full model weights of a DCP checkpoint to one file; return its path.

    In one process, without a process group. A ``.safetensors`` path gives a
    safetensors file; any other a ``torch.save`` file of the state dict
    (load it with ``torch.load(path, weights_only=True)``). Both are written
    atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> saved = DistributedCheckpointManager(folder).save(5, nn.Linear(4, 2))
        >>> out = consolidate(saved, folder / "weights.safetensors")
        >>> from safetensors.torch import load_file
        >>> sorted(load_file(out))
        ['bias', 'weight']
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from dlcomp.serialization import _atomic_write

    checkpoint, path = Path(checkpoint), Path(path)
    if not (checkpoint / ".metadata").is_file():
        raise CheckpointError(
            f"{checkpoint} is not a complete DCP checkpoint (no .metadata file)"
        )
    with_tmp = path.parent / f".{path.name}.full.tmp"
    try:
        dcp_to_torch_save(checkpoint, with_tmp)
        full = torch.load(with_tmp, weights_only=True)
    finally:
        with_tmp.unlink(missing_ok=True)
    weights = {k: v.contiguous() for k, v in full["model"].items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(weights)
        _atomic_write(path, lambda f: f.write(data))
    else:
        _atomic_write(path, lambda f: torch.save(weights, f))
    return path
