"""``python -m dlcomp info`` and ``bench --quick`` end to end; the results schema."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import dlcomp.__main__
import dlcomp._cli
import dlcomp.bench
from dlcomp import try_all_gpus
from dlcomp.bench import check_results, load_results


def check_run(command, *, status=0, cwd=None):
    """Run ``command``; assert it exits with ``status``, showing its stderr if not."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    returncode = result.returncode  # (pytest would print the whole result)
    assert returncode == status, (
        f"{command} exited with {returncode}, expected {status}; "
        f"the end of its stderr:\n{result.stderr[-2000:]}"
    )
    return result


def run(*args, status=0, cwd=None):
    """``python -m dlcomp *args``, checked by :func:`check_run`."""
    return check_run([sys.executable, "-m", "dlcomp", *args], status=status, cwd=cwd)


def test_a_failed_child_shows_the_end_of_its_stderr():
    child = "import sys; sys.stderr.write('x' * 5000 + 'the cause'); sys.exit(3)"
    with pytest.raises(AssertionError, match="exited with 3, expected 0") as info:
        check_run([sys.executable, "-c", child])
    message = str(info.value)
    assert "the cause" in message
    assert "x" * 2100 not in message  # the tail, not all of it


def test_info_prints_devices_and_versions():
    out = run("info").stdout
    assert out.splitlines()[0].split() == ["device", "name", "memory", "capability"]
    assert f"torch {torch.__version__}" in out


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    start = time.perf_counter()
    result = run("bench", "--quick", "--device", "cpu", "--out", str(out))
    result.seconds = time.perf_counter() - start
    return out, result


def test_bench_quick_takes_seconds_not_minutes(bench_run):
    _, result = bench_run
    # about 5 s on a 2-core machine under load; a minute means --quick is not quick
    assert result.seconds < 60, f"bench --quick took {result.seconds:.0f} s"


def test_bench_writes_json_plots_and_a_summary(bench_run):
    out, result = bench_run
    (path,) = out.glob("bench-cpu-*.json")
    data = check_results(json.loads(path.read_text()))
    assert data["machine"]["torch"] == torch.__version__
    assert data["settings"]["quick"] is True
    assert list(data["results"]) == ["cpu"]
    assert {p.name for p in out.glob("*.png")} == {
        "matmul.png",
        "copy.png",
        "logging.png",
        "sync.png",
    }
    assert "GFLOP/s" in result.stdout
    assert "GB/s host->host, pageable, 8 MiB" in result.stdout  # copy bandwidth
    assert "timer check    ours / torch.utils.benchmark.Timer = " in result.stdout
    assert ("the two timers agree" in result.stdout) or (
        "longer; two timers of the same product should agree" in result.stdout
    )
    assert "sync check     n=256" in result.stdout
    # a verdict on the noise, either way
    assert ("noise:          quiet run" in result.stdout) is (
        "WARNING: a noisy run" not in result.stdout
    )
    assert "7/7" in result.stderr  # the progress bar reached the end


def test_bench_records_why_it_skipped_the_two_device_measurement(bench_run):
    out, result = bench_run
    (path,) = out.glob("bench-cpu-*.json")
    two = json.loads(path.read_text())["two_devices"]
    if len(try_all_gpus()) >= 2 and try_all_gpus()[0].type != "cpu":
        assert set(two) == {"sequential", "concurrent", "speedup"}
    else:  # MeasurementSkipped, caught: the reason, in the JSON and the summary
        assert two == {"skipped": two["skipped"]}
        assert two["skipped"].startswith("needs two accelerators, this machine has ")
        assert f"two devices:    {two['skipped']}" in result.stdout


def test_recorded_results_load_and_bad_files_are_skipped(bench_run, tmp_path, capsys):
    out, _ = bench_run
    (tmp_path / "good.json").write_text(next(out.glob("*.json")).read_text())
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "something else"}))
    (tmp_path / "broken.json").write_text("{")
    assert len(load_results(tmp_path)) == 1
    assert "skipping bad.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("machine"), "missing machine"),
        (lambda d: d.update(schema="v0"), "schema 'v0'"),
        (lambda d: d["results"]["cpu"].pop("matmul"), r"results\['cpu'\] lacks matmul"),
        (lambda d: d.update(results=[]), "results is a list, not a dict"),
        (lambda d: d["results"]["cpu"].pop("sync"), r"results\['cpu'\] lacks sync"),
        (
            lambda d: d["results"]["cpu"]["sync"][0]["unsynchronized"].pop("times"),
            r"results\['cpu'\]\.sync has a malformed row",
        ),
        (lambda d: d.update(schema="dlcomp.bench/1"), "expected 'dlcomp.bench/2'"),
    ],
)
def test_schema_violations_are_listed(bench_run, mutate, message):
    out, _ = bench_run
    data = json.loads(next(out.glob("*.json")).read_text())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        check_results(data)


# --- usage errors, found before measuring ------------------------------------


def assert_usage_error(result, *phrases):
    """Exit status 2, an argparse-style message with ``phrases``, no traceback."""
    assert "usage: python -m dlcomp bench" in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "matmul on" not in result.stderr  # the progress bar never started


class Refused:
    """What ``main(argv)`` wrote to stderr when it refused its arguments."""

    def __init__(self, args, capsys):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            dlcomp.__main__.main(args)
        self.status = info.value.code
        self.stderr = capsys.readouterr().err
        assert self.status == 2, f"exited with {self.status}:\n{self.stderr}"


# The usage errors run main(argv) in this process: the same code that
# `python -m dlcomp` runs (the end-to-end runs above start one each).


def test_out_is_an_existing_file(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text("{}")
    result = Refused(["bench", "--quick", "--device", "cpu", "--out", str(out)], capsys)
    assert_usage_error(result, f"argument --out: {out} is a file, not a folder")
    assert out.read_text() == "{}"


def test_out_is_inside_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "results"
    result = Refused(["bench", "--quick", "--device", "cpu", "--out", str(out)], capsys)
    assert_usage_error(
        result, f"argument --out: cannot create {out}: {tmp_path / 'file'} is a file"
    )


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root may write in any folder: a read-only folder proves nothing",
)
def test_out_is_not_writable(tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        args = ["bench", "--quick", "--device", "cpu", "--out", str(tmp_path)]
        result = Refused(args, capsys)
    finally:
        tmp_path.chmod(0o700)
    assert_usage_error(result, f"argument --out: cannot write in {tmp_path}")


def test_out_is_not_writable_as_root_too(monkeypatch, capsys, tmp_path):
    """The same check where root runs the tests: the probe file is refused."""

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dlcomp._cli.tempfile, "TemporaryFile", refuse)
    with pytest.raises(SystemExit) as info:
        dlcomp.__main__.main(["bench", "--device", "cpu", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: argument --out: cannot write in {tmp_path}: Permission denied\n"
    )


def test_device_that_does_not_exist(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", "--quick", "--device", "nonsense", "--out", str(out)]
    result = Refused(args, capsys)
    assert_usage_error(
        result,
        "argument --device: cannot measure on 'nonsense': not a device name",
        "the devices here are",
    )
    assert not out.exists()  # checked before anything was written


def test_accelerator_that_is_not_here(tmp_path, capsys):
    # Without CUDA, "cuda" is not here; with it, a 100th device is not.
    name = "cuda:99" if torch.cuda.is_available() else "cuda"
    args = ["bench", "--quick", "--device", name, "--out", str(tmp_path)]
    result = Refused(args, capsys)
    here = ", ".join([str(d) for d in try_all_gpus() if d.type != "cpu"] + ["cpu"])
    assert_usage_error(
        result, f"cannot measure on {name!r}", f"the devices here are {here}"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--device", "nonsense"],
        ["--device", "cpu", "--device", "meta"],
        ["--out", os.devnull],
    ],
)
def test_usage_errors_come_before_measuring(monkeypatch, capsys, tmp_path, args):
    def measure(**kwargs):
        raise AssertionError("measured before checking the arguments")

    monkeypatch.setattr(dlcomp.bench, "run_bench", measure)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        dlcomp.__main__.main(["bench", "--quick", *args])
    assert info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_devices_checked_on_a_simulated_two_gpu_machine(monkeypatch):
    def cuda():
        return torch.device("cuda")

    monkeypatch.setattr(dlcomp.devices, "current_accelerator", cuda)
    monkeypatch.setattr(dlcomp.bench, "current_accelerator", cuda)
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)
    cuda0, cuda1, cpu = (
        torch.device("cuda:0"),
        torch.device("cuda:1"),
        torch.device("cpu"),
    )
    assert dlcomp.bench.check_devices() == [cuda0, cuda1, cpu]
    assert dlcomp.bench.check_devices(["cuda:1", "cpu"]) == [cuda1, cpu]
    with pytest.raises(
        ValueError,
        match=r"^cannot measure on 'cuda:2': there is no cuda:2, this machine has "
        r"2 cuda device\(s\); the devices here are cuda:0, cuda:1, cpu$",
    ):
        dlcomp.bench.check_devices(["cuda:2"])
    with pytest.raises(ValueError, match="no mps device that PyTorch can use"):
        dlcomp.bench.check_devices(["mps"])
