"""DCP checkpoints are read from dlcomp's JSON manifest; nothing is unpickled.

The tests of the findings (S2, S3, S4, D1, D2, D3, D7, D11, foreign
directories) use only the public API and edit the checkpoint on disk the way
the attack did: the pickled ``.metadata`` (written by these tests: trusted
here) and, where the manifest describes the metadata, the manifest too, with
its hash recomputed, as an attacker who can write the directory would. Each
fails with the dlcomp that unpickled ``.metadata`` (branch ``format``).
"""

import contextlib
import io
import itertools
import json
import os
import pathlib
import pickle
import re
import signal
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING

from dlcomp import CheckpointError, DistributedCheckpointManager, consolidate

# --- helpers --------------------------------------------------------------------------


def _quiet(run):
    # One process and no process group is the intent here; DCP says so in a
    # UserWarning, which the test configuration turns into an error.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled", category=UserWarning
        )
        return run()


OPTIMIZERS = {
    "none": None,
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
}


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _trained(optimizer: str, seed: int = 0):
    net = _net(seed)
    make = OPTIMIZERS[optimizer]
    opt = make(net.parameters()) if make else None
    for _ in range(3):
        net(torch.randn(6, 4)).pow(2).sum().backward()
        if opt:
            opt.step()
            opt.zero_grad()
    return net, opt


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).contiguous().view(torch.uint8)


def _assert_bitwise_equal(a, b, where="state"):
    if isinstance(a, dict):
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


def _edit_metadata(path: Path, edit) -> None:
    """Edit the pickled ``.metadata`` (written by these tests: trusted here)."""
    meta = pickle.loads((path / ".metadata").read_bytes())
    edit(meta)
    (path / ".metadata").write_bytes(pickle.dumps(meta))


def _manifest(path: Path) -> dict:
    return json.loads((path / "dlcomp.json").read_text())


def _edit_manifest(path: Path, edit) -> None:
    """Edit the manifest's DCP metadata, if it has any, and re-hash it."""
    manifest = _manifest(path)
    if "dcp" not in manifest:  # a dlcomp that read the pickled .metadata
        return
    edit(manifest)
    from dlcomp._safe_dcp import manifest_text

    fields = {k: v for k, v in manifest.items() if k not in ("format", "version")}
    del fields["sha256"]
    (path / "dlcomp.json").write_text(manifest_text(fields))


def _chunk(manifest: dict, key: str, number: int = 0) -> dict:
    return manifest["dcp"]["items"][key]["chunks"][number]


def _storage(path: Path, fqn: str) -> _StorageInfo:
    meta = pickle.loads((path / ".metadata").read_bytes())  # trusted: ours
    (info,) = [info for index, info in meta.storage_data.items() if index.fqn == fqn]
    return info


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging) if the block runs longer than ``seconds``."""

    def hung(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def two_steps(tmp_path):
    """Steps 1 and 2 of ``nn.Linear(4, 2)``; (manager, weights of step 1)."""
    manager = DistributedCheckpointManager(tmp_path / "ckpt", keep=3)
    first = nn.Linear(4, 2)
    manager.save(1, first)
    manager.save(2, nn.Linear(4, 2))
    return manager, _snapshot(first)


def _falls_back(manager, first, why: str) -> None:
    """``restore`` skips step 2 for ``why`` and loads step 1."""
    target = nn.Linear(4, 2)
    with pytest.warns(
        RuntimeWarning, match=rf"skipping checkpoint step-000000002, .*{why}"
    ):
        assert manager.restore(target).step == 1
    _assert_bitwise_equal(_snapshot(target), first)


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_checkpoint_round_trips_bitwise_and_training_goes_on(tmp_path, optimizer):
    net, opt = _trained(optimizer)
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(3, net, opt, losses=[0.5, float("nan")], note=("a", 1))

    target, target_opt = _trained(optimizer, seed=1)
    restored = manager.restore(target, target_opt)
    assert restored.step == 3
    assert restored.extra["note"] == ("a", 1)
    assert restored.extra["losses"][0] == 0.5
    assert restored.extra["losses"][1] != restored.extra["losses"][1]  # NaN
    _assert_bitwise_equal(target.state_dict(), net.state_dict())
    if opt is None:
        return
    _assert_bitwise_equal(target_opt.state_dict(), opt.state_dict())
    for model, optim in ((net, opt), (target, target_opt)):  # one more step
        torch.manual_seed(5)
        model(torch.randn(6, 4)).pow(2).sum().backward()
        optim.step()
    _assert_bitwise_equal(target.state_dict(), net.state_dict())


def test_the_metadata_built_from_the_manifest_is_the_one_dcp_pickled(tmp_path):
    from dlcomp._safe_dcp import read_manifest

    net, opt = _trained("adam")
    saved = DistributedCheckpointManager(tmp_path).save(1, net, opt)
    mine = read_manifest(saved).metadata
    plain = dcp.FileSystemReader(saved).read_metadata()  # our own file: trusted
    assert mine.state_dict_metadata.keys() == plain.state_dict_metadata.keys()
    for key, theirs in plain.state_dict_metadata.items():
        ours = mine.state_dict_metadata[key]
        assert type(ours) is type(theirs), key
        if hasattr(theirs, "size"):
            assert ours.size == theirs.size, key
            assert ours.chunks == theirs.chunks, key
            assert ours.properties.dtype == theirs.properties.dtype, key
    tensors = {i: v for i, v in plain.storage_data.items() if i.offset is not None}
    assert mine.storage_data == tensors  # non-tensor items: served from JSON
    assert mine.planner_data == plain.planner_data
    assert mine.version == plain.version


def test_consolidate_writes_what_plain_dcp_converts(tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    net, opt = _trained("adam")
    saved = DistributedCheckpointManager(tmp_path).save(1, net, opt)
    out = consolidate(saved, tmp_path / "w.pt")
    dcp_to_torch_save(saved, tmp_path / "plain.pt")  # our own file: trusted
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)["model"]
    _assert_bitwise_equal(torch.load(out, weights_only=True), dict(plain))


DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint16, torch.uint32, torch.uint64, torch.float16, torch.bfloat16,
    torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.float8_e4m3fn, torch.float8_e5m2,
]  # fmt: skip


def test_every_dtype_round_trips_bitwise(tmp_path):
    holder = nn.Module()
    for number, dtype in enumerate(DTYPES):
        if dtype == torch.bool:
            value = torch.randint(0, 2, (5,)).bool()
        else:  # random bits of 5 elements
            bits = torch.randint(0, 256, (5 * dtype.itemsize,), dtype=torch.uint8)
            value = bits.view(dtype)
        holder.register_buffer(f"b{number}", value)
    saved = DistributedCheckpointManager(tmp_path).save(1, holder)
    out = consolidate(saved, tmp_path / "w.pt")
    _assert_bitwise_equal(torch.load(out, weights_only=True), dict(holder.state_dict()))


def test_a_pickled_metadata_file_is_not_needed(two_steps):
    manager, _ = two_steps
    (manager.latest() / ".metadata").unlink()  # plain DCP could not read it now
    assert manager.restore(nn.Linear(4, 2)).step == 2


# --- S3: a .metadata pickle that rewrites a class is never unpickled ------------------

GLOBALS = {
    "PosixPath.is_file": (pathlib.PosixPath, "is_file"),
    "_MEM_FORMAT_ENCODING": (_MEM_FORMAT_ENCODING, "_value2member_map_"),
}


def _rewrites(kind: type, attribute: str) -> bytes:
    """A pickle: GLOBAL kind; (None, {attribute: 0}); BUILD: sets it on the class."""
    name = attribute.encode()
    return (
        b"\x80\x02c" + f"{kind.__module__}\n{kind.__qualname__}\n".encode()
        + b"N}X" + struct.pack("<I", len(name)) + name + b"K\x00s\x86b."
    )  # fmt: skip


@pytest.mark.parametrize("target", GLOBALS.values(), ids=GLOBALS.keys())
def test_a_metadata_pickle_that_rewrites_a_class_is_never_unpickled(
    two_steps, tmp_path, target
):
    manager, _ = two_steps
    kind, attribute = target
    before = dict(vars(kind))
    (manager.latest() / ".metadata").write_bytes(_rewrites(kind, attribute))
    try:
        target_net = nn.Linear(4, 2)
        assert manager.restore(target_net).step == 2  # from the manifest, no warning
        consolidate(manager.latest(), tmp_path / "w.safetensors")
        assert dict(vars(kind)) == before  # the class is untouched
    finally:
        for name in set(vars(kind)) - set(before):
            delattr(kind, name)
        for name, value in before.items():
            if vars(kind).get(name) is not value:
                setattr(kind, name, value)


# --- S4: a declared shape larger than its chunks --------------------------------------


@pytest.mark.parametrize("declared", [(64, 64), (16384, 16384)])
def test_a_declared_shape_beyond_its_chunks_is_refused_before_allocating(
    tmp_path, declared
):
    saved = DistributedCheckpointManager(tmp_path / "ckpt").save(1, nn.Linear(2, 2))

    def bigger(meta):
        meta.state_dict_metadata["model.weight"].size = torch.Size(declared)

    _edit_metadata(saved, bigger)
    _edit_manifest(
        saved, lambda m: m["dcp"]["items"]["model.weight"].update(size=list(declared))
    )
    out = tmp_path / "w.pt"
    total = declared[0] * declared[1]
    with (
        _deadline(20),
        pytest.raises(
            CheckpointError,
            match=rf"'model\.weight' .* its chunks cover 4 of its {total} elements "
            r"\(shape \(\d+, \d+\)\), .* no memory was allocated for it",
        ),
    ):
        consolidate(saved, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# --- S2: a bytearray in a data file is never read: values come from the manifest ------


class _Huge:
    def __reduce__(self):  # torch.load(weights_only=True) allows bytearray
        return (bytearray, (2**29,))


def test_a_bytearray_lr_in_the_data_file_is_never_read(tmp_path):
    manager = DistributedCheckpointManager(tmp_path / "ckpt")
    saved = manager.save(1, *_trained("adam"))
    crafted = io.BytesIO()
    torch.save(_Huge(), crafted)
    (saved / "crafted.distcp").write_bytes(crafted.getvalue())

    def lr_is_crafted(meta):
        for index in meta.storage_data:
            if index.fqn == "optim.param_groups.0.lr":
                meta.storage_data[index] = _StorageInfo(
                    "crafted.distcp", 0, len(crafted.getvalue())
                )

    _edit_metadata(saved, lr_is_crafted)
    target, optimizer = _trained("adam", seed=1)
    assert manager.restore(target, optimizer).step == 1
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert type(optimizer.param_groups[0]["lr"]) is float


# --- D2: a setting of another type ----------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"), [("lr", "fast"), ("momentum", [1, 2, 3])]
)
def test_a_setting_of_another_type_is_refused_before_anything_is_copied(
    tmp_path, setting, value, monkeypatch
):
    manager = DistributedCheckpointManager(tmp_path)
    first, first_opt = _trained("sgd_momentum")
    manager.save(1, first, first_opt)
    net, opt = _trained("sgd_momentum", seed=1)
    opt.param_groups[0][setting] = value  # into the manifest, as it is
    saved = manager.save(2, net, opt)

    read = []  # the checkpoints whose data DCP read
    with contextlib.suppress(ImportError):  # the reader of this dlcomp
        from dlcomp._safe_dcp import JsonFileSystemReader

        read_data = JsonFileSystemReader.read_data

        def recorded(self, plan, planner):
            read.append(Path(self.path).name)
            return read_data(self, plan, planner)

        monkeypatch.setattr(JsonFileSystemReader, "read_data", recorded)
    target, optimizer = _trained("sgd_momentum", seed=2)
    refusal = rf"group 0 {setting}: {re.escape(repr(value))} in the file, a number"
    with pytest.warns(
        RuntimeWarning, match=f"skipping checkpoint step-000000002, .*{refusal}"
    ):
        assert manager.restore(target, optimizer).step == 1
    assert read == ["step-000000001"]  # refused before DCP read anything
    _assert_bitwise_equal(target.state_dict(), first.state_dict())
    assert optimizer.param_groups[0][setting] == first_opt.param_groups[0][setting]
    target(torch.randn(6, 4)).sum().backward()
    optimizer.step()  # no TypeError

    # the reader itself checks every value before it copies any tensor
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from dlcomp._safe_dcp import load, read_manifest

    fresh, fresh_opt = _trained("sgd_momentum", seed=3)
    model_state, optim_state = get_state_dict(fresh, fresh_opt)
    states = {"model": model_state, "optim": optim_state}
    before = {k: v.clone() for k, v in model_state.items()}
    reader = JsonFileSystemReader(saved, read_manifest(saved))
    with pytest.raises(
        CheckpointError,
        match=rf"'optim\.param_groups\.0\.{setting}' is {re.escape(repr(value))}, "
        r"where the state it loads into holds \d",
    ):
        load(states, reader, saved)
    _assert_bitwise_equal(dict(states["model"]), before)


def test_values_of_the_same_kind_load():
    from dlcomp._safe_dcp import fits

    assert fits(1, 0.1)  # lr=1 for lr=0.1
    assert fits(True, None)  # foreach=True where this optimizer says None
    assert fits(0.5, torch.tensor(0.1))  # a step saved as a number
    assert not fits(True, 0.1)
    assert not fits((0.9,), (0.9, 0.99))
    assert not fits([1, "a"], [1, 2])
    assert not fits({"a": 1}, {"b": 1})


# --- D3: shared references in a size --------------------------------------------------


def test_shared_references_in_a_pickled_size_do_not_hang(two_steps):
    manager, _ = two_steps

    def shared(meta):
        size = (1,)
        for _ in range(60):  # 2**60 leaves; the pickle's memo keeps it small
            size = (size, size)
        meta.state_dict_metadata["model.weight"].size = size

    _edit_metadata(manager.latest(), shared)
    assert (manager.latest() / ".metadata").stat().st_size < 100_000
    with _deadline(30):
        assert manager.restore(nn.Linear(4, 2)).step == 2  # from the manifest


def test_a_size_nested_deeply_in_the_manifest_is_refused_at_once(two_steps):
    manager, first = two_steps
    deep = "[" * 100_000 + "4, 2" + "]" * 100_000
    _edit_manifest(
        manager.latest(), lambda m: m["dcp"]["items"]["model.weight"].update(size=[])
    )  # re-hashed; then the size is replaced in the text
    path = manager.latest() / "dlcomp.json"
    text = path.read_text().replace('"size":[]', '"size":' + deep, 1)
    path.write_text(text)
    with _deadline(30):
        _falls_back(manager, first, "nested too deeply")


# --- D7: chunks that do not cover their tensor ----------------------------------------

LAYOUTS = {
    "no chunks": ([], lambda item: item.update(chunks=[]), 0),
    "row 0 only": (
        [1, 4],
        lambda item: item["chunks"][0].update(sizes=[1, 4]),
        4,
    ),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_chunks_that_do_not_cover_their_tensor_are_refused(two_steps, tmp_path, layout):
    manager, first = two_steps
    sizes, edit, covered = layout

    def pickled(meta):
        entry = meta.state_dict_metadata["model.weight"]
        if sizes:
            entry.chunks[0].sizes = torch.Size(sizes)
        else:
            entry.chunks.clear()

    _edit_metadata(manager.latest(), pickled)
    _edit_manifest(manager.latest(), lambda m: edit(m["dcp"]["items"]["model.weight"]))
    why = rf"'model\.weight' .* its chunks cover {covered} of its 8 elements"
    _falls_back(manager, first, why)
    with pytest.raises(CheckpointError, match=why):
        consolidate(manager.latest(), tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()


def test_overlapping_chunks_are_refused():
    from dlcomp._safe_dcp import check_tiling

    with pytest.raises(CheckpointError, match=r"chunks at \(0, 0\) and \(0, 0\)"):
        check_tiling([2, 2], [([0, 0], [2, 1]), ([0, 0], [1, 2])], "x")
    with pytest.raises(CheckpointError, match="reaches outside"):
        check_tiling([2, 2], [([0, 0], [3, 2])], "x")


@st.composite
def _grids(draw):
    """A shape and the chunks of a grid that tiles it, as DCP's layouts do."""
    dims = draw(st.integers(0, 3))
    shape, cuts = [], []
    for _ in range(dims):
        size = draw(st.integers(0, 6))
        inner = draw(st.lists(st.integers(0, size), max_size=3))
        shape.append(size)
        cuts.append(sorted({0, size, *inner}))
    chunks = [([], [])]
    for points in cuts:
        spans = list(itertools.pairwise(points)) or [(0, 0)]
        chunks = [
            ([*offsets, a], [*sizes, b - a])
            for offsets, sizes in chunks
            for a, b in spans
        ]
    return shape, chunks


@settings(max_examples=200, deadline=None)
@given(_grids(), st.data())
def test_a_grid_tiles_and_a_grid_missing_or_doubling_a_chunk_does_not(grid, data):
    from dlcomp._safe_dcp import check_tiling

    shape, chunks = grid
    check_tiling(shape, chunks, "x")
    full = [chunk for chunk in chunks if 0 not in chunk[1]]
    if not full:
        return
    chunk = data.draw(st.sampled_from(full))
    with pytest.raises(CheckpointError):
        check_tiling(shape, [c for c in chunks if c is not chunk], "x")
    with pytest.raises(CheckpointError):
        check_tiling(shape, [*chunks, chunk], "x")


# --- D11: a FIFO as a data file -------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_as_a_data_file_is_refused_at_once(two_steps, tmp_path):
    manager, first = two_steps
    part = manager.latest() / "__0_0.distcp"
    part.unlink()
    os.mkfifo(part)
    with _deadline(20):
        _falls_back(manager, first, "not a regular file")
        with pytest.raises(CheckpointError, match="not a regular file"):
            consolidate(manager.latest(), tmp_path / "w.pt")


# --- D1: a flipped bit in a data file -------------------------------------------------


def _flip_a_bit_of_the_data(path: Path, fqn: str) -> None:
    """Flip one bit of the tensor bytes of ``fqn`` (not of the zip's structure)."""
    info = _storage(path, fqn)
    part = path / info.relative_path
    data = bytearray(part.read_bytes())
    item = bytes(data[info.offset : info.offset + info.length])
    with zipfile.ZipFile(io.BytesIO(item)) as archive:
        (record,) = [r for r in archive.infolist() if "/data/" in r.filename]
    name, extra = struct.unpack_from("<HH", item, record.header_offset + 26)
    start = info.offset + record.header_offset + 30 + name + extra
    data[start + record.file_size // 2] ^= 0x10
    part.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_data_file_is_refused_by_its_hash(two_steps, tmp_path):
    manager, first = two_steps
    _flip_a_bit_of_the_data(manager.latest(), "model.weight")
    why = r"'model\.weight' .* does not match its SHA-256"
    _falls_back(manager, first, why)
    with pytest.raises(CheckpointError, match=why):
        consolidate(manager.latest(), tmp_path / "w.pt")


# --- directories dlcomp did not write -------------------------------------------------

PLAIN_DCP = (
    r"dlcomp reads only the DCP checkpoints it wrote.* at your own risk, use "
    r"plain DCP .* can run code"
)


def test_a_directory_dlcomp_did_not_write_is_refused_with_plain_dcp_advice(tmp_path):
    manager = DistributedCheckpointManager(tmp_path / "ckpt")
    step = manager.path_for(1)
    _quiet(
        lambda: dcp.save({"model": nn.Linear(4, 2).state_dict()}, checkpoint_id=step)
    )
    # the manifest of dlcomp 0.1, which read the pickled .metadata
    old = {"step": 1, "world_size": 1, "optimizer_class": None, "extra": {}}
    (step / "dlcomp.json").write_text(json.dumps(old))
    with (
        pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000001"),
        pytest.raises(CheckpointError, match="does not describe the DCP metadata"),
    ):
        manager.restore(nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match=PLAIN_DCP):
        consolidate(step, tmp_path / "w.pt")
    (step / "dlcomp.json").unlink()  # plain DCP alone
    with pytest.raises(CheckpointError, match=r"a \.metadata file but no dlcomp\.json"):
        consolidate(step, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=PLAIN_DCP):
        consolidate(step, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()


# --- the manifest is checked ----------------------------------------------------------


def test_an_edited_manifest_is_refused_by_its_hash(two_steps):
    manager, first = two_steps
    path = manager.latest() / "dlcomp.json"
    path.write_text(path.read_text().replace('"world_size":1', '"world_size":2'))
    _falls_back(manager, first, "does not match its SHA-256")


def test_a_manifest_of_a_newer_format_asks_for_a_newer_dlcomp(two_steps):
    manager, first = two_steps
    _edit_manifest(manager.latest(), lambda m: None)  # re-hashed, same content
    path = manager.latest() / "dlcomp.json"
    path.write_text(path.read_text().replace('"version":2', '"version":3', 1))
    _falls_back(manager, first, r"a newer dlcomp wrote it\. Upgrade dlcomp")


def test_a_manifest_beyond_the_size_limit_is_refused_unread(two_steps, monkeypatch):
    from dlcomp import _safe_dcp

    manager, first = two_steps
    newest = manager.latest() / "dlcomp.json"
    limit = newest.stat().st_size
    with open(newest, "a") as f:
        f.write(" " * 1000)  # still the same JSON, now past the limit
    monkeypatch.setattr(_safe_dcp, "MAX_MANIFEST", limit)
    _falls_back(manager, first, rf"a manifest holds at most {limit}")


@pytest.mark.parametrize(
    "name", ["../elsewhere.distcp", "/etc/passwd", "__0_0.pt", ".metadata"]
)
def test_a_file_outside_the_directory_is_refused(two_steps, name):
    manager, first = two_steps

    def elsewhere(manifest):
        files = manifest["dcp"]["files"]
        files[name] = files.pop("__0_0.distcp")
        for item in manifest["dcp"]["items"].values():
            for chunk in item.get("chunks", ()):
                chunk["file"] = name

    _edit_manifest(manager.latest(), elsewhere)
    _falls_back(manager, first, "which is not a .distcp file of the checkpoint")


def test_chunks_sharing_bytes_are_refused(two_steps):
    manager, first = two_steps

    def shared(manifest):
        weight = _chunk(manifest, "model.weight")
        _chunk(manifest, "model.bias").update(
            offset=weight["offset"], length=weight["length"], sha256=weight["sha256"]
        )

    _edit_manifest(manager.latest(), shared)
    _falls_back(manager, first, "on the same bytes of __0_0.distcp")


def test_a_byte_range_too_short_for_its_chunk_is_refused(two_steps):
    manager, first = two_steps
    _edit_manifest(
        manager.latest(), lambda m: _chunk(m, "model.weight").update(length=8)
    )
    _falls_back(manager, first, r"needs 32 bytes, and its byte range \(8 bytes")


def test_a_truncated_data_file_is_refused_before_reading(two_steps):
    manager, first = two_steps
    part = manager.latest() / "__0_0.distcp"
    part.write_bytes(part.read_bytes()[:-1])
    _falls_back(manager, first, "the manifest recorded .* truncated or was replaced")


def test_a_chunk_that_loads_another_tensor_is_refused(two_steps):
    """The bias's bytes, hash and all, described as the weight's: its shape differs."""
    manager, first = two_steps

    def swapped(manifest):
        bias = dict(_chunk(manifest, "model.bias"))
        weight = _chunk(manifest, "model.weight")
        _chunk(manifest, "model.bias").update(
            {k: weight[k] for k in ("offset", "length", "sha256")}
        )
        weight.update({k: bias[k] for k in ("offset", "length", "sha256")})

    _edit_manifest(manager.latest(), swapped)
    _falls_back(
        manager,
        first,
        r"'model\.bias' .* holds a torch\.float32 tensor of shape \(2, 4\), where "
        r"the manifest describes a torch\.float32 chunk of shape \(2,\)",
    )


def test_a_deflated_chunk_is_refused_without_inflating_it(two_steps, deflated):
    import hashlib

    manager, first = two_steps
    info = _storage(manager.latest(), "model.weight")
    part = manager.latest() / info.relative_path
    with open(part, "rb") as f:
        f.seek(info.offset)
        bomb = deflated(f.read(info.length), 8 * 2**20)
    (manager.latest() / "bomb.distcp").write_bytes(bomb)

    def to_the_bomb(manifest):
        manifest["dcp"]["files"]["bomb.distcp"] = len(bomb)
        _chunk(manifest, "model.weight").update(
            file="bomb.distcp",
            offset=0,
            length=len(bomb),
            sha256=hashlib.sha256(bomb).hexdigest(),
        )

    _edit_manifest(manager.latest(), to_the_bomb)
    _falls_back(manager, first, r"is compressed \(deflate\) and would inflate")


def test_an_interrupt_while_reading_propagates_as_itself(two_steps, monkeypatch):
    from dlcomp import _safe_dcp

    manager, _ = two_steps

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_safe_dcp, "vet_item", interrupted)
    target = nn.Linear(4, 2)
    before = _snapshot(target)
    with pytest.raises(KeyboardInterrupt):
        manager.restore(target)
    _assert_bitwise_equal(_snapshot(target), before)
    with pytest.raises(KeyboardInterrupt):
        consolidate(manager.latest(), manager.directory / "w.pt")


def test_a_value_that_is_not_plain_data_stops_the_save(tmp_path):
    class Odd(nn.Linear):
        def get_extra_state(self):
            return object()

        def set_extra_state(self, state):
            pass

    manager = DistributedCheckpointManager(tmp_path)
    with pytest.raises(TypeError, match=r"'model\._extra_state' is a builtins.object"):
        manager.save(1, Odd(4, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_manifest_that_overstates_its_files_allocates_nothing(tmp_path, monkeypatch):
    """Sizes that tile, in files the manifest says are 1 GiB: checked before any."""
    saved = DistributedCheckpointManager(tmp_path / "ckpt").save(1, nn.Linear(2, 2))

    def overstated(manifest):
        manifest["dcp"]["files"]["__0_0.distcp"] = 2**31
        manifest["dcp"]["items"]["model.weight"]["size"] = [16384, 16384]
        _chunk(manifest, "model.weight").update(
            sizes=[16384, 16384], offset=2**30, length=2**30
        )

    _edit_manifest(saved, overstated)
    allocated = []
    empty = torch.empty

    def recorded(*args, **kwargs):
        allocated.append(args)
        return empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", recorded)
    with pytest.raises(
        CheckpointError, match=r"has \d+ bytes, and the manifest recorded"
    ):
        consolidate(saved, tmp_path / "w.pt")
    assert allocated == []
    assert not (tmp_path / "w.pt").exists()


def test_a_manifest_too_large_to_read_back_is_not_committed(tmp_path, monkeypatch):
    from dlcomp import _safe_dcp

    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, nn.Linear(4, 2))
    monkeypatch.setattr(_safe_dcp, "MAX_MANIFEST", 1000)
    with pytest.raises(CheckpointError, match="more than the 1000 a manifest may hold"):
        manager.save(2, nn.Linear(4, 2), losses=list(range(1000)))
    assert [step for step, _ in manager.checkpoints()] == [1]
    assert not list(tmp_path.glob(".staging-*"))


def test_a_manifest_that_would_take_far_more_memory_than_the_files_is_refused(
    two_steps,
):
    manager, first = two_steps
    newest = manager.latest() / "dlcomp.json"
    nested = b"[" + b"[]," * (2**21) + b"[]]"  # 6 MiB of text, ~300 MiB parsed
    newest.write_bytes(newest.read_bytes()[:-1] + b',"pad":' + nested + b"}")
    with _deadline(30):
        _falls_back(manager, first, r"would take about \d+ MiB of memory")


_PEAK = """
import sys

import dlcomp
from dlcomp import _safe_dcp  # the baseline imports what consolidate imports

path, action = sys.argv[1], sys.argv[2]
outcome = "imports only"
if action == "consolidate":
    try:
        dlcomp.consolidate(path, path + "/w.pt")
        outcome = "loaded"
    except dlcomp.CheckpointError as error:
        outcome = f"CheckpointError: {error}"
with open("/proc/self/status") as status:  # the child's own high-water mark
    peak = next(line for line in status if line.startswith("VmHWM:")).split()[1]
print(int(peak) * 1024)
print(outcome)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_a_bomb_in_a_chunk_is_refused_without_inflating_it(two_steps, deflated):
    import hashlib
    import subprocess
    import sys

    manager, _ = two_steps
    saved = manager.latest()
    info = _storage(saved, "model.weight")
    with open(saved / info.relative_path, "rb") as f:
        f.seek(info.offset)
        bomb = deflated(f.read(info.length), 256 * 2**20)  # inflates to 256 MiB
    (saved / "bomb.distcp").write_bytes(bomb)

    def to_the_bomb(manifest):  # as a forger who can write the directory would
        manifest["dcp"]["files"]["bomb.distcp"] = len(bomb)
        _chunk(manifest, "model.weight").update(
            file="bomb.distcp",
            offset=0,
            length=len(bomb),
            sha256=hashlib.sha256(bomb).hexdigest(),
        )

    _edit_manifest(saved, to_the_bomb)

    def child(action):
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, str(saved), action],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        peak, outcome = done.stdout.splitlines()[-2:]
        return int(peak), outcome

    baseline, _ = child("imports")
    peak, outcome = child("consolidate")
    assert len(bomb) < 2**20
    assert peak - baseline < 64 * 2**20, (peak - baseline, outcome)
    assert "'model.weight'" in outcome, outcome
    assert "is compressed (deflate) and would inflate" in outcome, outcome
