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

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcomp._checkpoint import (
    CheckpointError,
    CheckpointInfo,
    StepCheckpoints,
    atomic_write,
    check_fits,
    fsync_directory,
    os_error_in,
    write_failed,
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


class DistributedCheckpointManager(StepCheckpoints):
    """Save and resume DDP, FSDP2 or plain models with DCP, atomically per checkpoint.

    Every process calls :meth:`save` and :meth:`restore` (they are collective
    when a process group is initialized). Checkpoints are directories named
    ``step-000000120``; a directory without its manifest (a save that did not
    finish) or a staging directory is never chosen. One job writes to a
    directory at a time (its rank 0 commits and deletes under the directory's
    lock file).

    Loading is safe: the ``.metadata`` file and non-tensor items are read
    through a restricted reader (plain DCP unpickles them, which can run
    code), and a checkpoint that does not load (damaged, refused, another
    architecture) is skipped with a warning, in every process alike, for the
    next newest one.

    Args:
        directory: where the checkpoints go; the same path in every process
            (a shared file system when the processes are on several machines).
        keep: how many of the newest checkpoints to keep, an int >= 1.

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
        >>> restored = manager.restore(nn.Linear(4, 2))
        >>> restored.step, restored.world_size, restored.extra["note"]
        (3, 1, 'one process, no group')
    """

    SUFFIX = ""

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

        Raises:
            TypeError: ``step`` is not an int, or ``extra`` is not JSON.
            ValueError: ``step`` is negative.
            OSError: the write failed (disk full, ...) in some process;
                nothing was committed, the previous checkpoints are intact.
        """
        final = self.path_for(step)
        try:
            json.dumps(extra)  # fail early, in every rank, on what JSON cannot hold
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"extra must be JSON (numbers, strings, lists, dicts): {error}"
            ) from None
        _check_group(model, "save")
        import torch.distributed.checkpoint as dcp

        from dlcomp._safe_dcp import single_process_quietly

        staging = self.directory / f".staging-{final.name}"
        if _rank() == 0:
            shutil.rmtree(staging, ignore_errors=True)  # left by a crash
        _barrier()
        try:
            with single_process_quietly():
                dcp.save(_states(model, optimizer), checkpoint_id=staging)
        except BaseException as error:  # DCP's CheckpointException is a BaseException
            if type(error).__name__ != "CheckpointException":
                raise
            if _rank() == 0:
                shutil.rmtree(staging, ignore_errors=True)
            if cause := os_error_in(error):
                raise write_failed(final, cause) from None
            raise CheckpointError(
                f"could not write {final}: {error}. Nothing was committed"
            ) from None
        _barrier()  # every rank's part is written
        if _rank() == 0:
            manifest = {"step": step, "world_size": _world_size(), "extra": extra}
            with open(staging / MANIFEST, "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_directory(staging)
            with self.locked():
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staging, final)  # the commit: complete, or not there
                fsync_directory(self.directory)
                self.prune(shutil.rmtree, just_written=final)
                for stale in self.directory.glob(".staging-step-*"):
                    if stale != staging:
                        shutil.rmtree(stale, ignore_errors=True)
        _barrier()
        return final

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> CheckpointInfo | None:
        """Load the newest checkpoint that loads into ``model`` (and ``optimizer``).

        The checkpoint may have been written by any number of processes: DCP
        reshards it to this one's layout (a plain model in one process, DDP,
        or FSDP2 over any number of ranks). A checkpoint that does not load
        in some process (a torn manifest, damaged or refused files, another
        architecture) is skipped with a RuntimeWarning by every process, and
        the next newest one is tried; the model is changed only by the one
        that loads.

        Returns:
            CheckpointInfo | None: the step, world size and extras of the
            checkpoint loaded, or ``None`` if there is none.

        Raises:
            CheckpointError: checkpoints exist but none of them loads.
            RuntimeError: the model is sharded or replicated but no process
                group is initialized.
        """
        _check_group(model, "restore")
        found = self.checkpoints()
        failures = []
        for _, path in reversed(found):
            try:
                info, states = _read(path, model, optimizer)
                error = None
            except CheckpointError as failed:
                error = failed
            if not _everywhere(error is None):
                error = error or CheckpointError("it did not load in another process")
                failures.append(f"{path.name}: {error}")
                warnings.warn(
                    f"skipping checkpoint {path.name}, which does not load: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            _apply(model, optimizer, states)
            return info
        if failures:
            raise CheckpointError(
                f"none of the {len(found)} checkpoints in {self.directory} loads: "
                + " | ".join(failures)
            )
        return None


def _everywhere(ok: bool) -> bool:
    """Whether ``ok`` holds in every process (collective with a group)."""
    dist = _dist()
    if dist is None:
        return ok
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([int(ok)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _manifest(path: Path) -> CheckpointInfo:
    """The checkpoint's manifest, checked: its step, world size and extras."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"its manifest {MANIFEST} is unreadable ({error})"
        ) from None
    if not isinstance(manifest, dict):
        manifest = {}
    step, world, extra = (manifest.get(k) for k in ("step", "world_size", "extra"))
    if not (
        type(step) is int
        and path.name == f"step-{step:09d}"
        and type(world) is int
        and world >= 1
        and isinstance(extra, dict)
    ):
        raise CheckpointError(
            f"its manifest {MANIFEST} is damaged: expected the step of its name, "
            f"a world size and extras, found {str(manifest)[:120]}"
        )
    return CheckpointInfo(path=path, step=step, extra=extra, world_size=world)


def _check_fits(path: Path, states: dict[str, Any], model: nn.Module) -> None:
    """Compare the checkpoint's keys and shapes with the model's, before loading."""
    from dlcomp._safe_dcp import read_metadata

    saved = read_metadata(path).state_dict_metadata
    in_file = {
        k.removeprefix("model."): tuple(v.size) if hasattr(v, "size") else None
        for k, v in saved.items()
        if k.startswith("model.")
    }
    wanted = {k: tuple(v.shape) for k, v in states["model"].items()}
    check_fits(wanted, in_file, what="checkpoint", model=type(model).__name__)
    if "optim" in states and not any(k.startswith("optim.") for k in saved):
        raise CheckpointError(
            "it holds no optimizer state (it was saved without an optimizer)"
        )


def _clone(state: Any) -> Any:
    """A copy of a (nested) state dict whose tensors can be loaded into."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, state)


def _read(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[CheckpointInfo, dict[str, Any]]:
    """Read the checkpoint at ``path`` into copies of the model's states.

    Raises CheckpointError for anything wrong; the model is not touched.
    """
    from dlcomp._safe_dcp import load

    try:
        info = _manifest(path)
        states = _clone(_states(model, optimizer))
        _check_fits(path, states, model)
        load(states, path)
    except CheckpointError:
        raise
    except FileNotFoundError as error:
        raise CheckpointError(f"a file is missing ({error})") from None
    except BaseException as error:  # DCP's CheckpointException is a BaseException
        if not isinstance(error, Exception) and (
            type(error).__name__ != "CheckpointException"
        ):
            raise  # KeyboardInterrupt, SystemExit
        raise CheckpointError(f"it is damaged ({_first_line(error)})") from None
    return info, states


def _first_line(error: BaseException) -> str:
    for failure in getattr(error, "failures", {}).values():  # DCP: per rank
        inner = failure[0] if isinstance(failure, tuple) else failure
        inner = getattr(inner, "exc", inner)
        return f"{type(inner).__name__}: {str(inner).splitlines()[0][:200]}"
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"


def _apply(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, states: dict[str, Any]
) -> None:
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_state_dict,
    )

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
    atomically. The checkpoint is read through the same restricted reader as
    :meth:`DistributedCheckpointManager.restore`: it cannot run code.

    Raises:
        CheckpointError: ``checkpoint`` is not a complete DCP checkpoint, is
            damaged, or holds something that would run code.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> saved = DistributedCheckpointManager(folder).save(5, nn.Linear(4, 2))
        >>> out = consolidate(saved, folder / "weights.safetensors")
        >>> from safetensors.torch import load_file
        >>> sorted(load_file(out))
        ['bias', 'weight']
    """
    checkpoint, path = Path(checkpoint), Path(path)
    if not (checkpoint / ".metadata").is_file():
        raise CheckpointError(
            f"{checkpoint} is not a complete DCP checkpoint (no .metadata file)"
        )
    from dlcomp._safe_dcp import to_torch_save_state

    full = to_torch_save_state(checkpoint)
    model = full.get("model") if isinstance(full, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{checkpoint} holds no model state")
    weights = {
        k: v.contiguous() for k, v in model.items() if isinstance(v, torch.Tensor)
    }
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(weights)
        atomic_write(path, lambda f: f.write(data))
    else:
        atomic_write(path, lambda f: torch.save(weights, f))
    return path
