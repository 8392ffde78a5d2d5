"""The checkpoint core both managers stand on (private).

:mod:`dlcomp.serialization` (one process, one file per checkpoint) and
:mod:`dlcomp.distributed` (DCP, one directory per checkpoint) share:

- :class:`CheckpointError` and :class:`CheckpointInfo`, the error and the
  result type of every load;
- :func:`atomic_write` and :func:`fsync_directory`: a file on disk is the old
  one or the new one, never a torn one, and a failed write says so;
- :class:`StepCheckpoints`: entries named by step (``step-000000120``), the
  newest ``keep`` kept, commits and deletions serialized by a lock file so
  that several processes can save into one directory, and temporary files
  removed only when they are provably abandoned. An entry named like a
  checkpoint that is not what the manager writes (a symbolic link, a FIFO,
  a directory among files, a file among directories) is skipped with a
  RuntimeWarning naming it: never followed, read, replaced or deleted;
- :func:`check_fits`: the comparison of a checkpoint's keys and shapes with
  a model's, and its message.

The rule for concurrent writers: any number of processes may save into one
directory. Each write goes to a temporary file of its own, locked while it
is written; renaming it into place and deleting old checkpoints happen while
holding ``.dlcomp.lock`` (``fcntl.flock``), so no writer deletes what another
is about to keep, and no writer removes another's temporary file. A reader
that finds a listed checkpoint gone (deleted by a writer's cleanup) skips it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dlcomp._checks import check_int

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "StepCheckpoints",
    "atomic_write",
    "check_fits",
    "check_step",
    "fsync_directory",
    "interruption_in",
    "is_regular_file",
    "names",
    "os_error_in",
    "write_failed",
]

SHOW = 8  # how many names an error message lists
LOCK_NAME = ".dlcomp.lock"
TEMP_PREFIX = ".dlcomp-"
TEMP_SUFFIX = ".tmp"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class CheckpointError(ValueError):
    """A file could not be used as a checkpoint; nothing was loaded.

    Raised for a file that is not a checkpoint, is truncated or corrupted,
    would run code when loaded, needs a device this machine lacks, was
    written by a newer dlcomp, or does not fit the model (missing or
    unexpected keys, shapes, another optimizer). The message says which, and
    what to do.

    Examples:
        A bare state dict is not a checkpoint; nothing is loaded, and the
        message says how to load it instead:

        >>> import pathlib, tempfile, torch
        >>> from torch import nn
        >>> from dlcomp import load_checkpoint
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "weights.pt"
        >>> torch.save(nn.Linear(2, 1).state_dict(), path)
        >>> try:
        ...     load_checkpoint(path, nn.Linear(2, 1))
        ... except CheckpointError as error:
        ...     print(str(error).split(": ", 1)[1])
        expected the dict save_checkpoint writes, found a dict with keys weight,
        bias. For a bare state_dict use
        model.load_state_dict(torch.load(path, weights_only=True))
    """


CheckpointError.__module__ = "dlcomp"  # what readers import and see in tracebacks


@dataclass(frozen=True)
class CheckpointInfo:
    """What a load restored: the step, the extras, where from.

    Returned by :func:`load_checkpoint` and by the ``restore`` methods of
    :class:`~dlcomp.CheckpointManager` and
    :class:`~dlcomp.DistributedCheckpointManager` (see their examples).
    """

    path: Path
    """The checkpoint file (or directory) that was loaded."""
    step: int
    """The training step it belongs to."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The values given to ``save`` besides the states (e.g. a loss history)."""
    world_size: int = 1
    """How many processes wrote it."""


CheckpointInfo.__module__ = "dlcomp"


def names(items: Sequence[str]) -> str:
    """The first few of ``items``, comma-separated, and how many more."""
    shown = ", ".join(items[:SHOW])
    return shown + (f" and {len(items) - SHOW} more" if len(items) > SHOW else "")


def check_step(step: object) -> int:
    """A step is an int >= 0 (TypeError for another type, ValueError if negative)."""
    return check_int(step, "step", minimum=0)


# --- writing: atomic, durable -------------------------------------------------------


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_in(error: BaseException | None) -> OSError | None:
    """The OSError behind ``error``, if any.

    ``torch.save`` can report a failed write (disk full, file too large) as a
    RuntimeError raised while it handles the original OSError; DCP wraps the
    failures of every rank in a ``CheckpointException``.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        for failure in getattr(error, "failures", {}).values():  # DCP, per rank
            inner = failure[0] if isinstance(failure, tuple) else failure
            if found := os_error_in(getattr(inner, "exc", inner)):
                return found
        error = error.__cause__ or error.__context__
    return None


def interruption_in(error: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or SystemExit that DCP wrapped in ``error``, if any.

    DCP catches every ``BaseException`` of every rank and raises one
    ``CheckpointException`` holding them (``.failures``: rank -> (exception,
    traceback)). A Ctrl-C inside it must go on as itself, not become a
    failed write (a ``CheckpointError`` is a ValueError, and ``except
    ValueError`` would swallow it).
    """
    for failure in getattr(error, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        inner = getattr(inner, "exc", inner)
        if isinstance(inner, BaseException) and not isinstance(inner, Exception):
            return inner
    return None


def write_failed(path: Path, cause: OSError) -> OSError:
    """The error a failed write raises: what failed, and that nothing changed."""
    return type(cause)(
        cause.errno,
        f"could not write {path}: {cause.strerror or cause}. Nothing was "
        "replaced: the previous file, if any, is unchanged",
    )


def _lock(fd: int, blocking: bool = True) -> bool:
    if fcntl is None:  # pragma: no cover - Windows: no locks, one writer per directory
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _own_temporary(directory: Path) -> tuple[int, str]:
    """Create and lock a temporary file in ``directory``; return (fd, path).

    The name is short whatever the target's name (a target name may use the
    file system's whole limit). The lock tells other processes that the file
    is being written; if one of them removed the file between its creation
    and the lock (it looked abandoned), a new one is made.
    """
    while True:
        fd, tmp = tempfile.mkstemp(
            prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory
        )
        _lock(fd)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def atomic_write(
    path: Path,
    write: Callable[[IO[bytes]], object],  # what it returns is ignored
    *,
    commit: Callable[[], Any] | None = None,
) -> None:
    """Write ``path`` so that it is either the old file or the new one.

    ``write`` fills a locked temporary file in the same directory (same file
    system, so the rename is atomic); it is flushed and fsynced, renamed over
    ``path`` with :func:`os.replace`, and the directory is fsynced so the
    rename itself survives a power cut. ``commit`` is a context manager
    factory held around the rename (the managers' directory lock). On any
    error the temporary file is removed and ``path`` is untouched; an OS
    error (disk full, file too large) says so.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = _own_temporary(directory)
    replaced = False
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            with commit() if commit else contextlib.nullcontext():
                os.replace(tmp, path)
                replaced = True
    except BaseException as error:
        if replaced:  # the new file is in place: not "nothing was replaced"
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # (A Ctrl-C while torch.save handles a failed write stays a Ctrl-C.)
        if isinstance(error, Exception) and (cause := os_error_in(error)):
            raise write_failed(path, cause) from error
        raise
    fsync_directory(directory)


# --- many checkpoints of one run ----------------------------------------------------


class StepCheckpoints:
    """Entries of a directory named by step, the newest ``keep`` kept.

    Subclasses set ``SUFFIX`` (``".pt"`` for files, ``""`` for directories)
    and ``DIRECTORIES`` (whether a checkpoint is a directory), and say what
    a complete entry is (:meth:`_complete`).
    """

    SUFFIX = ""
    DIRECTORIES = False

    def __init__(self, directory: str | os.PathLike[str], keep: int) -> None:
        self.directory = Path(directory)
        self.keep = check_int(keep, "keep", minimum=1, who=type(self).__name__)
        self._pattern = re.compile(r"step-(\d{9,})" + re.escape(self.SUFFIX))

    def path_for(self, step: int) -> Path:
        """Where the checkpoint of ``step`` goes (``step-000000120`` and a suffix)."""
        return self.directory / f"step-{check_step(step):09d}{self.SUFFIX}"

    def _complete(self, path: Path) -> bool:
        """Whether the entry at ``path`` is a finished checkpoint."""
        raise NotImplementedError

    def named(self, prefix: str = "") -> list[tuple[int, Path]]:
        """``(step, path)`` of the entries named ``prefix`` + a step's name."""
        try:
            entries = list(self.directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for path in entries:
            if not path.name.startswith(prefix):
                continue
            match = self._pattern.fullmatch(path.name.removeprefix(prefix))
            step = int(match.group(1)) if match else -1
            if match and path.name == prefix + self.path_for(step).name:
                # (not the same step with more zeros)
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    if (what := self._foreign(path)) is None:
                        found.append((step, path))
                    else:
                        self._warn_foreign(path, what)
        return found

    def _foreign(self, path: Path) -> str | None:
        """What ``path`` is if not what this manager writes, else ``None``.

        Judged from ``os.lstat``: a symbolic link is never followed, whatever
        it points to. Raises FileNotFoundError if ``path`` is gone.
        """
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode) if self.DIRECTORIES else stat.S_ISREG(mode):
            return None
        return _kind(mode)

    def _warn_foreign(self, path: Path, what: str) -> None:
        expected = "directory" if self.DIRECTORIES else "regular file"
        warnings.warn(
            f"skipping {path}: it is named like a checkpoint but is {what}, not "
            f"the {expected} a checkpoint is; dlcomp neither follows, reads nor "
            "deletes it (move it away to silence this warning)",
            RuntimeWarning,
            stacklevel=3,
        )

    def refuse_foreign(self, path: Path) -> None:
        """Raise FileExistsError if a save of ``path`` would replace a foreign entry.

        A symbolic link, FIFO or other entry named like the checkpoint to
        write was not written by dlcomp: a save neither replaces it nor
        writes through it. Called before anything is written.
        """
        try:
            what = self._foreign(path)
        except FileNotFoundError:
            return
        if what is not None:
            raise FileExistsError(
                errno.EEXIST,
                f"cannot save {path}: {what} of that name is there, not a "
                "checkpoint, and dlcomp neither replaces nor writes through "
                "it. Move it away, or save another step. Nothing was written",
                str(path),
            )

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every complete checkpoint, oldest first."""
        found = []
        for step, path in self.named():
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                if self._complete(path):
                    found.append((step, path))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or ``None`` if there is none."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock file (``.dlcomp.lock``): commits, cleanup."""
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def prune(self, remove: Callable[[Path], None], just_written: Path) -> None:
        """Delete all but the newest ``keep`` checkpoints (hold :meth:`locked`).

        The checkpoint ``just_written`` is never deleted by its own save, even
        when its step is older than the ``keep`` newest (a run that went back,
        or another process that is ahead): the path a save returns exists.
        The next save deletes it if it is still too old.
        """
        for _, old in self.checkpoints()[: -self.keep]:
            if old != just_written:
                try:
                    remove(old)
                except FileNotFoundError:
                    pass
                except OSError as error:  # the save itself succeeded: say so
                    warnings.warn(
                        f"could not delete the old checkpoint {old} "
                        f"({error.strerror or error}); the new one, "
                        f"{just_written.name}, is saved. The next save tries "
                        "again",
                        RuntimeWarning,
                        stacklevel=2,
                    )

    def remove_abandoned_temporaries(self) -> None:
        """Remove temporary files left by writers that died (hold :meth:`locked`).

        A file is abandoned when no process holds its lock: a live writer
        holds it from creation to rename (and checks, once it holds it, that
        its file was not removed in between). Temporary files of other live
        writers are left alone.
        """
        for pattern in (f"{TEMP_PREFIX}*{TEMP_SUFFIX}", ".step-*.tmp"):  # and 0.1's
            for path in self.directory.glob(pattern):
                try:
                    _remove_if_abandoned(path)
                except OSError as error:  # after a commit: the save succeeded
                    warnings.warn(
                        f"could not remove the temporary file {path} "
                        f"({error.strerror or error})",
                        RuntimeWarning,
                        stacklevel=2,
                    )


def _kind(mode: int) -> str:
    """What an ``os.lstat`` mode is, in words (``"a symbolic link"``)."""
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ]
    return next((what for test, what in kinds if test(mode)), "a special file")


def _remove_if_abandoned(path: Path) -> None:
    # Never through a symbolic link (ELOOP), never blocking on a FIFO.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symbolic link: not our temporary file
            return
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        if _lock(fd, blocking=False):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == info.st_ino:
                    os.unlink(path)
    finally:
        os.close(fd)


# --- does a checkpoint fit the model? ---------------------------------------------


def check_fits(
    expected: Mapping[str, tuple[int, ...] | None],
    found: Mapping[str, tuple[int, ...] | None],
    *,
    what: str,
    model: str,
) -> None:
    """Raise CheckpointError unless ``found`` has exactly the keys and shapes expected.

    Args:
        expected: the model's names and shapes (``None``: any shape, e.g. a
            lazy parameter not materialized yet).
        found: the checkpoint's names and shapes (``None``: not a tensor).
        what: how to call the source in the message (``"checkpoint"``).
        model: the model's class name, for the message.
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {names(unexpected)}")
    shapes = [
        f"{k}: {'not a tensor' if found[k] is None else found[k]} in the {what}, "
        f"{shape} in the model"
        for k, shape in expected.items()
        if k in found and shape is not None and found[k] != shape
    ]
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:SHOW]))
    if problems:
        raise CheckpointError(
            f"the {what} does not fit this {model} (another architecture?). "
            f"{'. '.join(problems)}. Nothing was loaded"
        )


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a directory, FIFO or device).

    A symbolic link to a regular file is one; a link that loops is not.
    """
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:
            return False
        raise
