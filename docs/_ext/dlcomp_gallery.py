"""Gallery helpers for the dlcomp site (named in conf.py; not part of the library).

``run_timing_alone`` is a sphinx-gallery ``reset_modules`` function. The
gallery runs examples in parallel processes (``"parallel"`` in
``sphinx_gallery_conf``); an example that *times* something would then
measure while another example competes for the same cores. Before each
example, the hook takes a reader-writer lock on a file in the temporary
folder: shared for an ordinary example (any number run together),
exclusive for a timing example (it runs alone). After the example
(``reset_modules_order = "both"``), it lets the lock go. Nothing shows in
the examples themselves.

A timing example is one whose source calls a clock or a dlcomp timing
function (:data:`TIMING_NAMES`); a new timing script is covered without a
list to keep up.

The lock is two ``fcntl.flock`` locks: a *gate* taken first by everyone,
briefly, and the *room* (shared or exclusive). A timing example holds the
gate until it is in the room, so ordinary examples that come after it wait
at the gate instead of slipping in ahead of it again and again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

# A source that mentions one of these (as a word) times something.
TIMING_NAMES = (
    "perf_counter",
    "monotonic",
    "process_time",
    "benchmark",
    "Timer",
    "elapsed_time",
    "matmul_throughput",
    "small_op_overhead",
    "copy_bandwidth",
    "logging_cost",
    "two_devices",
    "sync_cost",
    "run_bench",
)
_TIMING = re.compile(r"\b(" + "|".join(TIMING_NAMES) + r")\b")

_held: dict[str, IO[bytes]] = {}  # the room lock this process holds, if any


def _lock_paths(gallery_conf: dict[str, Any]) -> tuple[Path, Path]:
    """The gate and room files of this source tree's build, in the temp folder."""
    key = hashlib.sha256(str(gallery_conf.get("src_dir", "")).encode()).hexdigest()
    base = Path(tempfile.gettempdir()) / f"dlcomp-gallery-{key[:16]}"
    return base.with_suffix(".gate"), base.with_suffix(".room")


def _sources(gallery_conf: dict[str, Any], fname: str) -> list[Path]:
    """The example files named ``fname`` under the gallery's example folders."""
    src_dir = Path(gallery_conf.get("src_dir", "."))
    folders = gallery_conf.get("examples_dirs", [])
    if isinstance(folders, str):
        folders = [folders]
    name = Path(fname).name
    roots = [Path(os.path.normpath(src_dir / folder)) for folder in folders]
    return [path for root in roots for path in root.rglob(name)]


def is_timing_example(gallery_conf: dict[str, Any], fname: str) -> bool:
    """Whether the example ``fname`` times something (then it runs alone).

    A name that several folders share counts as timing if any of them times.
    """
    return any(
        _TIMING.search(path.read_text(encoding="utf-8"))
        for path in _sources(gallery_conf, fname)
    )


def _release() -> None:
    room = _held.pop("room", None)
    if room is not None:
        fcntl.flock(room, fcntl.LOCK_UN)
        room.close()


def run_timing_alone(
    gallery_conf: dict[str, Any], fname: str | None, when: str
) -> None:
    """Before an example: wait for the lock (exclusive if it times); after: release.

    ``fname`` is ``None`` when sphinx-gallery enters a folder rather than an
    example: nothing to do then.
    """
    if fname is None:
        return
    _release()  # whatever an earlier example left (one that raised, say)
    if when != "before":
        return
    gate_path, room_path = _lock_paths(gallery_conf)
    exclusive = is_timing_example(gallery_conf, str(fname))
    with open(gate_path, "ab") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)  # let go when the file closes
        room = open(room_path, "ab")  # noqa: SIM115 (held until the example ends)
        fcntl.flock(room, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        _held["room"] = room
