"""``python -m dlcomp``: ``info``, ``bench`` (measurements) and ``audit`` (a model)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlcomp._cli import folder_problem


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


def _shape(text: str) -> tuple[int, ...]:
    """``--input-shape 2,20`` as ``(2, 20)``: positive ints, comma-separated."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected sizes >= 1 separated by commas, such as 2,20; got {text!r}"
        )
    return shape


class _ImportFailed(Exception):
    """The reader's module raised while it was imported (the cause is attached)."""


def _factory(spec: str) -> object:
    """The callable ``MODULE:CALLABLE`` names (the current folder is importable)."""
    import importlib

    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(
            f"expected MODULE:CALLABLE, such as mymodels:build; got {spec!r}"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name and not module_name.startswith(f"{error.name}."):
            raise _ImportFailed(module_name) from error  # a module it imports
        raise ValueError(f"cannot import {module_name!r}: {error}") from None
    except (Exception, SystemExit) as error:  # the reader's module failed
        raise _ImportFailed(module_name) from error
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise ValueError(f"{spec} is a {type(target).__name__}, not a callable")
    return target


def _audit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exit 0: no error found; 1: errors found; 2: a usage error; 3: audit failed."""
    import contextlib
    import traceback

    import torch

    from dlcomp.auditing import audit

    try:
        factory = _factory(args.target)
    except ValueError as error:
        parser.error(f"argument MODULE:CALLABLE: {error}")
    except _ImportFailed as failed:  # the reader's module, at import: exit 2
        cause = failed.__cause__
        importing = f"argument MODULE:CALLABLE: importing {failed}"
        if isinstance(cause, SystemExit):
            parser.error(f"{importing} called sys.exit({cause.code})")
        traceback.print_exception(cause)
        parser.error(f"{importing} raised {type(cause).__name__} (traceback above)")
    # What the reader's code prints goes to stderr: stdout is the report.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            model = factory()  # type: ignore[operator]
        except SystemExit as error:
            parser.error(
                f"argument MODULE:CALLABLE: {args.target}() called "
                f"sys.exit({error.code})"
            )
        except Exception as error:  # the reader's code: show all of it
            traceback.print_exc()
            parser.error(
                f"argument MODULE:CALLABLE: {args.target}() raised "
                f"{type(error).__name__} (traceback above)"
            )
        if not isinstance(model, torch.nn.Module):
            parser.error(
                f"argument MODULE:CALLABLE: {args.target}() returned a "
                f"{type(model).__name__}, not an nn.Module"
            )
        example = None
        if args.input_shape is not None:
            try:  # (parameters() raises on the very mistakes audit reports)
                devices = {t.device for t in (*model.parameters(), *model.buffers())}
            except Exception:
                devices = set()
            device = devices.pop() if len(devices) == 1 else torch.device("cpu")
            generator = torch.Generator().manual_seed(0)
            try:
                example = torch.rand(args.input_shape, generator=generator).to(device)
            except (RuntimeError, TypeError, ValueError, OverflowError) as error:
                parser.error(
                    f"argument --input-shape: cannot make a tensor of shape "
                    f"{args.input_shape}: {str(error).splitlines()[0]}"
                )
        try:
            report = audit(model, example, ignore=args.ignore)
        except Exception as error:
            message = str(error)
            if isinstance(error, ValueError) and message.startswith("audit: ignore"):
                parser.error(f"argument --ignore: {message.removeprefix('audit: ')}")
            traceback.print_exc()
            print("python -m dlcomp audit: the audit itself failed", file=sys.stderr)
            return 3
    print(json.dumps(report.as_dict(), indent=1) if args.json else report)
    return 0 if report.ok else 1


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
    check = commands.add_parser(
        "audit",
        help="check a model for the chapter's pitfalls; exit 1 if it has errors",
        description="Build a model by calling MODULE:CALLABLE (imported from the "
        "current folder or the installed packages), audit it with dlcomp.audit, "
        "and print the report. Exit status: 0 no error found, 1 errors found, "
        "2 a usage error, 3 the audit itself failed.",
    )
    check.add_argument("target", metavar="MODULE:CALLABLE", help="e.g. mymodels:build")
    check.add_argument(
        "--input-shape", type=_shape, metavar="2,20",
        help="also run one forward and backward pass on an input of this shape "
        "(float32 from torch.rand, seeded, on the model's device)",
    )  # fmt: skip
    check.add_argument(
        "--ignore", action="append", default=[], metavar="RULE_OR_NAME",
        help="leave out the findings of a rule id, or about a name in the model "
        "(a module path or an attribute); repeatable",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    if args.command == "audit":
        return _audit(args, check)

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
    problem = folder_problem(args.out, create=True)  # before minutes of measuring
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
