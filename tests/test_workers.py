"""Argument checks of the public workers and of ``mlp``: no process is started.

Bad command-line values are usage errors (exit status 2) that name the
option, before anything trains; bad arguments of the library functions are a
TypeError or ValueError that names the function and the argument.
"""

import os

import numpy as np
import pytest
import torch

from dlcomp import distributed_worker, train_worker
from dlcomp.distributed_worker import batch, build, full_state
from dlcomp.models import mlp
from dlcomp.train_worker import train

BAD_OPTIONS = [
    (["--steps", "-1"], "--steps must be an int >= 1, got -1"),
    (["--steps", "0"], "--steps must be an int >= 1, got 0"),
    (["--save-every", "0"], "--save-every must be an int >= 1, got 0"),
    (["--save-every", "-1"], "--save-every must be an int >= 1, got -1"),
    (["--seed", "-3"], "--seed must be an int >= 0, got -3"),
    (["--seed", "x"], "--seed must be an int >= 0, got str 'x'"),
    (["--pause-at", "0"], "--pause-at must be an int >= 1, got 0"),
    (["--pause-at", "-2"], "--pause-at must be an int >= 1, got -2"),
]


def usage_error(main, argv, capsys):
    """Run ``main(argv)``; return its stdout and stderr, asserting exit status 2."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr()


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS)
@pytest.mark.parametrize("module", [train_worker, distributed_worker])
def test_a_bad_number_is_a_usage_error_naming_the_option(
    module, args, message, tmp_path, capsys
):
    out = usage_error(module.main, [str(tmp_path / "run"), *args], capsys)
    assert out.out == ""  # the train worker has not printed "ready"
    assert f"argument {args[0]}: {message}" in out.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", [train_worker, distributed_worker])
def test_seeds_torch_cannot_take_are_a_usage_error(module, tmp_path, capsys):
    limit = 12  # both draw batches from seed * 2**20 + step (32-bit seeds)
    argv = [str(tmp_path / "run"), "--seed", str(2**limit)]
    out = usage_error(module.main, argv, capsys)
    assert f"--seed must be an int < 2**{limit}, got {2**limit}" in out.err


@pytest.mark.parametrize("module", [train_worker, distributed_worker])
def test_a_file_or_an_empty_path_as_dir_is_a_usage_error(module, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a folder")
    out = usage_error(module.main, [str(file)], capsys)
    assert f"DIR must be a folder (created if missing), got {str(file)!r}" in out.err
    out = usage_error(module.main, [""], capsys)
    assert "DIR must be a folder (created if missing), got an empty path" in out.err


@pytest.mark.parametrize("module", [train_worker, distributed_worker])
def test_a_dir_below_a_file_is_a_usage_error(module, tmp_path, capsys):
    """Was: ``ready`` (the job started), then a traceback from mkdir."""
    file = tmp_path / "file"
    file.write_text("not a folder")
    out = usage_error(module.main, [str(file / "run"), "--steps", "2"], capsys)
    assert out.out == ""  # neither "ready" nor the start event
    assert (
        f"argument DIR: DIR must be a folder this process can write in: cannot "
        f"create {file / 'run'}: {file} is a file, not a folder"
    ) in out.err
    assert file.read_text() == "not a folder"


def test_distributed_outputs_below_a_file_are_usage_errors(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a folder")
    run = str(tmp_path / "run")
    state = file / "state.pt"
    out = usage_error(distributed_worker.main, [run, "--state-out", str(state)], capsys)
    assert (
        f"argument --state-out: --state-out must be a file in a folder that "
        f"exists, got {str(state)!r}: {file} is a file, not a folder"
    ) in out.err
    state = file / "sub" / "state.pt"
    out = usage_error(distributed_worker.main, [run, "--state-out", str(state)], capsys)
    assert f"cannot create {file / 'sub'}: {file} is a file, not a folder" in out.err
    out = usage_error(distributed_worker.main, [run, "--pid-dir", str(file)], capsys)
    assert "argument --pid-dir: --pid-dir must be a folder that exists" in out.err
    assert out.out == ""
    assert not (tmp_path / "run").exists()


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_permissions = pytest.mark.skipif(
    ROOT, reason="root may write in any folder: a read-only folder proves nothing"
)


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write in (for a user other than root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder
    folder.chmod(0o700)


@needs_permissions
@pytest.mark.parametrize("module", [train_worker, distributed_worker])
@pytest.mark.parametrize("below", [False, True])
def test_a_dir_that_cannot_be_written_is_a_usage_error(
    module, below, read_only, capsys
):
    folder = read_only / "run" if below else read_only
    out = usage_error(module.main, [str(folder)], capsys)
    assert out.out == ""
    assert "argument DIR: DIR must be a folder this process can write in" in out.err
    assert f"cannot write in {read_only}: Permission denied" in out.err


@needs_permissions
def test_distributed_outputs_that_cannot_be_written_are_usage_errors(
    tmp_path, read_only, capsys
):
    run, state = str(tmp_path / "run"), str(read_only / "state.pt")
    out = usage_error(distributed_worker.main, [run, "--state-out", state], capsys)
    assert (
        "argument --state-out: --state-out must be a file in a folder this "
        f"process can write in, got {state!r}: cannot write in {read_only}"
    ) in out.err
    out = usage_error(
        distributed_worker.main, [run, "--pid-dir", str(read_only)], capsys
    )
    assert (
        "argument --pid-dir: --pid-dir must be a folder this process can write "
        f"in: cannot write in {read_only}"
    ) in out.err
    assert not (tmp_path / "run").exists()


def test_distributed_output_paths_are_checked_before_training(tmp_path, capsys):
    run = str(tmp_path / "run")
    missing = tmp_path / "missing"
    out = usage_error(
        distributed_worker.main, [run, "--state-out", str(missing / "s.pt")], capsys
    )
    assert "argument --state-out: --state-out must be a file in a folder" in out.err
    out = usage_error(
        distributed_worker.main, [run, "--state-out", str(tmp_path)], capsys
    )
    assert "--state-out must be a file name" in out.err
    out = usage_error(distributed_worker.main, [run, "--pid-dir", str(missing)], capsys)
    assert "argument --pid-dir: --pid-dir must be a folder that exists" in out.err
    assert out.out == ""
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["", "file"])
def test_train_wants_a_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name:
        (tmp_path / name).write_text("not a folder")
    with pytest.raises(ValueError, match="train: directory must be a folder"):
        train(name, steps=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if name else [])


@pytest.mark.parametrize("seed", [2**63, 2**64])
def test_seeds_from_2_to_the_63_are_refused_clearly(seed, tmp_path):
    with pytest.raises(
        ValueError, match=rf"mlp: seed must be an int < 2\*\*63, got {seed}"
    ):
        mlp(2, 2, seed=seed)
    with pytest.raises(ValueError, match=r"build: seed must be an int < 2\*\*63"):
        build(seed=seed)
    with pytest.raises(ValueError, match=r"train: seed must be an int < 2\*\*12"):
        train(tmp_path, steps=1, seed=seed)


def test_train_takes_the_seeds_resumable_training_takes(tmp_path):
    # the batches draw from seed * 2**20 + step in a 32-bit generator seed
    with pytest.raises(
        ValueError, match=r"^train: seed must be an int < 2\*\*12, got 4096$"
    ):
        train(tmp_path, steps=1, seed=2**12)
    assert train(tmp_path, steps=1, seed=2**12 - 1).resumed_from is None


def test_largest_seed_is_taken():
    assert mlp(2, 2, seed=2**63 - 1)[0].weight.shape == (2, 2)


@pytest.mark.parametrize(
    ("seed", "error", "message"),
    [
        (None, TypeError, "build: seed must be an int >= 0, got NoneType None"),
        (-3, ValueError, "build: seed must be an int >= 0, got -3"),
        (1.0, TypeError, "build: seed must be an int >= 0, got float 1.0"),
    ],
)
def test_build_wants_a_seed(seed, error, message):
    with pytest.raises(error, match=message):
        build(seed=seed)


def test_build_is_the_same_model_for_the_same_seed():
    a, b = build(seed=np.int64(7))[0], build(seed=7)[0]
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)


def test_batches_of_different_seeds_and_steps_differ():
    assert not torch.equal(batch(0, 1_000_003)[0], batch(1, 0)[0])
    assert not torch.equal(batch(0, 2**20 - 1)[0], batch(1, 0)[0])
    pairs = [(0, 0), (1, 0), (0, 1), (2**12 - 1, 2**20 - 1), (2**12 - 1, 0)]
    assert len({batch(seed, step)[0][0, 0].item() for seed, step in pairs}) == 5


def test_batch_seed_zero_is_the_generator_seeded_with_the_step():
    """What train.py on the distributed checkpoints page draws."""
    X, _ = batch(0, 5)
    assert torch.equal(
        X, torch.randn(64, 16, generator=torch.Generator().manual_seed(5))
    )


def test_batch_takes_numpy_ints():
    assert torch.equal(batch(np.int64(2), np.int32(3))[0], batch(2, 3)[0])


@pytest.mark.parametrize(
    ("seed", "step", "error", "message"),
    [
        (0.5, 1, TypeError, "batch: seed must be an int >= 0, got float 0.5"),
        (0, 1.0, TypeError, "batch: step must be an int >= 0, got float 1.0"),
        (-1, 0, ValueError, "batch: seed must be an int >= 0, got -1"),
        (0, -1, ValueError, "batch: step must be an int >= 0, got -1"),
        (2**12, 0, ValueError, r"batch: seed must be an int < 2\*\*12"),
        (0, 2**20, ValueError, r"batch: step must be an int < 2\*\*20"),
    ],
)
def test_batch_checks_its_arguments(seed, step, error, message):
    with pytest.raises(error, match=message):
        batch(seed, step)


def test_full_state_refuses_another_models_optimizer():
    model, _ = build(seed=0)
    _, other = build(seed=0)
    with pytest.raises(
        ValueError, match="full_state: the optimizer is not the model's"
    ):
        full_state(model, other)
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        full_state(model, {})
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        full_state({}, other)
