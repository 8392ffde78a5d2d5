"""Fuzz the checkpoint loaders: damaged and forged files, for a given time.

Run by ``nox -s fuzz -- --minutes N`` and, for about a minute and a half, by
``tests/test_fuzz.py`` in ``nox -s tests``. Each case takes a checkpoint that
loads, damages or forges it (flipped bits, overwritten and inserted bytes,
truncations, changed JSON in the header or the manifest with its hash made
consistent again, zip tricks on older files, damaged files in a run's
directory), and loads it. The promise held, case by case:

- the load raises :class:`dlcomp.CheckpointError` and leaves the model and
  the optimizer exactly as they were, or it loads; a file damaged byte by
  byte (not re-hashed) that loads must load exactly what was saved;
- no case hangs (each has a deadline: ``signal.alarm``);
- no case takes more memory than about the file's size: the process's
  address space is capped, so a load that tries to allocate more fails with
  MemoryError, which is a failure, not a refusal.

Prints one line per target with its case count, and exits 1 with the
falsifying example on the first failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st
from torch import nn

import dlcomp
from dlcomp import (
    CheckpointError,
    CheckpointManager,
    DistributedCheckpointManager,
    load_checkpoint,
)

DEADLINE_S = 20  # per case: generous for a loaded 2-core machine
MEMORY_MARGIN = 512 * 2**20  # the most a case may add to the address space


def model_and_optimizer(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def state_of(model: nn.Module, optimizer: torch.optim.Optimizer) -> object:
    """Everything a load can change, for exact comparisons."""
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        repr(optimizer.state_dict()),
    )


def same_state(a: object, b: object) -> bool:
    (ma, oa), (mb, ob) = a, b  # type: ignore[misc]
    return (
        oa == ob
        and ma.keys() == mb.keys()
        and all(torch.equal(ma[k], mb[k]) for k in ma)
    )


class Targets:
    """The files the cases start from, and what loading them gave."""

    def __init__(self, folder: Path, out: Path) -> None:
        self.folder = folder
        self.out = out
        model, optimizer = model_and_optimizer()
        self.v3 = dlcomp.save_checkpoint(
            folder / "v3.pt",
            model,
            optimizer,
            step=3,
            rng=True,
            losses=[1.5, 0.5],
            tag="run",
        )
        self.v2 = folder / "v2.pt"
        torch.save(
            {
                "format": "dlcomp.checkpoint",
                "version": 2,
                "dlcomp": "0.1.0",
                "step": 3,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "optimizer_class": "torch.optim.adam.Adam",
                "extra": {"losses": [1.5, 0.5]},
            },
            self.v2,
        )
        self.expected = {}
        for name, path in (("v3", self.v3), ("v2", self.v2)):
            target, target_optimizer = model_and_optimizer(seed=1)
            load_checkpoint(path, target, target_optimizer, rng=False)
            self.expected[name] = state_of(target, target_optimizer)
        self.dcp = DistributedCheckpointManager(folder / "dcp").save(
            3, model, optimizer, losses=[1.5, 0.5]
        )
        self.dcp_files = {p.name: p.read_bytes() for p in sorted(self.dcp.iterdir())}
        target, target_optimizer = model_and_optimizer(seed=1)
        DistributedCheckpointManager(folder / "dcp").restore(target, target_optimizer)
        self.expected["dcp"] = state_of(target, target_optimizer)
        self.case = 0

    def path(self) -> Path:
        self.case += 1
        return self.folder / f"case-{self.case % 8}.pt"


class Failure(Exception):
    pass


class Files:
    """A DCP checkpoint's files, shown by their names and sizes."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def __repr__(self) -> str:
        return ", ".join(f"{n}: {len(d)} bytes" for n, d in self.files.items())


class Content:
    """A case's file content, shown by its size and hash (the bytes go to a file)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        digest = hashlib.sha256(self.data).hexdigest()[:16]
        return f"<{len(self.data)} bytes, sha256 {digest}>"


def _timeout(signum: int, frame: object) -> None:
    raise Failure(f"a case ran longer than {DEADLINE_S} s (a hang)")


def load(targets: Targets, path: Path, original: str, *, damaged_only: bool) -> str:
    """Load ``path`` into a fresh model: 'refused' or 'loaded', or raise Failure."""
    model, optimizer = model_and_optimizer(seed=1)
    before = state_of(model, optimizer)
    signal.alarm(DEADLINE_S)
    try:
        load_checkpoint(path, model, optimizer, rng=False)
    except CheckpointError:
        if not same_state(state_of(model, optimizer), before):
            raise Failure("a refused load changed the model or the optimizer") from None
        return "refused"
    except MemoryError:
        raise Failure(
            "a load tried to allocate far more than the file's size"
        ) from None
    except Failure:
        raise
    except Exception as error:
        raise Failure(
            f"a load raised {type(error).__name__}, not CheckpointError"
        ) from error
    finally:
        signal.alarm(0)
    if damaged_only and not same_state(
        state_of(model, optimizer), targets.expected[original]
    ):
        raise Failure("a damaged file loaded different values without an error")
    return "loaded"


# --- mutations -------------------------------------------------------------------


@st.composite
def byte_damage(draw: st.DrawFn, data: bytes) -> bytes:
    """Flipped bits, overwritten or inserted bytes, or a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "write", "insert", "truncate", "delete"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "write" and out:
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "truncate":
            del out[at:]
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 16))]
    return bytes(out)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["$tensor", "$tuple", "$dict", "model/0.weight", "F32", "BOOL"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["$tensor", "$tuple", "$dict", "$float", "$dtype", "$device", "x", "0"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(value: object, path: tuple, new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    value[head] = _set(value[head], rest, new)  # type: ignore[index]
    return value


@st.composite
def forged_v3(draw: st.DrawFn, data: bytes) -> bytes:
    """The header or the manifest changed at one place, the manifest re-hashed."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    manifest = json.loads(header["__metadata__"]["manifest"])
    where = draw(st.sampled_from(["header", "manifest"]))
    tree = header if where == "header" else manifest
    paths = _paths(tree)
    path = draw(st.sampled_from(paths[1:]))
    _set(tree, path, draw(JSON_VALUES))
    text = json.dumps(manifest, separators=(",", ":"))
    if isinstance(header.get("__metadata__"), dict):
        header["__metadata__"]["manifest"] = text
        header["__metadata__"]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + length :]


@st.composite
def zip_trick(draw: st.DrawFn, data: bytes) -> bytes:
    """An older (torch.save) file rewritten: a deflated record, two directories..."""
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as archive:
        records = {i.filename: archive.read(i) for i in archive.infolist()}
    names = sorted(records)
    buffer = __import__("io").BytesIO()
    trick = draw(
        st.sampled_from(["deflate one", "append directory", "duplicate", "bomb"])
    )
    victim = draw(st.sampled_from(names))
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted
        for name in names:
            method = (
                zipfile.ZIP_DEFLATED
                if trick == "deflate one" and name == victim
                else zipfile.ZIP_STORED
            )
            content = records[name]
            if trick == "bomb" and name == victim:
                content = bytes(min(len(content) * 1000, 64 * 2**20))
                method = zipfile.ZIP_DEFLATED
            archive.writestr(name, content, compress_type=method)
        if trick == "duplicate":
            archive.writestr(victim, records[victim][::-1])
    out = buffer.getvalue()
    if trick == "append directory":  # a second archive after the first
        out = data + out
    return out


# --- the run ------------------------------------------------------------------


def restore_dcp(
    targets: Targets, files: dict[str, bytes], *, damaged_only: bool
) -> str:
    """Restore a DCP directory made of ``files``: 'refused' or 'loaded', or Failure."""
    directory = Path(tempfile.mkdtemp(dir=targets.folder))
    step = directory / targets.dcp.name
    step.mkdir()
    for name, data in files.items():
        (step / name).write_bytes(data)
    model, optimizer = model_and_optimizer(seed=1)
    before = state_of(model, optimizer)
    signal.alarm(DEADLINE_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "skipping checkpoint"
            info = DistributedCheckpointManager(directory).restore(model, optimizer)
    except CheckpointError:
        if not same_state(state_of(model, optimizer), before):
            raise Failure(
                "a refused restore changed the model or the optimizer"
            ) from None
        return "refused"
    except MemoryError:
        raise Failure("a restore tried to allocate far more than the files") from None
    except Failure:
        raise
    except Exception as error:
        raise Failure(f"a restore raised {type(error).__name__}") from error
    finally:
        signal.alarm(0)
        shutil.rmtree(directory, ignore_errors=True)
    if info is None:
        raise Failure("a restore of a checkpoint directory returned None")
    if damaged_only and not same_state(
        state_of(model, optimizer), targets.expected["dcp"]
    ):
        raise Failure("a damaged DCP checkpoint restored different values")
    return "loaded"


@st.composite
def dcp_damage(draw: st.DrawFn, files: dict[str, bytes]) -> dict[str, bytes]:
    """One file of a DCP checkpoint damaged byte by byte, or its manifest forged."""
    name = draw(st.sampled_from(sorted(files)))
    out = dict(files)
    if name.endswith(".json") and draw(st.booleans()):
        manifest = json.loads(files[name])
        paths = _paths(manifest)
        if len(paths) > 1:
            _set(manifest, draw(st.sampled_from(paths[1:])), draw(JSON_VALUES))
        out[name] = json.dumps(manifest).encode()
        return out
    out[name] = draw(byte_damage(files[name]))
    return out


def fuzz(targets: Targets, seconds: float, seed: int) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    stop = time.monotonic() + seconds
    v3, v2 = targets.v3.read_bytes(), targets.v2.read_bytes()

    def record(name: str, outcome: str) -> None:
        counts.setdefault(name, {"refused": 0, "loaded": 0})[outcome] += 1

    def case(
        name: str, original: str, strategy: st.SearchStrategy[bytes], damaged_only: bool
    ) -> None:
        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=False,
            verbosity=Verbosity.quiet,  # the falsifying file is kept, not printed
            print_blob=False,
        )
        @given(strategy.map(Content))
        def run(content: Content) -> None:
            path = targets.path()
            path.write_bytes(content.data)
            try:
                record(name, load(targets, path, original, damaged_only=damaged_only))
            except Failure:
                digest = hashlib.sha256(content.data).hexdigest()[:16]
                kept = targets.out / f"fuzz-failure-{digest}.bin"
                kept.write_bytes(content.data)
                print(f"{name}: the falsifying file is {kept}", file=sys.stderr)
                raise

        run()

    def dcp_case() -> None:
        @settings(
            max_examples=100,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        @given(dcp_damage(targets.dcp_files).map(Files))
        def run(files: Files) -> None:
            damaged = any(
                not name.endswith(".json") and data != targets.dcp_files.get(name)
                for name, data in files.files.items()
            )
            try:
                outcome = restore_dcp(targets, files.files, damaged_only=damaged)
                record("DistributedCheckpointManager.restore", outcome)
            except Failure:
                kept = targets.out / "fuzz-failure-dcp"
                kept.mkdir(parents=True, exist_ok=True)
                for name, data in files.files.items():
                    (kept / name).write_bytes(data)
                print(f"dcp: the falsifying directory is {kept}", file=sys.stderr)
                raise

        run()

    def manager_case(rng: random.Random) -> None:
        """A run's directory whose newest files are damaged: restore finds one."""
        directory = Path(tempfile.mkdtemp(dir=targets.folder))
        manager = CheckpointManager(directory, keep=5)
        good = manager.path_for(1)
        good.write_bytes(v3)
        for step in (2, 3):
            data = bytearray(v3)
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            manager.path_for(step).write_bytes(bytes(data))
        model, optimizer = model_and_optimizer(seed=1)
        signal.alarm(DEADLINE_S)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                info = manager.restore(model, optimizer)
        finally:
            signal.alarm(0)
        if info is None or info.step not in (1, 2, 3):
            raise Failure(f"restore returned {info}")
        if not same_state(state_of(model, optimizer), targets.expected["v3"]):
            raise Failure("restore loaded values other than a checkpoint's")
        record("CheckpointManager.restore", "loaded")

    rng = random.Random(seed)
    while time.monotonic() < stop:
        case("v3, damaged bytes", "v3", byte_damage(v3), damaged_only=True)
        case("v3, forged JSON", "v3", forged_v3(v3), damaged_only=False)
        case("v2, damaged bytes", "v2", byte_damage(v2), damaged_only=True)
        case("v2, zip tricks", "v2", zip_trick(v2), damaged_only=True)
        dcp_case()
        for _ in range(20):
            manager_case(rng)
    return counts


def cap_memory() -> None:
    """Cap the address space at its current size plus MEMORY_MARGIN."""
    with open("/proc/self/status") as status:
        size_kib = next(
            int(line.split()[1]) for line in status if line.startswith("VmSize:")
        )
    limit = size_kib * 1024 + MEMORY_MARGIN
    resource.setrlimit(
        resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.5, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=0, help="seeds the directory cases")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="where a falsifying file is kept"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _timeout)
    with tempfile.TemporaryDirectory() as folder:
        targets = Targets(Path(folder), args.out)
        cap_memory()
        start = time.monotonic()
        try:
            counts = fuzz(targets, args.minutes * 60, args.seed)
        except Exception:
            traceback.print_exc()
            print("FAILED: a case broke the promise (the falsifying example is above)")
            return 1
    total = sum(sum(c.values()) for c in counts.values())
    print(
        f"fuzz: {total} cases in {time.monotonic() - start:.0f} s, "
        "none broke the promise"
    )
    for name, count in counts.items():
        print(f"  {name}: {count['refused']} refused, {count['loaded']} loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
