"""Section 5.5, "Reading and writing files": vet a torch.save archive, byte by byte.

``torch.load(weights_only=True)`` runs no code from a file, but it trusts the
rest of it: its zip reader (miniz) inflates compressed records and allocates
whatever sizes the directory declares, and its unpickler calls the functions
on its allowlist (``bytearray`` among them) with whatever arguments the
pickle gives. Python's :mod:`zipfile` and miniz find the zip directory in
different places, so a check made with one and a load made with the other
can see two different archives.

This module never checks with one parser and loads with another: a file is
read only if it has exactly one possible interpretation, the one torch.save's
writer (``PyTorchStreamWriter`` over miniz) produces, or it is refused with
:class:`~dlcomp.CheckpointError` (private: the checkpoint loaders call it).

- :func:`vet_archive` checks every byte of a range: local records in order,
  each STORED and aligned as torch pads them, their CRC-32s, the central
  directory, the zip64 end records and the end record, nothing before,
  between or after them (:class:`ArchiveLayout` is what it found).
- :func:`scan_pickle` walks ``data.pkl``'s opcodes without running them and
  refuses any global but the few that torch.save writes for tensors, state
  dicts, optimizer states and plain containers; it also bounds the size of
  the object the pickle builds, shared references counted each time.
- :func:`check_bounded` bounds the same size on a loaded object.
- :func:`load_torch_file` is the one path that loads a file others wrote;
  :func:`vet_item` vets the archive of one item of a DCP ``.distcp`` file.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch

from dlcomp._checkpoint import CheckpointError

__all__ = [
    "ArchiveLayout",
    "MAX_RECORDS",
    "Record",
    "StorageRef",
    "check_bounded",
    "load_torch_file",
    "node_limit",
    "scan_pickle",
    "vet_archive",
    "vet_item",
]

# --- the zip layout torch.save writes -------------------------------------------------

_LOCAL = struct.Struct("<4s5H3L2H")  # local file header, 30 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # central directory header, 46 bytes
_DESCRIPTOR32 = struct.Struct("<4s3L")  # data descriptor, 16 bytes
_DESCRIPTOR64 = struct.Struct("<4sL2Q")  # zip64 data descriptor, 24 bytes
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory, 56 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # zip64 end locator, 20 bytes
_END = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_TAIL = _ZIP64_END.size + _ZIP64_LOCATOR.size + _END.size  # 98 bytes

_ZIP_MAGIC = b"PK\x03\x04"  # torch.load reads a zip exactly when a file starts so
_MAX32 = 0xFFFFFFFF  # miniz writes zip64 fields for sizes and offsets >= this
_HAS_DESCRIPTOR = 0x0008  # general purpose flag bit 3: sizes follow the data
_UTF8 = 0x0800  # general purpose flag bit 11: the name is UTF-8
_ZIP64_MADE_BY, _ZIP64_NEEDED = 0x031E, 0x002D  # what miniz writes, always
_DEFAULT_ALIGNMENT = 64  # torch.save's storage alignment without a record of it

MAX_RECORDS = 1 << 17  # one record per storage: far more than any model has
MAX_NAME = 1024  # a record's name is the file's stem plus e.g. "/data/123"
_CHUNK = 1 << 20  # records are read (for their CRC-32) this much at a time

# What torch.save writes under its archive's prefix; nothing else is read.
_METADATA = (
    ".data/serialization_id",
    ".data/version",
    ".format_version",
    ".storage_alignment",
    "byteorder",
    "version",
)
_STORAGE_NAME = re.compile(r"data/(0|[1-9][0-9]{0,9})")
_SMALL = 64  # metadata records are kept (and checked) up to this size


@dataclass(frozen=True)
class Record:
    """One record of a vetted archive; offsets are from the start of the range."""

    name: str
    """The name after the archive's prefix, e.g. ``"data.pkl"``, ``"data/0"``."""
    header: int
    """Where its local header starts."""
    data: int
    """Where its bytes start (a multiple of the archive's alignment)."""
    size: int
    """How many bytes it holds, stored uncompressed."""
    crc: int
    """The CRC-32 of its bytes, as recorded and as computed."""


@dataclass(frozen=True)
class ArchiveLayout:
    """A range vetted by :func:`vet_archive`: the one way to read it."""

    prefix: str
    """The folder all records are in (torch.save names it after the file)."""
    records: tuple[Record, ...]
    """Every record, in the order of the file."""
    pickle: bytes
    """The bytes of ``<prefix>/data.pkl``, CRC-checked."""
    alignment: int
    """The alignment of every record's bytes (``.storage_alignment``, or 64)."""

    def storage_sizes(self) -> dict[str, int]:
        """The size of each storage record, by key (``"0"`` for ``data/0``)."""
        return {
            record.name[len("data/") :]: record.size
            for record in self.records
            if _STORAGE_NAME.fullmatch(record.name)
        }


def _refused(where: str, length: int, why: str) -> CheckpointError:
    """A range that is not the archive torch.save would have written."""
    return CheckpointError(
        f"{where} is not a readable checkpoint ({length} bytes): it starts like a "
        f"torch.save zip archive, but {why}; it is truncated or corrupted, or "
        "torch.save did not write it. It was not loaded"
    )


def _read_exactly(file: IO[bytes], offset: int, size: int) -> bytes:
    file.seek(offset)
    data = file.read(size)
    if len(data) != size:  # the file shrank while it was read
        raise OSError(f"read {len(data)} of {size} bytes at byte {offset}")
    return data


def _zip64_fields(extra: bytes, where: str, length: int, name: str) -> tuple[int, ...]:
    """The values of a zip64 extra field that is the whole of ``extra``, or ()."""
    if not extra:
        return ()
    if len(extra) < 4 or len(extra) % 8 != 4:
        raise _refused(where, length, f"the record {name!r} has an extra field")
    ident, size = struct.unpack_from("<2H", extra)
    if ident != 1 or size != len(extra) - 4:
        raise _refused(where, length, f"the record {name!r} has an extra field")
    return struct.unpack_from(f"<{size // 8}Q", extra, 4)


@dataclass(frozen=True)
class _Entry:
    """A central directory entry, its sizes and offset resolved (zip64 or not)."""

    fields: tuple[Any, ...]
    name: bytes
    extra: bytes
    size: int
    offset: int


def _directory(
    file: IO[bytes], offset: int, length: int, where: str
) -> tuple[list[_Entry], int]:
    """The central directory as miniz finds it (the end record's), and its offset.

    Checks first what tells most about a file that another writer made: a
    compressed record, or sizes larger than the range.
    """
    end = _END.unpack(_read_exactly(file, offset + length - _END.size, _END.size))
    if end[0] != b"PK\x05\x06" or end[7] != 0:
        raise _refused(where, length, "it does not end with a zip end record")
    count, cd_size, cd_offset = end[3], end[5], end[6]
    locator_at = length - _END.size - _ZIP64_LOCATOR.size
    if locator_at >= 0:  # as miniz: a locator before the end record holds the values
        locator = _ZIP64_LOCATOR.unpack(
            _read_exactly(file, offset + locator_at, _ZIP64_LOCATOR.size)
        )
        if locator[0] == b"PK\x06\x07":
            at = locator[2]
            if at > locator_at - _ZIP64_END.size:
                raise _refused(where, length, "its zip64 locator points past itself")
            z64 = _ZIP64_END.unpack(_read_exactly(file, offset + at, _ZIP64_END.size))
            if z64[0] != b"PK\x06\x06":
                raise _refused(where, length, "its zip64 end record is missing")
            count, cd_size, cd_offset = z64[7], z64[8], z64[9]
    if not 0 < count <= MAX_RECORDS:
        raise _refused(
            where, length, f"its directory lists {count} records (1 to {MAX_RECORDS})"
        )
    if cd_size > count * (_CENTRAL.size + MAX_NAME + 28) or cd_offset + cd_size > (
        length - _END.size
    ):
        raise _refused(where, length, "its directory does not fit in it")
    directory = _read_exactly(file, offset + cd_offset, cd_size)
    entries, at = [], 0
    for _ in range(count):
        if at + _CENTRAL.size > cd_size:
            raise _refused(where, length, "its directory is cut short")
        fields = _CENTRAL.unpack_from(directory, at)
        name_end = at + _CENTRAL.size + fields[10]
        extra_end = name_end + fields[11]
        if fields[0] != b"PK\x01\x02" or extra_end + fields[12] > cd_size:
            raise _refused(where, length, "its directory is damaged")
        name = directory[at + _CENTRAL.size : name_end]
        extra = directory[name_end:extra_end]
        shown = name.decode("utf-8", "replace")
        size, stored, header = fields[9], fields[8], fields[16]
        values = list(_zip64_fields(extra, where, length, shown))
        if size == _MAX32 and values:
            size = values.pop(0)
        if stored == _MAX32 and values:
            stored = values.pop(0)
        if header == _MAX32 and values:
            header = values.pop(0)
        if fields[4] != 0:
            method = {8: "deflate", 12: "bzip2", 14: "lzma"}.get(
                fields[4], f"method {fields[4]}"
            )
            raise CheckpointError(
                f"{where} was not written by torch.save: its record {shown!r} is "
                f"compressed ({method}) and would inflate to {size} bytes from "
                f"{stored} (it is {length} bytes in all), but torch.save stores "
                "every record uncompressed. It was not loaded, so as not to "
                "inflate it; re-save it with torch.save where it was made"
            )
        if max(size, stored) > length or header + stored > length:
            raise CheckpointError(
                f"{where} was not written by torch.save, or it is corrupted: its "
                f"record {shown!r} declares {size} bytes (stored in {stored}, at "
                f"byte {header}), more than it holds ({length} bytes). It was not "
                "loaded, so as not to allocate the declared size"
            )
        if stored != size:
            raise CheckpointError(
                f"{where} was not written by torch.save, or it is corrupted: its "
                f"uncompressed record {shown!r} declares {size} bytes but occupies "
                f"{stored} (it is {length} bytes in all). It was not loaded"
            )
        entries.append(_Entry(fields, name, extra, size, header))
        at = extra_end + fields[12]
    if at != cd_size:
        raise _refused(where, length, "its directory has bytes after its last entry")
    return entries, cd_offset


def _check_tail(
    file: IO[bytes], offset: int, length: int, where: str, count: int, cd: int
) -> None:
    """The zip64 end record, its locator and the end record, exactly as miniz writes."""
    cd_end = length - _TAIL
    tail = _read_exactly(file, offset + cd_end, _TAIL)
    z64 = _ZIP64_END.unpack_from(tail)
    locator = _ZIP64_LOCATOR.unpack_from(tail, _ZIP64_END.size)
    end = _END.unpack_from(tail, _ZIP64_END.size + _ZIP64_LOCATOR.size)
    expected_z64 = (
        b"PK\x06\x06",
        _ZIP64_END.size - 12,
        _ZIP64_MADE_BY,
        _ZIP64_NEEDED,
        0,
        0,
        count,
        count,
        cd_end - cd,
        cd,
    )
    if z64 != expected_z64 or locator != (b"PK\x06\x07", 0, cd_end, 1):
        raise _refused(
            where,
            length,
            "its end records are not the zip64 end record, locator and end "
            "record that torch.save writes right after one directory (zip "
            "readers could disagree on where its directory is)",
        )
    expected_end = (
        b"PK\x05\x06",
        0,
        0,
        min(count, 0xFFFF),
        min(count, 0xFFFF),
        min(cd_end - cd, _MAX32),
        min(cd, _MAX32),
        0,
    )
    if end != expected_end:
        raise _refused(where, length, "its end record disagrees with its zip64 one")


def _check_entry(
    entry: _Entry, prefix: str | None, where: str, length: int
) -> tuple[str, str]:
    """A central entry exactly as miniz writes it for torch: its prefix and name."""
    try:
        full = entry.name.decode("utf-8")
    except UnicodeDecodeError:
        raise _refused(
            where, length, f"a record's name {entry.name!r} is not UTF-8"
        ) from None
    folder, slash, name = full.partition("/")
    if (
        not slash
        or not folder
        or "\\" in folder
        or "\0" in folder
        or (prefix is not None and folder != prefix)
        or not (
            name in _METADATA or name == "data.pkl" or _STORAGE_NAME.fullmatch(name)
        )
        or len(entry.name) > MAX_NAME
    ):
        raise _refused(
            where, length, f"it has a record {full!r}, which torch.save does not write"
        )
    size, header = entry.size, entry.offset
    flags = _UTF8 | (_HAS_DESCRIPTOR if size else 0)
    expected = (
        b"PK\x01\x02",
        0,  # version made by
        0,  # version needed: STORED
        flags,
        0,  # method: STORED
        0,  # time (torch builds miniz without time stamps)
        0,  # date
        entry.fields[7],  # crc: checked against the bytes
        min(size, _MAX32),
        min(size, _MAX32),
        len(entry.name),
        len(entry.extra),
        0,  # comment
        0,  # disk
        0,  # internal attributes
        0,  # external attributes
        min(header, _MAX32),
    )
    zip64: tuple[int, ...] = (size,) * 2 if size >= _MAX32 else ()
    zip64 += (header,) if header >= _MAX32 else ()
    if (
        entry.fields != expected
        or _zip64_fields(entry.extra, where, length, full) != zip64
    ):
        raise _refused(
            where,
            length,
            f"the directory's entry for {full!r} is not as torch.save writes it",
        )
    return folder, name


def _walk_record(
    file: IO[bytes],
    offset: int,
    length: int,
    where: str,
    entry: _Entry,
    full: str,
    keep: bool,
) -> tuple[Record, int, int, bytes | None]:
    """Check one local record at ``entry.offset``: header, padding, bytes, descriptor.

    Returns the record, its padding, where the next one starts, and its
    bytes if ``keep``.
    """
    size, header, crc = entry.size, entry.offset, entry.fields[7]
    big = size >= _MAX32 or header >= _MAX32
    local = _LOCAL.unpack(_read_exactly(file, offset + header, _LOCAL.size))
    name_at = header + _LOCAL.size
    extra_at = name_at + local[9]
    expected = (
        b"PK\x03\x04",
        0,
        entry.fields[3],  # the same flags
        0,
        0,
        0,
        0,  # crc and sizes: in the descriptor
        0,
        0,
        len(entry.name),
        local[10],
    )
    if local != expected or extra_at + local[10] > length:
        raise _refused(where, length, f"the local header of {full!r} is not torch's")
    name_extra = _read_exactly(file, offset + name_at, local[9] + local[10])
    extra = name_extra[local[9] :]
    zip64 = b""
    if big:  # miniz's local zip64 field: the size, a compressed size still 0
        values: tuple[int, ...] = (size, 0) if size >= _MAX32 else ()
        values += (header,) if header >= _MAX32 else ()
        zip64 = struct.pack(f"<2H{len(values)}Q", 1, 8 * len(values), *values)
    padding = len(extra) - len(zip64) - 4
    data_at = extra_at + local[10]
    if (
        name_extra[: local[9]] != entry.name
        or padding < 0
        or extra != zip64 + b"FB" + struct.pack("<H", padding) + b"Z" * padding
    ):
        raise _refused(
            where, length, f"the local header of {full!r} disagrees with the directory"
        )
    kept, computed, at, left = [], 0, data_at, size
    if data_at + size > length:
        raise _refused(where, length, f"the record {full!r} runs past its end")
    file.seek(offset + data_at)
    while left:
        chunk = file.read(min(left, _CHUNK))
        if not chunk:
            raise OSError(f"read stopped at byte {at}")
        computed = zlib.crc32(chunk, computed)
        if keep:
            kept.append(chunk)
        at += len(chunk)
        left -= len(chunk)
    if size:
        shape = _DESCRIPTOR64 if big else _DESCRIPTOR32
        if at + shape.size > length or shape.unpack(
            _read_exactly(file, offset + at, shape.size)
        ) != (b"PK\x07\x08", crc, size, size):
            raise _refused(
                where, length, f"the data descriptor of {full!r} is not torch's"
            )
        at += shape.size
    if computed != crc:
        hint = (
            " (torch.save wrote it without checksums: "
            "torch.serialization.set_crc32_options(False))"
            if crc == 0
            else ""
        )
        raise CheckpointError(
            f"{where} is corrupted: the bytes of its record {full!r} do not match "
            f"the CRC-32 recorded for them (0x{crc:08x}, computed "
            f"0x{computed:08x}){hint}. It was not loaded; a bit changed on disk or "
            "in transfer, or the file was edited after torch.save wrote it"
        )
    record = Record(full.partition("/")[2], header, data_at, size, crc)
    return record, padding, at, b"".join(kept) if keep else None


def _check_metadata(
    records: list[Record],
    paddings: list[int],
    kept: dict[str, bytes],
    where: str,
    length: int,
) -> int:
    """The small records' contents, and every record's alignment; the alignment.

    torch pads each record's extra field with the fewest bytes that align its
    data to the storage alignment (a record of its own, 64 without one).
    """
    if not {"version", ".data/version"} & {record.name for record in records}:
        raise _refused(where, length, "it has no version record")
    for name, value in kept.items():
        ok = {
            "byteorder": value in (b"little", b"big"),
            ".storage_alignment": re.fullmatch(rb"[1-9][0-9]{0,4}", value),
            ".format_version": re.fullmatch(rb"[0-9]{1,3}", value),
            "version": re.fullmatch(rb"[0-9]{1,3}\n?", value),
            ".data/version": re.fullmatch(rb"[0-9]{1,3}\n?", value),
            ".data/serialization_id": re.fullmatch(rb"[0-9]{1,64}", value),
        }.get(name, True)
        if not ok:
            raise _refused(where, length, f"its record {name!r} holds {value[:80]!r}")
    alignment = int(kept.get(".storage_alignment", _DEFAULT_ALIGNMENT))
    for record, padding in zip(records, paddings, strict=True):
        if record.data % alignment or padding >= alignment:
            raise _refused(
                where,
                length,
                f"its record {record.name!r} is not aligned as torch.save aligns "
                f"records ({alignment} bytes)",
            )
    return alignment


def vet_archive(file: IO[bytes], offset: int, length: int, where: str) -> ArchiveLayout:
    """Refuse ``[offset, offset + length)`` of ``file`` unless torch.save wrote it so.

    The range must be a zip archive laid out exactly as ``torch.save`` lays
    it out, every byte accounted for: from its first byte, each record's
    local header (the fields miniz writes, sizes and CRC-32 left to the data
    descriptor), its name, a zip64 extra field where a size or offset needs
    one, torch's ``FB`` padding field of ``Z`` bytes that aligns the data to
    the archive's storage alignment, the data STORED (never compressed),
    and its data descriptor; then one central directory whose entries repeat
    each local header's name, flags, sizes, CRC-32 and offset, in the same
    order; then the zip64 end record, its locator and the end record, ending
    exactly at the end of the range, with no comment. Names are
    ``<prefix>/`` and what torch.save writes (``data.pkl``, ``data/<key>``,
    ``version``, ``byteorder``, ...), one prefix for all, each name once;
    at most :data:`MAX_RECORDS` records. The bytes of every record must
    match its recorded CRC-32. Python's :mod:`zipfile` and torch's miniz
    then read the same records at the same offsets, with nothing to inflate
    and nothing larger than the range.

    The range is read once, in chunks (the CRC-32s), plus its directory.

    Args:
        file: an open binary file that can seek.
        offset: where the archive starts in ``file``, in bytes.
        length: how many bytes it spans.
        where: how messages name it.

    Returns:
        ArchiveLayout: its prefix, its records, the bytes of ``data.pkl``.

    Raises:
        CheckpointError: the range goes past the end of ``file``, or is not
            laid out so, or a record's bytes do not match its CRC-32. The
            message says what was found.

    Examples:
        >>> import io, torch
        >>> data = io.BytesIO()
        >>> data.write(b"7 bytes")  # the archive starts after them
        7
        >>> torch.save({"w": torch.zeros(3)}, data)
        >>> layout = vet_archive(data, 7, data.tell() - 7, "w.pt")
        >>> layout.prefix, layout.storage_sizes(), layout.alignment
        ('archive', {'0': 12}, 64)
        >>> import dlcomp
        >>> flipped = bytearray(data.getvalue())
        >>> flipped[7 + layout.records[-1].data] ^= 1  # one bit of the last record
        >>> try:
        ...     vet_archive(io.BytesIO(flipped), 7, len(flipped) - 7, "w.pt")
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        w.pt is corrupted: the bytes of its record 'archive/.data/serialization_id' do not match the CRC-32 recorded for them (...). It was not loaded; ...
    """  # noqa: E501
    size = file.seek(0, os.SEEK_END)
    if offset + length > size:
        raise CheckpointError(
            f"{where} ends at byte {offset + length}, past the end of its file "
            f"({size} bytes): the file is truncated. It was not loaded"
        )
    if length < len(_ZIP_MAGIC) or _read_exactly(file, offset, 4) != _ZIP_MAGIC:
        raise CheckpointError(
            f"{where} is not a torch.save archive (it does not start like one): "
            "it is damaged, or it is not what torch.save writes. It was not loaded"
        )
    if length < _LOCAL.size + _TAIL:
        raise _refused(where, length, "it is too short to hold a record")
    entries, cd_offset = _directory(file, offset, length, where)
    _check_tail(file, offset, length, where, len(entries), cd_offset)
    prefix: str | None = None
    seen: set[str] = set()
    records: list[Record] = []
    paddings: list[int] = []
    kept: dict[str, bytes] = {}
    at = 0
    for entry in entries:
        prefix, name = _check_entry(entry, prefix, where, length)
        full = f"{prefix}/{name}"
        if name in seen:
            raise _refused(where, length, f"it has two records named {full!r}")
        seen.add(name)
        if entry.offset != at:
            raise _refused(
                where,
                length,
                f"its record {full!r} starts at byte {entry.offset}, not right "
                f"after the one before it (byte {at})",
            )
        keep = name == "data.pkl" or (name in _METADATA and entry.size <= _SMALL)
        record, padding, at, data = _walk_record(
            file, offset, length, where, entry, full, keep
        )
        records.append(record)
        paddings.append(padding)
        if data is not None:
            kept[name] = data
    if at != cd_offset:
        raise _refused(
            where,
            length,
            f"bytes {at} to {cd_offset} belong to no record listed in its directory",
        )
    if prefix is None or "data.pkl" not in kept:
        raise _refused(where, length, "it has no data.pkl record")
    pickled = kept.pop("data.pkl")
    alignment = _check_metadata(records, paddings, kept, where, length)
    return ArchiveLayout(prefix, tuple(records), pickled, alignment)


# --- the pickle torch.save writes -----------------------------------------------------

# Storage classes named in persistent ids, with the dtype of their elements.
_STORAGES: dict[str, torch.dtype] = {
    "torch.storage.UntypedStorage": torch.uint8,  # dtypes without a legacy class
    "torch.DoubleStorage": torch.float64,
    "torch.FloatStorage": torch.float32,
    "torch.HalfStorage": torch.float16,
    "torch.BFloat16Storage": torch.bfloat16,
    "torch.LongStorage": torch.int64,
    "torch.IntStorage": torch.int32,
    "torch.ShortStorage": torch.int16,
    "torch.CharStorage": torch.int8,
    "torch.ByteStorage": torch.uint8,
    "torch.BoolStorage": torch.bool,
    "torch.ComplexDoubleStorage": torch.complex128,
    "torch.ComplexFloatStorage": torch.complex64,
}
# What a pickle may call (REDUCE), exactly as protocol 2 spells the names.
_CALLABLES = frozenset(
    {
        "collections.OrderedDict",  # state dicts, and a tensor's empty hook dict
        "torch._utils._rebuild_tensor_v2",  # a tensor over a storage
        "torch._utils._rebuild_tensor_v3",  # the same, for dtypes without a class
        "torch._utils._rebuild_parameter",  # an nn.Parameter
        "torch._utils._rebuild_sparse_tensor",  # indices and values: no dense copy
        "torch._utils._rebuild_meta_tensor_no_storage",  # a meta tensor: no memory
        "torch.serialization._get_layout",  # a layout by name (sparse tensors)
        "torch.device",
        "torch.Size",
        "__builtin__.complex",  # a Python complex number
    }
)
# Values only: dtypes (``torch.float32``), and storage classes in persistent ids.
_VALUES = frozenset(
    str(value) for value in vars(torch).values() if isinstance(value, torch.dtype)
) | frozenset(_STORAGES)
_ALLOWED = _CALLABLES | _VALUES

# Globals torch.load(weights_only=True) accepts that allocate or compute more
# than the file holds; torch.save writes none of them for a state dict.
_GADGET = {
    "bytearray": "bytearray(n) allocates n bytes, which the file need not hold",
    "_codecs.encode": (
        "chained encodings ('hex' doubles its input) allocate exponentially "
        "more than the file holds"
    ),
    "set": "building a set hashes its items, exponentially long for nested tuples",
    "frozenset": "building a set hashes its items, exponentially long for nested "
    "tuples",
    "collections.Counter": "counting hashes its items, exponentially long for "
    "nested tuples",
    "torch._utils._rebuild_qtensor": "it allocates the size its arguments "
    "declare, whatever the file holds",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "it copies and "
    "converts a tensor each time it is called",
    "torch.storage.UntypedStorage": "calling a storage class allocates the size "
    "its argument declares",
    "torch.storage.TypedStorage": "calling a storage class allocates the size its "
    "argument declares",
}
_OPCODE_GADGETS = {
    "BYTEARRAY8": "bytearray8 builds a bytearray, and torch.save writes none",
}
# Opcodes of protocol 4 and 5: resolved (to name what a STACK_GLOBAL refers
# to), but refused at the end: torch.save writes protocol 2, and
# torch.load(weights_only=True) does not read them.
_NEWER = frozenset(
    {"FRAME", "SHORT_BINUNICODE", "BINUNICODE8", "MEMOIZE", "STACK_GLOBAL"}
)
_CONSTANTS = frozenset(
    {
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG1",
        "BINFLOAT",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
    }
)
_KEYS = (str, int, float, bool, type(None))  # hashed in constant time
_BASE_NODES = 1 << 16  # a pickle of n bytes may build an object of this + n parts
_SHOWN = 80  # characters of a found name shown in a message


def node_limit(pickle_size: int) -> int:
    """How many parts the object a ``pickle_size``-byte pickle builds may have.

    Each part of an object a pickle builds takes at least one byte of the
    pickle, unless parts are shared: a reference to a memoized object takes
    two bytes, however large it is. Shared references nested in each other
    (``t = (t, t)``, forty times) make an object of 2**40 parts from a few
    kilobytes. Counting a shared part each time it is reached, a real
    checkpoint stays under its pickle's size; the limit allows that plus
    :data:`_BASE_NODES`.

    Examples:
        >>> node_limit(1000)
        66536
    """
    return _BASE_NODES + pickle_size


@dataclass(frozen=True)
class StorageRef:
    """A storage a pickle refers to (torch's persistent id), not yet loaded."""

    storage_type: str
    """The storage class, as pickled: ``"torch.FloatStorage"``."""
    key: str
    """The record that holds it: ``data/<key>``."""
    location: str
    """Where it was saved (``"cpu"``, ``"cuda:0"``): not where it will go."""
    numel: int
    """How many elements of its dtype it holds."""

    @property
    def nbytes(self) -> int:
        """Its size in bytes, as torch.load computes it."""
        return self.numel * _STORAGES[self.storage_type].itemsize


class _Node:
    """An object the pickle builds: a container, or what a call returns."""

    __slots__ = ("children", "kind")

    def __init__(self, kind: str, children: list[object] | None = None) -> None:
        self.kind = kind
        self.children = [] if children is None else children


class _Global:
    """A global the pickle looked up (allowed: refused ones stop the scan)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _named(name: str) -> str:
    """``posix.system (os.system)``: the name a reader knows, beside the pickled one."""
    module, _, attribute = name.rpartition(".")
    return f"{name} (os.{attribute})" if module in ("posix", "nt") else name


def _refused_global(name: str, where: str) -> CheckpointError:
    """The message for a global the pickle refers to that is not allowed."""
    # Quoted only if it is a dotted Python name: nothing a reader could
    # mistake for a command to paste.
    if len(name) <= _SHOWN and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        shown = name
    else:
        shown = "a name that is not a Python name"
    module, _, attribute = name.rpartition(".")
    reason = _GADGET.get(name) or (
        _GADGET.get(attribute) if module in ("builtins", "__builtin__") else None
    )
    if module == "torch" and attribute.endswith("Tensor"):  # torch.FloatTensor
        reason = "calling a tensor class allocates the size its arguments declare"

    if reason is not None:
        return CheckpointError(
            f"{where} refers to {shown}, which torch.load(weights_only=True) "
            f"allows, but {reason}; torch.save writes no such thing for tensors, "
            "state dicts, optimizer states or plain values. It was not loaded, "
            "and nothing ran"
        )
    return CheckpointError(
        f"{where} refers to {_named(shown)}, which would run code when unpickled: "
        "it is not a tensor, a state dict or a plain value, and checkpoints are "
        "read with torch.load(weights_only=True), which refuses it too. It was "
        "not loaded, and nothing ran. Only if you trust where it came from: "
        "torch.load(path, weights_only=False), or allow that one name with "
        "torch.serialization.safe_globals([...])"
    )


def _damaged_pickle(where: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where} is not a readable checkpoint: its pickle (data.pkl) {why}, which "
        "torch.save does not write; it is corrupted or crafted. It was not "
        "loaded, and nothing ran"
    )


def _tree_size(root: object, limit: int) -> int:
    """The parts of ``root``, each shared one counted each time (capped: limit + 1)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, _Node):
            continue
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(
                sizes[id(child)] if isinstance(child, _Node) else 1
                for child in node.children
            )
            sizes[key] = min(total, limit + 1)
        elif key in on_path:  # a container that holds itself: endless
            return limit + 1
        elif key not in sizes:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in node.children)
    return sizes.get(id(root), 1)


def _scan(data: bytes, where: str, legacy: bool = False) -> tuple[StorageRef, ...]:
    """Walk ``data``'s opcodes as torch's unpickler would, running none of them."""
    stack: list[object] = []
    marks: list[list[object]] = []
    memo: dict[int, object] = {}
    refs: list[StorageRef] = []
    newer: list[str] = []
    root: object = None
    stop = -1

    def pop(count: int = 1) -> list[object]:
        if len(stack) < count:
            raise _damaged_pickle(where, "takes more values than it pushed")
        taken = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return taken

    def pop_mark() -> list[object]:
        nonlocal stack
        if not marks:
            raise _damaged_pickle(where, "closes a mark it never opened")
        items, stack = stack, marks.pop()
        return items

    def top(kinds: tuple[str, ...], opcode: str) -> _Node:
        target = stack[-1] if stack else None
        if not (isinstance(target, _Node) and target.kind in kinds):
            raise _damaged_pickle(where, f"applies {opcode} to something else")
        return target

    def look_up(module: object, name: object) -> _Global:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _damaged_pickle(
                where,
                "looks up a global whose name it computes "
                f"({module!r:.{_SHOWN}}, {name!r:.{_SHOWN}})",
            )
        full = f"{module}.{name}"
        if full not in _ALLOWED:
            raise _refused_global(full, where)
        return _Global(full)

    try:
        for opcode, arg, position in pickletools.genops(data):
            op = opcode.name
            if op in _NEWER:
                newer.append(op)
            if op in _CONSTANTS:
                stack.append(arg)
            elif op in ("PROTO", "FRAME"):
                if op == "PROTO" and arg != 2:
                    newer.append(f"PROTO {arg}")
            elif op == "MARK":
                marks.append(stack)
                stack = []
            elif op == "EMPTY_TUPLE":
                stack.append(_Node("tuple"))
            elif op == "TUPLE":
                items = pop_mark()  # first: it changes which list `stack` is
                stack.append(_Node("tuple", items))
            elif op in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(_Node("tuple", pop(int(op[-1]))))
            elif op in ("EMPTY_LIST", "EMPTY_DICT"):
                stack.append(_Node("list" if op == "EMPTY_LIST" else "dict"))
            elif op == "APPEND":
                item = pop()
                top(("list",), op).children.extend(item)
            elif op == "APPENDS":
                items = pop_mark()
                top(("list",), op).children.extend(items)
            elif op in ("SETITEM", "SETITEMS"):
                items = pop(2) if op == "SETITEM" else pop_mark()
                target = top(("dict", "collections.OrderedDict"), op)
                if len(items) % 2 or not all(type(key) in _KEYS for key in items[::2]):
                    raise _damaged_pickle(where, "uses a key that is not a str or int")
                target.children.extend(items)
            elif op in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack:
                    raise _damaged_pickle(where, "memoizes nothing")
                memo[len(memo) if op == "MEMOIZE" else cast(int, arg)] = stack[-1]
            elif op in ("BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise _damaged_pickle(where, f"gets memo {arg}, never put")
                stack.append(memo[arg])
            elif op == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                stack.append(look_up(module, name))
            elif op == "STACK_GLOBAL":
                pushed = pop(2)
                stack.append(look_up(pushed[0], pushed[1]))
            elif op == "REDUCE":
                (args,) = pop()
                function = stack[-1] if stack else None
                if not isinstance(function, _Global):
                    raise _damaged_pickle(where, "calls something it did not look up")
                if function.name not in _CALLABLES:
                    raise _refused_global(function.name, where)  # a storage class
                if (
                    not isinstance(args, _Node)
                    or args.kind != "tuple"
                    or (function.name == "collections.OrderedDict" and args.children)
                ):
                    raise _damaged_pickle(where, f"calls {function.name} oddly")
                stack[-1] = _Node(function.name, list(args.children))
            elif op == "BUILD":
                (state,) = pop()
                top(("collections.OrderedDict",), op).children.append(state)
            elif op == "BINPERSID":
                (pid,) = pop()
                if not legacy:
                    refs.append(_storage_ref(pid, where))
                stack.append(_Node("storage"))
            elif op == "STOP":
                (root,) = pop()
                if stack or marks:
                    raise _damaged_pickle(where, "leaves values behind")
                stop = -1 if position is None else position
            else:
                reason = _OPCODE_GADGETS.get(op)
                if reason is not None:
                    raise CheckpointError(
                        f"{where} holds the pickle opcode {op}: {reason}. It was "
                        "not loaded, and nothing ran"
                    )
                raise _damaged_pickle(where, f"holds the opcode {op}")
    except (ValueError, EOFError, struct.error) as error:
        if isinstance(error, CheckpointError):
            raise
        raise _damaged_pickle(where, f"cannot be parsed ({error})") from None
    if stop != len(data) - 1:
        raise _damaged_pickle(where, "has bytes after its end")
    if newer:
        raise _damaged_pickle(
            where, f"uses pickle protocol 4 or 5 ({', '.join(sorted(set(newer)))})"
        )
    limit = node_limit(len(data))
    if _tree_size(root, limit) > limit:
        raise _too_large(where, limit)
    return tuple(refs)


def _storage_ref(pid: object, where: str) -> StorageRef:
    """``("storage", <class>, key, location, numel)``, as torch.save pickles it."""
    fields = pid.children if isinstance(pid, _Node) and pid.kind == "tuple" else []
    if len(fields) == 5:
        tag, kind, key, location, numel = fields
        if (
            tag == "storage"
            and isinstance(kind, _Global)
            and kind.name in _STORAGES
            and isinstance(key, str)
            and _STORAGE_NAME.fullmatch(f"data/{key}")
            and isinstance(location, str)
            and len(location) <= _SHOWN
            and type(numel) is int
            and numel >= 0
        ):
            return StorageRef(kind.name, key, location, numel)
    raise _damaged_pickle(where, "refers to a storage in a way torch.save does not")


def _too_large(where: str, limit: int) -> CheckpointError:
    return CheckpointError(
        f"{where} was not loaded: the object it holds has more than {limit} parts "
        "when each shared part is counted every time it is reached, more than "
        "its pickle's size allows: shared references nested in each other, "
        "which would make printing, comparing or copying it take exponential "
        "time. torch.save writes nothing like it for a state dict"
    )


def scan_pickle(data: bytes, where: str) -> tuple[StorageRef, ...]:
    """Refuse a ``data.pkl`` that refers to anything torch.save does not write.

    Walks the pickle's opcodes (:func:`pickletools.genops`) and runs none of
    them. Refused: any global but the callables :data:`_CALLABLES`
    (``collections.OrderedDict`` with no arguments, the rebuild functions of
    tensors and Parameters, ``torch.device``, ``torch.Size``, ``complex``)
    and the values :data:`_VALUES` (dtypes, and storage classes in
    persistent ids), spelled as protocol 2 spells them; so ``bytearray``
    under any module name, and the other allocation gadgets torch's own
    allowlist holds (``_codecs.encode``, ``set``, storage and tensor
    classes called with a size, quantized tensors). Refused too: opcodes
    torch.save does not write (``BYTEARRAY8``, ``NEWOBJ``, ``EXT1`` ...,
    and protocol 4's, though a ``STACK_GLOBAL`` is resolved first to name
    what it refers to), dict keys that are not plain constants (hashing a
    nested tuple can take exponential time), a persistent id that is not a
    storage, bytes after ``STOP``, and an object of more than
    :func:`node_limit` parts, shared references counted each time.

    Args:
        data: the bytes of ``data.pkl``.
        where: how messages name the file.

    Returns:
        tuple[StorageRef, ...]: the storages it refers to, in order.

    Raises:
        CheckpointError: what was found (quoted, truncated), and that nothing
            was loaded and nothing ran.

    Examples:
        >>> import pickle
        >>> scan_pickle(pickle.dumps({"lr": 0.1, "betas": (0.9, 0.99)}, 2), "p")
        ()
        >>> class Gadget:
        ...     def __reduce__(self):
        ...         return bytearray, (2**29,)
        >>> import dlcomp
        >>> try:
        ...     scan_pickle(pickle.dumps({"extra": Gadget()}, protocol=2), "c.pt")
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        c.pt refers to __builtin__.bytearray, which torch.load(weights_only=True) allows, but bytearray(n) allocates n bytes, which the file need not hold; ... It was not loaded, and nothing ran
    """  # noqa: E501
    return _scan(data, where)


def _check_storages(
    refs: tuple[StorageRef, ...], layout: ArchiveLayout, where: str
) -> None:
    """Each storage the pickle refers to is a record of exactly its size, and back."""
    sizes = layout.storage_sizes()
    types: dict[str, str] = {}
    for ref in refs:
        if ref.key not in sizes:
            raise _damaged_pickle(where, f"refers to a storage {ref.key!r} it lacks")
        if (
            ref.nbytes != sizes[ref.key]
            or types.setdefault(ref.key, ref.storage_type) != ref.storage_type
        ):
            raise _damaged_pickle(
                where,
                f"declares {ref.nbytes} bytes of {ref.storage_type} for the "
                f"storage {ref.key!r}, whose record holds {sizes[ref.key]} bytes",
            )
    unused = sorted(set(sizes) - set(types), key=int)
    if unused:
        raise _damaged_pickle(where, f"never refers to its storage {unused[0]!r}")


def vet_item(file: IO[bytes], offset: int, length: int, where: str) -> None:
    """Refuse the item ``[offset, offset + length)`` of ``file`` unless it is sound.

    One item of a DCP ``.distcp`` file is a whole torch.save archive:
    :func:`vet_archive` checks its bytes, :func:`scan_pickle` its pickle,
    and each storage it refers to must be one of its records, of exactly
    the declared size. After this, ``torch.load(weights_only=True)`` of the
    item allocates at most about ``length`` bytes and calls only tensor,
    Parameter and container constructors.

    Args:
        file: the open ``.distcp`` file.
        offset: where the item starts, in bytes.
        length: its length, in bytes.
        where: how messages name the item (which item of which file).

    Raises:
        CheckpointError: what was found; nothing was loaded.

    Examples:
        >>> import io, torch
        >>> data = io.BytesIO(b"other items")
        >>> _ = data.seek(0, 2)
        >>> torch.save({"lr": 0.1}, data)
        >>> vet_item(data, 11, data.tell() - 11, "the item 'lr'") is None
        True
        >>> import dlcomp
        >>> try:
        ...     vet_item(data, 0, 100, "the item 'lr'")  # wrong offset
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        the item 'lr' is not a torch.save archive (it does not start like one): ...
    """
    layout = vet_archive(file, offset, length, where)
    _check_storages(scan_pickle(layout.pickle, where), layout, where)


def check_bounded(obj: object, where: str, limit: int) -> None:
    """Refuse ``obj`` if traversing it reaches more than ``limit`` parts.

    Containers (dicts, their keys and values, lists, tuples, sets) are
    walked; anything else (a tensor, a number) is one part. A part reached
    through several references counts each time, as in any traversal that
    prints, compares or copies the object: that is what makes a few
    kilobytes of nested shared tuples take exponential time. The walk stops
    at ``limit``, so it takes at most that many steps.

    Args:
        obj: what ``torch.load`` returned.
        where: how messages name the file.
        limit: the most parts allowed (see :func:`node_limit`).

    Raises:
        CheckpointError: ``obj`` has more than ``limit`` parts.

    Examples:
        >>> t = ()
        >>> for _ in range(40):
        ...     t = (t, t)  # 2**41 - 1 parts, 41 objects
        >>> import dlcomp
        >>> try:
        ...     check_bounded(t, "d3.pt", limit=1000)
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        d3.pt was not loaded: the object it holds has more than 1000 parts ...
        >>> check_bounded({"w": [1, 2, (3, 4)]}, "ok.pt", limit=1000) is None
        True
    """
    count = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise _too_large(where, limit)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)


# --- the one path that loads a file others wrote ------------------------------------

# torch.save's legacy (pre-1.6, not zip) format starts with its pickled magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_TRUST = (
    "Only if you trust where the file came from: torch.load(path, "
    "weights_only=False), or allow that one name with "
    "torch.serialization.safe_globals([...])"
)


def _unreadable(path: Path, size: int, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable checkpoint ({size} bytes): it is not a file "
        f"written by torch.save, or it is truncated or corrupted ({why})"
    )


def _legacy(file: IO[bytes], path: Path, size: int) -> CheckpointError:
    """The refusal of a file in torch.save's legacy format; names code it holds.

    The format is a run of pickles (magic number, protocol, system
    information, the object, storage keys) and raw storages; the object's
    pickle is scanned, so that a file that would run code says so.
    """
    file.seek(0)
    try:
        for _ in range(3):  # the magic number, the protocol, the system information
            for _item in pickletools.genops(file):
                pass
        start = end = file.tell()
        for item in pickletools.genops(file):
            end = end if item[2] is None else item[2]
        data = _read_exactly(file, start, end + 1 - start)
    except (ValueError, EOFError, struct.error, OSError):
        data = b""
    if data:
        try:
            _scan(data, str(path), legacy=True)
        except CheckpointError as error:
            if "nothing ran" in str(error) and "refers to" in str(error):
                return error
    return CheckpointError(
        f"{path} was not loaded: it is in torch.save's legacy format (PyTorch "
        "before 1.6, or _use_new_zipfile_serialization=False), whose storages "
        "cannot be vetted before torch.load allocates them. Re-save it with a "
        "current torch.save where you trust it: torch.save(torch.load(old, "
        "weights_only=True), new)"
    )


def _open(path: Path) -> IO[bytes]:
    """``path`` opened for reading without blocking (a FIFO has no writer)."""
    flags = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        return open(path, "rb", opener=lambda name, mode: os.open(name, mode | flags))
    except IsADirectoryError:
        raise CheckpointError(
            f"{path} is not a regular file (a directory, FIFO or device): "
            "not a checkpoint"
        ) from None
    except PermissionError as error:
        raise CheckpointError(
            f"{path} cannot be read (permission denied): not loaded"
        ) from error


def _device_error(path: Path, message: str, map_location: object) -> CheckpointError:
    found = re.search(r"on a (\w+) device", message)
    device = found.group(1) if found else "an accelerator"
    return CheckpointError(
        f"{path} was not loaded: map_location={map_location!r} asks for a "
        f"{device} device, and this machine has none. Load it onto the CPU with "
        "map_location='cpu' (or onto the device you have, e.g. "
        "map_location=dlcomp.try_gpu())"
    )


def _torch_load(file: IO[bytes], path: Path, size: int, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` of the vetted file, failures translated."""
    file.seek(0)
    try:
        # A sparse tensor from a file is checked (indices in range) as it is
        # built: an unchecked one can make later operations read out of
        # bounds. (torch 2.11 and 2.12 warn when neither is chosen; 2.14
        # checks under weights_only=True and says so in a warning, which is
        # what was asked for here.)
        with (
            torch.sparse.check_sparse_tensor_invariants(enable=True),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings(
                "ignore", "Validating sparse tensor invariants", UserWarning
            )
            return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        found = re.search(r"GLOBAL (\S+) whose module \S+ is blocked", message)
        found = found or re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if found:
            raise CheckpointError(
                f"{path} was not loaded: it holds a Python object "
                f"({found.group(1)}), which would run code when unpickled, and "
                f"checkpoints are loaded with weights_only=True. {_TRUST}"
            ) from error
        raise _unreadable(path, size, message.split(". ")[0]) from error
    except RuntimeError as error:
        message = str(error)
        if "deserialize object on a" in message or "is_available() is False" in (
            message
        ):
            raise _device_error(path, message, map_location) from error
        raise _unreadable(path, size, message.split(". ")[0]) from error
    except Exception as error:  # whatever a damaged file makes torch's reader raise
        why = str(error).split(". ")[0] or type(error).__name__
        raise _unreadable(path, size, why) from error


def load_torch_file(path: Path, map_location: Any = None) -> Any:
    """Load a file others wrote with ``torch.save``, vetted byte by byte first.

    The one way dlcomp reads such a file (plain ``torch.save`` files, and
    its own checkpoints of format 1 and 2):

    1. open it without blocking; refuse anything but a regular file;
    2. refuse a raw pickle, and torch.save's legacy (pre-1.6) format, saying
       so (and naming the code either would run, if any);
    3. :func:`vet_archive` over the whole file, then :func:`scan_pickle`
       of its ``data.pkl``, whose storages must be its records, exactly;
    4. ``torch.load(weights_only=True)`` of the same open file, onto
       ``map_location`` (``None`` means the CPU: a file never decides which
       device memory is allocated on), with torch's errors translated;
    5. :func:`check_bounded` of what it returns.

    Args:
        path: the file.
        map_location: where its tensors go (see :func:`torch.load`); ``None``
            is ``"cpu"``.

    Returns:
        What ``torch.save`` saved.

    Raises:
        CheckpointError: the file is not one torch.save wrote, is damaged
            (a CRC-32 does not match), would run code or allocate more than
            it holds, needs a device this machine lacks, or is not a regular
            file; the message says which, and what to do.
        FileNotFoundError: there is no file at ``path``.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"w": torch.ones(2), "step": 3}, path)
        >>> load_torch_file(path)
        {'w': tensor([1., 1.]), 'step': 3}
        >>> path.write_bytes(path.read_bytes()[:-1])  # one byte short
        1...
        >>> import dlcomp
        >>> try:
        ...     load_torch_file(path)
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        /.../w.pt is not a readable checkpoint (... bytes): it starts like a torch.save zip archive, but it does not end with a zip end record; ...
    """  # noqa: E501
    path = Path(path)
    with _open(path) as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(
                f"{path} is not a regular file (a directory, FIFO or device): "
                "not a checkpoint"
            )
        size = status.st_size
        head = file.read(len(_LEGACY_MAGIC))
        if head.startswith(_LEGACY_MAGIC):
            raise _legacy(file, path, size)
        if head.startswith(b"\x80"):
            raise CheckpointError(
                f"{path} was not loaded: it holds a raw pickle (not a torch.save "
                "file), which would run code when unpickled, and checkpoints are "
                f"loaded with weights_only=True. {_TRUST}"
            )
        if not head.startswith(_ZIP_MAGIC):
            raise _unreadable(path, size, "it does not start like a zip archive")
        where = str(path)
        layout = vet_archive(file, 0, size, where)
        _check_storages(scan_pickle(layout.pickle, where), layout, where)
        location = "cpu" if map_location is None else map_location
        loaded = _torch_load(file, path, size, location)
    check_bounded(loaded, where, node_limit(len(layout.pickle)))
    return loaded
