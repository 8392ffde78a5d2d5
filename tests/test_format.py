"""dlcomp._format: the version-3 checkpoint file, and ways to damage or forge it."""

import hashlib
import io
import math
import struct
import threading

import pytest
import torch
from checkpoint_files import edit_manifest, join, rewrite, split
from torch import nn

from dlcomp import (
    CheckpointError,
    CheckpointManager,
    _format,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from dlcomp._format import read


def small_checkpoint(path):
    """A checkpoint of a tiny model with SGD momentum state and a few extras."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    save_checkpoint(path, model, optimizer, step=3, loss=0.5, tag="run")
    return path


def equal(a, b) -> bool:
    """Deep equality of decoded checkpoint fields, tensors compared bitwise."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(  # bitwise: NaN payloads and -0.0 included
                a.reshape(-1).view(torch.uint8) if a.numel() else a,
                b.reshape(-1).view(torch.uint8) if b.numel() else b,
            )
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and list(a) == list(b)
            and all(equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(equal, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def test_every_single_bit_flip_is_refused_or_changes_nothing(tmp_path):
    """D1: no flipped bit anywhere in the file loads as different values."""
    path = small_checkpoint(tmp_path / "c.pt")
    original = read(path)
    data = path.read_bytes()
    flipped = tmp_path / "flipped.pt"
    outcomes = {"refused": 0, "same": 0}
    for byte in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[byte] ^= 1 << bit
            flipped.write_bytes(damaged)
            try:
                fields = read(flipped)
            except CheckpointError:
                outcomes["refused"] += 1
                continue
            assert equal(fields, original), f"bit {bit} of byte {byte} loads silently"
            outcomes["same"] += 1
    # Only flips inside the header's padding could leave the values the same,
    # and dlcomp's header has no room for them: every flip is refused.
    assert outcomes == {"refused": 8 * len(data), "same": 0}


def test_a_round_trip_keeps_every_dtype_and_value(tmp_path):
    tensors = {
        str(dtype): torch.arange(6).reshape(2, 3).to(dtype)
        for dtype in (
            torch.float32, torch.float64, torch.float16, torch.bfloat16,
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
            torch.bool, torch.complex64,
        )
    }  # fmt: skip
    extra = {
        "tensors": tensors,
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
        "transposed": torch.arange(6.0).reshape(2, 3).t(),
        "numbers": [0, -1, 2**63, 1e-300, -0.0, float("inf"), float("nan")],
        "tuple": (1, (2, 3)),
        "int keys": {1: "a", 2: "b"},
        "dollar keys": {"$tensor": "not a reference"},
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "nothing": None,
    }
    save_checkpoint(tmp_path / "c.pt", nn.Linear(1, 1), step=0, **extra)
    assert equal(read_checkpoint(tmp_path / "c.pt").extra, extra)


def test_tied_tensors_are_stored_once_and_stay_tied(tmp_path):
    from dlcomp import tied_mlp

    net = tied_mlp()
    save_checkpoint(tmp_path / "c.pt", net, step=0)
    _, manifest, _ = split(tmp_path / "c.pt")
    model = read_checkpoint(tmp_path / "c.pt").model
    assert model["2.weight"] is model["4.weight"]
    assert len(manifest["tensors"]) == len(net.state_dict()) - 2


def test_the_file_is_a_safetensors_file_with_no_pickle(tmp_path):
    from safetensors.torch import load_file

    net = nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "c.pt", net, step=1)
    tensors = load_file(path)
    assert torch.equal(tensors["model/weight"], net.weight)
    assert b"\x80\x02" not in path.read_bytes()[:16]  # no pickle protocol header


# --- D4: what save writes, load reads --------------------------------------------


class Tagged(torch.Tensor):
    pass


class ExtraObject(nn.Module):
    def __init__(self, state):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.state = state

    def get_extra_state(self):
        return self.state

    def set_extra_state(self, state):
        self.state = state


def test_a_tensor_subclass_is_refused_at_save_not_at_load(tmp_path):
    with pytest.raises(TypeError, match=r"extra\['w'\] is a .*Tagged, a subclass"):
        save_checkpoint(
            tmp_path / "c.pt",
            nn.Linear(2, 2),
            step=0,
            w=torch.ones(2).as_subclass(Tagged),
        )
    net = nn.Linear(2, 2)
    net.register_buffer("tagged", torch.ones(2).as_subclass(Tagged))
    with pytest.raises(TypeError, match=r"model\['tagged'\] is a .*Tagged"):
        save_checkpoint(tmp_path / "c.pt", net, step=0)
    assert not (tmp_path / "c.pt").exists()


def test_extra_state_that_is_not_plain_is_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"_extra_state'\] is a builtins.object"):
        save_checkpoint(tmp_path / "c.pt", ExtraObject(object()), step=0)
    save_checkpoint(
        tmp_path / "c.pt", ExtraObject({"calls": 3, "w": torch.ones(2)}), step=0
    )
    target = ExtraObject(None)
    load_checkpoint(tmp_path / "c.pt", target)
    assert target.state["calls"] == 3
    assert torch.equal(target.state["w"], torch.ones(2))


def test_a_model_on_the_meta_device_is_refused_at_save(tmp_path):
    with torch.device("meta"):
        net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"model\['weight'\] is on the meta device"):
        save_checkpoint(tmp_path / "c.pt", net, step=0)
    assert not (tmp_path / "c.pt").exists()


def test_shared_references_cannot_blow_up_a_save():
    """D3 at save: a DAG of shared tuples would encode to 2**40 values."""
    t = ()
    for _ in range(40):
        t = (t, t)
    with pytest.raises(TypeError, match="more than 10000000 values"):
        save_checkpoint("/nonexistent/never-written.pt", nn.Linear(1, 1), step=0, t=t)


# --- D10: expanded views ------------------------------------------------------


@pytest.mark.parametrize("background", [False, True])
def test_an_expanded_buffer_is_stored_as_the_memory_it_covers(tmp_path, background):
    net = nn.Linear(2, 2)
    net.register_buffer("ones", torch.ones(1).expand(2**28))  # 1 GiB if densified
    manager = CheckpointManager(tmp_path, background=background)
    path = manager.save(1, net)
    manager.wait()
    assert path.stat().st_size < 64 * 1024
    ones = read_checkpoint(path).model["ones"]
    assert ones.shape == (2**28,)
    assert ones.stride() == (0,)
    assert bool(ones[-1] == 1)


# --- D18: random number generators ----------------------------------------------


def dropout_run(directory, steps, *, rng=True, stop_at=None):
    """Train a model with dropout, checkpointing every step; stop early if asked."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    manager = CheckpointManager(directory, rng=rng)
    restored = manager.restore(model, optimizer)
    start = restored.step if restored else 0
    X = torch.linspace(-1, 1, 64).reshape(8, 8)
    for step in range(start, steps if stop_at is None else stop_at):
        optimizer.zero_grad()
        model(X).pow(2).mean().backward()
        optimizer.step()
        manager.save(step + 1, model, optimizer)
    return model


def test_a_run_with_dropout_resumes_bitwise_with_the_rng_states(tmp_path):
    whole = dropout_run(tmp_path / "whole", 6)
    dropout_run(tmp_path / "split", 6, stop_at=3)
    torch.manual_seed(12345)  # the restarted process's generator is somewhere else
    resumed = dropout_run(tmp_path / "split", 6)
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_without_the_rng_states_a_run_with_dropout_does_not_resume_bitwise(tmp_path):
    whole = dropout_run(tmp_path / "whole", 6, rng=False)
    dropout_run(tmp_path / "split", 6, rng=False, stop_at=3)
    torch.manual_seed(12345)
    resumed = dropout_run(tmp_path / "split", 6, rng=False)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(whole.parameters(), resumed.parameters(), strict=True)
    )


def test_rng_states_of_the_wrong_size_are_refused_before_anything_is_loaded(tmp_path):
    net = nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "c.pt", net, step=1, rng=True)

    def shrink(manifest):
        manifest["rng"]["cpu"] = {"$tensor": "model/bias"}

    edit_manifest(path, shrink)
    target = nn.Linear(2, 2)
    before = target.weight.clone()
    state = torch.get_rng_state()
    with pytest.raises(CheckpointError, match="random number generator state"):
        load_checkpoint(path, target)
    assert torch.equal(target.weight, before)
    assert torch.equal(torch.get_rng_state(), state)


# --- forged files: consistent hashes, hostile content ----------------------------


def raw_file(path, text: bytes, data: bytes = b"") -> None:
    """A file whose header is ``text`` (padded), followed by ``data``."""
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def base_header(tmp_path):
    header, manifest, data = split(small_checkpoint(tmp_path / "good.pt"))
    return header, manifest, data


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("header of 2**60 bytes", "declares a header of"),
        ("shape beyond the data", "does not fit its dtype and shape"),
        ("offsets past the end", "does not fit its dtype and shape"),
        ("a gap between tensors", "does not start where the previous one ends"),
        ("bytes after the last tensor", "cover .* bytes of data, and the file holds"),
        ("a duplicate key", "the key .* twice"),
        ("NaN in the header", "NaN is not JSON"),
        ("nested 100000 deep", "not valid JSON|nested"),
        ("manifest hash", "does not match its SHA-256"),
        ("tensor bytes", "do not match their SHA-256"),
        ("unknown dtype", "unknown dtype"),
        ("view past the bytes", "view reaches past"),
        ("reference to no tensor", "a tensor the file does not hold"),
        ("unknown tag", "an object with the keys"),
        ("bools that are not 0 or 1", "bools that are not 0 or 1"),
    ],
)
def test_a_forged_file_is_refused_before_it_allocates(tmp_path, case, message):
    header, manifest, data = base_header(tmp_path)
    path = tmp_path / "forged.pt"
    first = next(k for k in header if k != "__metadata__")
    if case == "header of 2**60 bytes":
        path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    elif case == "shape beyond the data":
        header[first]["shape"] = [2**20, 2**20]
        manifest["tensors"][first]["shape"] = [2**20, 2**20]
        join(path, header, manifest, data)
    elif case == "offsets past the end":
        header[first]["data_offsets"][1] += 2**40
        join(path, header, manifest, data)
    elif case == "a gap between tensors":
        second = list(header)[2]
        header[second]["data_offsets"] = [o + 8 for o in header[second]["data_offsets"]]
        join(path, header, manifest, data)
    elif case == "bytes after the last tensor":
        join(path, header, manifest, data + b"\0" * 8)
    elif case == "a duplicate key":
        raw_file(path, b'{"x":1,"x":2}')
    elif case == "NaN in the header":
        raw_file(path, b'{"n":NaN}')
    elif case == "nested 100000 deep":
        raw_file(path, b"[" * 100000 + b"]" * 100000)
    elif case == "manifest hash":
        join(path, header, manifest, data)
        raw = path.read_bytes()
        path.write_bytes(raw.replace(b'\\"step\\":3', b'\\"step\\":2', 1))
    elif case == "tensor bytes":
        join(path, header, manifest, data[:-1] + bytes([data[-1] ^ 1]))
    elif case == "unknown dtype":
        header[first]["dtype"] = "F128"
        join(path, header, manifest, data)
    elif case == "view past the bytes":
        bias = list(header)[2]  # a 1-D tensor, as a stored view is
        manifest["tensors"][bias]["view"] = {"shape": [4, 4], "stride": [100, 1]}
        join(path, header, manifest, data)
    elif case == "reference to no tensor":
        manifest["extra"]["loss"] = {"$tensor": "elsewhere"}
        join(path, header, manifest, data)
    elif case == "unknown tag":
        manifest["extra"]["loss"] = {"$pickle": "cos\nsystem\n"}
        join(path, header, manifest, data)
    elif case == "bools that are not 0 or 1":
        header = {
            "__metadata__": header["__metadata__"],
            "b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]},
        }
        manifest["tensors"] = {
            "b": {
                "dtype": "BOOL",
                "shape": [2],
                "sha256": hashlib.sha256(b"\x00\x07").hexdigest(),
            }
        }
        manifest["model"] = {}
        manifest["optimizer"] = None
        join(path, header, manifest, b"\x00\x07")
    with pytest.raises(CheckpointError, match=message):
        read(path)


def test_a_forged_but_consistent_file_cannot_change_the_model_on_refusal(tmp_path):
    path = small_checkpoint(tmp_path / "c.pt")
    edit_manifest(path, lambda m: m["model"].update(bias="not a tensor"))
    target = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="bias: not a tensor in the checkpoint"):
        load_checkpoint(path, target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


# --- a review's findings: each test failed before its fix -------------------------


def test_a_header_that_would_take_far_more_memory_than_the_file_is_refused(tmp_path):
    """8 MB of empty lists would take about 200 MB of Python objects to parse."""
    path = tmp_path / "lists.pt"
    raw_file(path, b'{"a":[' + b"[]," * 2_700_000 + b"[]]}")
    with pytest.raises(CheckpointError, match=r"would take about \d+ MiB of memory"):
        read(path)


def test_a_long_loss_history_still_loads(tmp_path):
    losses = [1.0 / (i + 1) for i in range(10**6)]  # 19 MB of JSON, 1 MB of weights
    save_checkpoint(tmp_path / "c.pt", nn.Linear(500, 500), step=1, losses=losses)
    assert read_checkpoint(tmp_path / "c.pt").extra["losses"] == losses


def forged_view(tmp_path, view):
    """A consistent file whose extra 'x' is a one-element tensor seen as ``view``."""
    path = save_checkpoint(tmp_path / "c.pt", nn.Linear(1, 1), step=1, x=torch.ones(1))
    edit_manifest(path, lambda m: m["tensors"]["extra/x"].update(view=view))
    return path


def test_a_stored_view_stays_a_view_on_another_device(tmp_path):
    """Copying the view would make it dense: 512 MiB from a 1 KB file."""
    path = forged_view(tmp_path, {"shape": [2**27], "stride": [0]})
    x = read_checkpoint(path, map_location="meta").extra["x"]
    assert (x.device.type, x.shape, x.stride()) == ("meta", (2**27,), (0,))


def test_a_view_with_too_many_elements_is_a_checkpoint_error(tmp_path):
    path = forged_view(tmp_path, {"shape": [2**32] * 3, "stride": [0] * 3})
    with pytest.raises(CheckpointError, match="more elements than torch allows"):
        read_checkpoint(path)


def test_an_rng_state_torch_refuses_changes_nothing(tmp_path):
    net = nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "c.pt", net, step=1, rng=True)
    rewrite(path, lambda f: f["rng"].update(cpu=torch.zeros(5056, dtype=torch.uint8)))
    target = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = torch.get_rng_state()
    with pytest.raises(CheckpointError, match="mt19937"):
        load_checkpoint(path, target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    assert torch.equal(torch.get_rng_state(), state)


def test_an_expanded_optimizer_state_is_refused(tmp_path):
    net = nn.Linear(2, 2)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 2)).sum().backward()
    sgd.step()
    path = save_checkpoint(tmp_path / "c.pt", net, sgd, step=1)

    def expand(fields):
        fields["optimizer"]["state"][1]["momentum_buffer"] = torch.ones(1).expand(2)

    rewrite(path, expand)
    target = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="share memory"):
        load_checkpoint(
            path, target, torch.optim.SGD(target.parameters(), momentum=0.9)
        )


def test_numpy_bools_are_stored_as_python_bools(tmp_path):
    np = pytest.importorskip("numpy")
    save_checkpoint(tmp_path / "c.pt", nn.Linear(1, 1), step=1, done=np.bool_(True))
    done = read_checkpoint(tmp_path / "c.pt").extra["done"]
    assert done is True


def test_an_optimizer_state_entry_that_is_not_a_dict_is_a_checkpoint_error(tmp_path):
    """Found by the fuzzer: None as a parameter's state raised AttributeError."""
    net = nn.Linear(2, 2)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 2)).sum().backward()
    sgd.step()
    path = save_checkpoint(tmp_path / "c.pt", net, sgd, step=1)
    rewrite(path, lambda fields: fields["optimizer"]["state"].update({0: None}))
    target = nn.Linear(2, 2)
    with pytest.raises(CheckpointError):
        load_checkpoint(
            path, target, torch.optim.SGD(target.parameters(), momentum=0.9)
        )


# --- streaming: tensors hashed while they are written and read -----------------


def encoded_checkpoint():
    """A checkpoint of a small model with SGD momentum state, encoded for writing."""
    torch.manual_seed(0)
    model = nn.Linear(64, 48)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 64)).sum().backward()
    optimizer.step()
    return _format.encode_checkpoint(
        step=3,
        model=model.state_dict(),
        model_metadata=None,
        optimizer=optimizer.state_dict(),
        optimizer_class="torch.optim.sgd.SGD",
        extra={"loss": 0.5, "ones": torch.ones(3)},
        rng=None,
        version="test",
    )


class Pipe(io.RawIOBase):
    """A file that can be written and cannot seek (a pipe, a socket)."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += bytes(b)
        return len(b)


def test_a_file_hashed_while_written_is_the_file_hashed_first(tmp_path, monkeypatch):
    """Large files are hashed beside the writes, under a header patched in place."""
    monkeypatch.setattr(_format, "_PARALLEL", 0)  # every file is "large"
    encoded = encoded_checkpoint()
    pipe = Pipe()
    _format.write(pipe, encoded)  # cannot seek: hashes first, then writes
    path = tmp_path / "c.pt"
    with open(path, "wb") as file:
        _format.write(file, encoded)
    assert path.read_bytes() == bytes(pipe.data)
    assert read(path)["step"] == 3


def test_a_tensor_read_in_many_chunks_is_verified_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(_format, "_CHUNK", 4)  # each tensor read 4 bytes at a time
    path = small_checkpoint(tmp_path / "c.pt")
    original = read(path)
    with monkeypatch.context() as m:
        m.setattr(_format, "_CHUNK", 2**22)
        assert equal(read(path), original)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the last byte of the last tensor, in its last chunk
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="do not match their SHA-256"):
        read(path)


def test_a_read_that_fails_midway_leaves_no_thread_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(_format, "_CHUNK", 4)
    data = small_checkpoint(tmp_path / "c.pt").read_bytes()
    header = _format.read_header(io.BytesIO(data), len(data), "c", canonical=True)
    manifest = _format._checked_manifest(header, "c")
    shrunk = io.BytesIO(data[:-20])  # the file shrank after its header was checked
    shrunk.seek(header.data_start)
    threads = threading.active_count()
    with pytest.raises(CheckpointError, match="ends early"):
        _format._read_verified(shrunk, header, manifest, "c")
    assert threading.active_count() == threads
