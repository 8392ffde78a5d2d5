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

import contextlib
import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from dlcomp.parameters import _view_key  # the identity parameter_table counts by

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "MatchReport",
    "TrainingRun",
    "load_checkpoint",
    "load_matching",
    "load_safetensors",
    "resumable_training",
    "save_checkpoint",
    "save_safetensors",
]

FORMAT = "dlcomp.checkpoint"
VERSION = 1
_SHOW = 8  # how many names an error message lists


class CheckpointError(ValueError):
    """A file could not be used as a checkpoint; nothing was loaded.

    Raised for a file that is not a checkpoint, is truncated or corrupted,
    would run code when loaded, or does not fit the model (missing or
    unexpected keys, shapes). The message says which, and what to do.

    Examples:
        >>> issubclass(CheckpointError, ValueError)
        True
    """


# --- writing: atomic, durable --------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The OSError behind ``error``, if any.

    ``torch.save`` can report a failed write (disk full, file too large) as
    a RuntimeError raised while it handles the original OSError.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` so that it is either the old file or the new one.

    ``write`` fills a temporary file in the same directory (same file
    system, so the rename is atomic); it is flushed and fsynced, renamed over
    ``path`` with :func:`os.replace`, and the directory is fsynced so the
    rename itself survives a power cut. On any error the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if cause := _os_error_in(error):
            raise type(cause)(
                cause.errno,
                f"could not write {path}: {cause.strerror or cause}. Nothing was "
                "replaced: the previous file, if any, is unchanged",
            ) from error
        raise
    _fsync_directory(directory)


_PLAIN = (type(None), bool, int, float, str, Tensor, torch.dtype, torch.device)


def _check_extra(value: object, where: str) -> None:
    """Refuse what ``weights_only=True`` could not load back."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_extra(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}")
            _check_extra(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which a safe load "
        "(weights_only=True) cannot read back; store plain numbers, strings, "
        "tensors, and lists or dicts of them"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int,
    **extra: Any,
) -> Path:
    """Save model, optimizer and training state to ``path``, atomically.

    The file holds a dict with the model's ``state_dict``, the optimizer's
    (or ``None``), ``step``, and ``extra`` (plain values: numbers, strings,
    tensors, lists and dicts of them, e.g. a loss history). It is written to
    a temporary file, fsynced and renamed: a crash at any instant leaves
    either the previous file or the complete new one.

    Args:
        path: where to write (the directory must exist).
        model: whose ``state_dict()`` to save.
        optimizer: whose ``state_dict()`` to save, if any.
        step: the training step the state belongs to (>= 0).
        **extra: more values to store and get back from :func:`load_checkpoint`.

    Returns:
        Path: ``path``.

    Raises:
        OSError: when the write fails (disk full, file too large, ...); the
            previous file is unchanged and no temporary file is left.
        TypeError: for a value in ``extra`` that a safe load could not read.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> net = nn.Linear(4, 2)
        >>> save_checkpoint(folder / "ckpt.pt", net, step=10, loss=0.25).name
        'ckpt.pt'
        >>> load_checkpoint(folder / "ckpt.pt", nn.Linear(4, 2))
        {'step': 10, 'loss': 0.25}
    """
    _check_step(step)
    _check_extra(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "extra": extra,
    }
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(payload, f))
    return path


# --- reading: safe, checked, all or nothing -------------------------------------------


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _safe_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)``, with its failures as CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise CheckpointError(
                f"{path} was not loaded: it holds a Python object "
                f"({found.group(1)}) that would run code when unpickled, and "
                "checkpoints are loaded with weights_only=True. Only if you "
                "trust where the file came from: torch.load(path, "
                "weights_only=False), or allow that one name with "
                "torch.serialization.safe_globals([...])"
            ) from error
        raise _damaged(path, error) from error
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as error:
        raise _damaged(path, error) from error


def _damaged(path: Path, error: BaseException) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    reason = str(error).split(". ")[0] or type(error).__name__
    return CheckpointError(
        f"{path} is not a readable checkpoint ({size} bytes): it is not a file "
        f"written by torch.save, or it is truncated or corrupted ({reason})"
    )


def _check_state_dict(
    model: nn.Module, state: Mapping[str, Any], what: str = "checkpoint"
) -> None:
    """Raise CheckpointError unless ``state`` fits ``model`` exactly."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"the {what}'s model state is not a state_dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the {what}, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state
        and isinstance(v, Tensor)
        and not isinstance(v, UninitializedParameter)
        and isinstance(state[k], Tensor)
        and state[k].shape != v.shape
    ]
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:_SHOW]))
    if problems:
        raise CheckpointError(
            f"the {what} does not fit this {type(model).__name__} (another "
            f"architecture?). {'. '.join(problems)}. Nothing was loaded"
        )


def _check_optimizer_state(optimizer: torch.optim.Optimizer, state: Any) -> None:
    ours = optimizer.state_dict()["param_groups"]
    if not isinstance(state, Mapping) or "param_groups" not in state:
        raise CheckpointError("the checkpoint holds no optimizer state to load")
    theirs = state["param_groups"]
    if [len(g["params"]) for g in theirs] != [len(g["params"]) for g in ours]:
        raise CheckpointError(
            "the checkpoint's optimizer state does not fit this optimizer: "
            f"parameter groups of sizes {[len(g['params']) for g in theirs]} in "
            f"the file, {[len(g['params']) for g in ours]} here. Nothing was loaded"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    map_location: Any = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    The file is read with ``weights_only=True``: a file that would run code
    is refused, not executed. Every key and shape is checked against the
    model before anything is copied, so on any error the model and the
    optimizer are unchanged.

    Args:
        path: the checkpoint file.
        model: receives the saved parameters and buffers.
        optimizer: receives the saved optimizer state, if given.
        map_location: where to put the loaded tensors first (see
            :func:`torch.load`), e.g. ``"cpu"`` for a file saved on a GPU.

    Returns:
        dict: ``{"step": ..., **extra}`` as given to :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is not a checkpoint, is damaged, would run
            code, or does not fit ``model``/``optimizer``.
        FileNotFoundError: there is no file at ``path``.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = save_checkpoint(path, nn.Linear(4, 2), step=3)
        >>> load_checkpoint(path, nn.Linear(4, 3))
        Traceback (most recent call last):
        ...
        dlcomp.serialization.CheckpointError: the checkpoint does not fit this Linear (another architecture?). shape mismatches: weight: (2, 4) in the checkpoint, (3, 4) in the model; bias: (2,) in the checkpoint, (3,) in the model. Nothing was loaded
    """  # noqa: E501
    path = Path(path)
    data = _safe_load(path, map_location)
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        found = (
            f"a dict with keys {_names([str(k) for k in data])}"
            if isinstance(data, dict)
            else f"a {type(data).__name__}"
        )
        raise CheckpointError(
            f"{path} is a PyTorch file but not a dlcomp checkpoint: expected the "
            f"dict save_checkpoint writes, found {found}. For a bare state_dict "
            "use model.load_state_dict(torch.load(path, weights_only=True))"
        )
    _check_state_dict(model, data["model"])
    if optimizer is not None:
        _check_optimizer_state(optimizer, data["optimizer"])
        backup = optimizer.state_dict()
        optimizer.load_state_dict(data["optimizer"])
    try:
        model.load_state_dict(data["model"])
    except Exception as error:  # pragma: no cover - the checks above prevent it
        if optimizer is not None:
            optimizer.load_state_dict(backup)
        raise CheckpointError(f"{path} could not be loaded: {error}") from error
    return {"step": data["step"], **data["extra"]}


# --- many checkpoints of one run ------------------------------------------------------


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise TypeError(f"step must be an int >= 0, got {step!r}")
    return step


class _StepCheckpoints:
    """What both checkpoint managers share: entries named by step, the newest kept."""

    _PATTERN: re.Pattern[str]

    def __init__(self, directory: str | os.PathLike[str], keep: int) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.restored: dict[str, Any] | None = None

    def _complete(self, path: Path) -> bool:
        """Whether the entry at ``path`` is a finished checkpoint."""
        return True

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every complete checkpoint, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = self._PATTERN.fullmatch(path.name)
            if match and self._complete(path):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or ``None`` if there is none."""
        found = self.checkpoints()
        return found[-1][1] if found else None


class CheckpointManager(_StepCheckpoints):
    """Keep the last ``keep`` checkpoints of a run in ``directory``; resume from them.

    Files are named ``step-000000120.pt``. :meth:`save` writes atomically and
    deletes older files only after the new one is safely in place, so a
    crash never leaves the directory without a complete checkpoint (once one
    was written). :meth:`restore` loads the newest checkpoint that loads; a
    damaged newer file is reported with a warning and skipped.

    Args:
        directory: where the checkpoints go (created if needed).
        keep: how many of the newest checkpoints to keep, at least 1.

    Attributes:
        restored (dict | None): what the last :meth:`restore` loaded:
            ``{"step": ..., **extra}``, or ``None``.

    Examples:
        >>> import tempfile
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep=2)
        >>> net = nn.Linear(4, 2)
        >>> for step in (10, 20, 30):
        ...     _ = manager.save(step, net, loss=1 / step)
        >>> [path.name for _, path in manager.checkpoints()]
        ['step-000000020.pt', 'step-000000030.pt']
        >>> manager.restore(nn.Linear(4, 2)), manager.restored["loss"] == 1 / 30
        (30, True)
    """

    _PATTERN = re.compile(r"step-(\d{9})\.pt")

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        super().__init__(directory, keep)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, step: int) -> Path:
        """The file name used for ``step``."""
        return self.directory / f"step-{step:09d}.pt"

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        **extra: Any,
    ) -> Path:
        """Write the checkpoint of ``step``, then delete all but the newest ``keep``."""
        path = save_checkpoint(
            self.path_for(step), model, optimizer, step=step, **extra
        )
        for _, old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        self._remove_stale_temporaries()
        return path

    def _remove_stale_temporaries(self) -> None:
        # A process killed during a write leaves its temporary file behind.
        for path in self.directory.glob(".step-*.pt.*.tmp"):
            path.unlink(missing_ok=True)

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        map_location: Any = None,
    ) -> int | None:
        """Load the newest checkpoint that loads; return its step, or ``None`` if none exist.

        Raises:
            CheckpointError: if checkpoints exist but none of them loads.
        """  # noqa: E501
        self.restored = None
        found = self.checkpoints()
        failures = []
        for step, path in reversed(found):
            try:
                info = load_checkpoint(
                    path, model, optimizer, map_location=map_location
                )
            except CheckpointError as error:
                failures.append(f"{path.name}: {error}")
                warnings.warn(
                    f"skipping checkpoint {path.name}, which does not load: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self.restored = info
            return step
        if failures:
            raise CheckpointError(
                f"none of the {len(found)} checkpoints in {self.directory} loads: "
                + " | ".join(failures)
            )
        return None


# --- reusing part of a network (exercise 2) ---------------------------------------


@dataclass(frozen=True)
class MatchReport:
    """What :func:`load_matching` loaded, and what it left.

    Examples:
        >>> report = load_matching(nn.Linear(2, 2), nn.Linear(2, 2).state_dict())
        >>> report.loaded, report.left_in_model
        (['weight', 'bias'], [])
    """

    loaded: list[str]
    """Names copied from the state dict into the model."""
    not_used: list[str]
    """Names in the state dict that were not selected or do not exist in the model."""
    left_in_model: list[str]
    """Names of the model that kept their values (their initialization)."""


def load_matching(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    prefixes: tuple[str, ...] | list[str] | None = None,
) -> MatchReport:
    """Copy the shared part of a state dict into another architecture.

    Selects the entries of ``state_dict`` whose names start with one of
    ``prefixes`` (all entries if ``None``) *and* exist in ``model``; every
    selected entry must have the model's shape. Either all of them are
    copied or, on a mismatch, none.

    Args:
        model: the new network.
        state_dict: the trained network's ``state_dict()``.
        prefixes: name prefixes to take, e.g. ``("0.", "2.")`` for the first
            two linear layers of an ``nn.Sequential``, or ``("hidden.",)``.

    Returns:
        MatchReport: the names loaded, not used, and left in the model.

    Raises:
        CheckpointError: a selected entry's shape differs from the model's.

    Examples:
        >>> old = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> new = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
        >>> report = load_matching(new, old.state_dict(), prefixes=("0.",))
        >>> report.loaded, report.left_in_model
        (['0.weight', '0.bias'], ['2.weight', '2.bias'])
        >>> torch.equal(new[0].weight, old[0].weight)
        True
    """
    own = model.state_dict()
    selected = [
        k
        for k in state_dict
        if k in own and (prefixes is None or k.startswith(tuple(prefixes)))
    ]
    if prefixes is not None:
        wanted = [k for k in state_dict if k.startswith(tuple(prefixes))]
        if absent := [k for k in wanted if k not in own]:
            raise CheckpointError(
                f"the model has no entries named {_names(absent)}, selected by "
                f"prefixes {list(prefixes)}; its names are {_names(list(own))}"
            )
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} in the state dict, {tuple(own[k].shape)} "
        "in the model"
        for k in selected
        if state_dict[k].shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            "cannot reuse these entries, their shapes differ: "
            + "; ".join(mismatched[:_SHOW])
            + ". Nothing was loaded"
        )
    model.load_state_dict({k: state_dict[k] for k in selected}, strict=False)
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
        key = _view_key(tensor)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def save_safetensors(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a model's weights as ``.safetensors``, tied parameters included, atomically.

    The safetensors format stores raw tensors and a JSON header, nothing
    executable. It refuses tensors that share memory
    (``safetensors.torch.save_file`` raises for a tied model), so each tied
    name is stored once and the aliases are recorded in the file's metadata;
    :func:`load_safetensors` restores them.

    Args:
        model: whose ``state_dict()`` to save.
        path: the file to write.

    Returns:
        Path: ``path``.

    Examples:
        >>> import tempfile, pathlib
        >>> from dlcomp import tied_mlp
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tied.safetensors"
        >>> net = tied_mlp()
        >>> _ = save_safetensors(net, path)
        >>> clone = tied_mlp()
        >>> load_safetensors(clone, path)
        >>> torch.equal(clone[4].weight, net[2].weight), clone[2].weight is clone[4].weight
        (True, True)
    """  # noqa: E501
    from safetensors.torch import save

    aliases = _tied_aliases(model)
    tensors = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in model.state_dict().items()
        if name not in aliases
    }
    data = save(tensors, metadata={"format": FORMAT, "tied": json.dumps(aliases)})
    path = Path(path)
    _atomic_write(path, lambda f: f.write(data))
    return path


def load_safetensors(
    model: nn.Module, path: str | os.PathLike[str], *, device: str = "cpu"
) -> None:
    """Load weights written by :func:`save_safetensors` (or any ``.safetensors`` file).

    Tied names are filled from the tensor they alias. Keys and shapes are
    checked before anything is copied.

    Args:
        model: receives the weights.
        path: the ``.safetensors`` file.
        device: where to read the tensors to.

    Raises:
        CheckpointError: the file is not a safetensors file or does not fit.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> path.write_text("not tensors")
        11
        >>> load_safetensors(nn.Linear(2, 2), path)
        Traceback (most recent call last):
        ...
        dlcomp.serialization.CheckpointError: ...w.safetensors is not a safetensors file, or it is damaged (...)
    """  # noqa: E501
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(path, framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CheckpointError(
            f"{path} is not a safetensors file, or it is damaged ({error})"
        ) from error
    aliases = json.loads(metadata.get("tied", "{}"))
    for name, target in aliases.items():
        if target in state:
            state[name] = state[target]
    _check_state_dict(model, state, what="file")
    model.load_state_dict(state)


# --- a run that checkpoints and resumes -----------------------------------------------


@dataclass
class TrainingRun:
    """What :func:`resumable_training` did.

    Examples:
        >>> TrainingRun(model=nn.Linear(1, 1)).resumed_from is None
        True
    """

    model: nn.Module
    """The trained model."""
    losses: list[float] = field(default_factory=list)
    """The loss of every step of the run, including steps done before a crash."""
    resumed_from: int | None = None
    """The step of the checkpoint this process started from, if any."""


def _batch(seed: int, step: int, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
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
        seed: the seed of the model and of the data.
        keep: how many checkpoints to keep.
        on_step: called with the number of finished steps after each step
            (e.g. to report progress).

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
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 20, generator=generator)
    true_w = torch.randn(20, 1, generator=generator)
    y = X @ true_w + 0.1 * torch.randn(512, 1, generator=generator)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    manager = CheckpointManager(directory, keep=keep)
    start = manager.restore(model, optimizer) or 0
    losses = list(manager.restored["losses"]) if manager.restored else []
    resumed_from = start if manager.restored is not None else None
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
            manager.save(done, model, optimizer, losses=losses)
        if on_step is not None:
            on_step(done)
    return run
