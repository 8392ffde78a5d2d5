"""Tests of dlcomp.serialization: round trips, bad files, failed writes, safetensors."""

import errno
import io
import pathlib
import pickle
import random

import pytest
import torch
from torch import nn

from dlcomp import (
    MLP,
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    load_matching,
    load_safetensors,
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
    assert info == {"step": 7, "losses": [1.0, 0.5]}
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
    data = torch.load(tmp_path / "c.pt", map_location="meta", weights_only=True)
    assert data["model"]["hidden.weight"].device.type == "meta"
    load_checkpoint(tmp_path / "c.pt", MLP(), map_location="cpu")


def test_save_refuses_what_a_safe_load_could_not_read(tmp_path):
    with pytest.raises(TypeError, match=r"extra\['when'\] is a object"):
        save_checkpoint(tmp_path / "c.pt", MLP(), step=0, when=object())
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_save_refuses_a_bad_step(tmp_path, step):
    with pytest.raises(TypeError, match="step must be an int >= 0"):
        save_checkpoint(tmp_path / "c.pt", MLP(), step=step)


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
        "empty": (b"", "not a readable checkpoint"),
        "text": (b"hello, this is a text file\n", "not a readable checkpoint"),
        "random bytes": (random.Random(0).randbytes(4096), "not a readable checkpoint"),
    }
    for cut in random.Random(1).sample(range(1, len(data) - 1), 6):
        files[f"truncated at {cut}"] = (data[:cut], "not a readable checkpoint")
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

    def disk_full(obj, f):
        f.write(b"x" * 1000)  # some bytes made it ...
        raise OSError(
            errno.ENOSPC, "No space left on device"
        )  # ... then the disk filled

    monkeypatch.setattr(serialization.torch, "save", disk_full)
    with pytest.raises(
        OSError, match=r"could not write .*c\.pt: No space left on device.*unchanged"
    ) as info:
        save_checkpoint(path, MLP(), step=2)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert temporaries(tmp_path) == []
    restored = MLP()
    assert load_checkpoint(path, restored)["step"] == 1
    assert same(snapshot(restored), snapshot(old_model))


def test_a_permission_error_on_rename_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, MLP(), step=1)
    old_bytes = path.read_bytes()

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(serialization.os, "replace", refuse)
    with pytest.raises(PermissionError, match=r"Permission denied.*previous file"):
        save_checkpoint(path, MLP(), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert temporaries(tmp_path) == []


def test_an_interrupt_during_the_write_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.torch, "save", interrupted)
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
    assert manager.restore(MLP()) == 50


def test_manager_with_nothing_saved(tmp_path):
    manager = CheckpointManager(tmp_path / "new")
    assert manager.latest() is None
    assert manager.restore(MLP()) is None
    assert manager.restored is None


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
        assert manager.restore(target) == 10
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


def test_manager_ignores_and_cleans_leftover_temporaries(tmp_path):
    manager = CheckpointManager(tmp_path)
    stale = tmp_path / ".step-000000010.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert manager.latest() is None
    manager.save(10, MLP())
    assert not stale.exists()


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_manager_bad_keep(tmp_path, keep):
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
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
    save_safetensors(net, tmp_path / "t.safetensors")
    clone = tied_mlp()
    load_safetensors(clone, tmp_path / "t.safetensors")
    assert same(snapshot(clone), snapshot(net))
    assert clone[2].weight is clone[4].weight
    X = torch.rand(3, 4)
    assert torch.equal(clone(X), net(X))


def test_safetensors_of_another_architecture(tmp_path):
    save_safetensors(MLP(), tmp_path / "m.safetensors")
    target = tied_mlp()
    before = snapshot(target)
    with pytest.raises(CheckpointError, match="does not fit this Sequential"):
        load_safetensors(target, tmp_path / "m.safetensors")
    assert same(snapshot(target), before)


def test_safetensors_file_contains_no_pickle(tmp_path):
    save_safetensors(MLP(), tmp_path / "m.safetensors")
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
