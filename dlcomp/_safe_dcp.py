"""Read DCP checkpoints without running code from them (private; Section 5.5+).

:mod:`torch.distributed.checkpoint` (DCP) reads a checkpoint's ``.metadata``
with plain :func:`pickle.load`, and every non-tensor item (an optimizer's
``lr``, ``betas``, ``params``; any object saved beside the tensors) with
``torch.load(weights_only=False)``: a crafted checkpoint directory runs code
as soon as it is loaded. Its tensors are already read with
``weights_only=True``.

This module reads the same files through the same DCP machinery, with three
changes, all in :class:`SafeFileSystemReader`:

- ``.metadata`` is unpickled by an unpickler that resolves only the classes a
  real DCP ``.metadata`` refers to (DCP's own metadata dataclasses,
  ``torch.Size``, torch dtypes and layouts, a ``pathlib`` path); anything
  else is refused before it is imported. Every item must live in a file of
  the checkpoint directory itself.
- every item to be read (tensor or not) is vetted first, byte by byte
  (:func:`~dlcomp._torchzip.vet_item`): laid out exactly as torch.save lays
  out an archive, CRC-32s matching, no compressed records (a deflated record
  of a 1 MB checkpoint can inflate to gigabytes inside ``torch.load``), no
  global in its pickle but tensors' and containers', the range inside its
  file, no two items sharing bytes, and no DCP transforms (compression by a
  DCP extension, which dlcomp never writes);
- non-tensor items are read with ``torch.load(weights_only=True)``, all of
  them before any tensor is copied, so a refused item leaves the tensors of
  the state dict as they were.

After these checks, reading a checkpoint takes at most about its size in
memory, on top of the state dict it is loaded into.

What is refused raises :class:`~dlcomp.CheckpointError`, naming what was
found. :func:`read_metadata`, :func:`load` and :func:`to_torch_save_state`
are the safe counterparts of ``FileSystemReader(path).read_metadata()``,
``dcp.load`` and ``dcp_to_torch_save``.

Importing this module imports :mod:`torch.distributed.checkpoint` (about a
second): import it where it is used.

Examples:
    >>> import tempfile
    >>> from dlcomp import DistributedCheckpointManager
    >>> net = nn.Linear(4, 2)
    >>> saved = DistributedCheckpointManager(tempfile.mkdtemp()).save(1, net)
    >>> sorted(read_metadata(saved).state_dict_metadata)
    ['model.bias', 'model.weight']
    >>> state = {"model": nn.Linear(4, 2).state_dict()}
    >>> load(state, saved)
    >>> torch.equal(state["model"]["weight"], net.weight)
    True
    >>> full = to_torch_save_state(saved)
    >>> torch.equal(full["model"]["bias"], net.bias)
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import os
import pathlib
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import filesystem, metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import (
    DefaultLoadPlanner,
    _EmptyStateDictLoadPlanner,
)
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
from torch.futures import Future

from dlcomp._checkpoint import CheckpointError
from dlcomp._torchzip import vet_item

__all__ = [
    "SafeFileSystemReader",
    "load",
    "read_metadata",
    "single_process_quietly",
    "to_torch_save_state",
]

_PLAIN_DCP_METADATA = (
    "Plain DCP (dcp.load, FileSystemReader.read_metadata, dcp_to_torch_save) "
    "unpickles .metadata with pickle.load and would have run it"
)
_PLAIN_DCP_ITEMS = (
    "Plain DCP (dcp.load, dcp_to_torch_save) loads non-tensor items with "
    "torch.load(weights_only=False) and would have run it"
)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Every global a real ``.metadata`` of torch 2.13 refers to, and the objects.

    Found by saving checkpoints with ``dcp.save`` (plain, DDP and FSDP2
    models; no optimizer, Adam, AdamW with amsgrad, SGD with and without
    momentum, RMSprop, Adagrad; a state dict with a tensor of every dtype
    DCP can save) and recording each global the unpickler looked up. None of
    these runs code when called with any arguments: they are dataclasses,
    enums, ``torch.Size``, a path class, values (dtypes), and a lookup of
    a layout by name.
    """
    allowed: dict[tuple[str, str], Any] = {
        ("torch", "Size"): torch.Size,
        # torch.layout pickles as _get_layout("torch.strided"): a dict lookup
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): (
            filesystem._StorageInfo
        ),
        # StorageMeta.checkpoint_id is the path given to dcp.save; Python 3.13
        # pickles pathlib classes under pathlib._local, and Windows saves
        # a WindowsPath (which, as in plain DCP, loads on Windows only).
        ("pathlib", "PosixPath"): pathlib.PosixPath,
        ("pathlib", "WindowsPath"): pathlib.WindowsPath,
        ("pathlib._local", "PosixPath"): pathlib.PosixPath,
        ("pathlib._local", "WindowsPath"): pathlib.WindowsPath,
    }
    for name in (
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    ):
        allowed["torch.distributed.checkpoint.metadata", name] = getattr(metadata, name)
    # dtypes pickle by name (torch.float32); each is a value, not a callable
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            allowed["torch", name] = value
    return allowed


_ALLOWED = _allowed_globals()


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only the globals of :data:`_ALLOWED`; imports nothing."""

    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise CheckpointError(
                f"{self._where} refers to {_named(f'{module}.{name}')}, which "
                "could run code "
                "when unpickled; dlcomp reads only DCP's own metadata classes "
                "(torch.distributed.checkpoint.metadata, torch.Size, torch "
                "dtypes), so nothing was loaded and nothing ran. "
                f"{_PLAIN_DCP_METADATA}: do not load this directory with it"
            ) from None


def _named(qualname: str) -> str:
    """``posix.system (os.system)``: the name a reader knows, beside the pickled one."""
    module, _, name = qualname.rpartition(".")
    return f"{qualname} (os.{name})" if module in ("posix", "nt") else qualname


def _damaged(where: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where} is not a DCP checkpoint's metadata, or is damaged ({why}); "
        "nothing was loaded"
    )


def _is_plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
    )


def _check_metadata(found: object, where: str) -> Metadata:
    """Check the structure DCP relies on; items must be files of the directory."""
    if not isinstance(found, Metadata):
        raise _damaged(where, f"it holds a {type(found).__name__}, not a Metadata")
    if not isinstance(found.state_dict_metadata, dict):
        raise _damaged(where, "its state_dict_metadata is not a dict")
    if not isinstance(found.storage_data, dict):
        raise _damaged(where, "its storage_data is not a dict")
    if found.storage_meta is not None and not isinstance(
        found.storage_meta, StorageMeta
    ):
        raise _damaged(where, "its storage_meta is not a StorageMeta")
    for index, info in found.storage_data.items():
        if not isinstance(info, filesystem._StorageInfo):
            raise _damaged(where, f"the storage entry of {index} is not a location")
        if not _is_plain_name(info.relative_path):
            raise CheckpointError(
                f"{where} places the item {getattr(index, 'fqn', index)!r} in "
                f"{info.relative_path!r}, which is not a file of the checkpoint "
                "directory; dlcomp reads only the directory's own files, so "
                "nothing was loaded. Plain DCP would have read that path"
            )
        if not all(type(n) is int and n >= 0 for n in (info.offset, info.length)):
            raise _damaged(where, f"the location of {index} is not a byte range")
    return found


def _unpickle_metadata(data: bytes, where: str) -> Metadata:
    try:
        found = _MetadataUnpickler(data, where).load()
    except CheckpointError:
        raise
    except Exception as exc:  # every way a pickle can be damaged
        raise _damaged(where, f"{type(exc).__name__}: {exc}") from exc
    return _check_metadata(found, where)


_GLOBAL = re.compile(r"GLOBAL (\S+)")


def _load_item(value: io.BytesIO, fqn: str, where: str) -> Any:
    """``torch.load(weights_only=True)`` of one non-tensor item, or a refusal."""
    try:
        return torch.load(value, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found is None:
            raise CheckpointError(
                f"the non-tensor item {fqn!r} of {where} is damaged or holds "
                "something torch.load(weights_only=True) does not read; "
                "no tensor was loaded"
            ) from exc
        raise CheckpointError(
            f"the non-tensor item {fqn!r} of {where} refers to "
            f"{_named(found.group(1).rstrip('.,'))}, which could run code when "
            "unpickled; dlcomp loads non-tensor items with "
            "torch.load(weights_only=True), which refused it, so nothing ran "
            f"and no tensor was loaded. {_PLAIN_DCP_ITEMS}: do not load this "
            "checkpoint with it"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"the non-tensor item {fqn!r} of {where} is damaged "
            f"({type(exc).__name__}: {exc}); no tensor was loaded"
        ) from exc


class _WeightsOnlyBytes:
    """The planner as the reader sees it, with ``load_bytes`` made safe.

    DCP's reader hands each non-tensor item to ``planner.load_bytes``, which
    in :class:`DefaultLoadPlanner` (and ``_EmptyStateDictLoadPlanner``) is
    ``torch.load(weights_only=False)`` followed by putting the object in
    place. This does the same with ``weights_only=True``; every other call
    goes to the planner.
    """

    def __init__(self, planner: DefaultLoadPlanner, where: str) -> None:
        self._planner = planner
        self._where = where

    def __getattr__(self, name: str) -> Any:
        return getattr(self._planner, name)

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        """Load one non-tensor item safely and put it where DCP would."""
        planner = self._planner
        fqn = read_item.dest_index.fqn
        obj = _load_item(value, fqn, self._where)
        # as DefaultLoadPlanner.load_bytes in torch/distributed/checkpoint
        if planner.flatten_state_dict:
            set_element(planner.original_state_dict, planner.mappings[fqn], obj)
        else:
            planner.state_dict[fqn] = obj


def _where(fqn: str, path: object, info: filesystem._StorageInfo) -> str:
    return (
        f"the item {fqn!r} of {path} (bytes {info.offset} to "
        f"{info.offset + info.length})"
    )


class SafeFileSystemReader(dcp.FileSystemReader):
    """A :class:`~torch.distributed.checkpoint.FileSystemReader` that runs no code.

    Use it wherever DCP takes a ``storage_reader``. ``.metadata`` is read by
    a restricted unpickler (DCP's own metadata classes only); every item to
    be read is vetted from its zip directory before any is loaded (no
    compressed records, no declared sizes beyond the item's length, no DCP
    transforms), and non-tensor items are loaded with
    ``torch.load(weights_only=True)``, all before any tensor. Tensors are
    read as by DCP.

    Refusals raise :class:`~dlcomp.CheckpointError`. Called through DCP,
    that error arrives wrapped: a failed ``read_metadata`` is logged and
    replaced by DCP's "metadata is None" error, and a failed ``read_data`` by
    a ``CheckpointException``. :func:`load` and :func:`to_torch_save_state`
    raise the ``CheckpointError`` itself.

    Args:
        path: the checkpoint directory.
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """Read ``.metadata`` (``__<rank>.metadata`` with ``rank=``), refusing code.

        Raises:
            CheckpointError: the file refers to anything but DCP's metadata
                classes, places an item outside the directory, or is not
                DCP metadata (garbage, empty, truncated).
            FileNotFoundError: there is no such file.
        """
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            data = stream.read()
        found = _unpickle_metadata(data, str(path))
        # as FileSystemReader.read_metadata
        if found.storage_meta is None:
            found.storage_meta = StorageMeta()
        found.storage_meta.load_id = self.load_id
        return found

    def _vet(self, plan: LoadPlan) -> None:
        """Check every item ``plan`` reads, byte by byte; load none.

        Each item of a file must lie inside it, share no byte with another
        one (overlapping items would multiply the memory a load takes), carry
        no DCP transform, and be a torch.save archive exactly as torch.save
        lays it out (:func:`~dlcomp._torchzip.vet_item`).
        """
        per_file: dict[str, dict[Any, filesystem._StorageInfo]] = {}
        for item in plan.items:
            info = self.storage_data[item.storage_index]
            per_file.setdefault(info.relative_path, {})[item.storage_index] = info
        for relative_path, infos in per_file.items():
            path = self.fs.concat_path(self.path, relative_path)
            for index, info in infos.items():
                if info.transform_descriptors:
                    raise CheckpointError(
                        f"{_where(index.fqn, path, info)} is stored through the "
                        f"DCP transforms {info.transform_descriptors!r} "
                        "(compression by a DCP extension, such as zstd), which "
                        "dlcomp never writes and does not read: its records "
                        "could not be vetted before being inflated. Nothing was "
                        "loaded; re-save the checkpoint without extensions"
                    )
            ranges = sorted(infos.items(), key=lambda pair: pair[1].offset)
            for (first, a), (then, b) in itertools.pairwise(ranges):
                if b.offset < a.offset + a.length:
                    raise CheckpointError(
                        f"{_where(first.fqn, path, a)} and "
                        f"{_where(then.fqn, path, b)} share bytes, but DCP "
                        "writes each item to bytes of its own: the checkpoint "
                        "is damaged or crafted (overlapping items would "
                        "multiply the memory a load takes). Nothing was loaded"
                    )
            with self.fs.create_stream(path, "rb") as stream:
                for index, info in ranges:
                    vet_item(
                        cast(IO[bytes], stream),  # a binary stream, typed IOBase
                        info.offset,
                        info.length,
                        _where(index.fqn, path, info),
                    )

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Vet every item of ``plan``, read its non-tensor items safely, then tensors.

        Raises:
            CheckpointError: an item is compressed, declares more than its
                length, lies past the end of its file, shares bytes with
                another, or is stored through a DCP transform (then nothing
                was loaded); or a non-tensor item refers to anything
                ``torch.load(weights_only=True)`` refuses, or is damaged (then
                no tensor has been copied).
            TypeError: ``planner`` has its own ``load_bytes``.
        """
        self._vet(plan)
        first = [item for item in plan.items if item.type == LoadItemType.BYTE_IO]
        then = [item for item in plan.items if item.type != LoadItemType.BYTE_IO]
        if first:
            if type(planner).load_bytes is not DefaultLoadPlanner.load_bytes:
                raise TypeError(
                    "SafeFileSystemReader reads non-tensor items for DCP's "
                    "DefaultLoadPlanner and subclasses that keep its load_bytes; "
                    f"got {type(planner).__name__}, whose own load_bytes could "
                    "unpickle them with code: use DefaultLoadPlanner"
                )
            safe = _WeightsOnlyBytes(cast(DefaultLoadPlanner, planner), str(self.path))
            # read_data calls only load_bytes on it: all _WeightsOnlyBytes has
            super().read_data(
                dataclasses.replace(plan, items=first), cast(LoadPlanner, safe)
            ).wait()
        return super().read_data(dataclasses.replace(plan, items=then), planner)


def read_metadata(path: str | os.PathLike[str]) -> Metadata:
    """Read the ``.metadata`` of the DCP checkpoint ``path`` without running code.

    The safe ``dcp.FileSystemReader(path).read_metadata()``.

    Args:
        path: the checkpoint directory.

    Returns:
        Metadata: keys, shapes and dtypes of everything in the checkpoint
        (``state_dict_metadata``), and where each item lies.

    Raises:
        CheckpointError: there is no ``.metadata``; it refers to anything but
            DCP's metadata classes (the message names it); or it is not DCP
            metadata (garbage, empty, truncated).
    """
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise CheckpointError(
            f"{path} is not a complete DCP checkpoint (no .metadata file)"
        )
    return SafeFileSystemReader(path).read_metadata()


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def single_process_quietly() -> Iterator[None]:
    """Without a process group, silence DCP's notice that it runs in one process.

    That is intended (one process needs no group); with a group, nothing
    changes.
    """
    with warnings.catch_warnings():
        if not _dist_ready():
            warnings.filterwarnings(
                "ignore",
                message="torch.distributed is disabled, unavailable or uninitialized",
                category=UserWarning,
            )
        yield


def _unwrapped(run: Callable[[], None], path: str | os.PathLike[str]) -> None:
    """Run a DCP load; raise a refusal as itself, not inside DCP's wrapper.

    DCP wraps the exceptions of every rank in one ``CheckpointException`` (a
    ``BaseException``, which ``except Exception`` misses); a
    ``CheckpointError`` among them is the reason. Any other failure (a
    damaged record, a missing file, a key the checkpoint lacks) becomes a
    ``CheckpointError`` naming the first one; a ``KeyboardInterrupt`` or
    ``SystemExit`` inside it is raised as itself.
    """
    try:
        run()
    except CheckpointException as exc:
        failures = [failure for failure, _trace in exc.failures.values()]
        for failure in failures:
            if isinstance(failure, CheckpointError):
                raise failure from None
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure from None
        first = failures[0] if failures else exc
        line = (str(first).splitlines() or [""])[0][:200]
        if isinstance(first, pickle.UnpicklingError):
            # torch's own text would advise weights_only=False: not here
            line = "a tensor item is not a pickle torch.load(weights_only=True) reads"
        raise CheckpointError(
            f"{path} is damaged or not a DCP checkpoint: DCP failed with "
            f"{type(first).__name__}: {line}"
        ) from exc


def load(state_dict: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Load the DCP checkpoint ``path`` into ``state_dict``, as ``dcp.load`` does.

    Tensors are copied into the tensors of ``state_dict`` (resharded to this
    process's layout); other values are replaced. Collective when a process
    group is initialized; one process needs none.

    Args:
        state_dict: what to load, e.g. ``{"model": ..., "optim": ...}`` from
            :func:`torch.distributed.checkpoint.state_dict.get_state_dict`.
        path: the checkpoint directory.

    Raises:
        CheckpointError: the checkpoint would run code (in ``.metadata`` or a
            non-tensor item: then no tensor was copied), or is not a DCP
            checkpoint, or is damaged.
    """
    # Read once here: inside dcp.load a refusal would be logged and replaced
    # by "metadata is None".
    read_metadata(path)
    reader = SafeFileSystemReader(path)
    with single_process_quietly():
        _unwrapped(lambda: dcp.load(state_dict, storage_reader=reader), path)


def to_torch_save_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The full state dict of the DCP checkpoint ``path``, in this process.

    What ``dcp_to_torch_save`` writes to a file, returned instead, and read
    without running code. Needs no process group, and loads alone even when
    one is initialized; every tensor is materialized in memory.

    Args:
        path: the checkpoint directory.

    Returns:
        dict: the state dict as saved, nested (``{"model": {...}, "optim":
        {...}}`` for a :class:`~dlcomp.DistributedCheckpointManager` checkpoint
        with an optimizer), every tensor whole.

    Raises:
        CheckpointError: the checkpoint would run code, is not a DCP
            checkpoint, or is damaged.
    """
    read_metadata(path)  # refuse here, as in load()
    state: dict[str, Any] = {}
    _unwrapped(
        lambda: _load_state_dict(
            state,
            storage_reader=SafeFileSystemReader(path),
            planner=_EmptyStateDictLoadPlanner(),
            no_dist=True,
        ),
        path,
    )
    return state
