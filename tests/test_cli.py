"""``python -m dlcomp info`` and ``bench --quick`` end to end; the results schema."""

import json
import subprocess
import sys

import pytest
import torch

from dlcomp.bench import check_results, load_results


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "dlcomp", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )


def test_info_prints_devices_and_versions():
    out = run("info").stdout
    assert out.splitlines()[0].split() == ["device", "name", "memory", "capability"]
    assert f"torch {torch.__version__}" in out


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = run("bench", "--quick", "--device", "cpu", "--out", str(out))
    return out, result


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
    }
    assert "GFLOP/s" in result.stdout
    assert "6/6" in result.stderr  # the progress bar reached the end


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
    ],
)
def test_schema_violations_are_listed(bench_run, mutate, message):
    out, _ = bench_run
    data = json.loads(next(out.glob("*.json")).read_text())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        check_results(data)
