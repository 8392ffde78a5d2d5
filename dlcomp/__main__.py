"""``python -m dlcomp``: ``info`` (devices, versions) and ``bench`` (measurements)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _check_out(out: Path) -> str | None:
    """What makes ``out`` unusable as the output folder, or ``None``; creates it.

    Checked before measuring, so that a bad ``--out`` fails at once, not
    after minutes of measurements that then cannot be written.
    """
    try:
        existing = next((p for p in (out, *out.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            what = "a file, not a folder" if existing.is_file() else "not a folder"
            where = "" if existing == out else f"cannot create {out}: "
            return f"{where}{existing} is {what}"
    except OSError as error:
        return f"cannot use {out}: {error.strerror or error}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create {out}: {error.strerror or error}"
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        return f"cannot write in {out}: {error.strerror or error}"
    return None


def _no_matplotlib() -> str | None:
    """Why the bench cannot draw its plots (matplotlib missing), or ``None``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        why = (
            "matplotlib is not installed"
            if getattr(error, "name", None) == "matplotlib"
            else f"matplotlib cannot be imported ({error})"
        )
        return f'{why}: pip install "dlcomp[bench]" adds it'
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m dlcomp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print the devices and the torch/CUDA versions")
    bench = commands.add_parser(
        "bench", help="measure this machine; write JSON, PNG plots and a summary"
    )
    bench.add_argument(
        "--quick", action="store_true", help="small sizes, seconds not minutes"
    )
    bench.add_argument(
        "--device", action="append", dest="devices", metavar="DEVICE",
        help="a device to measure (repeatable); default: every accelerator and the CPU",
    )  # fmt: skip
    bench.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="output folder"
    )
    args = parser.parse_args(argv)

    from dlcomp.devices import describe_devices

    if args.command == "info":
        print(describe_devices())
        return 0

    from dlcomp.bench import check_devices, plot_results, run_bench, summary

    # Usage errors first: a mistake found after minutes of measuring is lost time.
    try:
        devices = [str(d) for d in check_devices(args.devices)]
    except ValueError as error:
        bench.error(f"argument --device: {error}")
    problem = _check_out(args.out)
    if problem is not None:
        bench.error(f"argument --out: {problem}")

    no_plots = _no_matplotlib()
    if no_plots:  # said before measuring, and again with the results
        print(f"note: {no_plots}; measuring anyway", file=sys.stderr)
    data = run_bench(quick=args.quick, devices=devices, progress=sys.stderr)
    stamp = data["date"].replace(":", "").replace("-", "")[:15]
    device = next(iter(data["results"])).replace(":", "")
    path = args.out / f"bench-{device}-{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    print(summary(data))
    print(f"results: {path}")
    if no_plots:
        print(f"plots: none, {no_plots}")
    else:
        plots = plot_results(data, args.out)
        print("plots:", ", ".join(str(p) for p in plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
