"""Audit stock models: no false alarm, no change to a model, every pitfall caught.

``python tools/audit_zoo.py`` audits every model it can build, each in train
and eval mode with an input and an AdamW optimizer, and fails (exit 1) on:

- an error or a warning on a stock model (notes, such as tied weights, are
  allowed);
- any change the audit makes to a model: its parameters, buffers, gradients,
  mode, or the input tensor;
- a pitfall injected into a real model that its rule does not catch (each
  rule's pitfall, in at least three models).

The models: the torch-only ones (``nn.Transformer``, LSTM, GRU, ...), always;
every torchvision classifier and a timm sample when those are installed
(``nox -s zoo`` installs them). ``--sample`` keeps a small, fast subset
(``nox -s tests`` runs it through tests/test_audit_zoo.py). ``--json FILE``
writes every result, with the audit's time over one forward and backward
pass of the same model (the median of a few runs, train mode).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout: dlcomp
from dlcomp import audit, interleaved
from dlcomp.auditing import RULES

Inputs = Callable[[], object]


@dataclass
class Stock:
    """A model nobody here wrote: how to build it and an input for it."""

    name: str
    build: Callable[[], nn.Module]
    example: Inputs
    big: bool = False  # slow on two cores: one timing run, not three


@dataclass
class Result:
    """One audit of the zoo: a stock model in one mode, or one injected pitfall."""

    name: str
    mode: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ratio: float | None = None  # audit time / one forward and backward pass


def _seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def seeded() -> nn.Module:
        torch.manual_seed(0)
        with warnings.catch_warnings():  # (builders' notes on default inits)
            warnings.simplefilter("ignore")
            return build()

    return seeded


def _images(size: int, batch: int = 2) -> Inputs:
    return lambda: torch.rand(
        batch, 3, size, size, generator=torch.Generator().manual_seed(0)
    )


def _conv_bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Dropout(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


def _compiled(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """The model after ``model.compile()`` in place (the audit must run it eagerly)."""

    def compiled() -> nn.Module:
        model = build()
        model.compile(backend="eager")
        return model

    return compiled


def torch_models() -> Iterator[Stock]:
    """Stock models of torch.nn itself (no other package)."""
    g = torch.Generator().manual_seed(0)
    seq = torch.rand(5, 3, 16, generator=g)  # (sequence, batch, features)

    class Last(nn.Module):  # an RNN's output tuple, its hidden state included
        def __init__(self, rnn: nn.Module):
            super().__init__()
            self.rnn = rnn
            self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 4)

        def forward(self, X):
            out, _ = self.rnn(X)
            return self.head(out[-1])

    yield Stock(
        "nn.Transformer",
        _seeded(lambda: nn.Transformer(16, 2, 2, 2, 32)),
        lambda: (seq, seq[:3]),
    )
    yield Stock(
        "nn.TransformerEncoder",
        _seeded(
            lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), 2)
        ),
        lambda: seq,
    )
    yield Stock(
        "nn.LSTM",
        _seeded(lambda: Last(nn.LSTM(16, 8, 2, bidirectional=True))),
        lambda: seq,
    )
    yield Stock("nn.GRU", _seeded(lambda: Last(nn.GRU(16, 8))), lambda: seq)
    yield Stock(
        "nn.MultiheadAttention",
        _seeded(lambda: nn.MultiheadAttention(16, 2)),
        lambda: (seq, seq, seq),
    )
    yield Stock("conv-bn-net", _seeded(_conv_bn_net), _images(16))
    yield Stock(
        "conv-bn-net compiled in place", _compiled(_seeded(_conv_bn_net)), _images(16)
    )
    yield Stock(
        "nn.EmbeddingBag",
        _seeded(lambda: nn.EmbeddingBag(50, 8)),
        lambda: torch.randint(0, 50, (4, 6), generator=g),
    )


_TRANSFORMERS = re.compile(r"^(vit|swin|maxvit)")
TIMM_SAMPLE = (
    "resnet18", "resnet50d", "efficientnet_b0", "mobilenetv3_small_100",
    "convnext_atto", "regnetx_002", "densenet121", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224", "mixer_s32_224", "levit_128s", "coat_lite_tiny",
    "ghostnet_100", "rexnet_100", "dla34", "hrnet_w18_small", "cspresnet50",
    "poolformer_s12", "edgenext_xx_small", "mobilevit_xxs", "efficientformer_l1",
    "tinynet_e", "xcit_nano_12_p16_224", "beit_base_patch16_224",
)  # fmt: skip
_BIG = re.compile(
    r"(vit_h|vit_l|regnet_y_128|regnet_y_32|regnet_x_32|efficientnet_b7|efficientnet_v2_l)"
)


def torchvision_models() -> Iterator[Stock]:
    """Every torchvision classifier, with random weights (nothing downloaded)."""
    import torchvision

    for name in torchvision.models.list_models(module=torchvision.models):
        size = (
            224 if _TRANSFORMERS.match(name) else 299 if name == "inception_v3" else 64
        )
        build = _seeded(
            lambda name=name: torchvision.models.get_model(name, weights=None)
        )
        yield Stock(
            f"torchvision.{name}", build, _images(size), big=bool(_BIG.search(name))
        )
    resnet18 = _seeded(lambda: torchvision.models.resnet18(weights=None))
    yield Stock(
        "torchvision.resnet18 compiled in place", _compiled(resnet18), _images(64)
    )


def timm_models() -> Iterator[Stock]:
    """A sample of timm's families, with random weights, at their input size."""
    import timm

    for name in TIMM_SAMPLE:
        build = _seeded(lambda name=name: timm.create_model(name, pretrained=False))
        size = timm.create_model(name, pretrained=False).default_cfg["input_size"][-1]
        yield Stock(f"timm.{name}", build, _images(size))


def zoo(sample: bool) -> Iterator[Stock]:
    """The models to audit: torch's own, then torchvision's and timm's if installed."""
    yield from torch_models()
    for source in (torchvision_models, timm_models):
        try:
            models = list(source())
        except ImportError:
            print(f"({source.__name__}: not installed, skipped)", file=sys.stderr)
            continue
        yield from (models[:3] if sample else models)


# --- what an audit must leave as it was --------------------------------------------


def _snapshot(model: nn.Module, example: object) -> dict[str, object]:
    tensors = {
        f"state.{k}": v.detach().clone()
        for k, v in model.state_dict(keep_vars=True).items()
    }
    grads = {f"grad.{k}": p.grad for k, p in model.named_parameters()}
    modes = {f"mode.{k}": m.training for k, m in model.named_modules()}
    inputs = {f"input.{i}": t.clone() for i, t in enumerate(_tensors(example))}
    return {**tensors, **grads, **modes, **inputs}


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _changed(model: nn.Module, example: object, before: dict[str, object]) -> list[str]:
    after = _snapshot(model, example)
    changed = []
    for key, old in before.items():
        new = after.get(key)
        if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
            same = (
                old.shape == new.shape
                and torch.equal(old.nan_to_num(0, 1, -1), new.nan_to_num(0, 1, -1))
                and torch.equal(old.isnan(), new.isnan())
            )
        else:
            same = old is new or old == new
        if not same:
            changed.append(key)
    return changed


def _forward_backward(model: nn.Module, example: object, keep: bool = False) -> None:
    """One training pass: forward, the mean of the outputs, backward.

    The gradients are dropped after, unless ``keep`` (as training keeps them
    until the optimizer's step: what the memory comparison counts).
    """
    out = model(*example) if isinstance(example, tuple) else model(example)
    sum(o.float().mean() for o in _tensors(out) if o.requires_grad).backward()
    if not keep:
        model.zero_grad(set_to_none=True)


def check_stock(stock: Stock, mode: str, timed: bool) -> Result:
    """Audit a stock model in ``mode``: no error or warning, nothing changed."""
    model = stock.build().train(mode == "train")
    example = stock.example()
    optimizer = torch.optim.AdamW(model.parameters())
    before = _snapshot(model, example)
    start = time.perf_counter()
    report = audit(model, example, optimizer)
    seconds = time.perf_counter() - start
    problems = [
        f"{f.severity} [{f.rule}] at {f.where}: {f.message[:160]}"
        for f in report.findings
        if f.severity != "note"
    ]
    problems += [
        f"changed by the audit: {key}" for key in _changed(model, example, before)
    ]
    result = Result(stock.name, mode, not problems, problems, seconds)
    if timed and not problems:
        # Interleaved blocks (A, B, A, B...): a change of load falls on both.
        with torch.random.fork_rng(devices=[]):
            pair = interleaved(
                {
                    "audit": lambda: audit(model, example, optimizer),
                    "pass": lambda: _forward_backward(model, example),
                },
                warmup=1,
                min_runs=3 if stock.big else 5,
                min_time=0.2,
            )
        result.ratio = pair["audit"].median / pair["pass"].median
    return result


# --- each rule's pitfall, injected into a real model ------------------------------


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, name, layer) of the model's last nn.Linear (its classifier head)."""
    found = None
    for _, module in model.named_modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                found = (module, name, child)
    if found is None:
        raise LookupError("no nn.Linear in the model")
    return found


def _replace_head(model: nn.Module, wrap: Callable[[nn.Linear], nn.Module]) -> None:
    parent, name, layer = _last_linear(model)
    setattr(parent, name, wrap(layer))


class DataHead(nn.Module):
    """A head that computes with .data: no gradient reaches it."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.layer = layer

    def forward(self, X):  # noqa: D102
        return nn.functional.linear(X, self.layer.weight.data, self.layer.bias.data)


class NamespaceHead(nn.Module):
    """A head that the head held in a SimpleNamespace."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.held = types.SimpleNamespace(layer=layer)

    def forward(self, X):  # noqa: D102
        return self.held.layer(X)


class SqrtZeroHead(nn.Module):
    """A head that sqrt at 0: an infinite derivative, NaN upstream."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.layer = layer

    def forward(self, X):  # noqa: D102
        return self.layer(X) + torch.sqrt(X - X).sum()


class OverflowHead(DataHead):
    """A head whose exp overflows: the output is infinite."""

    def forward(self, X):  # noqa: D102
        return torch.exp(self.layer(X).abs() + 1000.0)


Injection = Callable[[nn.Module, object], tuple[object, torch.optim.Optimizer]]


def _whole(model: nn.Module, example: object) -> tuple[object, torch.optim.Optimizer]:
    return example, torch.optim.AdamW(model.parameters())


def _then(change: Callable[[nn.Module], None]) -> Injection:
    def inject(
        model: nn.Module, example: object
    ) -> tuple[object, torch.optim.Optimizer]:
        change(model)
        return _whole(model, example)

    return inject


def _before(change: Callable[[nn.Module], None]) -> Injection:
    """The change after the optimizer is built (it breaks parameters())."""

    def inject(
        model: nn.Module, example: object
    ) -> tuple[object, torch.optim.Optimizer]:
        optimizer = torch.optim.AdamW(model.parameters())
        change(model)
        return example, optimizer

    return inject


def _nan_weight(model: nn.Module) -> None:
    with torch.no_grad():
        next(p for p in model.parameters() if p.is_floating_point()).view(-1)[0] = (
            float("nan")
        )


def _missing(model: nn.Module, example: object) -> tuple[object, torch.optim.Optimizer]:
    params = list(model.parameters())
    return example, torch.optim.AdamW(params[:-1])


def _foreign(model: nn.Module, example: object) -> tuple[object, torch.optim.Optimizer]:
    return example, torch.optim.AdamW(
        [*model.parameters(), nn.Parameter(torch.zeros(3))]
    )


def _wrong_input(
    model: nn.Module, example: object
) -> tuple[object, torch.optim.Optimizer]:
    # images lose channels, sequences features: the first layer cannot take them
    bad = [t[:, :1] if t.dim() == 4 else t[..., :1] for t in _tensors(example)]
    return (tuple(bad) if isinstance(example, tuple) else bad[0]), torch.optim.AdamW(
        model.parameters()
    )


def _register(name: str, value: torch.Tensor) -> Callable[[nn.Module], None]:
    return lambda model: model.register_buffer(name, value)


INJECTIONS: dict[str, Injection] = {
    "hidden-module": _then(lambda m: setattr(m, "extra", [nn.Linear(3, 3)])),
    "hidden-module (in an object)": _then(lambda m: _replace_head(m, NamespaceHead)),
    "tensor-attribute": _then(lambda m: setattr(m, "scale", torch.ones(3))),
    "non-string-key": _before(lambda m: m._modules.__setitem__(nn.ReLU(), nn.ReLU())),
    "no-gradient": _then(lambda m: _replace_head(m, DataHead)),
    "non-finite-gradient": _then(lambda m: _replace_head(m, SqrtZeroHead)),
    "non-finite-value": _then(_nan_weight),
    "non-finite-value (output)": _then(lambda m: _replace_head(m, OverflowHead)),
    "dry-run-failed": _wrong_input,
    "not-copyable": _then(lambda m: setattr(m, "lock", threading.Lock())),
    "module-cycle": _before(lambda m: m._modules.__setitem__("loop", m)),
    "uninitialized": _then(lambda m: setattr(m, "later", nn.LazyLinear(3))),
    "optimizer-missing": _missing,
    "optimizer-foreign": _foreign,
    "mixed-devices": _then(_register("on_meta", torch.zeros(2, device="meta"))),
    "mixed-dtypes": _then(_register("wide", torch.zeros(2, dtype=torch.float64))),
    "tied-parameters": _then(lambda m: setattr(m, "again", _last_linear(m)[2])),
}
"""Each rule's pitfall (the rule id is the key up to a space) as a change to a model."""


def check_injection(stock: Stock, what: str) -> Result:
    """Inject one pitfall into a fresh copy of the model: its rule must catch it."""
    rule = what.split(" ")[0]
    model = stock.build()
    example, optimizer = INJECTIONS[what](model, stock.example())
    report = audit(model, example, optimizer)
    rules = {f.rule for f in report.findings}
    problems = [] if rule in rules else [f"{what} not caught (found: {sorted(rules)})"]
    return Result(stock.name, f"inject {what}", not problems, problems)


INJECTED_INTO = {"nn.GRU", "conv-bn-net", "nn.LSTM", "torchvision.resnet18",
                 "torchvision.mobilenet_v3_small", "torchvision.vit_b_32",
                 "timm.convnext_atto"}  # fmt: skip


def run(sample: bool, only: str | None, timed: bool) -> list[Result]:
    """Every check on every model of the zoo, printed as it goes."""
    results = []
    for stock in zoo(sample):
        if only and not re.search(only, stock.name):
            continue
        for mode in ("train", "eval"):
            result = check_stock(stock, mode, timed and mode == "train")
            results.append(result)
            ratio = f"  audit/fwd+bwd {result.ratio:.2f}" if result.ratio else ""
            status = "ok  " if result.ok else "FAIL"
            took = f"{result.seconds:.2f} s{ratio}"
            print(f"{status} {stock.name} ({mode}) {took}", flush=True)
            for problem in result.problems:
                print(f"     {problem}", flush=True)
        if stock.name in INJECTED_INTO:
            for what in INJECTIONS:
                result = check_injection(stock, what)
                results.append(result)
                if not result.ok:
                    print(f"FAIL {stock.name}: {result.problems[0]}", flush=True)
    return results


def _peak(name: str, what: str) -> int:
    """In this process: the peak memory growth (bytes) of one audit or one pass.

    The model, its input and optimizer are built first; the growth of the
    process's peak resident memory after that is what ``what`` costs:
    ``audit`` (audit with the input and optimizer) or ``pass`` (one forward
    and backward pass, its gradients kept as training keeps them).
    """
    import resource

    stock = next(s for s in zoo(sample=False) if s.name == name)
    model = stock.build().train()
    example = stock.example()
    optimizer = torch.optim.AdamW(model.parameters())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if what == "audit":
        audit(model, example, optimizer)
    else:
        _forward_backward(model, example, keep=True)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def memory_ratio(name: str) -> float:
    """Peak memory of an audit over that of one forward and backward pass.

    Each measured in a fresh process (a peak only grows), train mode.
    """
    import subprocess

    peaks = {}
    for what in ("audit", "pass"):
        result = subprocess.run(
            [sys.executable, __file__, "--peak", name, what],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"--peak {name} {what} failed:\n{result.stderr}")
        peaks[what] = int(result.stdout.split()[-1])
    return peaks["audit"] / max(peaks["pass"], 1)


def main(argv: list[str] | None = None) -> int:
    """Run the zoo; exit status 1 if any check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", action="store_true", help="a small, fast subset")
    parser.add_argument("--only", metavar="REGEX", help="models whose name matches")
    parser.add_argument("--no-timing", action="store_true", help="skip the cost ratios")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results")
    parser.add_argument(
        "--memory", metavar="REGEX",
        help="only measure peak memory, audit over one pass, for matching models",
    )  # fmt: skip
    parser.add_argument(
        "--peak", nargs=2, metavar=("NAME", "WHAT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.peak:
        print(_peak(*args.peak))
        return 0
    if args.memory:
        for stock in zoo(sample=False):
            if re.search(args.memory, stock.name):
                ratio = memory_ratio(stock.name)
                print(f"{stock.name}: peak memory of audit / one pass {ratio:.2f}")
        return 0
    torch.set_num_threads(torch.get_num_threads())
    start = time.perf_counter()
    results = run(args.sample, args.only, not args.no_timing)
    elapsed = time.perf_counter() - start
    stock = [r for r in results if not r.mode.startswith("inject")]
    injected = [r for r in results if r.mode.startswith("inject")]
    caught = {r.mode.removeprefix("inject ").split(" ")[0] for r in injected if r.ok}
    ratios = sorted((r.ratio, r.name) for r in stock if r.ratio is not None)
    failed = [r for r in results if not r.ok]
    summary = {
        "stock_setups": len(stock),
        "stock_clean": sum(r.ok for r in stock),
        "injections": len(injected),
        "injections_caught": sum(r.ok for r in injected),
        "rules_injected": sorted(caught),
        "rules_never_injected": sorted(
            set(RULES) - {w.split(" ")[0] for w in INJECTIONS}
        ),
        "ratio_range": [ratios[0], ratios[-1]] if ratios else None,
        "ratio_median": statistics.median(r for r, _ in ratios) if ratios else None,
        "seconds": round(elapsed, 1),
        "torch": torch.__version__,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        data = {"summary": summary, "results": [vars(r) for r in results]}
        args.json.write_text(json.dumps(data, indent=1))
    if failed:
        print(f"{len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
