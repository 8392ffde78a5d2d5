"""Section 5.5, "Reading and writing files": vet a torch.save file before loading it.

``torch.load(path, weights_only=True)`` refuses a file that would run code,
but it still trusts the file's zip directory: it allocates every record's
declared size and inflates compressed records. A 0.5 MB file whose storage
record is deflated zeros inflates to 512 MiB before the loader can refuse it.
:func:`check_torch_file` reads only the zip directory (no record contents)
and refuses such files first (private: the checkpoint loaders call it).
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

from dlcomp._checkpoint import CheckpointError

__all__ = ["check_torch_file"]

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
        size = status.st_size
        try:
            records = zipfile.ZipFile(file).infolist()
        except _UNREADABLE as error:
            raise _refused(
                f"{path} is not a readable checkpoint ({size} bytes): it starts "
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
                f"{path} was not written by torch.save: its record {name!r} is "
                f"compressed ({method}) and would inflate to {declared} bytes from "
                f"{record.compress_size} (the whole file is {size} bytes), but "
                "torch.save stores every record uncompressed. It was not "
                "loaded, so as not to inflate it; re-save it with torch.save "
                "where it was made"
            )
        end = record.header_offset + record.compress_size
        if max(declared, record.compress_size) > size or end > size:
            raise _refused(
                f"{path} was not written by torch.save, or it is corrupted: its "
                f"record {name!r} declares {declared} bytes (stored in "
                f"{record.compress_size}, ending at byte {end}), more than the "
                f"whole file holds ({size} bytes). It was not loaded, so as not "
                "to allocate the declared size"
            )
        if record.compress_size != declared:
            raise _refused(
                f"{path} was not written by torch.save, or it is corrupted: its "
                f"uncompressed record {name!r} declares {declared} bytes but "
                f"occupies {record.compress_size} (the whole file is {size} "
                "bytes). It was not loaded"
            )
    total = sum(record.file_size for record in records)
    if total > size:
        largest = max(records, key=lambda record: record.file_size)
        raise _refused(
            f"{path} was not written by torch.save, or it is corrupted: its "
            f"{len(records)} records declare {total} bytes in all (the largest, "
            f"{largest.filename!r}, {largest.file_size} bytes), more than the "
            f"whole file holds ({size} bytes), so records overlap. It was not "
            "loaded, so as not to allocate the declared sizes"
        )
