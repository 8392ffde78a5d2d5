"""Craft checkpoint files for the tests: old versions, and valid-looking forgeries.

``write_legacy`` writes what dlcomp 0.1 wrote (format version 2: a dict saved
with ``torch.save``), which dlcomp still reads. ``edit_manifest`` rewrites the
manifest of a version-3 file and recomputes its SHA-256, as an attacker who
knows the format would: the file is then consistent, and only the checks of
its content stand between it and the model.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import dlcomp


def legacy_dict(model: nn.Module, optimizer=None, step: int = 1, **extra) -> dict:
    """The dict a version-2 checkpoint holds."""
    return {
        "format": "dlcomp.checkpoint",
        "version": 2,
        "dlcomp": dlcomp.__version__,
        "step": step,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "optimizer_class": None
        if optimizer is None
        else f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "extra": extra,
    }


def write_legacy(path: Path, *args, **kwargs) -> Path:
    """Write a version-2 checkpoint (``torch.save`` of :func:`legacy_dict`)."""
    torch.save(legacy_dict(*args, **kwargs), path)
    return path


def split(path: Path) -> tuple[dict, dict, bytes]:
    """A version-3 file's header, manifest and data bytes."""
    data = Path(path).read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    manifest = json.loads(header["__metadata__"]["manifest"])
    return header, manifest, data[8 + length :]


def join(path: Path, header: dict, manifest: dict, data: bytes) -> Path:
    """Write a version-3 file from its parts, the manifest's hash recomputed."""
    text = json.dumps(manifest, separators=(",", ":"))
    header["__metadata__"]["manifest"] = text
    header["__metadata__"]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    Path(path).write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return Path(path)


def edit_manifest(path: Path, edit: Callable[[dict], object]) -> Path:
    """Change a version-3 file's manifest in place; keep it consistent."""
    header, manifest, data = split(path)
    edit(manifest)
    return join(path, header, manifest, data)


def rewrite(path: Path, edit: Callable[[dict], object]) -> Path:
    """Decode a version-3 file's fields, ``edit`` them, and write them back, valid.

    The fields are those :func:`dlcomp._format.read` returns (``step``,
    ``model``, ``optimizer``, ``extra``, ...), with tensors as tensors.
    """
    from dlcomp import _format

    fields = _format.read(Path(path))
    edit(fields)
    encoded = _format.encode_checkpoint(
        step=fields["step"],
        model=fields["model"],
        model_metadata=fields["model_metadata"],
        optimizer=fields["optimizer"],
        optimizer_class=fields["optimizer_class"],
        extra=fields["extra"],
        rng=fields["rng"],
        version=fields["dlcomp"],
    )
    Path(path).write_bytes(_format.write_bytes(encoded))
    return Path(path)
