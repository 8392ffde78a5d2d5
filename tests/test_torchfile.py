"""dlcomp._torchfile: a zip bomb is refused from its directory, without inflating it."""

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from dlcomp import CheckpointError
from dlcomp._torchfile import check_torch_file

MiB = 2**20
BOMB_BYTES = 512 * MiB  # the storage the bomb's pickle declares: 128 Mi float32 zeros

# A child process: the same imports every time, then one action on one file,
# then its own peak RSS as JSON: VmHWM, the high-water mark of the child's own
# address space. (ru_maxrss would not do: Linux carries the parent's peak into
# it across fork and exec, so a child of a large pytest process reports the
# parent's size, and a real increase hides under it.)
PEAK = """
def own_peak_kib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1])
"""

CHILD = (
    PEAK
    + """
import json, sys
from pathlib import Path
import torch
import dlcomp
from dlcomp._torchfile import check_torch_file
path, action = Path(sys.argv[1]), sys.argv[2]
try:
    if action == "torch.load":
        outcome = f"loaded {sorted(torch.load(path, weights_only=True))}"
    elif action == "check":
        check_torch_file(path)
        outcome = "passed"
    else:
        outcome = "imports only"
except dlcomp.CheckpointError as error:
    outcome = f"CheckpointError: {error}"
print(json.dumps({"peak_kib": own_peak_kib(), "outcome": outcome}))
"""
)


def run_child(path: Path, action: str, script: str = CHILD) -> tuple[int, str]:
    """Run ``script`` on ``path``; return its peak RSS in bytes and what happened.

    The child reports its own peak (VmHWM): RUSAGE_CHILDREN in this process
    is the largest peak of any child so far, so a small child run after the
    512 MiB one could not be measured with it.
    """
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), action],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (
        f"child {action!r} exited with {proc.returncode}; stderr tail:\n"
        f"{proc.stderr[-3000:]}"
    )
    report = json.loads(proc.stdout.splitlines()[-1])
    return report["peak_kib"] * 1024, report["outcome"]


class _Storage:
    """Stands for the storage record ``archive/data/0`` in the pickle."""

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


def state_pickle(numel: int) -> bytes:
    """``data.pkl`` of ``torch.save({"w": torch.zeros(numel)})``, without the tensor."""
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump({"w": _Tensor(_Storage(numel))})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real torch.save file, rewritten: its storage record is 512 MiB deflated."""
    folder = tmp_path_factory.mktemp("bomb")
    real = folder / "archive.pt"  # torch names its records archive/... after this
    torch.save({"w": torch.zeros(10)}, real)
    path = folder / "bomb.pt"
    chunk = bytes(MiB)  # zeros, written 512 times: the test process stays small
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(path, "w") as dst:
        for record in src.infolist():
            name = record.filename
            if name.endswith("/data.pkl"):
                dst.writestr(name, state_pickle(BOMB_BYTES // 4))
            elif name.endswith("/data/0"):
                info = zipfile.ZipInfo(name, date_time=record.date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(info, "w", force_zip64=True) as out:
                    for _ in range(BOMB_BYTES // MiB):
                        out.write(chunk)
            else:
                dst.writestr(name, src.read(name))
    return path


def test_the_bomb_is_small_and_declares_512_mib(bomb):
    assert bomb.stat().st_size < MiB  # about 0.5 MB: deflate packs zeros ~1000:1
    with zipfile.ZipFile(bomb) as archive:
        record = archive.getinfo("archive/data/0")
    assert record.compress_type == zipfile.ZIP_DEFLATED
    assert record.file_size == BOMB_BYTES


def test_torch_load_inflates_the_bomb(bomb):
    """The danger is real: weights_only=True loads it, at 512 MiB of memory."""
    baseline, _ = run_child(bomb, "imports only")
    peak, outcome = run_child(bomb, "torch.load")
    assert outcome == "loaded ['w']"
    assert peak - baseline > BOMB_BYTES // 2, (peak, baseline)


def test_check_refuses_the_bomb_and_says_why(bomb):
    size = bomb.stat().st_size
    with pytest.raises(CheckpointError) as caught:
        check_torch_file(bomb)
    message = str(caught.value)
    assert "'archive/data/0' is compressed (deflate)" in message
    assert f"would inflate to {BOMB_BYTES} bytes from " in message
    assert f"(the whole file is {size} bytes)" in message
    assert "torch.save stores every record uncompressed" in message


def test_check_refuses_the_bomb_without_inflating_it(bomb):
    """Peak RSS: imports + a small multiple of the file, not 512 MiB."""
    size = bomb.stat().st_size
    baseline, _ = run_child(bomb, "imports only")
    peak, outcome = run_child(bomb, "check")
    assert outcome.startswith("CheckpointError: "), outcome
    assert "is compressed (deflate)" in outcome, outcome
    assert peak - baseline < 20 * size, (peak, baseline, size)


def test_a_real_torch_save_checkpoint_passes(tmp_path):
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 4))
    state = {
        "model": model.state_dict(),
        "big": torch.randn(256, 1024),  # 1 MiB
        "ints": torch.arange(10),
        "view": model[0].weight[:3],  # shares the first Linear's storage
        "empty": torch.zeros(0),
        "step": 7,
    }
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) > 8  # several storage records
    assert check_torch_file(path) is None


@pytest.mark.parametrize("kind", ["legacy torch.save", "text", "empty"])
def test_a_file_that_is_not_a_zip_is_left_to_torch_load(tmp_path, kind):
    path = tmp_path / "file.pt"
    if kind == "legacy torch.save":
        torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(b"hello, this is a text file\n" if kind == "text" else b"")
    assert check_torch_file(path) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_is_left_alone_without_blocking(tmp_path):
    fifo = tmp_path / "ckpt.pt"
    os.mkfifo(fifo)
    results = []
    worker = threading.Thread(
        target=lambda: results.append(check_torch_file(fifo)), daemon=True
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "check_torch_file blocked opening a FIFO"
    assert results == [None]


def test_a_zip_whose_directory_cannot_be_read_is_refused(tmp_path):
    path = tmp_path / "truncated.pt"
    torch.save({"w": torch.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the central directory is gone
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        check_torch_file(path)


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_torch_file(tmp_path / "absent.pt")


# --- declared sizes that do not fit: patch a real file's central directory --------

_CENTRAL = struct.Struct("<4s6H3L5H2L")  # a central directory header, 46 bytes
_END = struct.Struct("<4s4H2LH")  # the end of central directory record, 22 bytes


def rewrite_directory(path: Path, edit) -> None:
    """Rewrite ``path``'s central directory: ``edit(headers) -> headers``.

    Each header is ``[fields, name]`` with ``fields`` the 17 values of
    ``_CENTRAL``; records themselves are not touched. torch also writes a zip64
    end record, which is dropped: the plain one holds the same small values.
    """
    data = path.read_bytes()
    end_at = data.rindex(b"PK\x05\x06")
    end = list(_END.unpack_from(data, end_at))
    cd_size, cd_offset = end[5], end[6]
    headers, at = [], cd_offset
    while at < cd_offset + cd_size:
        fields = list(_CENTRAL.unpack_from(data, at))
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        assert extra_len == comment_len == 0  # torch writes none (small files)
        headers.append([fields, data[at + 46 : at + 46 + name_len]])
        at += 46 + name_len
    directory = b""
    for fields, name in edit(headers):
        fields[10] = len(name)
        directory += _CENTRAL.pack(*fields) + name
    end[3] = end[4] = len(headers)
    end[5], end[7] = len(directory), 0  # directory size; no comment
    path.write_bytes(data[:cd_offset] + directory + _END.pack(*end))


def storage_header(headers):
    (header,) = [h for h in headers if h[1].endswith(b"/data/0")]
    return header


def declare_a_gigabyte(headers):
    fields = storage_header(headers)[0]
    fields[8] = fields[9] = 2**30  # compressed and uncompressed size
    return headers


def disagree_on_the_size(headers):
    fields = storage_header(headers)[0]
    fields[9] += 1  # uncompressed size: one more byte than it occupies
    return headers


def move_past_the_end(headers):
    fields = storage_header(headers)[0]
    fields[16] += 2 * fields[9]  # its offset: now it would end past the file
    return headers


def overlap_three_times(headers):
    fields, name = storage_header(headers)
    for copy in (b"1", b"2"):  # two more names for the same bytes
        headers.append([list(fields), name[:-1] + b"x" + copy])
    return headers


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "declares more than the file",
            r"record 'ckpt/data/0' declares 1073741824 bytes .* more than the "
            r"whole file holds \({size} bytes\)",
        ),
        (
            "ends past the end of the file",
            r"record 'ckpt/data/0' declares 4000 bytes \(stored in 4000, ending at "
            r"byte \d+\), more than the whole file holds \({size} bytes\)",
        ),
        (
            "stored sizes disagree",
            r"uncompressed record 'ckpt/data/0' declares 4001 bytes but occupies "
            r"4000 \(the whole file is {size} bytes\)",
        ),
        (
            "overlapping records",
            r"its \d+ records declare \d+ bytes in all \(the largest, "
            r"'ckpt/data/0', 4000 bytes\), more than the whole file holds "
            r"\({size} bytes\), so records overlap",
        ),
    ],
)
def test_declared_sizes_larger_than_the_file_are_refused(tmp_path, case, expected):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(1000)}, path)  # ckpt/data/0: 4000 bytes
    edit = {
        "declares more than the file": declare_a_gigabyte,
        "ends past the end of the file": move_past_the_end,
        "stored sizes disagree": disagree_on_the_size,
        "overlapping records": overlap_three_times,
    }[case]
    rewrite_directory(path, edit)
    pattern = expected.format(size=path.stat().st_size)
    with pytest.raises(CheckpointError, match=pattern):
        check_torch_file(path)


LOAD_CHECKPOINT = (
    PEAK
    + """
import json, sys
from torch import nn
import dlcomp
try:
    dlcomp.load_checkpoint(sys.argv[1], nn.Linear(4, 2))
    outcome = "loaded"
except dlcomp.CheckpointError as error:
    outcome = f"CheckpointError: {error}"
print(json.dumps({"peak_kib": own_peak_kib(), "outcome": outcome}))
"""
)


def test_load_checkpoint_refuses_the_bomb_without_inflating_it(bomb):
    size = bomb.stat().st_size
    baseline, _ = run_child(bomb, "imports only")
    peak, outcome = run_child(bomb, "load_checkpoint", script=LOAD_CHECKPOINT)
    assert outcome.startswith("CheckpointError: "), outcome
    assert "'archive/data/0' is compressed (deflate)" in outcome, outcome
    assert f"would inflate to {BOMB_BYTES} bytes" in outcome, outcome
    assert peak - baseline < 20 * size, (peak, baseline, size)


# --- one item among others: a DCP .distcp file holds one torch.save zip per item ----


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def embedded(item: bytes, before: int = 100, after: int = 0) -> CountingFile:
    """``item`` between ``before`` and ``after`` bytes of other items."""
    return CountingFile(b"x" * before + item + bytes(after))


def archive(tmp_path: Path, edit=None) -> bytes:
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(1000)}, path)  # ckpt/data/0: 4000 bytes
    if edit:
        rewrite_directory(path, edit)
    return path.read_bytes()


def test_an_item_is_checked_within_its_own_bytes(tmp_path):
    from dlcomp._torchfile import check_torch_item

    def declare_twice_the_item(headers):
        fields = storage_header(headers)[0]
        fields[8] = fields[9] = 2 * len(item)  # compressed and uncompressed size
        return headers

    item = archive(tmp_path)
    crafted = archive(tmp_path, declare_twice_the_item)
    # the item declares more than itself, though less than its whole file
    file = embedded(crafted, after=10 * len(item))
    with pytest.raises(
        CheckpointError,
        match=rf"the item 'w' of x.distcp .* record 'ckpt/data/0' declares "
        rf"{2 * len(item)} bytes .* more than the whole item holds "
        rf"\({len(crafted)} bytes\)",
    ):
        check_torch_item(file, 100, len(crafted), "the item 'w' of x.distcp")
    check_torch_item(embedded(item, after=100), 100, len(item), "w")  # the real one


def test_an_item_is_vetted_from_its_zip_directory_alone(tmp_path):
    from dlcomp._torchfile import check_torch_item

    path = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(2**20)}, path)  # a 4 MiB record
    item = path.read_bytes()
    file = embedded(item, after=4 * MiB)
    check_torch_item(file, 100, len(item), "w")
    assert file.bytes_read < 80 * 1024  # the end of the item: not its records


def test_a_deflated_item_is_refused(tmp_path):
    from dlcomp._torchfile import check_torch_item

    item = io.BytesIO()
    with zipfile.ZipFile(item, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", bytes(MiB))
    data = item.getvalue()
    with pytest.raises(
        CheckpointError,
        match=r"record 'archive/data.pkl' is compressed \(deflate\) and would "
        rf"inflate to 1048576 bytes from \d+ \(the whole item is {len(data)} bytes\)",
    ):
        check_torch_item(embedded(data), 100, len(data), "the item 'lr'")


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (100, 10**6, r"ends at byte 1000100, past the end of its file \(\d+ bytes\)"),
        (0, 200, "not a torch.save archive"),  # the other bytes before it
        (100, 10, "cannot be read"),  # cut: no zip directory in the range
    ],
)
def test_an_item_that_is_not_a_whole_archive_is_refused(
    tmp_path, offset, length, expected
):
    from dlcomp._torchfile import check_torch_item

    with pytest.raises(CheckpointError, match=expected):
        check_torch_item(embedded(archive(tmp_path)), offset, length, "w")
