"""Section 5.5, "Reading and writing files": checkpoints that survive a crash.

The section's promise is that saving intermediate results protects days of
training from a power cut. This module keeps that promise:

- :func:`~dlcomp.save_checkpoint` writes atomically: a temporary file in the
  same directory, flushed and fsynced, then renamed over the target, then the
  directory fsynced. A crash at any instant leaves the old file or the new
  one, never a torn one.
- :func:`~dlcomp.load_checkpoint` loads with ``weights_only=True`` (a file
  cannot run code), checks every key and shape first, and changes nothing
  when anything is wrong: it raises :class:`~dlcomp.CheckpointError`.
- :class:`~dlcomp.CheckpointManager` keeps the last few checkpoints of a run
  and resumes from the newest one that loads.
- :func:`~dlcomp.load_matching` reuses part of a network in another one
  (exercise 2); :func:`~dlcomp.save_safetensors` and
  :func:`~dlcomp.load_safetensors` handle tied parameters.
- :func:`~dlcomp.resumable_training` is a small deterministic training run
  that checkpoints and resumes, used to test all of the above by killing it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import reprlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from dlcomp._checkpoint import (
    SHOW,
    CheckpointError,
    CheckpointInfo,
    StepCheckpoints,
    atomic_write,
    check_step,
    is_regular_file,
    names,
)
from dlcomp._checks import check_int, check_module
from dlcomp._format import (
    FORMAT,
    VERSION,
    Encoded,
    check_storable,
    encode_checkpoint,
    read_file,
    write,
    write_safetensors,
)
from dlcomp._identity import view_key
from dlcomp._loading import (
    check_copyable,
    check_materialized,
    check_rng_states,
    check_source,
    check_state_dict,
    check_target,
    class_name,
    copy_in,
    is_lazy,
    optimizer_entries,
    overlaps,
    rng_states,
    set_rng_states,
    swap_in,
    swappable,
)
from dlcomp._optimstate import check_optimizer_state
from dlcomp.models import mlp

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "MatchReport",
    "TrainingRun",
    "load_checkpoint",
    "load_matching",
    "load_safetensors",
    "read_checkpoint",
    "resumable_training",
    "save_checkpoint",
    "save_safetensors",
]

# --- writing: atomic, durable ---------------------------------------------------------


def _payload(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    extra: dict[str, Any],
    rng: bool = False,
) -> Encoded:
    """The checkpoint to write, encoded; checks everything it contains."""
    step = check_step(step)
    if not isinstance(rng, bool):
        raise TypeError(f"rng must be True or False, got {type(rng).__name__}")
    check_materialized(model, "save")
    import dlcomp

    state = model.state_dict()
    return encode_checkpoint(
        step=step,
        model=state,
        model_metadata=getattr(state, "_metadata", None),
        optimizer=None if optimizer is None else optimizer.state_dict(),
        optimizer_class=None if optimizer is None else class_name(optimizer),
        extra=extra,
        rng=rng_states() if rng else None,
        version=dlcomp.__version__,
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int,
    rng: bool = False,
    **extra: Any,
) -> Path:
    """Save model, optimizer and training state to ``path``, atomically.

    The file (format version 3) holds the model's ``state_dict``, the
    optimizer's (or none) and its class, ``step``, ``extra`` (plain values:
    numbers, strings, tensors, and lists, tuples and dicts of them, e.g. a
    loss history; NumPy scalars are stored as Python numbers) and, with
    ``rng=True``, the states of torch's random number generators. It is a
    safetensors file: the tensors' bytes, and everything else as JSON, with a
    SHA-256 of every tensor; nothing in it is pickled. It is written to a
    temporary file, fsynced and renamed: a crash at any instant leaves either
    the previous file or the complete new one.

    Args:
        path: where to write (the directory must exist).
        model: whose ``state_dict()`` to save.
        optimizer: whose ``state_dict()`` to save, if any.
        step: the training step the state belongs to (an int >= 0).
        rng: also save the states of the CPU's and every accelerator's random
            number generators (restored by :func:`load_checkpoint`): needed to
            resume bitwise when training draws random numbers (dropout).
        **extra: more values to store and get back from :func:`load_checkpoint`.

    Returns:
        Path: ``path``.

    Raises:
        OSError: when the write fails (disk full, file too large, ...); the
            previous file is unchanged and no temporary file is left.
        TypeError: ``model`` or ``optimizer`` is of the wrong type, ``step``
            is not an int, or a value is of a type a checkpoint does not
            store (a tensor subclass, an object; checked before writing).
        ValueError: ``step`` is negative, or ``model`` has lazy parameters
            that are not initialized yet, or tensors on the meta device.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> net = nn.Linear(4, 2)
        >>> save_checkpoint(folder / "ckpt.pt", net, step=10, loss=0.25).name
        'ckpt.pt'
        >>> info = load_checkpoint(folder / "ckpt.pt", nn.Linear(4, 2))
        >>> info.step, info.extra
        (10, {'loss': 0.25})
    """
    check_source(model, optimizer, who="save_checkpoint")
    payload = _payload(model, optimizer, step, extra, rng)
    path = Path(path)
    atomic_write(path, lambda f: write(f, payload))
    return path


# --- reading: safe, checked, all or nothing -------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, read and checked by :func:`read_checkpoint`."""

    path: Path
    """The file."""
    step: int
    """The training step."""
    model: dict[str, Tensor]
    """The model's ``state_dict``."""
    optimizer: dict[str, Any] | None
    """The optimizer's ``state_dict``, or ``None`` if none was saved."""
    optimizer_class: str | None
    """The optimizer's class (``"torch.optim.adam.Adam"``); ``None`` in version-1 files."""  # noqa: E501
    extra: dict[str, Any] = field(default_factory=dict)
    """The values given to :func:`save_checkpoint` besides the states."""
    version: int = VERSION
    """The file's format version."""
    rng: dict[str, Any] | None = None
    """The random number generators' states (``save_checkpoint(..., rng=True)``)."""

    @property
    def info(self) -> CheckpointInfo:
        """The step and the extras, as loads return them."""
        return CheckpointInfo(path=self.path, step=self.step, extra=self.extra)


def read_checkpoint(
    path: str | os.PathLike[str], *, map_location: Any = None
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, safely, without loading it.

    A file dlcomp writes (format version 3) holds no pickle: its JSON is
    parsed by one strict parser, every byte range is checked against the
    file's size before anything is allocated, and the SHA-256 of the
    manifest and of every tensor is verified. Files of older versions (1
    and 2, written with ``torch.save``) are read through the same vetting
    as :func:`load_checkpoint` gives plain ``torch.save`` files. Every field
    is then checked: format, version, step, states, extras.

    Args:
        path: the checkpoint file.
        map_location: the device to put the tensors on: ``None`` (the
            CPU), a device name such as ``"cuda:0"``, or a
            :class:`torch.device`.

    Returns:
        Checkpoint: the states, step, extras and optimizer class.

    Raises:
        CheckpointError: the file is not a dlcomp checkpoint, is damaged,
            would run code, or was written by a newer dlcomp.
        FileNotFoundError: there is no file at ``path``.
        ValueError: ``map_location`` names no device this machine has.
        TypeError: ``map_location`` is not a device name or a torch.device.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> net = nn.Linear(4, 2)
        >>> sgd = torch.optim.SGD(net.parameters())
        >>> _ = save_checkpoint(path, net, sgd, step=7, note="warm-up done")
        >>> checkpoint = read_checkpoint(path)  # a Checkpoint; nothing is loaded
        >>> checkpoint.step, checkpoint.extra, sorted(checkpoint.model)
        (7, {'note': 'warm-up done'}, ['bias', 'weight'])
        >>> checkpoint.optimizer_class, checkpoint.version
        ('torch.optim.sgd.SGD', 3)
    """
    path = Path(path)
    fields = read_file(path, map_location)
    problems = [f"it has no {key!r} entry" for key in fields.get("missing", [])]
    step, model, optimizer = fields["step"], fields["model"], fields["optimizer"]
    extra, optimizer_class = fields["extra"], fields["optimizer_class"]
    rng = fields.get("rng")
    if type(step) is not int or step < 0:
        problems.append(f"its step is {reprlib.repr(step)}, not an int >= 0")
    if not isinstance(model, dict) or not all(isinstance(k, str) for k in model):
        problems.append(
            "it has no model state_dict" + (" (missing)" if model is None else "")
        )
    if optimizer is not None and not isinstance(optimizer, dict):
        problems.append(f"its optimizer state is a {type(optimizer).__name__}")
    if optimizer_class is not None and type(optimizer_class) is not str:
        problems.append("its optimizer class is not a name")
    if type(extra) is not dict or not all(type(k) is str for k in extra):
        problems.append("its extra values are not a dict with str keys")
    if problems:
        raise CheckpointError(
            f"{path} is a damaged dlcomp checkpoint: {'; '.join(problems)}. "
            "Nothing was loaded"
        )
    if rng is not None:
        check_rng_states(rng, str(path))
    state = OrderedDict(cast("dict[str, Tensor]", model))
    metadata = fields.get("model_metadata")
    if isinstance(metadata, dict):
        state._metadata = metadata  # type: ignore[attr-defined]  # as state_dict()
    return Checkpoint(  # each entry's type was checked above
        path=path,
        step=cast(int, step),
        model=state,
        optimizer=optimizer,
        optimizer_class=optimizer_class,
        extra=cast("dict[str, Any]", extra),
        version=fields["version"],
        rng=rng,
    )


def _check_optimizer_state(
    optimizer: torch.optim.Optimizer, checkpoint: Checkpoint
) -> None:
    """Raise CheckpointError unless the saved optimizer state fits ``optimizer``."""
    state = checkpoint.optimizer
    if state is None:
        raise CheckpointError(
            f"{checkpoint.path} holds no optimizer state to load (it was saved "
            "without an optimizer): load it without one, or from another file"
        )
    own_class = class_name(optimizer)
    if checkpoint.optimizer_class not in (None, own_class):
        raise CheckpointError(
            f"{checkpoint.path} holds the state of a {checkpoint.optimizer_class}, "
            f"and the optimizer given is a {own_class}: its state (and "
            "hyperparameters) would not fit. Build the same optimizer as when "
            "saving, or load the model alone (optimizer=None). Nothing was loaded"
        )
    check_optimizer_state(optimizer, state, str(checkpoint.path))
    overlapping = [
        f"parameter {number} {name}"
        for number, entry in optimizer_entries(state.get("state"))
        for name, value in entry.items()
        if isinstance(value, Tensor) and overlaps(value)
    ]
    if overlapping:
        raise CheckpointError(
            f"{checkpoint.path}: the optimizer state {names(overlapping)} is a view "
            "whose elements share memory (expanded), which the optimizer would "
            "write into and no optimizer saves: the file is crafted. Nothing was "
            "loaded"
        )


def _load_into(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    rng: bool = False,
) -> None:
    """Check everything, then copy; roll back if the copy fails."""
    check_state_dict(model, checkpoint.model)
    if optimizer is not None:
        _check_optimizer_state(optimizer, checkpoint)
    swap = not is_lazy(model) and swappable(model)

    def load(target: nn.Module) -> None:
        if swap and target is model:
            undo = swap_in(target, checkpoint.model)
            try:
                _load_rest(target)
            except BaseException:
                undo()
                raise
        else:
            target.load_state_dict(checkpoint.model)
            _load_rest(target)

    def _load_rest(target: nn.Module) -> None:
        if optimizer is not None and target is model:
            # _check_optimizer_state made sure the checkpoint has one
            optimizer.load_state_dict(cast("dict[str, Any]", checkpoint.optimizer))
        if rng and checkpoint.rng is not None and target is model:
            # last, and inside the rollback: a state torch refuses undoes it all
            set_rng_states(checkpoint.rng, checkpoint.path)

    copy_in(model, optimizer, load, str(checkpoint.path), copy_model=not swap)


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    map_location: Any = None,
    rng: bool = True,
) -> CheckpointInfo:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    The file is read and verified as :func:`read_checkpoint` reads it: no
    file can run code or make the load allocate more than about its size.
    Every key, shape and type, and the optimizer's class and state, are
    checked before anything is copied; if the copy still fails (or is
    interrupted), what was copied is undone. On any error the model and the
    optimizer are unchanged.

    Args:
        path: the checkpoint file.
        model: receives the saved parameters and buffers, on whatever device
            it is.
        optimizer: receives the saved optimizer state, if given; it must be
            of the class that was saved.
        map_location: the device the tensors are read onto before they are
            copied into the model (``None``: the CPU).
        rng: restore the random number generators' states, if the file holds
            them (``save_checkpoint(..., rng=True)``).

    Returns:
        CheckpointInfo: the step and the extras given to :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is not a checkpoint, is damaged, would run
            code, or does not fit ``model``/``optimizer``.
        FileNotFoundError: there is no file at ``path``.
        ValueError: ``map_location`` names no device this machine has.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = save_checkpoint(path, nn.Linear(4, 2), step=3, loss=0.25)
        >>> info = load_checkpoint(path, nn.Linear(4, 2))  # a CheckpointInfo
        >>> info.step, info.extra, info.path.name
        (3, {'loss': 0.25}, 'ckpt.pt')
        >>> load_checkpoint(path, nn.Linear(4, 3))
        Traceback (most recent call last):
        ...
        dlcomp.CheckpointError: the checkpoint does not fit this Linear (another architecture?). shape mismatches: weight: (2, 4) in the checkpoint, (3, 4) in the model; bias: (2,) in the checkpoint, (3,) in the model. Nothing was loaded
    """  # noqa: E501
    check_target(model, optimizer)
    checkpoint = read_checkpoint(path, map_location=map_location)
    _load_into(checkpoint, model, optimizer, rng)
    return checkpoint.info


# --- many checkpoints of one run ------------------------------------------------------


_WRITER: list[ThreadPoolExecutor] = []  # the one thread of background writes
# Every background write whose outcome nobody has seen yet, whether or not its
# manager still exists: a failure is raised by the manager's next call, or at exit.
_UNSEEN: set[Future[Path]] = set()


def _writer() -> ThreadPoolExecutor:
    if not _WRITER:
        _WRITER.append(ThreadPoolExecutor(1, thread_name_prefix="dlcomp-save"))
    return _WRITER[0]


def _forget_writes() -> None:
    """In a forked child: the parent's writes and writer thread are not its own.

    The child has a copy of the parent's pending futures but no thread that
    will finish them: waiting for them (at exit, or in a manager's next
    call) would hang. The parent still writes, and reports, its own.
    """
    _WRITER.clear()
    _UNSEEN.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_writes)


@atexit.register
def _finish_writes() -> None:
    """At exit, finish the background writes in flight; a failure is raised here.

    (Python prints an exception raised in an exit handler, with its
    traceback, on stderr: a failed write is reported, not lost.)
    """
    errors = []
    for pending in list(_UNSEEN):
        try:
            pending.result()
        except Exception as error:  # report every failure, then raise the first
            errors.append(error)
        _UNSEEN.discard(pending)
    if errors:
        raise errors[0]


class CheckpointManager(StepCheckpoints):
    """Keep the last ``keep`` checkpoints of a run in ``directory``; resume from them.

    Files are named ``step-000000120.pt``. :meth:`save` writes atomically and
    deletes older files only after the new one is safely in place, so a
    crash never leaves the directory without a complete checkpoint (once one
    was written). :meth:`restore` loads the newest checkpoint that loads; a
    damaged newer file is reported with a warning and skipped. Something
    else named like a checkpoint (a symbolic link, a FIFO, a directory) is
    skipped with a RuntimeWarning naming it: never followed, read or
    deleted. An old checkpoint that cannot be deleted after a save is a
    RuntimeWarning too: the save succeeded.

    Several processes may save into one directory: renames and deletions
    are serialized by a lock file (``.dlcomp.lock``), and a process removes
    only its own temporary files and those whose writer died.

    With ``background=True``, :meth:`save` copies the state to host memory
    and returns; a worker thread writes it, with the same guarantees. The
    next :meth:`save`, :meth:`wait`, :meth:`restore` and the interpreter's
    exit wait for the write in flight, and a write that failed is raised
    there: it is never lost silently. Training goes on while the file is
    written; the cost is one copy of the state in memory. A process forked
    while a write is in flight leaves that write to its parent: the child
    neither waits for it nor reports it, and its own saves work.

    Each checkpoint also holds the states of torch's random number generators
    (the CPU's and every accelerator's), and :meth:`restore` sets them back,
    so a run that draws random numbers (dropout, random augmentation)
    resumes with the draws it would have made: bitwise the same run. Pass
    ``rng=False`` to leave the generators alone.

    Args:
        directory: where the checkpoints go (created if needed).
        keep: how many of the newest checkpoints to keep, an int >= 1.
        background: write in a worker thread (see above).
        rng: save the generators' states with every checkpoint, and restore
            them with it.

    Examples:
        >>> import tempfile
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep=2)
        >>> net = nn.Linear(4, 2)
        >>> for step in (10, 20, 30):
        ...     _ = manager.save(step, net, loss=1 / step)
        >>> [path.name for _, path in manager.checkpoints()]
        ['step-000000020.pt', 'step-000000030.pt']
        >>> restored = manager.restore(nn.Linear(4, 2))
        >>> restored.step, restored.extra["loss"] == 1 / 30
        (30, True)

        In the background, the training loop waits only for the copy:

        >>> background = CheckpointManager(tempfile.mkdtemp(), background=True)
        >>> path = background.save(40, net)  # returns before the file is written
        >>> background.wait() == path, path.exists()
        (True, True)
    """

    SUFFIX = ".pt"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        keep: int = 3,
        *,
        background: bool = False,
        rng: bool = True,
    ) -> None:
        super().__init__(directory, keep)
        for name, value in (("background", background), ("rng", rng)):
            if not isinstance(value, bool):
                raise TypeError(
                    f"{name} must be True or False, got {type(value).__name__}"
                )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.background = background
        self.rng = rng
        self._pending: Future[Path] | None = None
        self._buffers: dict[str, Tensor] = {}  # host copies for background writes

    def _complete(self, path: Path) -> bool:
        return is_regular_file(path)

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        **extra: Any,
    ) -> Path:
        """Write the checkpoint of ``step``, then delete all but the newest ``keep``.

        Returns:
            Path: the new checkpoint file.

        A step older than the ``keep`` newest checkpoints is written and
        kept until the next save (which deletes it if it is still too old);
        :meth:`restore` picks the newest step, not the newest file.

        Raises:
            TypeError: as :func:`save_checkpoint`.
            ValueError: as :func:`save_checkpoint`.
            OSError: the write failed; the directory is as it was.
            FileExistsError: something that is not a checkpoint (a symbolic
                link, say) has the name of this step's; nothing was written.
        """
        self.wait()  # the previous background write: done, or its error raised
        check_source(model, optimizer, who="CheckpointManager.save")
        payload = _payload(model, optimizer, step, extra, self.rng)
        path = self.path_for(step)
        self.refuse_foreign(path)  # a symbolic link of that name, say
        if not self.background:
            self._write(path, payload)
            return path
        # Training may change the tensors from now on: copy them. (The
        # previous write is done, so its buffers can be reused.)
        payload = payload.to_host(self._buffers)
        pending = _writer().submit(self._write, path, payload)
        _UNSEEN.add(pending)  # first: wait() takes a write it lacks for a parent's
        self._pending = pending
        return path

    def _write(self, path: Path, payload: Encoded) -> Path:
        @contextmanager
        def commit() -> Iterator[None]:  # around the rename, under the lock
            with self.locked():
                yield
                self.prune(Path.unlink, just_written=path)
                self.remove_abandoned_temporaries()

        atomic_write(path, lambda f: write(f, payload), commit=commit)
        return path

    def wait(self) -> Path | None:
        """Wait for the background write in flight, if any; return its path.

        Returns:
            Path | None: the checkpoint written, or ``None`` if no write was
            in flight (always ``None`` without ``background=True``).

        Raises:
            OSError: the background write failed (disk full, ...); the
                previous checkpoints are intact. Raised once.
        """
        pending = self._pending
        if pending is None:
            return None
        if pending not in _UNSEEN:  # a forked child's copy of its parent's write
            self._pending = None
            return None
        try:
            return pending.result()  # may be interrupted (Ctrl-C): then kept
        finally:
            if pending.done():
                self._pending = None
                _UNSEEN.discard(pending)

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        map_location: Any = None,
    ) -> CheckpointInfo | None:
        """Load the newest checkpoint that loads; return what it held, or ``None``.

        Damaged or unfitting checkpoints are skipped with a RuntimeWarning;
        one deleted meanwhile (by another process's cleanup) is skipped
        silently.

        Returns:
            CheckpointInfo | None: the step and extras of the checkpoint
            loaded, or ``None`` if the directory holds none.

        Raises:
            CheckpointError: if checkpoints exist but none of them loads.
            OSError: a background write failed (see :meth:`wait`).
        """
        self.wait()
        found = self.checkpoints()
        failures = []
        for _, path in reversed(found):
            try:
                return load_checkpoint(
                    path, model, optimizer, map_location=map_location, rng=self.rng
                )
            except FileNotFoundError:
                continue  # removed by another process's cleanup since listed
            except CheckpointError as error:
                failures.append(f"{path.name}: {error}")
                warnings.warn(
                    f"skipping checkpoint {path.name}, which does not load: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if failures:
            raise CheckpointError(
                f"none of the {len(found)} checkpoints in {self.directory} loads: "
                + " | ".join(failures)
            )
        return None


# --- reusing part of a network (exercise 2) ---------------------------------------


@dataclass(frozen=True)
class MatchReport:
    """What :func:`load_matching` loaded, and what it left."""

    loaded: list[str]
    """Names copied from the state dict into the model."""
    not_used: list[str]
    """Names in the state dict that were not selected or do not exist in the model."""
    left_in_model: list[str]
    """Names of the model that kept their values (their initialization)."""


def _selected(name: str, prefixes: tuple[str, ...] | None) -> bool:
    """Whether ``name``'s leading dotted components are one of ``prefixes``."""
    if prefixes is None:
        return True
    parts = name.split(".")
    return any(
        parts[: len(p)] == p
        for p in (prefix.strip(".").split(".") for prefix in prefixes)
    )


# A dotted name (``0``, ``encoder.layer1``), and a trailing dot: a name's first
# components, as state_dict keys spell them.
_PREFIX = re.compile(r"\w+(\.\w+)*\.?")


def _check_prefixes(prefixes: tuple[str, ...]) -> None:
    """Refuse what would select nothing or everything by accident."""
    allowed = (
        "prefixes must be None (all shared names) or one or more dotted names "
        "such as '0', '0.' or 'encoder.layer1' (letters, digits and underscores "
        "between dots, no spaces)"
    )
    if not prefixes:
        raise ValueError(f"load_matching: {allowed}, got an empty sequence")
    for prefix in prefixes:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"load_matching: {allowed}, got {prefix!r}")


def load_matching(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    prefixes: str | tuple[str, ...] | list[str] | None = None,
) -> MatchReport:
    """Copy the shared part of a state dict into another architecture.

    Selects the entries of ``state_dict`` whose names start with one of
    ``prefixes`` (all entries if ``None``) *and* exist in ``model``; every
    selected entry must have the model's shape. Either all of them are
    copied or, on any error, none.

    A prefix matches whole dotted components: ``"1"`` (or ``"1."``) selects
    ``1.weight`` and ``1.bias``, not ``10.weight``. A plain string is one
    prefix.

    Args:
        model: the new network.
        state_dict: the trained network's ``state_dict()``.
        prefixes: name prefixes to take, e.g. ``("0.", "2.")`` for the first
            two linear layers of an ``nn.Sequential``, or ``"hidden"``.

    Returns:
        MatchReport: the names loaded, not used, and left in the model.

    Raises:
        ValueError: ``prefixes`` is empty, or one is not a dotted name
            (``""``, ``" 0"``, ``"0,"``).
        CheckpointError: a selected entry's shape differs from the model's,
            a prefix selects names the model lacks, no name of the state
            dict is the model's (where ``load_state_dict(strict=False)``
            would load nothing and say nothing), or an entry cannot be copied
            (not a tensor, on the meta device).

    Examples:
        >>> old = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> new = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
        >>> report = load_matching(new, old.state_dict(), prefixes="0")
        >>> report.loaded, report.left_in_model
        (['0.weight', '0.bias'], ['2.weight', '2.bias'])
        >>> torch.equal(new[0].weight, old[0].weight)
        True
    """
    check_target(model, who="load_matching")
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) for k in state_dict
    ):
        raise TypeError(
            "load_matching takes a state dict (a mapping of names to tensors), "
            f"got {type(state_dict).__name__}"
        )
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    elif prefixes is not None:
        prefixes = tuple(prefixes)
        if not all(isinstance(p, str) for p in prefixes):
            raise TypeError(f"prefixes must be strings, got {prefixes!r}")
    if prefixes is not None:
        _check_prefixes(prefixes)
    own = model.state_dict()
    selected = [k for k in state_dict if k in own and _selected(k, prefixes)]
    if prefixes is not None:
        wanted = [k for k in state_dict if _selected(k, prefixes)]
        if absent := [k for k in wanted if k not in own]:
            raise CheckpointError(
                f"the model has no entries named {names(absent)}, selected by "
                f"prefixes {list(prefixes)}; its names are {names(list(own))}"
            )
    if not selected and state_dict:
        raise CheckpointError(
            f"the state dict shares no name with the model: the state dict has "
            f"{names(list(state_dict))}; the model has {names(list(own))}. "
            "Nothing was loaded (rename the entries, e.g. strip a 'module.' "
            "prefix, or pass prefixes)"
        )
    chosen = {k: state_dict[k] for k in selected}
    check_copyable(own, chosen, "state dict")
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} in the state dict, {tuple(own[k].shape)} "
        "in the model"
        for k in selected
        if isinstance(own[k], Tensor)
        and not isinstance(own[k], UninitializedParameter | UninitializedBuffer)
        and state_dict[k].shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            "cannot reuse these entries, their shapes differ: "
            + "; ".join(mismatched[:SHOW])
            + ". Nothing was loaded"
        )
    copy_in(
        model,
        None,
        lambda target: target.load_state_dict(chosen, strict=False),
        "the selected entries",
    )
    return MatchReport(
        loaded=selected,
        not_used=[k for k in state_dict if k not in selected],
        left_in_model=[k for k in own if k not in selected],
    )


# --- safetensors, tied parameters included -----------------------------------------


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """Map each state_dict name that is the same tensor as an earlier one to it."""
    first: dict[tuple[object, ...], str] = {}
    aliases = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = view_key(tensor)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def save_safetensors(path: str | os.PathLike[str], model: nn.Module) -> Path:
    """Save a model's weights as ``.safetensors``, tied parameters included, atomically.

    The safetensors format stores raw tensors and a JSON header, nothing
    executable. It refuses tensors that share memory
    (``safetensors.torch.save_file`` raises for a tied model), so each tied
    name is stored once and the aliases are recorded in the file's metadata;
    :func:`load_safetensors` restores them.

    Args:
        path: the file to write.
        model: whose ``state_dict()`` to save.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: ``model`` has lazy parameters not initialized yet.
        OSError: the write failed; the previous file is unchanged.

    Examples:
        >>> import tempfile, pathlib
        >>> from dlcomp import tied_mlp
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tied.safetensors"
        >>> net = tied_mlp()
        >>> _ = save_safetensors(path, net)
        >>> clone = tied_mlp()
        >>> load_safetensors(path, clone)
        >>> torch.equal(clone[4].weight, net[2].weight), clone[2].weight is clone[4].weight
        (True, True)
    """  # noqa: E501
    check_module(model, "model", who="save_safetensors")
    check_materialized(model, "save")
    aliases = _tied_aliases(model)
    tensors = {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if name not in aliases
    }
    for name, tensor in tensors.items():
        check_storable(tensor, name)
    metadata = {"format": FORMAT, "tied": json.dumps(aliases)}
    path = Path(path)
    atomic_write(path, lambda f: write_safetensors(f, tensors, metadata))
    return path


def _aliases(path: Path, metadata: Mapping[str, str]) -> dict[str, str]:
    """The ``tied`` metadata of a file: ``{alias: name stored}``, checked."""
    try:
        aliases = json.loads(metadata.get("tied", "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path}: its 'tied' metadata is not JSON ({error}). Nothing was loaded"
        ) from error
    if not (
        isinstance(aliases, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items())
    ):
        raise CheckpointError(
            f"{path}: its 'tied' metadata should map names to names, found "
            f"{str(aliases)[:80]}. Nothing was loaded"
        )
    return aliases


def _fill_tied(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Fill each missing name that ``model`` ties to a name ``state`` has.

    Other writers store a tie once under a name of their choosing
    (``safetensors.torch.save_model`` keeps one and drops the others): a name
    the file lacks is filled only when, in the model, it is the very tensor
    of a name the file has. A name tied to nothing stays missing.
    """
    tied: dict[str, list[str]] = {}
    for alias, first in _tied_aliases(model).items():
        tied.setdefault(first, [first]).append(alias)
    for group in tied.values():
        stored = next((name for name in group if name in state), None)
        if stored is not None:
            for name in group:
                state.setdefault(name, state[stored])


def load_safetensors(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    map_location: str | torch.device = "cpu",
) -> None:
    """Load weights written by :func:`save_safetensors` (or any ``.safetensors`` file).

    Tied names are filled from the tensor they alias: as the file's metadata
    records them, or, for a file that stores a tie under one name only (as
    ``safetensors.torch.save_model`` writes it), as ``model`` ties them. Keys
    and shapes are checked before anything is copied.

    Args:
        path: the ``.safetensors`` file.
        model: receives the weights.
        map_location: the device to read the tensors to.

    Raises:
        CheckpointError: the file is not a safetensors file, is damaged, or
            does not fit; the model is unchanged.
        FileNotFoundError: there is no file at ``path``.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> path.write_text("not tensors")
        11
        >>> load_safetensors(path, nn.Linear(2, 2))
        Traceback (most recent call last):
        ...
        dlcomp.CheckpointError: ...w.safetensors is not a safetensors file, or it is damaged (...)
    """  # noqa: E501
    from safetensors import SafetensorError, safe_open

    check_target(model, who="load_safetensors")
    path = Path(path)
    if path.exists() and not is_regular_file(path):
        raise CheckpointError(
            f"{path} is not a regular file (a directory, FIFO or device): "
            "not a safetensors file"
        )
    try:
        torch.device(map_location)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"map_location={map_location!r} is not a device: use e.g. 'cpu' or 'cuda:0'"
        ) from None
    try:
        with safe_open(path, framework="pt", device=str(map_location)) as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CheckpointError(
            f"{path} is not a safetensors file, or it is damaged ({error})"
        ) from error
    for name, target in _aliases(path, metadata).items():
        if target in state:
            state[name] = state[target]
    _fill_tied(model, state)
    check_state_dict(model, state, what="file")
    copy_in(model, None, lambda target: target.load_state_dict(state), str(path))


# --- a run that checkpoints and resumes -----------------------------------------------


@dataclass
class TrainingRun:
    """What :func:`resumable_training` did."""

    model: nn.Module
    """The trained model."""
    losses: list[float] = field(default_factory=list)
    """The loss of every step of the run, including steps done before a crash."""
    resumed_from: int | None = None
    """The step of the checkpoint this process started from, if any."""


# torch's CPU generator keeps the low 32 bits of its seed: seed * 2**20 + step
# gives every (seed, step) its own seed with 12 bits of seed, 20 of step (as
# dlcomp.distributed_worker.batch does), and is step itself for seed 0.
SEED_LIMIT, STEP_LIMIT = 2**12, 2**20


def _batch(seed: int, step: int, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed * STEP_LIMIT + step)
    index = torch.randint(0, X.shape[0], (32,), generator=generator)
    return X[index], y[index]


def resumable_training(
    directory: str | os.PathLike[str],
    *,
    steps: int = 60,
    save_every: int = 5,
    seed: int = 0,
    keep: int = 2,
    on_step: Callable[[int], None] | None = None,
    background: bool = False,
) -> TrainingRun:
    """Train a small regression model, checkpointing to ``directory``; resume if it can.

    Deterministic: the model and the data come from ``seed``, the batch of
    step ``s`` from ``(seed, s)``, so a run that is killed and resumed any
    number of times ends with the same weights as one that never stopped
    (bitwise, on a CPU with the same number of threads). SGD with momentum,
    so the optimizer's state matters and is checkpointed too.

    Args:
        directory: where :class:`CheckpointManager` keeps the checkpoints.
        steps: total number of training steps.
        save_every: checkpoint after every this many steps (and at the end).
        seed: the seed of the model and of the data, ``0 <= seed < 2**12``
            (with ``steps <= 2**20``, every step's batch has its own seed).
        keep: how many checkpoints to keep.
        on_step: called with the number of finished steps after each step
            (e.g. to report progress).
        background: checkpoint with ``CheckpointManager(..., background=True)``
            (the run waits for the last write before it returns).

    Returns:
        TrainingRun: the model and the whole loss history.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> run = resumable_training(folder, steps=10, save_every=5)
        >>> len(run.losses), run.resumed_from
        (10, None)
        >>> again = resumable_training(folder, steps=10, save_every=5)  # nothing left to do
        >>> again.resumed_from, torch.equal(again.model[0].weight, run.model[0].weight)
        (10, True)
    """  # noqa: E501
    who = "resumable_training"
    steps = check_int(steps, "steps", minimum=0, who=who)
    save_every = check_int(save_every, "save_every", minimum=1, who=who)
    seed = check_int(seed, "seed", minimum=0, who=who)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{who}: seed must be an int < 2**12, got {seed}")
    if steps > STEP_LIMIT:
        raise ValueError(f"{who}: steps must be an int <= 2**20, got {steps}")
    keep = check_int(keep, "keep", minimum=1, who=who)
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 20, generator=generator)
    true_w = torch.randn(20, 1, generator=generator)
    y = X @ true_w + 0.1 * torch.randn(512, 1, generator=generator)

    model = mlp(20, 64, 1, seed=seed)  # leaves the global random state alone
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    manager = CheckpointManager(directory, keep=keep, background=background)
    restored = manager.restore(model, optimizer)
    if restored and restored.extra.get("seed", seed) != seed:
        raise ValueError(
            f"{who}: the checkpoints in {directory} were written with seed "
            f"{restored.extra['seed']}, not {seed}: resume with "
            f"seed={restored.extra['seed']}, or train in another folder"
        )
    if restored and restored.step > steps:
        raise ValueError(
            f"{who}: the checkpoint in {directory} is at step {restored.step}, "
            f"past steps={steps}: ask for steps >= {restored.step}, or train in "
            "another folder"
        )
    start = restored.step if restored else 0
    losses = list(restored.extra["losses"]) if restored else []
    resumed_from = start if restored else None
    run = TrainingRun(model=model, losses=losses, resumed_from=resumed_from)

    for step in range(start, steps):
        xb, yb = _batch(seed, step, X, y)
        loss = nn.functional.mse_loss(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        done = step + 1
        if done % save_every == 0 or done == steps:
            manager.save(done, model, optimizer, losses=losses, seed=seed)
        if on_step is not None:
            on_step(done)
    manager.wait()
    return run
