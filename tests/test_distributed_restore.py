"""DistributedCheckpointManager in one process: fallback, failed writes, safe loading.

Each test here reproduces a finding of an adversarial review of the 5.5+ code
(the checkpoint was damaged, crafted or half written, or the disk was full)
and fails without its fix.
"""

import errno
import hashlib
import io
import json
import os
import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.filesystem import _StorageInfo

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


def damage_manifest_edited(path):
    manifest = path / "dlcomp.json"
    manifest.write_text(
        manifest.read_text().replace('"world_size":1', '"world_size":3')
    )


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
        damage_manifest_edited,
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
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_a_crafted_metadata_file_is_never_read_and_runs_nothing(
    two_checkpoints, tmp_path
):
    manager, _ = two_checkpoints
    marker = tmp_path / "PWNED"
    newest = snapshot_of_latest(manager)
    (manager.latest() / ".metadata").write_bytes(pickle.dumps(Marker(marker)))
    target = nn.Linear(4, 2)
    assert manager.restore(target).step == 2  # from the manifest: no warning
    assert same(snapshot(target), newest)
    consolidate(manager.latest(), tmp_path / "w.pt")
    assert not marker.exists()

    # plain DCP runs it
    from torch.distributed.checkpoint import FileSystemReader

    with pytest.raises(AttributeError):  # None, what touch returned, is no Metadata
        FileSystemReader(manager.latest()).read_metadata()
    assert marker.exists()


def test_a_garbage_metadata_file_does_not_matter(two_checkpoints):
    manager, _ = two_checkpoints
    (manager.latest() / ".metadata").write_bytes(os.urandom(300))
    assert manager.restore(nn.Linear(4, 2)).step == 2


def snapshot_of_latest(manager):
    net = nn.Linear(4, 2)
    manager.restore(net)
    return snapshot(net)


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


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_during_a_save_stays_a_keyboard_interrupt(tmp_path, monkeypatch, stop):
    import torch.distributed.checkpoint.filesystem as fs

    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, nn.Linear(4, 2))

    def interrupted(*args, **kwargs):
        raise stop  # DCP wraps it in a CheckpointException

    monkeypatch.setattr(fs, "_write_item", interrupted)
    with pytest.raises(stop) as raised:  # not a CheckpointError (a ValueError)
        manager.save(2, nn.Linear(4, 2))
    assert type(raised.value) is stop
    monkeypatch.undo()
    assert [step for step, _ in manager.checkpoints()] == [1]
    assert not list(tmp_path.glob(".staging-*"))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_during_a_restore_stays_a_keyboard_interrupt(
    two_checkpoints, monkeypatch, stop
):
    from dlcomp._safe_dcp import JsonFileSystemReader

    manager, _ = two_checkpoints

    def interrupted(*args, **kwargs):
        raise stop

    monkeypatch.setattr(JsonFileSystemReader, "read_data", interrupted)
    target = nn.Linear(4, 2)
    before = snapshot(target)
    with pytest.raises(stop):  # not "skipping ...", for the next checkpoint
        manager.restore(target)
    assert same(snapshot(target), before)


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


# --- items are vetted before they are loaded ------------------------------------------


def deflate_an_item(path, fqn, deflated, padding=8 * 2**20):
    """Rewrite the item ``fqn`` of ``path``: a deflated zip, ``padding`` bytes larger.

    The new item goes to a file of its own; the ``.metadata`` points at it,
    and so does the manifest (re-hashed), as an attacker would do.
    """
    from dlcomp._safe_dcp import manifest_text

    meta = pickle.loads((path / ".metadata").read_bytes())  # trusted: ours
    (index,) = [i for i in meta.storage_data if i.fqn == fqn]
    info = meta.storage_data[index]
    with open(path / info.relative_path, "rb") as f:
        f.seek(info.offset)
        item = f.read(info.length)
    bomb = deflated(item, padding)
    (path / "bomb.distcp").write_bytes(bomb)
    meta.storage_data[index] = _StorageInfo("bomb.distcp", 0, len(bomb))
    (path / ".metadata").write_bytes(pickle.dumps(meta))
    manifest = json.loads((path / "dlcomp.json").read_text())
    manifest["dcp"]["files"]["bomb.distcp"] = len(bomb)
    for chunk in manifest["dcp"]["items"][fqn].get("chunks", ()):
        chunk.update(
            file="bomb.distcp",
            offset=0,
            length=len(bomb),
            sha256=hashlib.sha256(bomb).hexdigest(),
        )
    fields = {k: v for k, v in manifest.items() if k not in ("format", "version")}
    del fields["sha256"]
    (path / "dlcomp.json").write_text(manifest_text(fields))


def test_a_deflated_chunk_is_skipped_without_inflating_it(tmp_path, deflated):
    manager = DistributedCheckpointManager(tmp_path)
    first = nn.Linear(4, 2)
    manager.save(1, first, torch.optim.Adam(first.parameters()))
    newer = nn.Linear(4, 2)
    saved = manager.save(2, newer, torch.optim.Adam(newer.parameters()))
    deflate_an_item(saved, "model.weight", deflated)
    target = nn.Linear(4, 2)
    with pytest.warns(
        RuntimeWarning,
        match=r"skipping checkpoint step-000000002, .* of 'model\.weight' in "
        r"\S+bomb\.distcp .* is compressed \(deflate\) and would inflate",
    ):
        restored = manager.restore(target, torch.optim.Adam(target.parameters()))
    assert restored.step == 1
    assert same(snapshot(target), snapshot(first))
    with pytest.raises(CheckpointError, match=r"is compressed \(deflate\)"):
        consolidate(manager.path_for(2), tmp_path / "w.pt")


def test_a_deflated_value_item_is_never_read(tmp_path, deflated):
    manager = DistributedCheckpointManager(tmp_path)
    newer = nn.Linear(4, 2)
    saved = manager.save(2, newer, torch.optim.Adam(newer.parameters(), lr=0.25))
    deflate_an_item(saved, "optim.param_groups.0.lr", deflated)
    target = nn.Linear(4, 2)
    optimizer = torch.optim.Adam(target.parameters())
    assert manager.restore(target, optimizer).step == 2  # lr from the manifest
    assert optimizer.param_groups[0]["lr"] == 0.25


# --- consolidate: a damaged checkpoint is a CheckpointError ---------------------------


def garble_a_pickle(path):  # the manifest's hash of the chunk refuses it
    """Overwrite the pickle of the first item with bytes that are no pickle."""
    meta = pickle.loads((path / ".metadata").read_bytes())  # trusted: ours
    info = min(meta.storage_data.values(), key=lambda info: info.offset)
    part = path / info.relative_path
    data = bytearray(part.read_bytes())
    with zipfile.ZipFile(
        io.BytesIO(data[info.offset : info.offset + info.length])
    ) as z:
        (record,) = [r for r in z.infolist() if r.filename.endswith("/data.pkl")]
    name_and_extra = struct.unpack_from(
        "<HH", data, info.offset + record.header_offset + 26
    )
    start = info.offset + record.header_offset + 30 + sum(name_and_extra)
    data[start : start + record.file_size] = b"\xfe" * record.file_size
    part.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [damage_distcp_truncated, damage_distcp_missing, garble_a_pickle]
)
def test_consolidating_a_damaged_checkpoint_is_a_checkpoint_error(tmp_path, damage):
    saved = DistributedCheckpointManager(tmp_path / "ckpt").save(1, nn.Linear(4, 2))
    damage(saved)
    with pytest.raises(CheckpointError, match=r"step-000000001"):
        consolidate(saved, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()


# --- re-saving a step: a checkpoint of it exists at every instant ---------------------


class Killed(BaseException):
    """Stands for SIGKILL or a power cut: nothing after it runs."""


def test_a_crash_while_resaving_a_step_keeps_its_old_checkpoint(tmp_path, monkeypatch):
    manager = DistributedCheckpointManager(tmp_path)
    old = nn.Linear(4, 2)
    manager.save(5, old)
    final = manager.path_for(5)
    rename = os.replace

    def killed_before_the_new_one_is_in_place(src, dst):
        if os.fspath(dst) == os.fspath(final):
            raise Killed
        return rename(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_new_one_is_in_place)
    with pytest.raises(Killed):
        manager.save(5, nn.Linear(4, 2))
    monkeypatch.undo()

    assert [step for step, _ in manager.checkpoints()] == [5]  # the old one, aside
    target = nn.Linear(4, 2)
    assert manager.restore(target).step == 5
    assert same(snapshot(target), snapshot(old))

    # the next save puts the old checkpoint back in place and leaves nothing behind
    newer = nn.Linear(4, 2)
    manager.save(6, newer)
    assert [p.name for _, p in manager.checkpoints()] == [
        "step-000000005",
        "step-000000006",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dlcomp.lock",
        "step-000000005",
        "step-000000006",
    ]
    # and a re-save that completes replaces the old checkpoint
    manager.save(5, newer)
    target = nn.Linear(4, 2)
    manager.restore(target)  # step 6
    assert same(snapshot(target), snapshot(newer))
    assert not list(tmp_path.glob(".replaced-*"))


# --- the optimizer: its class, settings and parameter groups --------------------------


def adam(net):
    return torch.optim.Adam(net.parameters())


def adamw(net):
    return torch.optim.AdamW(net.parameters())


def amsgrad(net):
    return torch.optim.Adam(net.parameters(), amsgrad=True)


def sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.1)


def momentum(net):
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)


def two_groups(net):
    return torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias]}], lr=0.1)


def two_groups_swapped(net):
    return torch.optim.SGD([{"params": [net.bias]}, {"params": [net.weight]}], lr=0.1)


def trained(make):
    net = nn.Linear(4, 2)
    opt = make(net)
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
    return net, opt


OPTIMIZER_MISFITS = {
    "Adam into AdamW": (
        adam,
        adamw,
        r"holds the state of a torch\.optim\.adam\.Adam, and the optimizer given "
        r"is a torch\.optim\.adamw\.AdamW",
    ),
    "AdamW into Adam": (adamw, adam, r"holds the state of a torch\.optim\.adamw"),
    "amsgrad into Adam": (
        amsgrad,
        adam,
        r"settings differ .* only in the checkpoint: bias\.max_exp_avg_sq",
    ),
    "Adam into amsgrad": (
        adam,
        amsgrad,
        r"settings differ .* only this optimizer has: bias\.max_exp_avg_sq",
    ),
    "SGD into SGD with momentum": (
        sgd,
        momentum,
        r"settings differ .* only this optimizer has: bias\.momentum_buffer",
    ),
    "two groups into one": (two_groups, sgd, r"has 2 parameter groups, this one 1"),
    "one group into two": (sgd, two_groups, r"has 1 parameter groups, this one 2"),
    "groups swapped": (
        two_groups,
        two_groups_swapped,
        r"parameter group 0 holds weight, this optimizer's bias",
    ),
}


@pytest.mark.parametrize(
    ("saved_with", "restored_with", "refusal"),
    OPTIMIZER_MISFITS.values(),
    ids=OPTIMIZER_MISFITS.keys(),
)
def test_another_optimizer_is_refused_and_the_one_before_loads(
    tmp_path, saved_with, restored_with, refusal
):
    manager = DistributedCheckpointManager(tmp_path)
    first, first_opt = trained(restored_with)
    manager.save(1, first, first_opt)
    manager.save(2, *trained(saved_with))
    target = nn.Linear(4, 2)
    optimizer = restored_with(target)
    with pytest.warns(
        RuntimeWarning, match="skipping checkpoint step-000000002, .*" + refusal
    ):
        assert manager.restore(target, optimizer).step == 1
    assert same(snapshot(target), snapshot(first))
    state = optimizer.state_dict()
    expected = first_opt.state_dict()
    assert state["param_groups"] == expected["param_groups"]
    assert state["state"].keys() == expected["state"].keys()
    for number, entry in expected["state"].items():
        assert same(state["state"][number], entry)

    # the next step runs (no KeyError for a state the settings need)
    target(torch.randn(3, 4)).sum().backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("saved_with", "restored_with", "refusal"),
    OPTIMIZER_MISFITS.values(),
    ids=OPTIMIZER_MISFITS.keys(),
)
def test_when_no_checkpoint_fits_the_optimizer_nothing_changes(
    tmp_path, saved_with, restored_with, refusal
):
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, *trained(saved_with))
    target = nn.Linear(4, 2)
    optimizer = restored_with(target)
    model_before, optimizer_before = snapshot(target), optimizer.state_dict()
    with (
        pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000001"),
        pytest.raises(CheckpointError, match="none of the 1 checkpoints .*" + refusal),
    ):
        manager.restore(target, optimizer)
    assert same(snapshot(target), model_before)
    assert optimizer.state_dict() == optimizer_before  # still fresh: no state


def test_the_manifest_records_the_optimizer_class(tmp_path):
    net = nn.Linear(4, 2)
    path = DistributedCheckpointManager(tmp_path).save(
        1, net, torch.optim.AdamW(net.parameters())
    )
    manifest = json.loads((path / "dlcomp.json").read_text())
    assert manifest["optimizer_class"] == "torch.optim.adamw.AdamW"


# --- the step in the manifest ---------------------------------------------------------


def test_a_numpy_integer_step_is_saved_as_an_int(tmp_path):
    manager = DistributedCheckpointManager(tmp_path)
    path = manager.save(np.int64(5), nn.Linear(4, 2))
    assert json.loads((path / "dlcomp.json").read_text())["step"] == 5
    assert manager.restore(nn.Linear(4, 2)).step == 5
    assert not list(tmp_path.glob(".staging-*"))
    with pytest.raises(TypeError, match="extra must be JSON"):
        manager.save(6, nn.Linear(4, 2), loss=np.float32(0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dlcomp.lock",
        "step-000000005",
    ]
