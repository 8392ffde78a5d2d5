"""Section 5.5, "Reading and writing files": vet a torch.save file before loading it.

``torch.load(path, weights_only=True)`` refuses a file that would run code,
but it still trusts the file's zip directory: it allocates every record's
declared size and inflates compressed records. A 0.5 MB file whose storage
record is deflated zeros inflates to 512 MiB before the loader can refuse it.
:func:`check_torch_file` reads only the zip directory (no record contents)
and refuses such files first (private: the checkpoint loaders call it).

DCP checkpoints hold many torch.save archives, one per item, at byte ranges
of their ``.distcp`` files; :func:`check_torch_item` vets one such range the
same way, through a :class:`ByteRange` view that lets the zip reader see
nothing outside it.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import zipfile
from pathlib import Path
from typing import IO

from dlcomp._checkpoint import CheckpointError

__all__ = ["ByteRange", "check_torch_file", "check_torch_item"]

# torch.load treats a file as a zip archive exactly when it starts with these.
_ZIP_MAGIC = b"PK\x03\x04"
_METHODS = {
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# What zipfile raises for a damaged directory: a bad signature or offset, a
# name flagged UTF-8 that is not, an unsupported "version needed" field.
_UNREADABLE = (
    zipfile.BadZipFile,
    NotImplementedError,
    ValueError,
    EOFError,
    struct.error,
)


def _refused(message: str) -> ValueError:
    """Return the CheckpointError to raise, with ``message``."""
    return CheckpointError(message)


class ByteRange:
    """A read-only file of the bytes ``[offset, offset + length)`` of ``file``.

    Positions are relative to ``offset``; reading stops at the end of the
    range, and seeking before its start is an error, as at the start of a
    file. ``file`` is shared: each read seeks it first.

    Args:
        file: an open binary file that can seek.
        offset: where the range starts in ``file``, in bytes.
        length: how many bytes it spans.

    Examples:
        >>> import io
        >>> part = ByteRange(io.BytesIO(b"0123456789"), 2, 5)
        >>> part.read(3), part.read(), part.seek(-1, 2), part.read()
        (b'234', b'56', 4, b'6')
    """

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        self._file, self._offset, self._length = file, offset, length
        self._position = 0

    def seekable(self) -> bool:
        """Always ``True``."""
        return True

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def tell(self) -> int:
        """The position, from the start of the range."""
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move as :meth:`io.IOBase.seek` does, within the range's coordinates."""
        base = {
            os.SEEK_SET: 0,
            os.SEEK_CUR: self._position,
            os.SEEK_END: self._length,
        }[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "seek before the start of the byte range")
        self._position = base + offset
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that are left if negative), never past the end."""
        left = max(self._length - self._position, 0)
        count = left if size is None or size < 0 else min(size, left)
        if count == 0:
            return b""
        self._file.seek(self._offset + self._position)
        data = self._file.read(count)
        self._position += len(data)
        return data


def _check_zip(
    file: IO[bytes] | ByteRange, size: int, where: str, whole: str, resave: str
) -> None:
    """Refuse the torch.save zip archive ``file`` (``size`` bytes) unless it is sound.

    ``where`` names it at the start of each message, ``whole`` is what its
    size is called ("the whole file"), ``resave`` the advice for a
    compressed record.
    """
    try:
        records = zipfile.ZipFile(file).infolist()
    except _UNREADABLE as error:
        raise _refused(
            f"{where} is not a readable checkpoint ({size} bytes): it starts "
            "like a torch.save zip file, but its zip directory cannot be "
            f"read ({type(error).__name__}: {error}), so it is truncated or "
            "corrupted"
        ) from error
    for record in records:
        name, declared = record.filename, record.file_size
        if record.compress_type != zipfile.ZIP_STORED:
            method = _METHODS.get(
                record.compress_type, f"method {record.compress_type}"
            )
            raise _refused(
                f"{where} was not written by torch.save: its record {name!r} is "
                f"compressed ({method}) and would inflate to {declared} bytes from "
                f"{record.compress_size} ({whole} is {size} bytes), but "
                "torch.save stores every record uncompressed. It was not "
                f"loaded, so as not to inflate it; {resave}"
            )
        end = record.header_offset + record.compress_size
        if max(declared, record.compress_size) > size or end > size:
            raise _refused(
                f"{where} was not written by torch.save, or it is corrupted: its "
                f"record {name!r} declares {declared} bytes (stored in "
                f"{record.compress_size}, ending at byte {end}), more than "
                f"{whole} holds ({size} bytes). It was not loaded, so as not "
                "to allocate the declared size"
            )
        if record.compress_size != declared:
            raise _refused(
                f"{where} was not written by torch.save, or it is corrupted: its "
                f"uncompressed record {name!r} declares {declared} bytes but "
                f"occupies {record.compress_size} ({whole} is {size} "
                "bytes). It was not loaded"
            )
    total = sum(record.file_size for record in records)
    if total > size:
        largest = max(records, key=lambda record: record.file_size)
        raise _refused(
            f"{where} was not written by torch.save, or it is corrupted: its "
            f"{len(records)} records declare {total} bytes in all (the largest, "
            f"{largest.filename!r}, {largest.file_size} bytes), more than "
            f"{whole} holds ({size} bytes), so records overlap. It was not "
            "loaded, so as not to allocate the declared sizes"
        )


def check_torch_file(path: Path) -> None:
    """Refuse a torch.save zip file whose records would inflate or overflow.

    Reads the zip's central directory only (its size is bounded by the
    file's), never a record's contents, and raises unless every record is
    stored uncompressed and the declared sizes fit in the file: each record
    declares at most the file's size, ends inside the file, and all records
    together declare at most the file's size (so overlapping records cannot
    multiply it). After the check, ``torch.load`` allocates at most about the
    file's size for records, whatever the file says.

    ``torch.save`` writes every record STORED (uncompressed, 64-byte
    aligned), so a compressed record means another writer. It is refused
    outright, whatever size it declares: a deflate stream can inflate to more
    than its declared size, and refusing every compressed record covers that
    case without inflating anything.

    A file that does not start like a zip archive is not checked: ``torch.load``
    reads it in the legacy format, and its own errors apply; nor is anything
    but a regular file (a directory, a FIFO: it is not read, so a FIFO does
    not block). A file that starts like a zip archive but whose directory
    cannot be read is refused, since it could not be vetted.

    Args:
        path: the file to check, before ``torch.load(path, weights_only=True)``.

    Raises:
        CheckpointError: a record is compressed, or the declared sizes exceed
            the file's size, or the zip directory cannot be read. The message
            names the record, its declared size and the file's size.
        FileNotFoundError: there is no file at ``path``.

    Examples:
        >>> import tempfile, zipfile, torch
        >>> folder = Path(tempfile.mkdtemp())
        >>> torch.save({"w": torch.zeros(3)}, folder / "w.pt")
        >>> check_torch_file(folder / "w.pt") is None  # written by torch.save
        True
        >>> with zipfile.ZipFile(folder / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as z:
        ...     z.writestr("archive/data/0", bytes(2**20))
        >>> import dlcomp
        >>> try:
        ...     check_torch_file(folder / "bomb.pt")
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        /...bomb.pt was not written by torch.save: its record 'archive/data/0' is compressed (deflate) and would inflate to 1048576 bytes from ... (the whole file is ... bytes), but torch.save stores every record uncompressed. It was not loaded, so as not to inflate it; re-save it with torch.save where it was made
    """  # noqa: E501
    # O_NONBLOCK: opening a FIFO must not wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    with open(os.open(path, flags), "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            return  # a directory, FIFO or device: not ours to read
        if file.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return  # not a zip: torch.load's legacy reader and its errors apply
        _check_zip(
            file,
            status.st_size,
            str(path),
            whole="the whole file",
            resave="re-save it with torch.save where it was made",
        )


def check_torch_item(file: IO[bytes], offset: int, length: int, where: str) -> None:
    """Refuse the item at ``[offset, offset + length)`` of ``file`` unless it is sound.

    The same check as :func:`check_torch_file`, on one item of a DCP
    ``.distcp`` file (an archive ``torch.save`` wrote there), with the item's
    length where that function has the file's size: after it, ``torch.load``
    of the item allocates at most about the item's length for records. Only
    the zip directory at the end of the range is read, through a
    :class:`ByteRange`. Unlike a file, an item must be a zip archive: DCP
    writes every item with ``torch.save``, never in the legacy format.

    Args:
        file: the open ``.distcp`` file.
        offset: where the item starts, in bytes.
        length: its length, in bytes.
        where: how messages name the item (which item of which file).

    Raises:
        CheckpointError: the range ends past the end of ``file`` (it is
            truncated), or the item is not a zip archive, or a record is
            compressed, or the declared sizes exceed the item's length, or
            its zip directory cannot be read.

    Examples:
        >>> import io, torch
        >>> data = io.BytesIO()
        >>> data.write(b"7 bytes")  # the item starts after them
        7
        >>> torch.save({"lr": 0.1}, data)
        >>> check_torch_item(data, 7, data.tell() - 7, "the item 'lr'") is None
        True
        >>> import dlcomp
        >>> try:
        ...     check_torch_item(data, 0, 100, "the item 'lr'")  # wrong offset
        ... except dlcomp.CheckpointError as error:
        ...     print(error)
        the item 'lr' is not a torch.save archive (it does not start like one), ...
    """
    size = file.seek(0, os.SEEK_END)
    if offset + length > size:
        raise _refused(
            f"{where} ends at byte {offset + length}, past the end of its file "
            f"({size} bytes): the file is truncated. It was not loaded"
        )
    item = ByteRange(file, offset, length)
    if item.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
        raise _refused(
            f"{where} is not a torch.save archive (it does not start like one), "
            "and DCP writes every item with torch.save: the checkpoint is "
            "damaged, or was not written by DCP. It was not loaded"
        )
    _check_zip(
        item,
        length,
        where,
        whole="the whole item",
        resave="re-save the checkpoint where it was made",
    )
