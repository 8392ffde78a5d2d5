"""What the checkpoint managers do with entries they did not write.

A symbolic link, a FIFO, a directory among checkpoint files (or a file among
DCP checkpoint directories) named like a checkpoint is skipped by
``checkpoints()``, ``restore`` and the prune after a save, with a
RuntimeWarning that names it: never followed, read, replaced or deleted. A
save of that very step is refused before anything is written. A prune that
fails after a successful commit is a warning: the save succeeded and returns
its path.
"""

import contextlib
import errno
import os
import shutil
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import dlcomp.distributed
from dlcomp import CheckpointManager, DistributedCheckpointManager

pytestmark = pytest.mark.skipif(
    not hasattr(os, "mkfifo"), reason="POSIX links and FIFOs"
)


def steps(manager):
    return [step for step, _ in manager.checkpoints()]


def said(warned):
    return " | ".join(str(w.message) for w in warned)


@contextlib.contextmanager
def recorded():
    """The warnings of a block, every one of them, as a list (filled on exit)."""
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        yield warned
    assert all(issubclass(w.category, RuntimeWarning) for w in warned), said(warned)


# --- one file per checkpoint ----------------------------------------------------


def test_a_symlink_loop_named_like_a_checkpoint_is_skipped(tmp_path):
    """Was: Errno 40 (ELOOP) from checkpoints(), restore() and save()."""
    loop = tmp_path / "step-000000010.pt"
    loop.symlink_to(loop.name)  # points to itself
    manager = CheckpointManager(tmp_path, keep=1)
    message = f"skipping {loop}: it is named like a checkpoint but is a symbolic link"
    with pytest.warns(RuntimeWarning, match=message):
        assert manager.checkpoints() == []
    with pytest.warns(RuntimeWarning, match=message):
        assert manager.restore(nn.Linear(2, 2)) is None
    with pytest.warns(RuntimeWarning, match=message):
        path = manager.save(20, nn.Linear(2, 2))  # returns: the save succeeded
    with pytest.warns(RuntimeWarning, match=message):
        assert manager.checkpoints() == [(20, path)]
    assert os.readlink(loop) == loop.name  # neither deleted nor replaced
    with pytest.warns(RuntimeWarning, match=message):
        assert manager.restore(nn.Linear(2, 2)).step == 20


def test_a_symlink_to_a_checkpoint_is_neither_followed_nor_pruned(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = CheckpointManager(elsewhere).save(50, nn.Linear(2, 2))
    before = target.read_bytes()
    runs = tmp_path / "runs"
    runs.mkdir()
    link = runs / "step-000000050.pt"  # the newest step, if it were followed
    link.symlink_to(target)
    manager = CheckpointManager(runs, keep=1)
    with recorded() as warned:
        for step in (1, 2, 3):
            manager.save(step, nn.Linear(2, 2))
        assert steps(manager) == [3]  # keep=1 works around it
        assert manager.restore(nn.Linear(2, 2)).step == 3  # not the link's 50
    assert f"skipping {link}: it is named like a checkpoint but is a symbolic link" in (
        said(warned)
    )
    assert link.is_symlink()
    assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_other_entries_named_like_checkpoints_are_skipped_not_pruned(tmp_path, kind):
    odd = tmp_path / "step-000000001.pt"
    os.mkfifo(odd) if kind == "fifo" else odd.mkdir()
    manager = CheckpointManager(tmp_path, keep=1)
    what = "a FIFO" if kind == "fifo" else "a directory"
    with recorded() as warned:
        manager.save(2, nn.Linear(2, 2))
        manager.save(3, nn.Linear(2, 2))
        assert steps(manager) == [3]
    assert f"{odd}: it is named like a checkpoint but is {what}" in said(warned)
    assert odd.exists()
    assert not odd.is_file()


@pytest.mark.parametrize("kind", ["loop", "link", "fifo"])
def test_a_save_of_a_step_whose_name_is_taken_is_refused(tmp_path, kind):
    taken = tmp_path / "step-000000007.pt"
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"someone else's")
    if kind == "loop":
        taken.symlink_to(taken.name)
    elif kind == "link":
        taken.symlink_to(elsewhere)
    else:
        os.mkfifo(taken)
    manager = CheckpointManager(tmp_path, background=kind == "link")
    with pytest.raises(FileExistsError, match=r"cannot save .*step-000000007\.pt: a"):
        manager.save(7, nn.Linear(2, 2))
    assert manager.wait() is None  # refused before a write was started
    assert elsewhere.read_bytes() == b"someone else's"
    assert os.path.lexists(taken)
    assert taken.is_symlink() or not taken.is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) in (
        [],
        [".dlcomp.lock"],
    )  # no temporary file


def test_a_prune_that_fails_after_the_commit_is_a_warning(tmp_path, monkeypatch):
    """Was: OSError 'could not write ... Nothing was replaced', file in place."""
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save(1, nn.Linear(2, 2))
    real_unlink = Path.unlink

    def refuse(path, missing_ok=False):
        if path.name.startswith("step-"):
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    message = r"could not delete the old checkpoint .*step-000000001\.pt"
    with pytest.warns(RuntimeWarning, match=message):
        path = manager.save(2, nn.Linear(2, 2))
    monkeypatch.undo()
    assert path == tmp_path / "step-000000002.pt"
    assert steps(manager) == [1, 2]
    assert manager.restore(nn.Linear(2, 2)).step == 2
    manager.save(3, nn.Linear(2, 2))  # the next save prunes
    assert steps(manager) == [3]


def test_odd_entries_named_like_temporary_files_do_not_stop_a_save(tmp_path):
    """A symlink loop is not opened (was ELOOP), a FIFO not waited on (was a hang)."""
    loop = tmp_path / ".dlcomp-loop.tmp"
    loop.symlink_to(loop.name)
    fifo = tmp_path / ".dlcomp-fifo.tmp"
    os.mkfifo(fifo)
    manager = CheckpointManager(tmp_path)
    outcome = []

    def save():
        try:
            outcome.append(manager.save(1, nn.Linear(2, 2)))
        except BaseException as error:
            outcome.append(error)

    saving = threading.Thread(target=save, daemon=True)
    saving.start()
    saving.join(60)
    if saving.is_alive():  # blocked opening the FIFO: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        saving.join(60)
        pytest.fail("the save blocked on a FIFO named like a temporary file")
    assert outcome == [tmp_path / "step-000000001.pt"]
    assert loop.is_symlink()
    assert fifo.exists()


# --- one directory per checkpoint (DCP) -----------------------------------------


def test_a_symlinked_dcp_checkpoint_is_skipped_and_keep_still_works(tmp_path):
    """Was: every save committed, then raised 'Cannot call rmtree on a symlink'."""
    elsewhere = DistributedCheckpointManager(tmp_path / "elsewhere")
    target = elsewhere.save(1, nn.Linear(2, 2))
    runs = tmp_path / "runs"
    runs.mkdir()
    link = runs / "step-000000001"
    link.symlink_to(target, target_is_directory=True)
    manager = DistributedCheckpointManager(runs, keep=1)
    with recorded() as warned:
        for step in (2, 3, 4):
            assert manager.save(step, nn.Linear(2, 2)) == runs / f"step-{step:09d}"
        assert steps(manager) == [4]
        assert manager.restore(nn.Linear(2, 2)).step == 4
    assert f"skipping {link}: it is named like a checkpoint but is a symbolic link" in (
        said(warned)
    )
    assert link.is_symlink()
    assert steps(elsewhere) == [1]  # the target is untouched


def test_a_file_or_a_symlink_loop_among_dcp_checkpoints_is_skipped(tmp_path):
    (tmp_path / "step-000000001").write_text("not a checkpoint")
    loop = tmp_path / "step-000000002"
    loop.symlink_to(loop.name)
    manager = DistributedCheckpointManager(tmp_path, keep=1)
    with recorded() as warned:
        manager.save(3, nn.Linear(2, 2))
        manager.save(4, nn.Linear(2, 2))
        assert steps(manager) == [4]
    assert "step-000000001: it is named like a checkpoint but is a regular file" in (
        said(warned)
    )
    assert "step-000000002: it is named like a checkpoint but is a symbolic link" in (
        said(warned)
    )
    assert (tmp_path / "step-000000001").read_text() == "not a checkpoint"
    assert loop.is_symlink()


def test_a_dcp_save_of_a_step_whose_name_is_a_symlink_is_refused(tmp_path):
    elsewhere = DistributedCheckpointManager(tmp_path / "elsewhere")
    target = elsewhere.save(5, nn.Linear(2, 2))
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "step-000000005").symlink_to(target, target_is_directory=True)
    manager = DistributedCheckpointManager(runs)
    with pytest.raises(FileExistsError, match=r"cannot save .*step-000000005: a"):
        manager.save(5, nn.Linear(2, 2))
    assert (runs / "step-000000005").is_symlink()
    assert not list(runs.glob(".staging-*"))
    assert not list(runs.glob(".replaced-*"))
    assert steps(elsewhere) == [5]


def test_a_dcp_prune_that_fails_after_the_commit_is_a_warning(tmp_path, monkeypatch):
    manager = DistributedCheckpointManager(tmp_path, keep=1)
    manager.save(1, nn.Linear(2, 2))
    real_rmtree = shutil.rmtree

    def refuse(path, *args, **kwargs):
        if Path(path).name.startswith("step-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(dlcomp.distributed.shutil, "rmtree", refuse)
    with pytest.warns(RuntimeWarning, match="could not delete the old checkpoint"):
        assert manager.save(2, nn.Linear(2, 2)) == tmp_path / "step-000000002"
    monkeypatch.undo()
    assert steps(manager) == [1, 2]
    model = nn.Linear(2, 2)
    assert manager.restore(model).step == 2
    assert torch.isfinite(model.weight).all()
