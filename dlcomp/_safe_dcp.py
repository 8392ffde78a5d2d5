"""DCP checkpoints described by JSON manifests: nothing is unpickled (private).

:mod:`torch.distributed.checkpoint` (DCP) describes a checkpoint in a pickled
``.metadata`` file and stores non-tensor items (an optimizer's ``lr``,
``betas``, ``params``) as pickles beside the tensors; plain DCP loads both
with :mod:`pickle`, so a crafted directory runs code, and even a restricted
unpickler leaves the structures it builds to be checked (a ``BUILD`` opcode
can rewrite a class; shared references make a small pickle an exponential
structure). dlcomp therefore reads neither: rank 0 writes the whole
description into the checkpoint's manifest, ``dlcomp.json``, as strict JSON,
and loading reads only that.

The manifest (format version 2; version 1, the manifest of dlcomp 0.1, had
no DCP metadata) is one JSON object::

    {"format": "dlcomp.distributed-checkpoint", "version": 2, "dlcomp": "0.1.0",
     "step": 6, "world_size": 2, "optimizer_class": "torch.optim.adam.Adam",
     "extra": {"losses": [0.52, 0.47]},
     "dcp": {"version": "1.0.0",
             "files": {"__0_0.distcp": 40960, "__1_0.distcp": 40960},
             "items": {
               "model.0.weight": {"path": ["model", "0.weight"],
                 "dtype": "float32", "size": [64, 16],
                 "chunks": [{"offsets": [0, 0], "sizes": [32, 16],
                             "file": "__0_0.distcp", "offset": 0, "length": 3264,
                             "sha256": "3f0c..."}, ...]},
               "optim.param_groups.0.lr": {"path": ["optim", "param_groups", 0, "lr"],
                                           "value": 0.01},
               "optim.param_groups.0.betas": {"path": [...],
                                              "value": {"$tuple": [0.9, 0.999]}}}},
     "sha256": "..."}

``files`` gives the size of every data file; every tensor chunk names its
file, its byte range (a ``torch.save`` archive DCP wrote) and the SHA-256 of
those bytes; every non-tensor item carries its value, as tagged JSON
(:func:`dlcomp._format.encode`), taken from rank 0's state dict at save time
(they are the same on every rank). ``sha256`` is the hash of the manifest's
text without it, as :func:`dlcomp._format.dumps` writes it. ``extra`` is
tagged JSON too (a NaN loss is ``{"$float": "nan"}``).

Reading (:func:`read_manifest`) parses the manifest strictly (at most
``MAX_MANIFEST`` bytes whose parse takes at most about four times the
checkpoint's size or 64 MiB, as :func:`dlcomp._format.json_memory` counts;
no duplicate keys, no NaN), verifies its hash, and checks everything DCP
would trust before anything is allocated: every file is a plain name of the
directory ending in ``.distcp``; every chunk lies inside its tensor, and the
chunks of a tensor tile it exactly (no gap, no overlap); every chunk's byte
range lies inside its file, shares no byte with another, and is at least as
long as the chunk's data; so the tensors it declares fit in the bytes the
files hold. It then builds DCP's own
:class:`~torch.distributed.checkpoint.metadata.Metadata` from it.
:class:`JsonFileSystemReader`, a ``FileSystemReader`` whose
``read_metadata()`` returns that object, serves non-tensor items from the
manifest's values (checked against the state they go into, before any tensor
is copied), and reads each tensor chunk only after opening its file without
blocking (a FIFO is refused), reading its bytes into memory, verifying their
SHA-256 and vetting the archive byte by byte (:func:`~dlcomp._torchzip.vet_item`:
laid out exactly as torch.save lays it out, no compressed records, no global
in its pickle but a tensor's); then
``torch.load(weights_only=True)`` reads it, and it must be a plain tensor of
the chunk's dtype and shape. The pickled ``.metadata`` stays in the directory
for plain DCP; dlcomp never opens it.

Importing this module imports :mod:`torch.distributed.checkpoint` (about a
second): import it where it is used.

Examples:
    >>> import tempfile
    >>> from dlcomp import DistributedCheckpointManager
    >>> net = nn.Linear(4, 2)
    >>> saved = DistributedCheckpointManager(tempfile.mkdtemp()).save(1, net)
    >>> manifest = read_manifest(saved)
    >>> sorted(manifest.metadata.state_dict_metadata)
    ['model.bias', 'model.weight']
    >>> state = {"model": nn.Linear(4, 2).state_dict()}
    >>> load(state, JsonFileSystemReader(saved, manifest), saved)
    >>> torch.equal(state["model"]["weight"], net.weight)
    True
    >>> torch.equal(full_model_state(saved)["bias"], net.bias)
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import io
import itertools
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch.distributed.checkpoint import filesystem
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
from torch.futures import Future

from dlcomp._checkpoint import CheckpointError
from dlcomp._format import (
    MAX_DEPTH,
    MAX_HEADER,
    _Tensors,
    decode,
    dumps,
    encode,
    json_memory,
    open_regular,
    strict_json,
)
from dlcomp._torchzip import vet_item

__all__ = [
    "FORMAT",
    "JsonFileSystemReader",
    "MANIFEST",
    "Manifest",
    "RecordingWriter",
    "VERSION",
    "describe",
    "encode_extra",
    "encode_values",
    "fill_hashes",
    "full_model_state",
    "hash_items",
    "load",
    "manifest_text",
    "read_manifest",
    "single_process_quietly",
    "with_storage_data",
]

FORMAT = "dlcomp.distributed-checkpoint"
VERSION = 2  # 1: dlcomp 0.1's manifest, without the DCP metadata (not read)
MANIFEST = "dlcomp.json"
MAX_MANIFEST = MAX_HEADER  # bytes of JSON, as for a checkpoint file's header
MAX_DIMS = 64  # dimensions of a tensor
# Pairs of chunks compared to prove that a tensor's chunks do not overlap. The
# layouts DCP writes (a grid: FSDP, DDP, TP) need about one per chunk and
# dimension of the mesh; only a crafted layout comes near this.
MAX_COMPARISONS = 4 * 10**6
_CHUNK_READ = 2**24  # bytes hashed at a time while saving
_HEX = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"format", "version", "dlcomp", "step", "world_size", "optimizer_class",
           "extra", "dcp", "sha256"}  # fmt: skip
_CHUNK_FIELDS = {"offsets", "sizes", "file", "offset", "length", "sha256"}
_INTS = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
_INTS |= {
    getattr(torch, f"uint{n}") for n in (16, 32, 64) if hasattr(torch, f"uint{n}")
}
# every dtype DCP saves: a value of torch, named as str(dtype) names it
DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in vars(torch).values()
    if isinstance(dtype, torch.dtype)
    and (dtype.is_floating_point or dtype.is_complex or dtype in _INTS)
}

PLAIN_DCP = (
    "dlcomp reads only the DCP checkpoints it wrote, whose manifest describes "
    "every item in JSON, so that nothing is unpickled. To read this one anyway, "
    "at your own risk, use plain DCP (torch.distributed.checkpoint.load, or "
    "format_utils.dcp_to_torch_save): it unpickles .metadata with pickle.load "
    "and non-tensor items with torch.load(weights_only=False), which can run "
    "code, so only on a directory whose origin you trust; then save it again "
    "with DistributedCheckpointManager.save"
)


def _damaged(where: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where} is damaged or was not written by dlcomp ({why}); nothing was loaded"
    )


# --- saving: describe what dcp.save wrote ------------------------------------------


class RecordingWriter(filesystem.FileSystemWriter):
    """dcp.save's default writer, keeping the storage data of what it wrote.

    torch 2.13 returns it in the metadata ``dcp.save`` returns; torch 2.11
    and 2.12 write it only into the pickled ``.metadata`` file (their
    ``finish`` fills a copy), which dlcomp never reads. The writer records it
    as it finishes (in the coordinating process only), so
    :func:`with_storage_data` can complete the metadata.
    """

    storage_data: dict[Any, Any] | None = None

    version: str | None = None

    def finish(self, metadata: Metadata, results: list[list[Any]]) -> None:
        self.storage_data = {wr.index: wr.storage_data for rs in results for wr in rs}
        self.version = getattr(filesystem, "CURRENT_DCP_VERSION", metadata.version)
        super().finish(metadata, results)


def with_storage_data(
    metadata: Metadata, recorded: tuple[dict[Any, Any], str | None] | None
) -> Metadata:
    """``metadata`` with the storage data and version a writer recorded.

    Only where torch left them out (torch 2.11, 2.12), as the file has them.
    """
    if metadata.storage_data is None and recorded is not None:
        storage, version = recorded
        return dataclasses.replace(
            metadata, storage_data=storage, version=version or metadata.version
        )
    return metadata


def encode_values(states: Mapping[str, Any]) -> dict[str, Any]:
    """The non-tensor items of ``states`` as DCP flattens them, each as tagged JSON.

    Call it before ``dcp.save`` (every rank computes the same values), so that
    a value the manifest cannot hold stops the save before anything is written.

    Raises:
        TypeError: an item is not plain data (numbers, strings, ``None``,
            lists, tuples and dicts of them), or holds a tensor.
    """
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    flat, _ = flatten_state_dict(dict(states))
    values = {}
    for key, value in flat.items():
        if isinstance(value, torch.Tensor):
            continue
        where = f"the state's item {key!r}"
        table = _Tensors()
        values[key] = encode(value, where, table)
        if table.stored:
            raise TypeError(
                f"{where} holds tensors inside a {type(value).__name__}, which DCP "
                "stores as a pickle: keep tensors in dicts or lists of a state dict"
            )
    return values


def _sizes(size: object) -> list[int]:
    return [int(n) for n in size]  # type: ignore[attr-defined]


def describe(metadata: Metadata, values: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``dcp`` section for what ``dcp.save`` returned, without hashes.

    ``values`` is :func:`encode_values` of the state saved. Every chunk's
    ``sha256`` is left empty, and ``files`` too: :func:`hash_items` fills them.

    Raises:
        CheckpointError: the metadata holds what dlcomp does not describe
            (an item stored through a DCP extension, an unknown storage type,
            a non-tensor item whose value is missing).
    """
    storage = metadata.storage_data
    if not isinstance(storage, dict) or not isinstance(metadata.planner_data, dict):
        raise CheckpointError(
            "DCP returned metadata without the storage and planner data of its "
            "file system writer: dlcomp saves with dcp.save's default writer only"
        )
    items: dict[str, Any] = {}
    for key, entry in metadata.state_dict_metadata.items():
        path = list(metadata.planner_data.get(key, ()))
        if isinstance(entry, BytesStorageMetadata):
            if key not in values:
                raise CheckpointError(
                    f"the item {key!r} was saved as a pickle, but it is not a "
                    "non-tensor value of the state dict: dlcomp cannot describe it"
                )
            items[key] = {"path": path, "value": values[key]}
            continue
        if not isinstance(entry, TensorStorageMetadata):
            raise CheckpointError(
                f"the item {key!r} has DCP storage metadata of type "
                f"{type(entry).__name__}, which dlcomp does not describe"
            )
        dtype = str(entry.properties.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise CheckpointError(
                f"the tensor {key!r} has dtype {dtype}, which dlcomp does not "
                "describe (it describes bool, integer, floating and complex dtypes)"
            )
        chunks = []
        for number, chunk in enumerate(entry.chunks):
            info = storage[MetadataIndex(key, chunk.offsets, number)]
            if getattr(info, "transform_descriptors", None):
                raise CheckpointError(
                    f"the item {key!r} was stored through the DCP extensions "
                    f"{info.transform_descriptors!r}, which dlcomp does not read"
                )
            chunks.append({
                "offsets": _sizes(chunk.offsets), "sizes": _sizes(chunk.sizes),
                "file": info.relative_path, "offset": info.offset,
                "length": info.length, "sha256": "",
            })  # fmt: skip
        items[key] = {
            "path": path,
            "dtype": dtype,
            "size": _sizes(entry.size),
            "chunks": chunks,
        }
    return {"version": metadata.version, "files": {}, "items": items}


def _file_shares(section: Mapping[str, Any]) -> list[str]:
    files = {
        chunk["file"] for item in section["items"].values()
        for chunk in item.get("chunks", ())
    }  # fmt: skip
    return sorted(files)


def hash_items(
    directory: Path, section: Mapping[str, Any], rank: int = 0, world_size: int = 1
) -> dict[str, Any]:
    """Hash the chunks of this rank's share of the data files (every ``world_size``-th).

    Returns ``{"files": {name: size}, "sha256": {"name:offset": digest}}`` for
    the files of this rank's share; :func:`fill_hashes` puts the shares of
    every rank into ``section``. Each file is read once, in pieces.
    """
    by_file: dict[str, list[tuple[int, int]]] = {}
    for item in section["items"].values():
        for chunk in item.get("chunks", ()):
            by_file.setdefault(chunk["file"], []).append(
                (chunk["offset"], chunk["length"])
            )
    sizes, digests = {}, {}
    for name in _file_shares(section)[rank::world_size]:
        with open(directory / name, "rb") as file:
            sizes[name] = os.fstat(file.fileno()).st_size
            for offset, length in sorted(by_file[name]):
                file.seek(offset)
                digest, left = hashlib.sha256(), length
                while left:
                    piece = file.read(min(left, _CHUNK_READ))
                    if not piece:
                        raise OSError(f"{directory / name} ended before its items did")
                    digest.update(piece)
                    left -= len(piece)
                digests[f"{name}:{offset}"] = digest.hexdigest()
    return {"files": sizes, "sha256": digests}


def fill_hashes(section: dict[str, Any], shares: list[dict[str, Any]]) -> None:
    """Put every rank's :func:`hash_items` into ``section`` (files, chunk hashes)."""
    for share in shares:
        section["files"].update(share["files"])
    digests = {k: v for share in shares for k, v in share["sha256"].items()}
    for item in section["items"].values():
        for chunk in item.get("chunks", ()):
            chunk["sha256"] = digests[f"{chunk['file']}:{chunk['offset']}"]
    section["files"] = dict(sorted(section["files"].items()))


def manifest_text(fields: Mapping[str, Any]) -> str:
    """The manifest's JSON text: ``fields``, then the SHA-256 of their text."""
    body = {"format": FORMAT, "version": VERSION, **fields}
    text = dumps(body)
    body["sha256"] = hashlib.sha256(text.encode("ascii")).hexdigest()
    return dumps(body)


# --- loading: the manifest, checked, and the Metadata built from it --------------


@dataclass
class Manifest:
    """A checkpoint's manifest, checked, and DCP's ``Metadata`` built from it."""

    path: Path
    step: int
    world_size: int
    optimizer_class: str | None
    extra: dict[Any, Any]
    metadata: Metadata
    values: dict[str, Any] = field(default_factory=dict)  # key -> tagged JSON
    files: dict[str, int] = field(default_factory=dict)  # name -> size
    sha256: dict[MetadataIndex, str] = field(default_factory=dict)
    chunks: dict[MetadataIndex, torch.Size] = field(default_factory=dict)  # sizes

    def value(self, key: str) -> Any:
        """The value of the non-tensor item ``key``, a fresh copy."""
        return decode(self.values[key], f"{self.path / MANIFEST}'s {key!r}", {})


def _foreign(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} was not written by this dlcomp ({why}). {PLAIN_DCP}"
    )


def read_manifest(path: Path) -> Manifest:
    """Read and check the manifest of the checkpoint directory ``path``.

    Raises:
        CheckpointError: there is no manifest, or it is not one this dlcomp
            writes (an older dlcomp's, or none at all: plain DCP's advice),
            or it is damaged, or it describes a layout that is not sound.
    """
    where = str(path / MANIFEST)
    try:
        file = open_regular(path / MANIFEST, "manifest")
    except FileNotFoundError:
        if (path / ".metadata").exists():
            raise _foreign(path, f"it has a .metadata file but no {MANIFEST}") from None
        raise CheckpointError(
            f"{path} is not a complete DCP checkpoint (no {MANIFEST} manifest and "
            "no .metadata file)"
        ) from None
    with file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_MANIFEST:
            raise _damaged(
                where, f"it has {size} bytes; a manifest holds at most {MAX_MANIFEST}"
            )
        text = file.read(MAX_MANIFEST + 1)
    total = len(text) + _data_bytes(path)
    needed = json_memory(text)
    if needed > max(4 * total, 2**26):
        raise _damaged(
            where,
            f"reading it would take about {needed >> 20} MiB of memory, far more "
            f"than the checkpoint's {total} bytes: it is crafted",
        )
    manifest = strict_json(text, where)
    if not isinstance(manifest, dict):
        raise _damaged(where, "it is not a JSON object")
    if manifest.get("format") != FORMAT or "dcp" not in manifest:
        raise _foreign(
            path,
            f"its {MANIFEST} does not describe the DCP metadata: an older dlcomp "
            "or another program wrote it",
        )
    version = manifest.get("version")
    if type(version) is int and version > VERSION:
        raise CheckpointError(
            f"{where} is the manifest of a format version this dlcomp does not "
            f"read ({version}; it reads {VERSION}): a newer dlcomp wrote it. "
            "Upgrade dlcomp (pip install --upgrade dlcomp) to read it"
        )
    if version != VERSION or set(manifest) != _FIELDS:
        raise _damaged(where, "its fields are not those dlcomp writes")
    digest = manifest.pop("sha256")
    body = dumps(manifest).encode("ascii")
    if type(digest) is not str or hashlib.sha256(body).hexdigest() != digest:
        raise _damaged(where, "its text does not match its SHA-256")
    step, world, optimizer_class = (
        manifest[k] for k in ("step", "world_size", "optimizer_class")
    )
    if not (type(step) is int and step >= 0 and type(world) is int and world >= 1):
        raise _damaged(where, "its step or world size is not a valid int")
    if not (optimizer_class is None or type(optimizer_class) is str):
        raise _damaged(where, "its optimizer class is not a name")
    extra = decode(manifest["extra"], f"{where}'s extra", {})
    if not isinstance(extra, dict):
        raise _damaged(where, "its extras are not a dict")
    found = Manifest(path, step, world, optimizer_class, extra, Metadata({}))
    _build_metadata(manifest["dcp"], where, found)
    return found


def _data_bytes(path: Path) -> int:
    """The size of the ``.distcp`` files in ``path``, as listed (nothing opened)."""
    total = 0
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            if entry.name.endswith(".distcp") and entry.is_file():
                total += entry.stat().st_size
    return total


def _int_list(value: object, length: int | None = None) -> list[int] | None:
    if not (type(value) is list and len(value) <= MAX_DIMS):
        return None
    if length is not None and len(value) != length:
        return None
    if not all(type(n) is int and n >= 0 for n in value):
        return None
    return value


def _plain_file_name(name: object) -> bool:
    return (
        type(name) is str
        and name.endswith(".distcp")
        and len(name) <= 255
        and name not in (".distcp", "..distcp")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def _build_metadata(section: object, where: str, found: Manifest) -> None:
    """Check the ``dcp`` section; fill ``found`` with the Metadata built from it."""
    if not (
        isinstance(section, dict) and set(section) == {"version", "files", "items"}
    ):
        raise _damaged(where, "its DCP metadata does not have the fields dlcomp writes")
    version, files, items = section["version"], section["files"], section["items"]
    if not (version is None or (type(version) is str and len(version) <= 40)):
        raise _damaged(where, "its DCP version is not a short string")
    if not isinstance(files, dict) or not isinstance(items, dict):
        raise _damaged(where, "its DCP files or items are not objects")
    for name, size in files.items():
        if not _plain_file_name(name):
            raise CheckpointError(
                f"{where} names the data file {name[:80]!r}, which is not a .distcp "
                "file of the checkpoint directory; dlcomp reads only the "
                "directory's own files, so nothing was loaded"
            )
        if type(size) is not int or size < 0:
            raise _damaged(where, f"the size of {name!r} is not a number of bytes")
    found.files = dict(files)
    state_dict_metadata: dict[str, Any] = {}
    storage: dict[MetadataIndex, Any] = {}
    planner_data: dict[str, tuple[str | int, ...]] = {}
    ranges: dict[str, list[tuple[int, int, str]]] = {}
    for key, entry in items.items():
        item = f"the item {key[:80]!r} of {where}"
        if not isinstance(entry, dict):
            raise _damaged(item, "it is not an object")
        path = entry.get("path")
        if not (
            type(path) is list
            and 1 <= len(path) <= MAX_DEPTH
            and all(type(p) in (str, int) for p in path)
            and ".".join(map(str, path)) == key
        ):
            raise _damaged(item, "its path in the state dict is not its key's")
        planner_data[key] = tuple(path)
        if set(entry) == {"path", "value"}:
            decode(entry["value"], item, {})  # well-formed, holds no tensor
            found.values[key] = entry["value"]
            state_dict_metadata[key] = BytesStorageMetadata()
            continue
        if set(entry) != {"path", "dtype", "size", "chunks"}:
            raise _damaged(item, "it is neither a value nor a tensor's description")
        dtype = DTYPES.get(entry["dtype"]) if type(entry["dtype"]) is str else None
        size = _int_list(entry["size"])
        chunks = entry["chunks"]
        if dtype is None or size is None or type(chunks) is not list:
            raise _damaged(item, "its dtype, size or chunks are malformed")
        described = []
        for number, chunk in enumerate(chunks):
            if not (isinstance(chunk, dict) and set(chunk) == _CHUNK_FIELDS):
                raise _damaged(item, f"its chunk {number} is malformed")
            offsets = _int_list(chunk["offsets"], len(size))
            sizes = _int_list(chunk["sizes"], len(size))
            name, start, length = chunk["file"], chunk["offset"], chunk["length"]
            if offsets is None or sizes is None:
                raise _damaged(
                    item, f"its chunk {number} does not have {len(size)} offsets "
                    "and sizes"
                )  # fmt: skip
            if name not in files:
                raise _damaged(item, f"its chunk {number} lies in an unlisted file")
            if not (type(start) is int and type(length) is int and start >= 0):
                raise _damaged(item, f"its chunk {number} has no valid byte range")
            if not (type(chunk["sha256"]) is str and _HEX.fullmatch(chunk["sha256"])):
                raise _damaged(item, f"its chunk {number} has no SHA-256")
            nbytes = math.prod(sizes) * dtype.itemsize
            if not (length > 0 and nbytes <= length and start + length <= files[name]):
                raise CheckpointError(
                    f"{item}: its chunk {number} of shape {tuple(sizes)} needs "
                    f"{nbytes} bytes, and its byte range ({length} bytes from "
                    f"{start}) holds fewer or ends past the end of {name} "
                    f"({files[name]} bytes): the checkpoint is damaged or crafted. "
                    "Nothing was loaded"
                )
            index = MetadataIndex(key, offsets, number)
            if index in storage:
                raise _damaged(item, f"two of its chunks start at {tuple(offsets)}")
            storage[index] = filesystem._StorageInfo(name, start, length)
            found.sha256[index] = chunk["sha256"]
            found.chunks[index] = torch.Size(sizes)
            ranges.setdefault(name, []).append((start, length, key))
            described.append(
                ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes))
            )
        check_tiling(size, [(c.offsets, c.sizes) for c in described], item)
        state_dict_metadata[key] = TensorStorageMetadata(
            TensorProperties(dtype=dtype), torch.Size(size), described
        )
    for name, spans in ranges.items():
        spans.sort()
        for (a, length, first), (b, _, then) in itertools.pairwise(spans):
            if b < a + length:
                raise CheckpointError(
                    f"{where} places chunks of {first!r} and {then!r} on the same "
                    f"bytes of {name} (from {b}), but DCP writes each to bytes of "
                    "its own: the checkpoint is damaged or crafted. Nothing was "
                    "loaded"
                )
    found.metadata = Metadata(
        state_dict_metadata,
        planner_data=planner_data,
        storage_data=storage,
        storage_meta=StorageMeta(),
        version=version,
    )


def check_tiling(size: list[int], chunks: list[tuple[Any, Any]], where: str) -> None:
    """Refuse unless ``chunks`` (offsets, sizes) tile a tensor of ``size`` exactly.

    Every chunk must lie inside the tensor, their volumes add up to its
    number of elements, and no two of them overlap: then they cover it once.
    Pairs are compared along a sweep of the dimension with the most distinct
    offsets (about one comparison per chunk for the grids DCP writes).

    Examples:
        >>> check_tiling([4, 2], [([0, 0], [2, 2]), ([2, 0], [2, 2])], "x")
        >>> check_tiling([4, 2], [([0, 0], [2, 2])], "x")
        Traceback (most recent call last):
        ...
        dlcomp.CheckpointError: x: its chunks cover 4 of its 8 elements (shape (4, 2)), ...
    """  # noqa: E501
    shape = tuple(size)
    total = math.prod(shape)
    covered = 0
    boxes = []
    for offsets, sizes in chunks:
        if any(o + n > d for o, n, d in zip(offsets, sizes, shape, strict=True)):
            raise CheckpointError(
                f"{where}: a chunk at {tuple(offsets)} of shape {tuple(sizes)} "
                f"reaches outside the tensor's shape {shape}: the checkpoint is "
                "damaged or crafted. Nothing was loaded"
            )
        volume = math.prod(sizes)
        covered += volume
        if volume:
            boxes.append((tuple(offsets), tuple(sizes)))
    if covered != total:
        raise CheckpointError(
            f"{where}: its chunks cover {covered} of its {total} elements (shape "
            f"{shape}), counting overlaps twice: DCP's chunks cover a tensor "
            "exactly once. The checkpoint is damaged or crafted; nothing was "
            "loaded, and no memory was allocated for it"
        )
    if len(boxes) < 2:
        return
    dim = max(range(len(shape)), key=lambda d: len({box[0][d] for box in boxes}))
    boxes.sort(key=lambda box: box[0][dim])
    active: list[tuple[int, int]] = []  # (end along dim, index in boxes)
    budget = MAX_COMPARISONS
    for number, (offsets, sizes) in enumerate(boxes):
        while active and active[0][0] <= offsets[dim]:
            heapq.heappop(active)
        budget -= len(active)
        if budget < 0:
            raise CheckpointError(
                f"{where}: its {len(boxes)} chunks are laid out in a way DCP does "
                "not write (too many of them overlap along every dimension to be "
                "checked). Nothing was loaded"
            )
        for _, other in active:
            theirs, their_sizes = boxes[other]
            if all(
                a < b + m and b < a + n
                for a, n, b, m in zip(offsets, sizes, theirs, their_sizes, strict=True)
            ):
                raise CheckpointError(
                    f"{where}: its chunks at {offsets} and {theirs} overlap, so "
                    "others leave a gap: DCP's chunks cover a tensor exactly once. "
                    "The checkpoint is damaged or crafted; nothing was loaded"
                )
        heapq.heappush(active, (offsets[dim] + sizes[dim], number))


# --- reading -------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None or type(value) is bool:
        return "flag"  # None, True, False: optimizer switches such as foreach
    if type(value) in (int, float):
        return "number"
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return "number"
    return type(value).__name__


def fits(value: object, template: object) -> bool:
    """Whether ``value`` may replace ``template`` (what the state holds now).

    Numbers for numbers (an int for a float), ``None`` or a bool for a flag,
    a string for a string; a tuple of as many items, each fitting; a list of
    items fitting the template's first; a dict of the same keys.

    Examples:
        >>> fits(0.1, 0.01), fits(1, 0.01), fits("fast", 0.01), fits([1, 2], 0.9)
        (True, True, False, False)
        >>> fits((0.9, 0.99), (0.9, 0.999)), fits((0.9,), (0.9, 0.999))
        (True, False)
        >>> fits(True, None), fits(["0.weight"], ["0.weight", "0.bias"])
        (True, True)
    """
    if isinstance(template, BytesStorageMetadata):
        return True  # a state rebuilt from the metadata: nothing to compare with
    kind = _kind(template)
    if _kind(value) != kind:
        return False
    if type(template) is tuple:
        items = list(value)  # type: ignore[call-overload]
        return len(items) == len(template) and all(
            fits(v, t) for v, t in zip(items, template, strict=True)
        )
    if type(template) is list:
        if not template:
            return not value
        return all(fits(v, template[0]) for v in value)  # type: ignore[attr-defined]
    if isinstance(template, dict):
        return (
            isinstance(value, dict)
            and value.keys() == template.keys()
            and all(fits(value[k], template[k]) for k in template)
        )
    return True


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_exactly(file: IO[bytes], offset: int, length: int, where: str) -> bytes:
    file.seek(offset)
    data = file.read(length)
    if len(data) != length:
        raise CheckpointError(f"{where} ends early: the file is truncated")
    return data


class JsonFileSystemReader(FileSystemReader):
    """A DCP ``FileSystemReader`` that reads a dlcomp manifest, and no pickle.

    ``read_metadata()`` returns the ``Metadata`` built from the manifest
    (:func:`read_manifest`); ``.metadata`` is never opened. ``read_data``
    serves non-tensor items from the manifest's values, after checking each
    against the value the state holds now (:func:`fits`), all before any
    tensor is copied; then reads every tensor chunk its plan needs from a
    regular file opened without blocking, verifies the SHA-256 of its bytes,
    vets the archive and loads it with ``torch.load(weights_only=True)``.
    Refusals raise :class:`~dlcomp.CheckpointError` (wrapped by DCP in a
    ``CheckpointException``: :func:`load` unwraps it).

    Args:
        path: the checkpoint directory.
        manifest: its manifest, as :func:`read_manifest` returned it.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest) -> None:
        super().__init__(path)
        self.manifest = manifest

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The ``Metadata`` built from the manifest (``rank=`` is ignored)."""
        return dataclasses.replace(
            self.manifest.metadata, storage_meta=StorageMeta(load_id=self.load_id)
        )

    def check_files(self) -> None:
        """Refuse unless every data file is a regular file of its recorded size.

        Opens each without blocking (a FIFO or a device is refused, not
        waited on) and reads nothing.
        """
        for name, size in self.manifest.files.items():
            with self._open(name, size):
                pass

    def _open(self, name: str, size: int) -> IO[bytes]:
        path = Path(self.path) / name
        file = open_regular(path, "DCP data file")
        found = os.fstat(file.fileno()).st_size
        if found != size:
            file.close()
            raise CheckpointError(
                f"{path} has {found} bytes, and the manifest recorded {size}: the "
                "file is truncated or was replaced. Nothing was loaded"
            )
        return file

    def _serve_values(self, plan: LoadPlan, planner: LoadPlanner) -> None:
        """Check every non-tensor item of ``plan``, then put each in place."""
        from torch.distributed.checkpoint._traverse import set_element

        wanted = [item for item in plan.items if item.type == LoadItemType.BYTE_IO]
        if not wanted:
            return
        if not (
            isinstance(planner, DefaultLoadPlanner)
            and type(planner).load_bytes is DefaultLoadPlanner.load_bytes
        ):
            raise TypeError(
                "JsonFileSystemReader serves non-tensor items to DCP's "
                "DefaultLoadPlanner and subclasses that keep its load_bytes; got "
                f"{type(planner).__name__}"
            )
        values = {}
        for item in wanted:
            key = item.dest_index.fqn
            if key not in self.manifest.values:
                raise _damaged(
                    str(Path(self.path) / MANIFEST), f"it has no value for {key!r}"
                )
            value = self.manifest.value(key)
            template = planner.state_dict.get(key)
            if not fits(value, template):
                raise CheckpointError(
                    f"the checkpoint's {key!r} is {_shown(value)}, where the "
                    f"state it loads into holds {_shown(template)}: it would not "
                    "work there (a setting of another type). The checkpoint is "
                    "damaged or crafted; nothing was loaded"
                )
            values[key] = value
        for key, value in values.items():  # as DefaultLoadPlanner.load_bytes
            if planner.flatten_state_dict:
                set_element(planner.original_state_dict, planner.mappings[key], value)
            else:
                planner.state_dict[key] = value

    def _load_chunk(self, file: IO[bytes], index: MetadataIndex) -> torch.Tensor:
        info = self.storage_data[index]
        where = (
            f"the chunk at {tuple(index.offset or ())} of {index.fqn!r} in "
            f"{Path(self.path) / info.relative_path} (bytes {info.offset} to "
            f"{info.offset + info.length})"
        )
        data = _read_exactly(file, info.offset, info.length, where)
        if hashlib.sha256(data).hexdigest() != self.manifest.sha256[index]:
            raise CheckpointError(
                f"{where} does not match its SHA-256 in the manifest: the file is "
                "damaged (a flipped bit, a bad copy) or was changed. Nothing was "
                "loaded"
            )
        buffer = io.BytesIO(data)
        vet_item(buffer, 0, len(data), where)
        buffer.seek(0)
        try:
            tensor = torch.load(buffer, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(
                f"{where} is not a tensor torch.load(weights_only=True) reads "
                f"({type(error).__name__}): the checkpoint is damaged. Nothing "
                "was loaded"
            ) from None
        entry = self.manifest.metadata.state_dict_metadata[index.fqn]
        assert isinstance(entry, TensorStorageMetadata)
        dtype, sizes = entry.properties.dtype, self.manifest.chunks[index]
        if not (
            type(tensor) is torch.Tensor
            and tensor.dtype == dtype
            and tensor.shape == sizes
        ):
            found = (
                f"a {tensor.dtype} tensor of shape {tuple(tensor.shape)}"
                if isinstance(tensor, torch.Tensor)
                else f"a {type(tensor).__name__}"
            )
            raise CheckpointError(
                f"{where} holds {found}, where the manifest describes a "
                f"{dtype} chunk of shape {tuple(sizes)}: "
                "the checkpoint is damaged. Nothing was loaded"
            )
        if tensor.dtype == torch.bool and bool((tensor.view(torch.uint8) > 1).any()):
            raise CheckpointError(f"{where} holds bools that are not 0 or 1")
        return tensor

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Serve the plan's non-tensor items, then read, verify and copy its chunks.

        Raises:
            CheckpointError: a value does not fit the state it goes into (then
                no tensor was copied), or a data file is not a regular file of
                its recorded size, or a chunk's bytes do not match their
                SHA-256, are refused by the vetting, or are not the tensor the
                manifest describes.
            TypeError: ``planner`` has its own ``load_bytes``.
        """
        self._serve_values(plan, planner)
        per_index: dict[MetadataIndex, list[Any]] = {}
        for item in plan.items:
            if item.type != LoadItemType.BYTE_IO:
                per_index.setdefault(item.storage_index, []).append(item)
        per_file: dict[str, list[MetadataIndex]] = {}
        for index in per_index:
            per_file.setdefault(self.storage_data[index].relative_path, []).append(
                index
            )
        for name, indices in per_file.items():
            indices.sort(key=lambda index: self.storage_data[index].offset)
            with self._open(name, self.manifest.files[name]) as file:
                for index in indices:
                    saved = self._load_chunk(file, index)
                    for item in per_index[index]:
                        part = saved
                        for dim, (start, length) in enumerate(
                            zip(item.storage_offsets, item.lengths, strict=True)
                        ):
                            part = part.narrow(dim, start, length)
                        target = planner.resolve_tensor(item).detach()
                        if target.size() != part.size():
                            raise CheckpointError(
                                f"DCP planned to copy a part of shape "
                                f"{tuple(part.shape)} of {item.dest_index.fqn!r} "
                                f"into one of shape {tuple(target.shape)}"
                            )
                        target.copy_(part)
                        planner.commit_tensor(item, target)
                    del saved
        done: Future[None] = Future()
        done.set_result(None)
        return done


# --- loading through DCP -------------------------------------------------------------


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


_NO_GROUP = r"torch.distributed is (disabled|unavailable)"


@contextlib.contextmanager
def single_process_quietly(always: bool = False) -> Iterator[None]:
    """Without a process group, silence DCP's notice that it runs in one process.

    That is intended (one process needs no group); with a group, nothing
    changes, unless ``always`` (a load that is meant to stay in this process).
    """
    with warnings.catch_warnings():
        if always or not _dist_ready():
            warnings.filterwarnings("ignore", message=_NO_GROUP, category=UserWarning)
        yield


def _unwrapped(run: Callable[[], None], path: str | os.PathLike[str]) -> None:
    """Run a DCP load; raise a refusal as itself, not inside DCP's wrapper.

    DCP wraps the exceptions of every rank in one ``CheckpointException`` (a
    ``BaseException``, which ``except Exception`` misses); a ``KeyboardInterrupt``
    or ``SystemExit`` among them is raised as itself, then a
    ``CheckpointError``; any other failure becomes a ``CheckpointError``
    naming the first one.
    """
    try:
        run()
    except CheckpointException as exc:
        failures = [
            failure[0] if isinstance(failure, tuple) else failure
            for failure in exc.failures.values()
        ]
        failures = [getattr(failure, "exc", failure) for failure in failures]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure from None
        for failure in failures:
            if isinstance(failure, CheckpointError):
                raise failure from None
        first = failures[0] if failures else exc
        line = (str(first).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is damaged: DCP failed with {type(first).__name__}: {line}"
        ) from None


def load(
    state_dict: dict[str, Any],
    reader: JsonFileSystemReader,
    path: str | os.PathLike[str],
    *,
    alone: bool = False,
) -> None:
    """Load the checkpoint ``reader`` reads into ``state_dict``, as ``dcp.load`` does.

    Tensors are copied into those of ``state_dict`` (resharded to this
    process's layout); other values are replaced by the manifest's. Collective
    when a process group is initialized, unless ``alone``.

    Raises:
        CheckpointError: the checkpoint is damaged or refused (see
            :class:`JsonFileSystemReader`).
    """
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    with single_process_quietly(always=alone):
        _unwrapped(
            lambda: _load_state_dict(
                state_dict,
                storage_reader=reader,
                planner=DefaultLoadPlanner(),
                no_dist=alone or not _dist_ready(),
            ),
            path,
        )


def full_model_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The full model weights of the checkpoint ``path``, in this process alone.

    Only tensors whose chunks tile them are allocated, each once, and only
    after the whole manifest was checked: their sizes add up to at most the
    bytes the data files hold.

    Raises:
        CheckpointError: the checkpoint is not one dlcomp wrote, is damaged,
            or holds no model state.
    """
    path = Path(path)
    manifest = read_manifest(path)
    reader = JsonFileSystemReader(path, manifest)
    reader.check_files()  # the files hold the bytes the manifest says, first
    state = {}
    for key, entry in manifest.metadata.state_dict_metadata.items():
        if key.startswith("model.") and isinstance(entry, TensorStorageMetadata):
            state[key] = torch.empty(entry.size, dtype=entry.properties.dtype)
    if not state:
        raise CheckpointError(f"{path} holds no model state")
    load(state, reader, path, alone=True)
    return {key.removeprefix("model."): tensor for key, tensor in state.items()}


def encode_extra(extra: Mapping[str, Any]) -> Any:
    """The extras of a save as tagged JSON (a NaN loss survives a strict parse).

    Raises:
        TypeError: ``extra`` is not JSON (numbers, strings, lists, dicts).
    """
    import json

    try:
        json.dumps(extra)  # what the manager promises: plain JSON, as before
        return encode(dict(extra), "extra", _Tensors())
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"extra must be JSON (numbers, strings, lists, dicts): {error}"
        ) from None
