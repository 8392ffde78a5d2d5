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
  staging directory; then rank 0 adds a manifest (``dlcomp.json``), fsyncs,
  and renames the directory into place;
- the manifest describes the whole checkpoint in JSON (DCP's metadata, the
  SHA-256 of every tensor chunk, the value of every setting), and loading
  reads only that: dlcomp never unpickles ``.metadata``, which it leaves for
  plain DCP;
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
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlcomp._checkpoint import (
    CheckpointError,
    CheckpointInfo,
    StepCheckpoints,
    atomic_write,
    check_fits,
    check_step,
    fsync_directory,
    interruption_in,
    names,
    os_error_in,
    write_failed,
)
from dlcomp._checks import check_module, check_optimizer
from dlcomp._optimstate import ADVICE, check_optimizer_state, dtype_kind

if TYPE_CHECKING:
    from dlcomp._safe_dcp import JsonFileSystemReader, Manifest

__all__ = [
    "DistributedCheckpointManager",
    "consolidate",
    "destroy_process_group",
    "init_process_group",
]

MANIFEST = "dlcomp.json"
# A checkpoint being replaced by a re-save of its step waits under this prefix
# (.replaced-step-000000120) until the new one is in place, then is deleted.
REPLACED = ".replaced-"


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


def destroy_process_group() -> bool:
    """Leave the process group at the end of a script: a barrier, then destroy it.

    Call it once in every process, after the last collective (the last
    :meth:`~dlcomp.DistributedCheckpointManager.save`, say), in place of
    ``torch.distributed.barrier()`` and
    ``torch.distributed.destroy_process_group()``. Those two are not enough
    with gloo: destroying the group does not stop gloo's worker threads, and
    after a collective has returned, its worker thread can still hold the last
    reference to its tensors, or to those of earlier operations (a barrier
    keeps the ones that were in progress when it started). If the thread lets
    go of them once the interpreter has begun shutting down, it needs the GIL,
    Python ends the thread, and the process aborts with ``terminate called
    without an active exception`` (exit code -6) after all its work is done:
    now and then, on a busy machine (seen in dlcomp's own tests;
    pytorch/pytorch#179291 describes the same abort for a process that never
    destroys its group). This function keeps its barrier's work object, and
    through it all a worker thread may still hold, until the process exits, so
    no worker thread frees a tensor during shutdown.

    Returns:
        bool: ``True`` if a group was destroyed, ``False`` if none was
        initialized (one process), which needs nothing.

    Examples:
        >>> destroy_process_group()  # not under torchrun: no group to leave
        False
    """
    import ctypes

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    work = dist.barrier(async_op=True)
    work.wait()
    # A worker thread may drop its own references to ``work`` after wait()
    # returns. Ours must outlive them, even through the interpreter's shutdown
    # (which clears module globals), so it is never released: the operating
    # system frees that memory at exit.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(work))
    dist.destroy_process_group()
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
    finish) or a staging directory is never chosen; saving a step again keeps
    its old checkpoint on disk, and listed, until the new one is in place.
    Something else named like a checkpoint (a symbolic link, a file) is
    skipped with a RuntimeWarning naming it: never followed, read or deleted.
    The manifest records the optimizer's class, and :meth:`restore` refuses
    another class, other settings or other parameter groups before loading
    anything. One job writes to a directory at a time (its rank 0 commits
    and deletes under the directory's lock file).

    Loading runs no code and trusts nothing it has not checked: rank 0
    writes the whole DCP metadata into the manifest as JSON (every tensor's
    chunks and where their bytes lie, with their SHA-256, and the value of
    every non-tensor item, such as the learning rate), and :meth:`restore`
    reads only that: the pickled ``.metadata`` stays for plain DCP, and
    dlcomp never unpickles it. Before anything is allocated, the chunks of
    every tensor must tile it exactly and fit in the bytes the files hold;
    every value must fit the setting it replaces (a number for ``lr``);
    every chunk's bytes must match their hash and be an archive
    ``torch.save`` wrote (no compressed records). A checkpoint that does not
    load (damaged, refused, another architecture) is skipped with a warning,
    in every process alike, for the next newest one; a directory dlcomp did
    not write is refused, with how to read it with plain DCP at your own
    risk.

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
    DIRECTORIES = True

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        super().__init__(directory, keep)
        if _rank() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
        _barrier()

    def _complete(self, path: Path) -> bool:
        return (path / MANIFEST).is_file()  # written last, by rank 0

    def _replaced(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every checkpoint moved aside by a re-save."""
        return self.named(REPLACED)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every complete checkpoint, oldest first.

        A save of a step that already has a checkpoint moves the old one
        aside (``.replaced-step-000000120``) until the new one is in place.
        If the process died in between, the copy aside is listed for its
        step (the next save puts it back in place): at every instant, a
        complete checkpoint of the step is on disk and listed.
        """
        found = super().checkpoints()
        steps = {step for step, _ in found}
        for step, path in self._replaced():
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                if step not in steps and self._complete(path):
                    found.append((step, path))
        return sorted(found)

    def _settle_replaced(self) -> None:
        """Finish what a re-save that died left aside (hold :meth:`locked`).

        A copy aside whose step has its checkpoint again is deleted; one
        whose step has none is that step's only checkpoint, and goes back in
        place.
        """
        for step, aside in self._replaced():
            final = self.path_for(step)
            if final.exists() or not self._complete(aside):
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(aside, final)
                fsync_directory(self.directory)

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        **extra: Any,
    ) -> Path:
        """Write the checkpoint of ``step`` from every process; return its path.

        ``extra`` must be JSON-serializable (numbers, strings, lists, dicts):
        it goes into the manifest, which any process can read without torch
        (a NaN or infinity as ``{"$float": "nan"}``). So does everything
        :meth:`restore` needs: the DCP metadata, the SHA-256 of every tensor
        chunk's bytes, and the value of every non-tensor item (learning
        rates, betas, ...), which must be plain data too.

        Raises:
            TypeError: ``step`` is not an int, or ``extra`` is not JSON, or a
                non-tensor item of the states is not plain data.
            ValueError: ``step`` is negative.
            OSError: the write failed (disk full, ...) in some process;
                nothing was committed, the previous checkpoints are intact.
            FileExistsError: something that is not a checkpoint (a symbolic
                link, say) has the name of this step's; nothing was written.
        """
        step = check_step(step)  # a Python int, even from np.int64(5)
        check_module(model, "model", who="DistributedCheckpointManager.save")
        check_optimizer(optimizer, who="DistributedCheckpointManager.save")
        final = self.path_for(step)
        self.refuse_foreign(final)  # a symbolic link of that name, say
        from dlcomp._safe_dcp import encode_extra, encode_values

        extra_json = encode_extra(extra)  # fail early, in every rank: TypeError
        _check_group(model, "save")
        states = _states(model, optimizer)
        values = encode_values(states)  # the manifest holds them: TypeError
        import torch.distributed.checkpoint as dcp

        from dlcomp._safe_dcp import (
            RecordingWriter,
            single_process_quietly,
            with_storage_data,
        )

        staging = self.directory / f".staging-{final.name}"
        if _rank() == 0:
            shutil.rmtree(staging, ignore_errors=True)  # left by a crash
        _barrier()
        try:
            with single_process_quietly():
                writer = RecordingWriter(staging)
                metadata = dcp.save(states, storage_writer=writer)
                if metadata.storage_data is None:  # torch 2.11, 2.12: only the
                    # coordinator's writer saw it; it travels to every rank
                    mine = (writer.storage_data, writer.version)
                    recorded = [r for r in _gathered(mine) if r[0] is not None]
                    metadata = with_storage_data(metadata, next(iter(recorded), None))
        except BaseException as error:  # DCP's CheckpointException is a BaseException
            if type(error).__name__ != "CheckpointException":
                raise
            if _rank() == 0:
                shutil.rmtree(staging, ignore_errors=True)
            if interrupted := interruption_in(error):  # Ctrl-C, sys.exit()
                raise interrupted from None
            if cause := os_error_in(error):
                raise write_failed(final, cause) from None
            raise CheckpointError(
                f"could not write {final}: {error}. Nothing was committed"
            ) from None
        # every rank's part is written; each hashes a share of the files
        import dlcomp

        fields = {
            "dlcomp": dlcomp.__version__,
            "step": step,
            "world_size": _world_size(),
            "optimizer_class": None if optimizer is None else _class_name(optimizer),
            "extra": extra_json,
        }
        text = _manifest_text(staging, final, metadata, values, fields)
        if _rank() == 0:
            with open(staging / MANIFEST, "w", encoding="ascii") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            fsync_directory(staging)
            with self.locked():
                self._settle_replaced()  # what a re-save that died left aside
                # A re-save: the old checkpoint stays listed (aside) until the
                # new one is in place, so the step always has one on disk.
                aside = self.directory / f"{REPLACED}{final.name}"
                if final.exists():
                    os.replace(final, aside)
                os.replace(staging, final)  # the commit: complete, or not there
                fsync_directory(self.directory)
                shutil.rmtree(aside, ignore_errors=True)
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
        architecture, another optimizer class, other optimizer settings or
        parameter groups) is skipped with a RuntimeWarning by every process,
        and the next newest one is tried; the model and the optimizer are
        changed only by the one that loads.

        Returns:
            CheckpointInfo | None: the step, world size and extras of the
            checkpoint loaded, or ``None`` if there is none.

        Raises:
            CheckpointError: checkpoints exist but none of them loads.
            RuntimeError: the model is sharded or replicated but no process
                group is initialized.
        """
        check_module(model, "model", who="DistributedCheckpointManager.restore")
        check_optimizer(optimizer, who="DistributedCheckpointManager.restore")
        _check_group(model, "restore")
        found = self.checkpoints()
        failures = []
        # Reading an optimizer's state dict initializes a fresh optimizer's
        # state (get_state_dict takes a step with zero grads and lr 0); if
        # nothing loads, it is emptied again, as it was.
        fresh = optimizer is not None and not optimizer.state
        ours, unreadable = _own_states(model, optimizer, found)
        for _, path in reversed(found):
            prepared, error = None, unreadable
            try:
                if ours is not None:
                    prepared = _prepare(path, model, optimizer, ours)
            except CheckpointError as failed:
                error = failed
            # Every rank loads (a collective), or none: a rank that refused
            # the checkpoint never leaves the others waiting inside DCP.
            if _everywhere(error is None) and prepared is not None:
                try:
                    _load(prepared, optimizer)
                except CheckpointError as failed:
                    error = failed
                if _everywhere(error is None):
                    _apply(model, optimizer, prepared.states)
                    return prepared.info
            error = error or CheckpointError("it did not load in another process")
            failures.append(f"{path.name}: {error}")
            warnings.warn(
                f"skipping checkpoint {path.name}, which does not load: {error}",
                RuntimeWarning,
                stacklevel=2,
            )
        if failures:
            if fresh and optimizer is not None:
                optimizer.state.clear()
            raise CheckpointError(
                f"none of the {len(found)} checkpoints in {self.directory} loads: "
                + " | ".join(failures)
            )
        return None


def _own_states(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, found: list[Any]
) -> tuple[dict[str, Any] | None, CheckpointError | None]:
    """The states to load into (once, in every rank), or why there are none.

    ``get_state_dict`` steps a fresh optimizer to create its state; an
    optimizer that cannot take that step (LBFGS needs a closure, SparseAdam
    sparse gradients) cannot be restored through DCP: every checkpoint is then
    skipped with that reason.
    """
    if not found:
        return None, None
    try:
        return _states(model, optimizer), None
    except Exception as error:
        return None, CheckpointError(
            "this model and optimizer cannot give DCP a state to load into "
            f"({_first_line(error)})"
        )


def _manifest_text(
    staging: Path,
    final: Path,
    metadata: Any,
    values: dict[str, Any],
    fields: dict[str, Any],
) -> str:
    """The manifest of what ``dcp.save`` wrote, in every rank (collective).

    Every rank describes the metadata and hashes its share of the data files;
    the shares are gathered, and every rank builds the same text. If any rank
    failed, or the text is larger than a manifest may be, every rank raises
    and rank 0 removes the staging directory: nothing is committed.
    """
    from dlcomp._safe_dcp import (
        MAX_MANIFEST,
        describe,
        fill_hashes,
        hash_items,
        manifest_text,
    )

    section, share, error = None, None, None
    try:
        section = describe(metadata, values)
        share = hash_items(staging, section, _rank(), _world_size())
    except Exception as failed:  # any: every rank must reach the gather
        error = failed
    shares = _gathered(share)
    if error is None and any(part is None for part in shares):
        error = CheckpointError("another process could not hash its files")
    text = ""
    if error is None and section is not None:
        fill_hashes(section, shares)
        text = manifest_text({**fields, "dcp": section})
        if len(text) > MAX_MANIFEST:
            error = CheckpointError(
                f"its manifest would take {len(text)} bytes, more than the "
                f"{MAX_MANIFEST} a manifest may hold (too many chunks: save "
                "from fewer processes, or a model of fewer tensors)"
            )
    if error is not None:
        if _rank() == 0:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise write_failed(final, error) from None
        raise CheckpointError(
            f"could not write {final}: {error}. Nothing was committed"
        ) from None
    return text


def _gathered(share: Any) -> list[Any]:
    """``share`` of every rank, in rank order (collective with a group).

    The objects travel pickled between this job's own processes, never
    through a file.
    """
    dist = _dist()
    if dist is None:
        return [share]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, share)
    return out


def _everywhere(ok: bool) -> bool:
    """Whether ``ok`` holds in every process (collective with a group)."""
    dist = _dist()
    if dist is None:
        return ok
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([int(ok)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _manifest(path: Path) -> Manifest:
    """The checkpoint's manifest, checked (its step is its name's)."""
    from dlcomp._safe_dcp import read_manifest

    manifest = read_manifest(path)
    if path.name.removeprefix(REPLACED) != f"step-{manifest.step:09d}":
        raise CheckpointError(
            f"its manifest {MANIFEST} is damaged: it is the manifest of step "
            f"{manifest.step}, not of the step its name says"
        )
    return manifest


def _check_fits(
    manifest: Manifest, states: dict[str, Any], model: nn.Module
) -> dict[str, Any]:
    """Compare the checkpoint's keys and shapes with the model's, before loading.

    Returns the checkpoint's ``state_dict_metadata``.
    """
    saved = manifest.metadata.state_dict_metadata
    in_file = {
        k.removeprefix("model."): tuple(v.size) if hasattr(v, "size") else None
        for k, v in saved.items()
        if k.startswith("model.")
    }
    wanted = {k: tuple(v.shape) for k, v in states["model"].items()}
    check_fits(wanted, in_file, what="checkpoint", model=type(model).__name__)
    if "optim" not in states:
        return saved
    if not any(k.startswith("optim.") for k in saved):
        raise CheckpointError(
            "it holds no optimizer state (it was saved without an optimizer)"
        )
    _check_optimizer_keys(saved, states["optim"])
    return saved


_SAME_OPTIMIZER = (
    "Build the optimizer as when saving (the same parameter groups and "
    "settings), or restore the model alone (optimizer=None)"
)


def _check_optimizer_keys(saved: dict[str, Any], optim: dict[str, Any]) -> None:
    """Compare the checkpoint's optimizer entries with this optimizer's, before loading.

    ``saved`` is the checkpoint's ``state_dict_metadata``, keyed as DCP
    flattens a state dict (``optim.state.<fqn>.<name>``,
    ``optim.param_groups.<i>.<setting>``); ``optim`` the state this optimizer
    loads (its per-parameter state initialized by ``get_state_dict``). Its
    per-parameter state must have exactly the checkpoint's names (another
    ``amsgrad`` or ``momentum`` changes them), and as many parameter groups
    with every setting this one has.
    """
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    state, groups_prefix = "optim.state.", "optim.param_groups."
    ours = set(flatten_state_dict({"optim": optim})[0])
    in_file = {k for k in saved if k.startswith("optim.")}
    groups = len({k.split(".")[2] for k in in_file if k.startswith(groups_prefix)})
    if groups != len(optim["param_groups"]):
        raise CheckpointError(
            f"its optimizer has {groups} parameter groups, this one "
            f"{len(optim['param_groups'])}. {_SAME_OPTIMIZER}"
        )

    def shown(keys: set[str], prefix: str) -> str:
        return names(sorted(k.removeprefix(prefix) for k in keys))

    only_saved = {k for k in in_file - ours if k.startswith(state)}
    only_here = {k for k in ours - in_file if k.startswith(state)}
    settings = {k for k in ours - in_file if k.startswith(groups_prefix)}
    problems = []
    if only_saved:
        problems.append(
            f"per-parameter state only in the checkpoint: {shown(only_saved, state)}"
        )
    if only_here:
        problems.append(
            f"per-parameter state only this optimizer has: {shown(only_here, state)}"
        )
    if settings:
        problems.append(
            f"group settings the checkpoint lacks: {shown(settings, groups_prefix)}"
        )
    if problems:
        raise CheckpointError(
            "its optimizer state does not fit this optimizer, whose settings "
            "differ from those it was saved with (amsgrad or momentum, say): "
            f"{'; '.join(problems)}. {_SAME_OPTIMIZER}"
        )


def _set_aside(optim: dict[str, Any], saved: dict[str, Any]) -> dict[Any, Any]:
    """Take out the optimizer tensors the checkpoint has in another shape or dtype kind.

    DCP would refuse to load them (another shape) or convert them (complex
    into real); they come back, as meta tensors of the checkpoint's shape and
    dtype, for :func:`check_optimizer_state` to name.
    """
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    aside = {}
    for fqn, entry in optim["state"].items():
        for name, value in list(entry.items()):
            found = saved.get(f"optim.state.{fqn}.{name}")
            if (
                isinstance(value, torch.Tensor)
                and isinstance(found, TensorStorageMetadata)
                and (
                    tuple(found.size) != tuple(value.shape)
                    or dtype_kind(found.properties.dtype) != dtype_kind(value.dtype)
                )
            ):
                dtype = found.properties.dtype
                aside[fqn, name] = torch.empty(found.size, dtype=dtype, device="meta")
                del entry[name]
    return aside


def _check_optimizer(
    optimizer: torch.optim.Optimizer,
    ours: dict[str, Any],
    loaded: dict[str, Any],
    aside: dict[Any, Any],
    path: Path,
) -> None:
    """The loaded optimizer state (and what was set aside) against ``optimizer``."""
    view = {
        "param_groups": loaded["param_groups"],
        "state": {fqn: dict(entry) for fqn, entry in loaded["state"].items()},
    }
    for (fqn, name), value in aside.items():
        view["state"][fqn][name] = value
    keys = [fqn for group in ours["param_groups"] for fqn in group["params"]]
    check_optimizer_state(optimizer, view, "this checkpoint", keys=keys)
    if aside:  # named by the check above; this holds if it did not
        raise CheckpointError(
            f"its optimizer state has {names([f'{f}.{n}' for f, n in aside])} in "
            f"another shape or dtype kind than this optimizer's. {ADVICE}"
        )


def _check_settings(
    optimizer: torch.optim.Optimizer,
    manifest: Manifest,
    ours: dict[str, Any],
    states: dict[str, Any],
    aside: dict[Any, Any],
) -> None:
    """Before anything is read: the manifest's settings against ``optimizer``.

    The parameter groups are the manifest's values (``lr``, ``betas``,
    ``params``, ...), the per-parameter state this optimizer's own (its
    shapes stand for the checkpoint's, which :func:`_check_fits` and
    :func:`_set_aside` compared), so a setting of another type is refused
    before DCP reads any tensor.
    """
    groups = []
    for number, group in enumerate(ours["param_groups"]):
        prefix = f"optim.param_groups.{number}."
        groups.append({
            name: manifest.value(prefix + name) if prefix + name in manifest.values
            else value
            for name, value in group.items()
        })  # fmt: skip
    view = {"param_groups": groups, "state": states["state"]}
    _check_optimizer(optimizer, ours, view, aside, manifest.path)


def _class_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _clone(state: Any) -> Any:
    """A copy of a (nested) state dict whose tensors can be loaded into."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, state)


@dataclass
class _Prepared:
    """A checkpoint checked against the model and optimizer, ready to load."""

    info: CheckpointInfo
    ours: dict[str, Any]  # the model's (and optimizer's) states
    states: dict[str, Any]  # copies of them, to load into
    aside: dict[Any, Any]  # optimizer tensors of another shape (_set_aside)
    reader: JsonFileSystemReader


def _prepare(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ours: dict[str, Any],
) -> _Prepared:
    """Check the checkpoint at ``path`` against ``ours``, its files; load nothing.

    ``ours`` is ``_states(model, optimizer)``. Raises CheckpointError for
    anything wrong.
    """
    from dlcomp._safe_dcp import JsonFileSystemReader

    try:
        manifest = _manifest(path)
        saved_class = manifest.optimizer_class
        if optimizer is not None and saved_class not in (None, _class_name(optimizer)):
            raise CheckpointError(
                f"it holds the state of a {saved_class}, and the optimizer given "
                f"is a {_class_name(optimizer)}: its state and settings would not "
                "fit. Build the same optimizer as when saving, or restore the "
                "model alone (optimizer=None)"
            )
        states = _clone(ours)
        saved = _check_fits(manifest, states, model)
        aside = {} if optimizer is None else _set_aside(states["optim"], saved)
        if optimizer is not None:
            _check_settings(optimizer, manifest, ours["optim"], states["optim"], aside)
        reader = JsonFileSystemReader(path, manifest)
        reader.check_files()
    except CheckpointError:
        raise
    except FileNotFoundError as error:
        raise CheckpointError(f"a file is missing ({error})") from None
    except Exception as error:
        raise CheckpointError(f"it is damaged ({_first_line(error)})") from None
    info = CheckpointInfo(
        path=path,
        step=manifest.step,
        extra=manifest.extra,
        world_size=manifest.world_size,
    )
    return _Prepared(info, ours, states, aside, reader)


def _load(prepared: _Prepared, optimizer: torch.optim.Optimizer | None) -> None:
    """Read the checkpoint into ``prepared.states`` (collective), not into the model.

    Raises CheckpointError for anything wrong; a KeyboardInterrupt or
    SystemExit is raised as itself.
    """
    from dlcomp._safe_dcp import load

    path = prepared.info.path
    try:
        load(prepared.states, prepared.reader, path)
        if optimizer is not None:  # before anything is applied
            _check_optimizer(
                optimizer,
                prepared.ours["optim"],
                prepared.states["optim"],
                prepared.aside,
                path,
            )
    except CheckpointError:
        raise
    except FileNotFoundError as error:
        raise CheckpointError(f"a file is missing ({error})") from None
    except Exception as error:
        raise CheckpointError(f"it is damaged ({_first_line(error)})") from None


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
    atomically. The checkpoint is read as
    :meth:`DistributedCheckpointManager.restore` reads it, from its JSON
    manifest, unpickling nothing; a tensor is allocated only once its chunks
    are known to tile it, so the weights take at most about the size of the
    checkpoint's files.

    Raises:
        CheckpointError: ``checkpoint`` is not a complete checkpoint that
            dlcomp wrote (the message says how to read another with plain
            DCP, at your own risk), or it is damaged.

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
    from dlcomp._safe_dcp import full_model_state

    try:
        weights = full_model_state(checkpoint)
    except FileNotFoundError as error:
        raise CheckpointError(
            f"{checkpoint} is damaged: a file is missing ({error})"
        ) from None
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(weights)
        atomic_write(path, lambda f: f.write(data))
    else:
        atomic_write(path, lambda f: torch.save(weights, f))
    return path
