"""Fixtures shared by the test modules (the root conftest.py seeds torch)."""

import io
import zipfile

import pytest


def _deflated(archive: bytes, padding: int) -> bytes:
    """``archive`` (one torch.save zip) rewritten with every record deflated.

    ``padding`` zero bytes follow the pickle in its record: the unpickler
    stops before them, but ``torch.load`` inflates the whole record.
    """
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for record in src.infolist():
            data = src.read(record)
            if record.filename.endswith("/data.pkl"):
                data += bytes(padding)
            dst.writestr(record.filename, data)
    return out.getvalue()


@pytest.fixture
def deflated():
    """A function: a torch.save zip rewritten as a decompression bomb."""
    return _deflated
