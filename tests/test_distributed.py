"""Distributed checkpoints: FSDP2 and DDP on 2 CPU processes (gloo), resharding, kills.

The multi-process tests launch ``torchrun --standalone`` with ``python -m
dlcomp.distributed_worker``, or with a short script (bounded by timeouts); a failure
shows the end of their stderr. The page's own ``train.py`` (its ``%%writefile``
cell) is checked to compute bitwise what the worker does. The module prints how
long its tests took.
"""

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import dlcomp
from dlcomp import CheckpointError, DistributedCheckpointManager, consolidate
from dlcomp.distributed_worker import build, full_state

pytestmark = pytest.mark.skipif(
    not dist.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo (POSIX)",
)

TIMES = {}


@pytest.fixture(scope="module", autouse=True)
def report_times(request):
    start = time.perf_counter()
    yield
    total = time.perf_counter() - start
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in TIMES.items())
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\ndistributed tests: {total:.1f} s in all ({parts})")


def run(command, env=None, timeout=180, check=True):
    """Run ``command``; if it fails or hangs, fail with the end of its stderr."""
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr or ""
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        pytest.fail(
            f"{shlex.join(map(str, command))} hung for {timeout} s; its stderr "
            f"ends:\n{stderr[-3000:]}"
        )
    if check:
        assert result.returncode == 0, (
            f"{shlex.join(map(str, command))} exited with {result.returncode}; "
            f"its stderr ends:\n{result.stderr[-3000:]}"
        )
    return result


def torchrun(*args, nproc=2):
    """The command line of ``torchrun --standalone`` (as ``python -m``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *map(str, args)]  # fmt: skip


def worker(directory, *args, nproc=2, torchrun_args=(), timeout=180):
    """Run the training worker on ``nproc`` processes (1: no torchrun)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    module = ["-m", "dlcomp.distributed_worker", str(directory), *map(str, args)]
    if nproc == 1:
        command = [sys.executable, *module]
    else:
        command = torchrun(*torchrun_args, *module, nproc=nproc)
    return run(command, env=env, timeout=timeout)


def assert_same_state(a, b):
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optim"]["state"].keys() == b["optim"]["state"].keys()
    for k, state in a["optim"]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(b["optim"]["state"][k][name])
            ), (k, name)


def load(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("wrap", ["fsdp", "ddp"])
def test_two_process_checkpoint_loads_into_one_and_two_processes(tmp_path, wrap):
    start = time.perf_counter()
    ckpt = tmp_path / "ckpt"
    worker(
        ckpt,
        "--wrap",
        wrap,
        "--steps",
        6,
        "--save-every",
        3,
        "--state-out",
        tmp_path / "ref.pt",
    )
    reference = load(tmp_path / "ref.pt")
    latest = DistributedCheckpointManager(ckpt).latest()
    assert sorted(p.name for p in latest.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "dlcomp.json",
    ]

    # 2 -> 1: a plain model and optimizer in this process, no process group
    model, optimizer = build("none", seed=123)  # other initial values
    manager = DistributedCheckpointManager(ckpt)
    restored = manager.restore(model, optimizer)
    assert (restored.step, restored.world_size) == (6, 2)
    assert_same_state(full_state(model, optimizer), reference)

    # 2 -> 2: the same wrapping in two new processes (trained to step 6: restored only)
    worker(ckpt, "--wrap", wrap, "--steps", 6, "--state-out", tmp_path / "loaded.pt")
    assert_same_state(load(tmp_path / "loaded.pt"), reference)

    # one file of full weights, for a plain model
    from safetensors.torch import load_file

    single = consolidate(latest, tmp_path / "weights.safetensors")
    plain, _ = build("none")
    plain.load_state_dict(load_file(single))
    assert all(
        torch.equal(v, reference["model"][k]) for k, v in plain.state_dict().items()
    )
    TIMES[f"{wrap} 2->1, 2->2"] = time.perf_counter() - start


def test_a_chunk_one_rank_reads_damaged_is_skipped_by_both_ranks(tmp_path):
    """Rank 1 alone reads the flipped chunk; both skip the checkpoint, none hangs."""
    start = time.perf_counter()
    ckpt = tmp_path / "ckpt"
    worker(ckpt, "--steps", 4, "--save-every", 2)
    newest = DistributedCheckpointManager(ckpt).latest()
    manifest = json.loads((newest / "dlcomp.json").read_text())
    (chunk,) = [
        c
        for c in manifest["dcp"]["items"]["model.0.weight"]["chunks"]
        if c["file"] == "__1_0.distcp"
    ]
    part = newest / chunk["file"]
    data = bytearray(part.read_bytes())
    data[chunk["offset"] + chunk["length"] // 2] ^= 0x01
    part.write_bytes(bytes(data))

    resumed = worker(ckpt, "--wrap", "fsdp", "--steps", 4,
                     "--state-out", tmp_path / "resumed.pt")  # fmt: skip
    assert '"resumed_from": 2' in resumed.stdout, resumed.stderr[-3000:]
    skipped = re.findall(
        r"skipping checkpoint step-000000004, .*SHA-256", resumed.stderr
    )
    assert len(skipped) == 2, resumed.stderr[-3000:]  # a warning in each rank
    worker(tmp_path / "reference", "--wrap", "fsdp", "--steps", 4,
           "--state-out", tmp_path / "reference.pt")  # fmt: skip
    assert_same_state(load(tmp_path / "resumed.pt"), load(tmp_path / "reference.pt"))
    TIMES["damaged chunk, 2 ranks"] = time.perf_counter() - start


PAGE = Path(__file__).parents[1] / "docs" / "distributed-checkpoints.md"


def page_script(name):
    """The text of the cell of the distributed page that starts ``%%writefile name``."""
    cells = re.findall(
        r"^```\{code-cell\} ipython3\n%%writefile (\S+)\n(.*?)^```$",
        PAGE.read_text(encoding="utf-8"),
        flags=re.M | re.S,
    )
    scripts = dict(cells)
    assert name in scripts, f"no %%writefile {name} cell in {PAGE.name}"
    return scripts[name]


def test_the_pages_training_script_computes_what_the_worker_does(tmp_path):
    """train.py as the page shows and runs it: the worker of these tests, bitwise."""
    start = time.perf_counter()
    source = page_script("train.py")
    assert "dlcomp._" not in source  # a reader's copy needs public dlcomp only
    script = tmp_path / "train.py"
    script.write_text(source)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run(torchrun(script, tmp_path / "page", "--steps", 6, "--save-every", 3,
                 "--state-out", tmp_path / "page.pt"), env=env)  # fmt: skip
    worker(tmp_path / "worker", "--wrap", "fsdp", "--steps", 6, "--save-every", 3,
           "--state-out", tmp_path / "worker.pt")  # fmt: skip
    assert_same_state(load(tmp_path / "page.pt"), load(tmp_path / "worker.pt"))
    manifests = []
    for run_dir in ("page", "worker"):
        checkpoints = DistributedCheckpointManager(tmp_path / run_dir).checkpoints()
        assert [step for step, _ in checkpoints] == [3, 6]
        manifests.append(json.loads((checkpoints[-1][1] / "dlcomp.json").read_text()))
    assert manifests[0]["extra"]["losses"] == manifests[1]["extra"]["losses"]
    assert len(manifests[0]["extra"]["losses"]) == 6
    TIMES["page's train.py"] = time.perf_counter() - start


def test_one_process_checkpoint_loads_into_two_fsdp_processes(tmp_path):
    start = time.perf_counter()
    ckpt = tmp_path / "ckpt"
    worker(
        ckpt,
        "--steps",
        4,
        "--save-every",
        2,
        "--state-out",
        tmp_path / "ref.pt",
        nproc=1,
    )
    assert DistributedCheckpointManager(ckpt).restore(build("none", 0)[0]).step == 4
    worker(ckpt, "--wrap", "fsdp", "--steps", 4, "--state-out", tmp_path / "loaded.pt")
    assert_same_state(load(tmp_path / "loaded.pt"), load(tmp_path / "ref.pt"))
    TIMES["1->2 fsdp"] = time.perf_counter() - start


def test_fsdp_job_killed_at_random_instants_resumes_bitwise(tmp_path, capsys):
    """SIGKILL one worker of a torchrun job 3 times; torchrun restarts the group."""
    start = time.perf_counter()
    steps, every = 600, 4
    worker(tmp_path / "reference", "--steps", steps, "--save-every", every,
           "--state-out", tmp_path / "reference.pt")  # fmt: skip

    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node=2", "--max-restarts=5",
         "-m", "dlcomp.distributed_worker", str(tmp_path / "ckpt"),
         "--steps", str(steps), "--save-every", str(every), "--pid-dir", str(pids),
         "--state-out", str(tmp_path / "final.pt")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    rng = random.Random(8)
    killed, seen = [], set()
    deadline = time.monotonic() + 120
    while len(killed) < 3 and job.poll() is None and time.monotonic() < deadline:
        rank = rng.randrange(2)
        pid_file = pids / f"rank{rank}"
        # wait for a worker of a new attempt, then a random instant of its run
        pid = 0
        while time.monotonic() < deadline and job.poll() is None:
            pid = int(pid_file.read_text() or 0) if pid_file.exists() else 0
            if pid and pid not in seen:
                break
            time.sleep(0.05)
        if not pid or pid in seen:
            break
        seen |= {int(p.read_text() or 0) for p in pids.iterdir()}
        time.sleep(rng.uniform(0.5, 2.5))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # that attempt already finished: nothing was killed
        killed.append(pid)
        # every complete checkpoint left behind has its manifest
        for _, path in DistributedCheckpointManager(tmp_path / "ckpt").checkpoints():
            assert (path / "dlcomp.json").is_file()
    output, _ = job.communicate(timeout=180)
    assert job.returncode == 0, output[-3000:]
    assert len(killed) == 3, f"only {len(killed)} kills landed"
    final, reference = load(tmp_path / "final.pt"), load(tmp_path / "reference.pt")
    assert_same_state(final, reference)
    assert final["losses"] == reference["losses"]
    TIMES["kill test"] = time.perf_counter() - start
    with capsys.disabled():
        print(f"\ndistributed kill test: torchrun restarted the group after "
              f"{len(killed)} SIGKILLs; final weights and optimizer state bitwise "
              "equal to the uninterrupted run")  # fmt: skip


# A script that ends as a reader's would, its group still referenced (an FSDP
# model's DeviceMesh keeps it). Each process runs on one CPU, and gloo's
# threads only while the main thread waits (SCHED_IDLE): a worker thread then
# lets go of a finished collective's tensors late, as it does now and then on
# a busy machine.
TEARDOWN = """
import os
import sys

import torch
import torch.distributed as dist

import dlcomp

cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpus[int(os.environ["RANK"]) % len(cpus)]})
dlcomp.init_process_group()
for thread in map(int, os.listdir("/proc/self/task")):
    if thread != os.getpid():  # gloo's threads
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
group = dist.group.WORLD  # kept to the end, as a DeviceMesh keeps it
tensor = torch.ones(1000)
dist.broadcast(tensor, src=0)
del tensor
if sys.argv[1] == "dlcomp":
    dlcomp.destroy_process_group()
else:
    dist.barrier()
    dist.destroy_process_group()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize("teardown", ["torch", "dlcomp"])
def test_a_teardown_that_is_safe_at_exit(tmp_path, teardown):
    """barrier + destroy_process_group can abort at exit; dlcomp's teardown cannot."""
    start = time.perf_counter()
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN)
    here = str(Path(dlcomp.__file__).parents[1])  # the script imports this dlcomp
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    if teardown == "dlcomp":
        run(torchrun(script, teardown), env=env)
    else:  # the pitfall: all work done, then SIGABRT (in about 9 runs in 10 here;
        # fewer on a machine busy with other work, hence up to 15 tries)
        for _ in range(15):
            result = run(torchrun(script, teardown), env=env, check=False)
            if result.returncode != 0:
                break
        assert "terminate called without an active exception" in result.stderr, (
            f"plain teardown did not abort in 15 runs (update the docs?); exit code "
            f"{result.returncode}, stderr ends:\n{result.stderr[-3000:]}"
        )
    TIMES[f"{teardown} teardown"] = time.perf_counter() - start


def test_half_written_checkpoints_are_never_chosen(tmp_path):
    manager = DistributedCheckpointManager(tmp_path)
    model = nn.Linear(4, 2)
    manager.save(1, model)
    manager.save(2, model)
    half = tmp_path / "step-000000003"  # the ranks wrote, the manifest never came
    half.mkdir()
    (half / ".metadata").write_bytes(b"")
    (tmp_path / ".staging-step-000000004").mkdir()  # a save that died early
    assert [step for step, _ in manager.checkpoints()] == [1, 2]
    assert manager.restore(nn.Linear(4, 2)).step == 2


def test_another_architecture_is_refused_and_nothing_loaded(tmp_path):
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    target = nn.Sequential(nn.Linear(4, 8))
    before = target[0].weight.detach().clone()
    with (
        pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000001"),
        pytest.raises(CheckpointError, match=r"unexpected keys: 1\.weight, 1\.bias"),
    ):
        manager.restore(target)
    assert torch.equal(target[0].weight, before)
    wider = nn.Sequential(nn.Linear(4, 16), nn.Linear(16, 2))
    with (
        pytest.warns(RuntimeWarning, match="skipping"),
        pytest.raises(
            CheckpointError,
            match=r"0\.weight: \(8, 4\) in the checkpoint, \(16, 4\) in the model",
        ),
    ):
        manager.restore(wider)


def test_optimizer_requested_but_not_saved(tmp_path):
    manager = DistributedCheckpointManager(tmp_path)
    model = nn.Linear(4, 2)
    manager.save(1, model)
    target = nn.Linear(4, 2)
    with (
        pytest.warns(RuntimeWarning, match="skipping"),
        pytest.raises(CheckpointError, match="holds no optimizer state"),
    ):
        manager.restore(target, torch.optim.Adam(target.parameters()))


def test_a_sharded_model_without_a_process_group_is_a_clear_error(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = nn.Sequential(nn.Linear(4, 2))
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    finally:
        dist.destroy_process_group()
    with pytest.raises(RuntimeError, match="without an initialized process group"):
        DistributedCheckpointManager(tmp_path).save(1, model)


def test_extra_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        DistributedCheckpointManager(tmp_path).save(1, nn.Linear(2, 2), when=object())


def test_consolidate_refuses_an_incomplete_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a complete DCP checkpoint"):
        consolidate(tmp_path, tmp_path / "w.pt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--save-every", "0"], "--save-every: --save-every must be an int >= 1"),
        (["--pid-dir", "missing"], "--pid-dir: --pid-dir must be a folder that"),
        (["--state-out", "missing/s.pt"], "argument --state-out: --state-out must be"),
    ],
)
def test_a_bad_option_stops_the_worker_before_it_starts(tmp_path, args, message):
    """A usage error (exit status 2) from ``python -m``, before any process group."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dlcomp.distributed_worker", "ckpt", *args]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, f"stderr ends:\n{result.stderr[-3000:]}"
    assert message in result.stderr, f"stderr ends:\n{result.stderr[-3000:]}"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no checkpoint folder, no pid file
