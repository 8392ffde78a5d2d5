"""``python -m dlcomp``: ``info`` (devices, versions) and ``bench`` (measurements)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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

    from dlcomp.bench import plot_results, run_bench, summary

    data = run_bench(quick=args.quick, devices=args.devices, progress=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = data["date"].replace(":", "").replace("-", "")[:15]
    device = next(iter(data["results"])).replace(":", "")
    path = args.out / f"bench-{device}-{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    print(summary(data))
    print(f"results: {path}")
    try:
        plots = plot_results(data, args.out)
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
    else:
        print("plots:", ", ".join(str(p) for p in plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
