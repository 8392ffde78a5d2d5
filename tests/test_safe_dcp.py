"""dlcomp._safe_dcp reads DCP checkpoints without running code from them.

Each crafted checkpoint is shown to run code with plain DCP, so a test that
passes is not one that could not fail.
"""

import os
import pickle
import re
import shlex
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from dlcomp import _safe_dcp
from dlcomp.serialization import CheckpointError


class RunsCode:
    """Unpickles as ``os.system("touch marker")``: harmless, and visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _quiet(run):
    # One process and no process group is the intent here; DCP says so in a
    # UserWarning, which the test configuration turns into an error.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="torch.distributed is disabled, unavailable or uninitialized",
            category=UserWarning,
        )
        return run()


def _save(state, path: Path) -> Path:
    _quiet(lambda: dcp.save(state, checkpoint_id=path))
    return path


OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
}


def _trained(optimizer: str, seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt = OPTIMIZERS[optimizer](net.parameters())
    for _ in range(3):
        net(torch.randn(6, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    return net, opt


def _states(net, opt):
    model_state, optim_state = get_state_dict(net, opt)
    return {"model": model_state, "optim": optim_state}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).contiguous().view(torch.uint8)


def _assert_bitwise_equal(a, b, where="state"):
    if isinstance(a, dict):  # a dict or an OrderedDict: the same state
        assert isinstance(b, dict), where
        assert list(a) == list(b), where
        for key in a:
            _assert_bitwise_equal(a[key], b[key], f"{where}[{key!r}]")
        return
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(_bits(a), _bits(b)), where
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A real checkpoint of a model and its Adam optimizer."""
    return _save(_states(*_trained("adam")), tmp_path / "ckpt")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def crafted_metadata(saved: Path, marker: Path) -> Path:
    """The real checkpoint, with a payload added to its ``.metadata``."""
    with open(saved / ".metadata", "rb") as f:
        meta = pickle.load(f)  # written by this test: trusted
    meta.storage_meta.modules = [RunsCode(marker)]
    with open(saved / ".metadata", "wb") as f:
        pickle.dump(meta, f)
    return saved


READERS = {
    "read_metadata": _safe_dcp.read_metadata,
    "SafeFileSystemReader": lambda p: _safe_dcp.SafeFileSystemReader(p).read_metadata(),
    "load": lambda p: _safe_dcp.load(_states(*_trained("adam", seed=1)), p),
    "to_torch_save_state": _safe_dcp.to_torch_save_state,
}


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_metadata_that_runs_code_is_refused(read, crafted_metadata, marker):
    with pytest.raises(
        CheckpointError, match=r"\.metadata refers to \w+\.system \(os\.system\),"
    ):
        read(crafted_metadata)
    assert not marker.exists()

    # the same directory runs the payload with plain DCP
    meta = dcp.FileSystemReader(crafted_metadata).read_metadata()
    assert marker.exists()
    assert "model.0.weight" in meta.state_dict_metadata


def test_the_refusal_says_what_plain_dcp_would_do(crafted_metadata):
    with pytest.raises(CheckpointError) as refused:
        _safe_dcp.read_metadata(crafted_metadata)
    message = str(refused.value)
    assert "dlcomp reads only DCP's own metadata classes" in message
    assert "Plain DCP" in message
    assert "pickle.load" in message


@pytest.fixture
def crafted_item(tmp_path: Path, marker: Path) -> Path:
    """A real Adam checkpoint whose ``lr`` (a non-tensor item) is a payload."""
    states = _states(*_trained("adam"))
    states["optim"]["param_groups"][0]["lr"] = RunsCode(marker)
    path = _save(states, tmp_path / "ckpt")
    assert not marker.exists()  # saving does not run it
    return path


def test_optimizer_item_that_runs_code_is_refused_before_any_tensor(
    crafted_item, marker
):
    net, opt = _trained("adam", seed=1)
    states = _states(net, opt)
    before = {k: v.clone() for k, v in states["model"].items()}
    with pytest.raises(
        CheckpointError,
        match=r"'optim\.param_groups\.0\.lr' .* refers to \w+\.system \(os\.system\),",
    ):
        _safe_dcp.load(states, crafted_item)
    assert not marker.exists()
    _assert_bitwise_equal(states["model"], before)  # no tensor was copied

    # the same directory runs the payload with plain DCP
    _quiet(
        lambda: dcp.load(_states(*_trained("adam", seed=1)), checkpoint_id=crafted_item)
    )
    assert marker.exists()


def test_item_that_runs_code_is_refused_when_consolidating(
    crafted_item, marker, tmp_path
):
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        _safe_dcp.to_torch_save_state(crafted_item)
    assert not marker.exists()

    # the same directory runs the payload with plain DCP
    dcp_to_torch_save(crafted_item, tmp_path / "full.pt")
    assert marker.exists()


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_real_checkpoint_round_trips_bitwise(optimizer, tmp_path):
    net, opt = _trained(optimizer)
    path = _save(_states(net, opt), tmp_path / "ckpt")

    fresh_net, fresh_opt = _trained(optimizer, seed=1)
    states = _states(fresh_net, fresh_opt)
    _safe_dcp.load(states, path)
    set_state_dict(
        fresh_net,
        fresh_opt,
        model_state_dict=states["model"],
        optim_state_dict=states["optim"],
    )
    _assert_bitwise_equal(fresh_net.state_dict(), net.state_dict())
    _assert_bitwise_equal(fresh_opt.state_dict(), opt.state_dict())

    # the full state dict is what plain DCP converts it to
    dcp_to_torch_save(path, tmp_path / "full.pt")
    expected = torch.load(tmp_path / "full.pt", weights_only=True)
    _assert_bitwise_equal(_safe_dcp.to_torch_save_state(path), expected)

    # and the metadata what plain DCP reads
    mine = _safe_dcp.read_metadata(path)
    plain = dcp.FileSystemReader(path).read_metadata()
    assert mine.state_dict_metadata == plain.state_dict_metadata
    assert mine.storage_data == plain.storage_data
    assert mine.planner_data == plain.planner_data


DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def test_every_dtype_reads_bitwise(tmp_path):
    state = {}
    for dtype in DTYPES:
        if dtype == torch.bool:
            state[str(dtype)] = torch.randint(0, 2, (5,)).bool()
        else:  # random bits of 5 elements
            bits = torch.randint(0, 256, (5 * dtype.itemsize,), dtype=torch.uint8)
            state[str(dtype)] = bits.view(dtype)
    path = _save(state, tmp_path / "ckpt")
    _assert_bitwise_equal(_safe_dcp.to_torch_save_state(path), state)


def _truncated(saved: Path) -> bytes:
    data = (saved / ".metadata").read_bytes()
    return data[: len(data) // 2]


DAMAGED = {
    "empty": lambda saved: b"",
    "garbage": lambda saved: b"these bytes are not a pickle",
    "truncated": _truncated,
    "not Metadata": lambda saved: pickle.dumps({"model.weight": [1, 2]}),
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_damaged_metadata_is_a_checkpoint_error(read, content, saved):
    (saved / ".metadata").write_bytes(content(saved))
    with pytest.raises(
        CheckpointError, match="not a DCP checkpoint's metadata, or is damaged"
    ):
        read(saved)


def test_missing_metadata_is_a_checkpoint_error(saved):
    (saved / ".metadata").unlink()
    with pytest.raises(CheckpointError, match=r"no \.metadata file"):
        _safe_dcp.read_metadata(saved)


def test_item_outside_the_directory_is_refused(saved):
    meta = pickle.loads((saved / ".metadata").read_bytes())  # trusted: ours
    for info in meta.storage_data.values():
        info.relative_path = "../elsewhere.distcp"
    (saved / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(CheckpointError, match="not a file of the checkpoint directory"):
        _safe_dcp.read_metadata(saved)


# --- every item is vetted from its zip directory before any is loaded ---------------

MiB = 2**20


def _edit_metadata(saved: Path, edit) -> None:
    meta = pickle.loads((saved / ".metadata").read_bytes())  # trusted: ours
    edit(meta)
    (saved / ".metadata").write_bytes(pickle.dumps(meta))


def _storage(saved: Path, fqn: str):
    meta = pickle.loads((saved / ".metadata").read_bytes())  # trusted: ours
    (info,) = [info for index, info in meta.storage_data.items() if index.fqn == fqn]
    return info


def _item_bytes(saved: Path, fqn: str) -> bytes:
    info = _storage(saved, fqn)
    with open(saved / info.relative_path, "rb") as f:
        f.seek(info.offset)
        return f.read(info.length)


def _replace_item(saved: Path, fqn: str, data: bytes) -> None:
    """Point the item ``fqn`` at ``data``, in a file of the directory of its own."""
    (saved / "crafted.distcp").write_bytes(data)

    def edit(meta):
        for index in meta.storage_data:
            if index.fqn == fqn:
                meta.storage_data[index] = _StorageInfo("crafted.distcp", 0, len(data))

    _edit_metadata(saved, edit)


@pytest.mark.parametrize("fqn", ["optim.param_groups.0.lr", "model.0.weight"])
def test_a_deflated_item_is_refused_before_anything_is_loaded(saved, fqn, deflated):
    bomb = deflated(_item_bytes(saved, fqn), padding=8 * MiB)
    _replace_item(saved, fqn, bomb)
    assert len(bomb) < 64 * 1024  # inflates to more than 8 MiB
    net, opt = _trained("adam", seed=1)
    states = _states(net, opt)
    before = {k: v.clone() for k, v in states["model"].items()}
    refusal = (
        rf"the item '{re.escape(fqn)}' of \S+crafted\.distcp \(bytes 0 to "
        rf"{len(bomb)}\) was not written by torch\.save: its record '\S+/data\.pkl' "
        r"is compressed \(deflate\) and would inflate to \d{7,} bytes"
    )
    with pytest.raises(CheckpointError, match=refusal):
        _safe_dcp.load(states, saved)
    _assert_bitwise_equal(states["model"], before)  # no tensor was copied
    with pytest.raises(CheckpointError, match=refusal):
        _safe_dcp.to_torch_save_state(saved)

    # plain DCP inflates the item and loads it
    _quiet(lambda: dcp.load(_states(*_trained("adam", seed=1)), checkpoint_id=saved))


def test_an_item_stored_through_a_dcp_transform_is_refused(saved):
    def compressed(meta):
        for index, info in meta.storage_data.items():
            if index.fqn == "model.0.weight":
                info.transform_descriptors = ["zstd"]

    _edit_metadata(saved, compressed)
    for read in (READERS["load"], READERS["to_torch_save_state"]):
        with pytest.raises(
            CheckpointError,
            match=r"'model\.0\.weight' .* DCP transforms \['zstd'\] .* dlcomp never "
            "writes",
        ):
            read(saved)


def test_items_that_share_bytes_are_refused(saved):
    lr = _storage(saved, "optim.param_groups.0.lr")

    def overlap(meta):
        for index in meta.storage_data:
            if index.fqn == "optim.param_groups.0.eps":
                meta.storage_data[index] = _StorageInfo(
                    lr.relative_path, lr.offset, lr.length
                )

    _edit_metadata(saved, overlap)
    with pytest.raises(CheckpointError, match="share bytes"):
        _safe_dcp.to_torch_save_state(saved)
    # plain DCP reads the same bytes twice
    full = _quiet(lambda: _plain_full_state(saved))
    assert full["optim"]["param_groups"][0]["eps"] == 0.01


def _plain_full_state(path: Path) -> dict:
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict = {}
    _load_state_dict(
        state,
        storage_reader=dcp.FileSystemReader(path),
        planner=_EmptyStateDictLoadPlanner(),
        no_dist=True,
    )
    return state


@pytest.mark.parametrize("read", ["load", "to_torch_save_state"])
def test_an_item_past_the_end_of_its_file_is_a_checkpoint_error(saved, read):
    info = _storage(saved, "model.0.weight")
    part = saved / info.relative_path
    part.write_bytes(part.read_bytes()[: info.offset + info.length // 2])
    with pytest.raises(
        CheckpointError, match=r"'model\.0\.weight' .* past the end of its file"
    ):
        READERS[read](saved)
