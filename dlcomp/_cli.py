"""Command-line options checked by the library's rules (private).

The workers' ``python -m`` command lines turn a refused value into an
argparse usage error (exit status 2) that names the option, before anything
runs: the same rule and message as the Python functions they call. Folders
the commands write to are checked up front too (:func:`folder_problem`):
a mistake found after minutes of work (or after ``ready``) is lost time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dlcomp._checks import check_int

__all__ = [
    "folder_problem",
    "int_option",
    "number",
    "option",
    "steps_option",
    "writable_folder",
]

_T = TypeVar("_T")


def option(check: Callable[[str, str], _T], name: str) -> Callable[[str], _T]:
    """An argparse ``type``: ``check(text, name)``, a usage error if it refuses."""

    def parse(text: str) -> _T:
        try:
            return check(text, name)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def number(text: str) -> object:
    """``text`` as an int if it is one, else as it came (for the check to refuse)."""
    try:
        return int(text)
    except ValueError:
        return text


def int_option(name: str, minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an int ``>= minimum`` (:func:`check_int`'s rule)."""
    return option(lambda text, n: check_int(number(text), n, minimum=minimum), name)


# Both workers draw the batch of a step from seed * 2**20 + step.
MAX_STEPS = 2**20


def _steps(text: str, name: str) -> int:
    steps = check_int(number(text), name, minimum=1)
    if steps > MAX_STEPS:
        raise ValueError(f"{name} must be an int <= 2**20, got {steps}")
    return steps


steps_option = option(_steps, "--steps")
"""The workers' ``--steps``: an int from 1 to 2**20."""


def folder_problem(folder: Path, *, create: bool = False) -> str | None:
    """What makes ``folder`` unusable for writing files in, or ``None``.

    Refused: a path that is, or lies below, something other than a folder
    (a regular file, say), and a folder in which this process cannot create
    a file (for a folder still to be created: the nearest existing folder
    above it, where it would be created). With ``create`` the folder is
    created, then tested; without, nothing is left behind.
    """
    try:
        existing = next(
            (p for p in (folder, *folder.parents) if os.path.lexists(p)), None
        )
        if existing is not None and not existing.is_dir():
            what = "a file, not a folder" if existing.is_file() else "not a folder"
            where = "" if existing == folder else f"cannot create {folder}: "
            return f"{where}{existing} is {what}"
    except OSError as error:
        return f"cannot use {folder}: {error.strerror or error}"
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"cannot create {folder}: {error.strerror or error}"
        existing = folder
    probe = existing if existing is not None else Path(".")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        where = "" if probe == folder else f"cannot create {folder}: "
        return f"{where}cannot write in {probe}: {error.strerror or error}"
    return None


def writable_folder(text: str, name: str) -> str:
    """``text`` if it names a folder this process can write in (or create).

    For an argparse ``type`` (:func:`option`): a ValueError naming the option
    otherwise. Nothing is created.
    """
    if problem := folder_problem(Path(text)):
        raise ValueError(
            f"{name} must be a folder this process can write in: {problem}"
        )
    return text
