"""DistributedCheckpointManager in one process: fallback, failed writes, safe loading.

Each test here reproduces a finding of an adversarial review of the 5.5+ code
(the checkpoint was damaged, crafted or half written, or the disk was full)
and fails without its fix.
"""

import errno
import os
import pickle

import pytest
import torch
from torch import nn

from dlcomp import CheckpointError, DistributedCheckpointManager, consolidate


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def two_checkpoints(tmp_path):
    """Steps 1 and 2 of different weights; returns (manager, weights of step 1)."""
    manager = DistributedCheckpointManager(tmp_path, keep=3)
    first = nn.Linear(4, 2)
    manager.save(1, first)
    manager.save(2, nn.Linear(4, 2))
    return manager, snapshot(first)


def damage_manifest_torn(path):
    (path / "dlcomp.json").write_text('{"step": 2, "wor')


def damage_manifest_empty(path):
    (path / "dlcomp.json").write_text("{}")


def damage_metadata_garbage(path):
    (path / ".metadata").write_bytes(os.urandom(300))


def damage_distcp_truncated(path):
    part = path / "__0_0.distcp"
    part.write_bytes(part.read_bytes()[:10])


def damage_distcp_missing(path):
    (path / "__0_0.distcp").unlink()


@pytest.mark.parametrize(
    "damage",
    [
        damage_manifest_torn,
        damage_manifest_empty,
        damage_metadata_garbage,
        damage_distcp_truncated,
        damage_distcp_missing,
    ],
)
def test_restore_falls_back_past_a_damaged_newest_checkpoint(two_checkpoints, damage):
    manager, first = two_checkpoints
    damage(manager.latest())
    target = nn.Linear(4, 2)
    with pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000002"):
        restored = manager.restore(target)
    assert restored.step == 1
    assert same(snapshot(target), first)


def test_nothing_loads_nothing_changes(two_checkpoints):
    manager, _ = two_checkpoints
    for _, path in manager.checkpoints():
        damage_distcp_truncated(path)
    target = nn.Linear(4, 2)
    before = snapshot(target)
    with (
        pytest.warns(RuntimeWarning, match="skipping"),
        pytest.raises(CheckpointError, match="none of the 2 checkpoints"),
    ):
        manager.restore(target)
    assert same(snapshot(target), before)


class Marker:
    """Unpickling this creates a file: a harmless stand-in for os.system."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_crafted_metadata_file_is_refused_and_runs_nothing(two_checkpoints, tmp_path):
    manager, first = two_checkpoints
    marker = tmp_path / "PWNED"
    (manager.latest() / ".metadata").write_bytes(pickle.dumps(Marker(marker)))
    target = nn.Linear(4, 2)
    with pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000002"):
        assert manager.restore(target).step == 1
    with pytest.raises(CheckpointError):
        consolidate(manager.latest(), tmp_path / "w.pt")
    assert not marker.exists()
    assert same(snapshot(target), first)


def test_a_full_disk_during_a_save_is_an_os_error(tmp_path, monkeypatch):
    import torch.distributed.checkpoint.filesystem as fs

    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, nn.Linear(4, 2))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs, "_write_item", disk_full)
    with pytest.raises(OSError, match=r"No space left on device.*Nothing was replaced"):
        manager.save(2, nn.Linear(4, 2))
    monkeypatch.undo()
    assert [step for step, _ in manager.checkpoints()] == [1]
    assert not list(tmp_path.glob(".staging-*"))


def test_extras_cannot_override_the_manifest(tmp_path):
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(3, nn.Linear(4, 2), world_size=64, path="elsewhere")
    restored = manager.restore(nn.Linear(4, 2))
    assert (restored.step, restored.world_size) == (3, 1)
    assert restored.extra == {"world_size": 64, "path": "elsewhere"}


def test_steps_of_a_billion_and_more(tmp_path):
    manager = DistributedCheckpointManager(tmp_path, keep=1)
    manager.save(999_999_999, nn.Linear(2, 2))
    manager.save(1_000_000_001, nn.Linear(2, 2))
    assert [s for s, _ in manager.checkpoints()] == [1_000_000_001]
    assert manager.restore(nn.Linear(2, 2)).step == 1_000_000_001


@pytest.mark.parametrize(
    ("step", "error"), [(-1, ValueError), (2.0, TypeError), ("7", TypeError)]
)
def test_a_bad_step_is_a_clear_error(tmp_path, step, error):
    with pytest.raises(error, match="step must be an int"):
        DistributedCheckpointManager(tmp_path).save(step, nn.Linear(2, 2))
