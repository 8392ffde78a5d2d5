"""The chapter's pitfalls as a check a reader runs on a model: :func:`dlcomp.audit`.

Every mistake the chapter's pages show failing is one a reader writes again
in their own code: layers kept in a Python list, a constant kept as a plain
tensor, ``self._modules[block] = block``, a ``forward`` that computes with
``.data``, an optimizer that does not hold the model's parameters. One call
finds each of them, says what goes wrong and how to fix it, and links to the
section of the site that explains it.

Each rule has an id, a severity, what it finds and the section that explains
it: ``dlcomp.auditing.RULES``, the one list of them (the API page's table of rules is
rendered from it).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import html
import re
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from dlcomp._checks import check_float, check_int
from dlcomp._table import html_table
from dlcomp.timing import Measurement, benchmark, interleaved

__all__ = ["AuditCost", "AuditError", "AuditReport", "Finding", "audit", "audit_cost"]

Severity = Literal["error", "warning", "note"]

#: Where the site is published; each finding links to a section under it.
SITE_URL = "https://dlcomp.github.io/dlcomp/"


@dataclass(frozen=True)
class _Rule:
    severity: Severity
    page: str  # the page and anchor of the section that explains it
    finds: str  # what it finds (Markdown: `code` in backticks)
    section: str = "below"  # the explaining section's name (on the API page: below)
    severity_note: str = ""  # when the severity differs, in parentheses
    needs: Literal["", "input", "optimizer"] = ""  # what runs it besides the model


RULES: Mapping[str, _Rule] = {
    "hidden-module": _Rule(
        "error", "blocks.html#pitfall-plain-list",
        "modules or parameters in a plain list, tuple, dict, set or deque, or set "
        "without registering them; with an input, parameters the forward pass "
        "trains from any other object (a `SimpleNamespace`, a dataclass)",
        "5.1, exercise 1", "warning if they hold no state",
    ),
    "tensor-attribute": _Rule(
        "warning", "blocks.html#pitfall-plain-tensor",
        "a tensor kept as a plain attribute (with an input, not one the forward "
        "pass assigns anew)",
        "5.1, a constant weight", "error if it requires a gradient",
    ),
    "non-string-key": _Rule(
        "error", "blocks.html#pitfall-module-key",
        "`_modules`, `_parameters` or `_buffers` keys that are not strings",
        "5.1, the sequential block",
    ),
    "module-cycle": _Rule(
        "error", "api/auditing.html#rule-module-cycle",
        "a module registered inside itself",
    ),
    "no-gradient": _Rule(
        "error", "custom-layers.html#pitfall-data-forward",
        "parameters that get no gradient", "5.4, computing with .data",
        needs="input",
    ),
    "non-finite-gradient": _Rule(
        "error", "api/auditing.html#rule-non-finite-gradient",
        "NaN or infinite gradients", needs="input",
    ),
    "non-finite-value": _Rule(
        "error", "api/auditing.html#rule-non-finite-value",
        "NaN or infinity in the output or a gradient, naming the parameters "
        "that cause it", needs="input",
    ),
    "dry-run-failed": _Rule(
        "error", "api/auditing.html#rule-dry-run-failed",
        "a forward or backward pass that raises", needs="input",
    ),
    "not-copyable": _Rule(
        "warning", "api/auditing.html#rule-not-copyable",
        "a model that cannot be copied, so no pass ran", needs="input",
    ),
    "uninitialized": _Rule(
        "warning", "deferred-init.html#pitfall-init-before-dry-run",
        "lazy parameters or buffers not materialized",
        "5.3, initializing before the dry run",
    ),
    "optimizer-missing": _Rule(
        "error", "api/auditing.html#rule-optimizer-missing",
        "parameters the optimizer does not update", needs="optimizer",
    ),
    "optimizer-foreign": _Rule(
        "error", "deferred-init.html#pitfall-optimizer-before-dry-run",
        "optimizer tensors that are not the model's parameters (another model's, "
        "replaced ones, buffers)",
        "5.3, the optimizer before the dry run", needs="optimizer",
    ),
    "mixed-devices": _Rule(
        "warning", "gpu.html#networks-on-a-device",
        "parameters and buffers on several devices", "5.6, networks on a device",
    ),
    "mixed-dtypes": _Rule(
        "warning", "api/auditing.html#rule-mixed-dtypes",
        "floating parameters and buffers of several dtypes",
    ),
    "tied-parameters": _Rule(
        "note", "parameters.html#sharing-parameters",
        "one parameter reachable under several names", "5.2, tied parameters",
    ),
}  # fmt: skip
"""Every rule: its severity and the section of the site that explains it."""

_ORDER = {"error": 0, "warning": 1, "note": 2}
# What every nn.Module keeps in its __dict__ (and a lazy one adds): not the
# reader's attributes.
_BASE = frozenset(vars(nn.Module()))
_INTERNALS = _BASE | {"_initialize_hook", "_load_hook"}
_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque)
_SHOWN = 4  # names listed in one finding before "and N more"


class AuditError(AssertionError):
    """Raised by :meth:`AuditReport.raise_for_errors` when the audit found errors.

    An :class:`AssertionError`, so that a reader's test fails with the
    report as its message.

    Examples:
        >>> from dlcomp.pitfalls import ListSequential
        >>> net = ListSequential(nn.Linear(4, 2))
        >>> audit(net).raise_for_errors()
        Traceback (most recent call last):
        ...
        dlcomp.auditing.AuditError: audit of ListSequential: 1 error, 0 warnings, ...
        ...
    """


@dataclass(frozen=True)
class Finding:
    """One problem :func:`audit` found (see its examples)."""

    rule: str
    """The rule's id, e.g. ``"hidden-module"``."""
    severity: Severity
    """``"error"`` (silently wrong), ``"warning"`` (probably wrong) or ``"note"``."""
    path: str
    """The module's path, as in ``named_modules()``; empty for the model itself."""
    message: str
    """What goes wrong, in one sentence."""
    fix: str
    """How to fix it."""
    url: str
    """The section of the site that explains it."""
    subject: str = ""
    """The attribute the finding is about, as a dotted name from the model
    (``"teacher"``, ``"encoder.cache"``), where it is about one; else empty."""

    @property
    def where(self) -> str:
        """The path, or ``(model)`` for the model itself."""
        return self.path or "(model)"


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit` found: printable as text, an HTML table in notebooks.

    Returned by :func:`audit` (see its examples).

    Attributes:
        model: the audited model's class name.
        findings: errors first, then warnings, then notes.
        rules: the ids of the rules that ran (those needing an input or an
            optimizer run only when one is given).
        ignored: the rule ids and names given as ``ignore``: findings of those
            rules, or about those names, are left out.
    """

    model: str
    findings: tuple[Finding, ...]
    rules: tuple[str, ...]
    ignored: tuple[str, ...] = ()

    def _of(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == severity)

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings of severity ``"error"``."""
        return self._of("error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The findings of severity ``"warning"``."""
        return self._of("warning")

    @property
    def notes(self) -> tuple[Finding, ...]:
        """The findings of severity ``"note"``."""
        return self._of("note")

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and notes allowed)."""
        return not self.errors

    def summary(self) -> str:
        """One line: the model and how many findings of each severity."""

        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        return (
            f"audit of {self.model}: {count(len(self.errors), 'error')}, "
            f"{count(len(self.warnings), 'warning')}, {count(len(self.notes), 'note')}"
        )

    def raise_for_errors(self) -> None:
        """Raise :class:`AuditError` with the report if there is any error."""
        if not self.ok:
            raise AuditError(str(self))

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``python -m dlcomp audit --json``)."""
        return {
            "model": self.model,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "notes": len(self.notes),
            "rules": list(self.rules),
            "ignored": list(self.ignored),
            "findings": [
                {
                    "rule": f.rule,
                    "severity": f.severity,
                    "path": f.path,
                    "where": f.where,
                    "message": f.message,
                    "fix": f.fix,
                    "url": f.url,
                    "subject": f.subject,
                }
                for f in self.findings
            ],
        }

    def not_run(self) -> str:
        """Which rules did not run, and what they need; empty if all ran."""
        parts = []
        if "no-gradient" not in self.rules:
            parts.append(
                "no-gradient, non-finite-gradient, non-finite-value and dry-run-failed "
                "need example_input"
            )
        if "optimizer-missing" not in self.rules:
            parts.append("optimizer-missing and optimizer-foreign need the optimizer")
        return f"not run: {'; '.join(parts)}" if parts else ""

    def _caveat(self) -> str:
        """The not-run line where it helps: on a report that found no error.

        A report with an error already says what to fix; one without must not
        read as "nothing wrong" for rules that never ran.
        """
        return "" if self.errors else self.not_run()

    def __str__(self) -> str:
        lines = [self.summary()]
        if caveat := self._caveat():
            lines.append(f"({caveat})")
        if self.ignored:
            lines.append(f"(ignored: {', '.join(self.ignored)})")
        for f in self.findings:
            lines += [
                "",
                f"{f.severity} [{f.rule}] at {f.where}",
                f"  {f.message}",
                f"  fix: {f.fix}",
                f"  see: {f.url}",
            ]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        header = ("severity", "rule", "where", "what goes wrong", "fix")
        rows = [
            (
                f.severity,
                f'<a href="{html.escape(f.url)}">{html.escape(f.rule)}</a>',
                f.where,
                _code(f.message),
                _code(f.fix),
            )
            for f in self.findings
        ]
        caveat = self._caveat()
        caption = self.summary() + (f" ({caveat})" if caveat else "")
        return html_table(header, rows, caption, markup=frozenset({1, 3, 4}))


def _code(text: str) -> str:
    """``text`` escaped for HTML, with each `name` in backticks as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


# --- walking a model without PyTorch's naming (which non-string keys break) ----


def _name(key: object) -> str:
    return key if isinstance(key, str) else f"<{type(key).__name__} key>"


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{_name(key)}" if prefix else _name(key)


@dataclass
class _Model:
    """The registered state of a model, found by walking ``_modules``.

    Each module is visited once, at its first path: a module used in several
    places gets its other paths in ``aliases`` (so a model that nests one
    module in itself many times costs no more than the modules it has), and
    a module registered inside itself is recorded in ``cycles``.
    """

    modules: dict[int, tuple[str, nn.Module]]  # id -> (first path, module)
    aliases: dict[int, list[str]]  # id -> the module's other paths
    cycles: list[tuple[str, str]]  # (path of the entry, path of the module it is)
    params: dict[int, tuple[list[str], nn.Parameter]]  # id -> (every name, param)
    buffers: dict[int, tuple[list[str], Tensor]]

    @classmethod
    def of(cls, model: nn.Module) -> _Model:
        found = cls({}, {}, [], {}, {})
        stack: list[tuple[str, nn.Module, tuple[int, ...]]] = [("", model, ())]
        scheduled = {id(model)}  # visited or waiting on the stack
        while stack:
            path, module, chain = stack.pop()
            found.modules[id(module)] = (path, module)
            for table, store in (
                (module._parameters, found.params),
                (module._buffers, found.buffers),
            ):
                for key in list(table.keys()):
                    tensor = table[key]
                    if isinstance(tensor, Tensor):
                        entry = store.setdefault(id(tensor), ([], tensor))  # type: ignore[arg-type]
                        entry[0].append(_join(path, key))
            children = []
            for key in list(module._modules.keys()):
                child = module._modules[key]
                if not isinstance(child, nn.Module):
                    continue
                child_path = _join(path, key)
                if id(child) in chain or child is module:
                    found.cycles.append((child_path, found.modules[id(child)][0]))
                elif id(child) in scheduled:
                    found.aliases.setdefault(id(child), []).append(child_path)
                else:
                    scheduled.add(id(child))
                    children.append((child_path, child, (*chain, id(module))))
            stack.extend(reversed(children))  # depth first, in registration order
        return found


def _names(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _is(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"


def _finding(rule: str, path: str, message: str, fix: str) -> Finding:
    spec = RULES[rule]
    return Finding(rule, spec.severity, path, message, fix, SITE_URL + spec.page)


def _items(value: Any, where: str) -> list[tuple[str, object]]:
    """(location, item) for what one container holds."""
    if isinstance(value, Mapping):
        return [(f"{where}[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, (set, frozenset)):
        return [(f"{where}{{...}}", v) for v in value]
    return [(f"{where}[{i}]", v) for i, v in enumerate(value)]


def _contents(value: Any, where: str, seen: set[int]) -> Iterator[tuple[str, object]]:
    """(location, item) for the modules and tensors inside nested containers.

    Depth first, in order, without recursion: a list nested thousands deep
    costs no stack.
    """
    stack = [(where, value)]
    while stack:
        location, item = stack.pop()
        if isinstance(item, (nn.Module, Tensor)):
            yield location, item
        elif isinstance(item, _CONTAINERS) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(reversed(_items(item, location)))


def _held(module: nn.Module) -> Iterator[tuple[str, str, object]]:
    """(attribute, location, item): modules and tensors a reader's attributes hold."""
    for attr, value in vars(module).items():
        if attr in _INTERNALS:
            continue
        if isinstance(value, (nn.Module, Tensor)):
            yield attr, attr, value
        elif isinstance(value, _CONTAINERS):
            for location, item in _contents(value, attr, set()):
                yield attr, location, item


def _hidden_tensors(found: _Model) -> set[int]:
    """The ids of parameters held in attributes but not registered."""
    registered = found.params.keys() | found.buffers.keys()
    return {
        id(item)
        for _, module in found.modules.values()
        for _, _, item in _held(module)
        if isinstance(item, nn.Parameter) and id(item) not in registered
    }


# --- the rules ------------------------------------------------------------------


def _non_string_keys(found: _Model) -> Iterator[Finding]:
    for path, module in found.modules.values():
        for table in ("_modules", "_parameters", "_buffers"):
            bad = [
                k for k in list(getattr(module, table).keys()) if not isinstance(k, str)
            ]
            if bad:
                kinds = ", ".join(type(k).__name__ for k in bad[:_SHOWN])
                if len(bad) > _SHOWN:
                    kinds += f" and {len(bad) - _SHOWN} more"
                keys = (
                    "a key that is not a string"
                    if len(bad) == 1
                    else f"{len(bad)} keys that are not strings"
                )
                yield _finding(
                    "non-string-key",
                    path,
                    f"`{table}` has {keys} ({kinds}): PyTorch names each entry "
                    "`prefix + '.' + key`, so parameters(), named_parameters(), "
                    "state_dict(), print() and every optimizer raise TypeError",
                    "register under a string name: self.add_module(str(i), block) "
                    "(or self._modules[str(i)] = block)",
                )


def _cycles(found: _Model) -> Iterator[Finding]:
    for entry, target in found.cycles:
        what = "the model itself" if not target else f"`{target}`, which contains it"
        yield _finding(
            "module-cycle",
            entry.rpartition(".")[0],
            f"`{entry}` is {what}: a module registered inside itself, so train(), "
            "eval(), to(), state_dict() and print() recurse until RecursionError",
            "keep a reference to a parent outside the registered submodules: "
            "object.__setattr__(self, 'parent', parent)",
        )


# Modules that behave differently in training and evaluation without state.
_MODAL = (nn.modules.dropout._DropoutNd, nn.RReLU)


def _stateful(module: nn.Module) -> bool:
    """Whether a module (or one inside it) holds state that registration matters for."""
    return any(
        m._parameters or m._buffers or isinstance(m, _MODAL)
        for _, m in _Model.of(module).modules.values()
    )


def _recomputed(module: nn.Module) -> set[str]:
    """Attributes a hook of torch's own recomputes before every forward pass.

    The legacy ``torch.nn.utils.spectral_norm`` and ``weight_norm`` keep the
    weight they compute as a plain attribute (its parameters are
    ``weight_orig`` or ``weight_g`` and ``weight_v``).
    """
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return {
        hook.name
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, (SpectralNorm, WeightNorm))
    }


def _attributes(
    found: _Model, seen: set[tuple[str, str]] | None = None
) -> Iterator[Finding]:
    """hidden-module and tensor-attribute; ``seen`` collects (path, attribute)."""
    registered = found.params.keys() | found.buffers.keys()
    for path, module in found.modules.values():
        hidden: dict[str, list[tuple[str, object]]] = {}
        tensors: dict[str, list[tuple[str, Tensor]]] = {}
        recomputed = _recomputed(module) if module._forward_pre_hooks else set()
        for attr, location, item in _held(module):
            unseen = found.modules if isinstance(item, nn.Module) else registered
            if id(item) in unseen or attr in recomputed:
                continue
            if isinstance(item, (nn.Module, nn.Parameter)):
                hidden.setdefault(attr, []).append((location, item))
            elif isinstance(item, Tensor) and item.grad_fn is None:
                # (a tensor with a grad_fn is a value computed from parameters,
                # such as the weight torch.nn.utils.prune recomputes: not state)
                tensors.setdefault(attr, []).append((location, item))
        for attr, plain in tensors.items():
            yield dataclasses.replace(
                _tensor_finding(path, attr, plain), subject=_join(path, attr)
            )
        for attr, held in hidden.items():
            yield dataclasses.replace(
                _hidden_finding(path, attr, getattr(module, attr), held),
                subject=_join(path, attr),
            )
        if seen is not None:
            seen.update((path, attr) for attr in (*tensors, *hidden))


def _tensor_finding(path: str, attr: str, items: list[tuple[str, Tensor]]) -> Finding:
    shown = ", ".join(
        f"`{loc}` (shape {tuple(t.shape)}, {str(t.dtype).removeprefix('torch.')})"
        for loc, t in items[:_SHOWN]
    )
    if len(items) > _SHOWN:
        shown += f" and {len(items) - _SHOWN} more"
    one = len(items) == 1
    what = f"{shown} {'is a plain tensor' if one else 'are plain tensors'}"
    it = "it" if one else "them"
    contained = items[0][0] != attr
    if any(t.requires_grad for _, t in items):
        return dataclasses.replace(
            _finding(
                "tensor-attribute",
                path,
                f"{what} that require{'s' if one else ''} a gradient: a weight to "
                f"train, but not a parameter, so no optimizer built from "
                f"parameters() updates {it}; state_dict() does not save {it} and "
                f"model.to() does not move {it}",
                "nn.ParameterList or nn.ParameterDict"
                if contained
                else f"self.{attr} = nn.Parameter(tensor)",
            ),
            severity="error",
        )
    return _finding(
        "tensor-attribute",
        path,
        f"{what}: state_dict() does not save {it} (a saved model loses "
        f"{it}) and model.to() neither moves nor converts {it}",
        "one buffer per tensor, self.register_buffer(name, tensor), for a constant "
        "(nn.ParameterList or nn.ParameterDict for weights to train)"
        if contained
        else f"self.register_buffer({attr!r}, tensor) for a constant, "
        "nn.Parameter(tensor) for a weight to train",
    )


def _hidden_finding(
    path: str, attr: str, value: object, items: list[tuple[str, object]]
) -> Finding:
    what = ", ".join(f"`{loc}` ({type(item).__name__})" for loc, item in items[:_SHOWN])
    if len(items) > _SHOWN:
        what += f" and {len(items) - _SHOWN} more"
    stateful = any(
        isinstance(i, Tensor) or _stateful(i)  # type: ignore[arg-type]
        for _, i in items
    )
    consequence = (
        "they are missing from parameters(), state_dict(), .to() and .eval(), "
        "and no optimizer updates them"
        if stateful
        else "they are missing from .to() and .eval() (they hold no parameters, "
        "buffers or dropout now)"
    )
    if isinstance(value, (nn.Module, Tensor)):  # set bypassing __setattr__
        finding = _finding(
            "hidden-module",
            path,
            f"`{attr}` ({type(value).__name__}) is an attribute PyTorch did not "
            "register (it was set with object.__setattr__ or through __dict__): "
            + consequence.replace("they are", "it is").replace("them", "it"),
            f"assign it normally (self.{attr} = ...), or self.add_module("
            f"{attr!r}, module) / self.register_parameter({attr!r}, parameter)",
        )
    else:
        finding = _finding(
            "hidden-module",
            path,
            f"`{attr}` is a plain {type(value).__name__} holding {what}: PyTorch "
            f"does not look inside it, so {consequence}",
            "nn.ModuleList (a list or tuple) or nn.ModuleDict (a dict) for "
            "modules; nn.ParameterList or nn.ParameterDict for parameters",
        )
    return finding if stateful else dataclasses.replace(finding, severity="warning")


def _uninitialized(found: _Model) -> Iterator[Finding]:
    by_module: dict[str, list[str]] = {}
    for store in (found.params, found.buffers):
        for names, tensor in store.values():
            if is_lazy(tensor):
                path, _, leaf = names[0].rpartition(".")
                by_module.setdefault(path, []).append(leaf)
    for path, leaves in by_module.items():
        yield _finding(
            "uninitialized",
            path,
            f"{_names(leaves)} {_is(leaves)} not materialized yet (lazy): no shape, "
            "0 values counted, skipped by an initializer that tests "
            "type(m) == nn.Linear, refused by nn.init and some optimizers",
            "run one batch first (a dry run: net(X), or dlcomp.materialize(net, X)), "
            "then initialize and build the optimizer",
        )


def _mixed(found: _Model) -> Iterator[Finding]:
    tensors = [
        (names[0], t) for names, t in (*found.params.values(), *found.buffers.values())
    ]
    devices: dict[str, list[str]] = {}
    dtypes: dict[str, list[str]] = {}
    for name, tensor in tensors:
        devices.setdefault(str(tensor.device), []).append(name)
        # (a 0-dim tensor takes the dtype of what it meets: no promotion)
        if tensor.is_floating_point() and not is_lazy(tensor) and tensor.dim() > 0:
            dtypes.setdefault(str(tensor.dtype).removeprefix("torch."), []).append(name)
    if len(devices) > 1:
        listed = "; ".join(f"{d}: {_names(n)}" for d, n in devices.items())
        yield _finding(
            "mixed-devices",
            "",
            f"parameters and buffers are on {len(devices)} devices ({listed}): a "
            "forward pass that combines them fails with 'Expected all tensors to "
            "be on the same device' (unless the model is split on purpose)",
            "move the whole model at once with model.to(device), and keep constants "
            "as buffers so that they move with it",
        )
    if len(dtypes) > 1:
        listed = "; ".join(f"{d}: {_names(n)}" for d, n in dtypes.items())
        yield _finding(
            "mixed-dtypes",
            "",
            f"floating parameters and buffers have {len(dtypes)} dtypes ({listed}): "
            "a matrix product of two of them raises, and an addition silently "
            "promotes to the wider type",
            "convert the whole model at once with model.to(dtype); use "
            "torch.autocast for mixed precision",
        )


_TIED_FIX = (
    "nothing, if the tying is intended; to untie, give each place its own layer "
    "(copy.deepcopy(layer))"
)
_TIED_COUNT = (
    "listed once by parameters() and the optimizer (state_dict() has every name, "
    "and torch.save stores the data once), with a gradient that is the sum over "
    "every place that uses it"
)


def _tied(found: _Model) -> Iterator[Finding]:
    firsts = [found.modules[mid][0] for mid in found.aliases]
    for mid, paths in found.aliases.items():
        first, module = found.modules[mid]
        if any(first.startswith(f"{outer}.") for outer in firsts if outer != first):
            continue  # inside a shared module: that one's note says it
        inside = [names[0] for names, _ in _Model.of(module).params.values()]
        if not inside:
            continue  # a shared ReLU shares nothing
        yield _finding(
            "tied-parameters",
            first,
            f"one {type(module).__name__} is used in {len(paths) + 1} places "
            f"({_names([first, *paths])}), so its parameters ({_names(inside)}) "
            "are shared: each is " + _TIED_COUNT,
            _TIED_FIX,
        )
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for names, _ in found.params.values():
        if len(names) > 1:
            modules = tuple(name.rpartition(".")[0] for name in names)
            groups.setdefault(modules, []).append(names)
    for modules, tied in groups.items():
        pairs = "; ".join(
            " = ".join(f"`{n}`" for n in names[:_SHOWN]) for names in tied[:_SHOWN]
        )
        if len(tied) > _SHOWN:
            pairs += f" and {len(tied) - _SHOWN} more"
        yield _finding(
            "tied-parameters",
            modules[0],
            f"shared parameters ({pairs}): each is one tensor, " + _TIED_COUNT,
            _TIED_FIX,
        )


def _optimizer(found: _Model, optimizer: torch.optim.Optimizer) -> Iterator[Finding]:
    held = [p for group in optimizer.param_groups for p in group["params"]]
    ids = {id(p) for p in held}
    missing = [
        names[0]
        for pid, (names, p) in found.params.items()
        if p.requires_grad and pid not in ids
    ]
    if missing:
        yield _finding(
            "optimizer-missing",
            "",
            f"{len(missing)} parameter(s) that require a gradient are not in the "
            f"optimizer ({_names(missing)}): step() never changes them, whatever "
            "their gradients",
            "build the optimizer from model.parameters() once the model is complete "
            "(every layer added, the dry run done), or add a param group",
        )
    hidden = _hidden_tensors(found)  # reported by hidden-module already
    buffers = [found.buffers[id(p)][0][0] for p in held if id(p) in found.buffers]
    if buffers:
        yield _finding(
            "optimizer-foreign",
            "",
            f"the optimizer holds the buffer(s) {_names(buffers)}: buffers are the "
            "model's state, not weights to train, and step() changes them",
            "build the optimizer from model.parameters(), which holds no buffer",
        )
    foreign = [
        p
        for p in held
        if id(p) not in found.params
        and id(p) not in found.buffers
        and id(p) not in hidden
    ]
    if foreign:
        shapes = ", ".join(
            "an uninitialized one" if is_lazy(p) else f"one of shape {tuple(p.shape)}"
            for p in foreign[:_SHOWN]
        )
        yield _finding(
            "optimizer-foreign",
            "",
            f"the optimizer holds {len(foreign)} tensor(s) that are not in this "
            f"model ({shapes}): it was built for another model, or before the "
            "model replaced them (a layer that creates its parameters at its first "
            "batch), and step() updates tensors the model does not use",
            "build the optimizer from this model's parameters(), after the dry run",
        )


# --- the dry run on a copy ------------------------------------------------------


def _floats(value: object) -> Iterator[Tensor]:
    """The tensors in a forward pass's output that can carry a gradient."""
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _floats(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _floats(getattr(value, field.name))


def _detached(value: object) -> Any:
    """A copy of the input without its autograd history (out of inference mode).

    A copy, so that a forward pass that writes into its input in place
    leaves the caller's tensor as it was. Tensors inside other objects are
    passed as they are (their gradients are kept by the pass).
    """
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {k: _detached(v) for k, v in value.items()}
    if type(value) is list:
        return [_detached(v) for v in value]
    if type(value) is tuple:
        return tuple(_detached(v) for v in value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(_detached(v) for v in value))
    return value


def _check_input(example_input: object) -> None:
    ok = "a tensor, a tuple of positional arguments or a dict of keyword arguments"
    if isinstance(example_input, dict):
        bad = [k for k in example_input if not isinstance(k, str)]
        if bad:
            raise TypeError(
                f"audit: example_input as a dict holds keyword arguments, so its "
                f"keys must be strings; got {type(bad[0]).__name__} {bad[0]!r}"
            )
    elif not isinstance(example_input, (Tensor, tuple)):
        raise TypeError(
            f"audit: example_input must be {ok} (a forward that takes one tuple or "
            f"dict gets it as (arg,)); got {type(example_input).__name__}"
        )


def _call(model: nn.Module, example_input: object) -> Any:
    args = _detached(example_input)
    if isinstance(args, tuple):
        return model(*args)
    if isinstance(args, dict):
        return model(**args)
    return model(args)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _copy(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A deep copy of ``module``, made faster than ``copy.deepcopy`` knows how.

    ``copy.deepcopy`` copies each of a module's dozen hook dictionaries
    through the generic reduce protocol; here the registered modules are
    copied structurally, parameters and buffers by their own ``__deepcopy__``,
    the hook dictionaries shallowly (memoized, so that a lazy layer's hook
    handles point to its copy's dictionaries), a tensor computed from
    parameters (``torch.nn.utils.prune``'s weight) detached, and everything else
    a reader stored by ``copy.deepcopy``. Shared modules and parameters stay
    shared. A class with its own ``__deepcopy__`` is copied by it.
    """
    done = memo.get(id(module))
    if done is not None:
        return done  # type: ignore[no-any-return]
    if hasattr(type(module), "__deepcopy__"):
        return copy.deepcopy(module, memo)
    new = module.__class__.__new__(module.__class__)
    memo[id(module)] = new
    state: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key == "_modules":
            state[key] = {
                k: m if m is None else _copy(m, memo) for k, m in value.items()
            }
        elif key in ("_parameters", "_buffers"):
            state[key] = {k: copy.deepcopy(t, memo) for k, t in value.items()}
        elif key in _BASE and isinstance(value, (dict, set)):
            state[key] = memo[id(value)] = type(value)(value)
        elif key in _BASE:
            state[key] = value
        elif key == "_compiled_call_impl":
            state[key] = None  # model.compile(): the copy runs eagerly (the
            # compiled function closes over the original module)
        elif isinstance(value, Tensor) and value.grad_fn is not None:
            state[key] = value.detach()
        else:
            state[key] = copy.deepcopy(value, memo)
    vars(new).update(state)
    return new


def _not_run(why: str, ran: bool = False) -> Finding:
    outcome = (
        "so the pass's outcome was set aside"
        if ran
        else "so no forward and backward pass was run"
    )
    return _finding(
        "not-copyable",
        "",
        f"{why}, {outcome}: no-gradient, "
        "non-finite-gradient, non-finite-value and dry-run-failed were not checked",
        "make the model deep-copyable (copy.deepcopy(model) works), or check its "
        "gradients in a training step of your own",
    )


_CHUNK = 1 << 22  # elements checked at once


def _finite(tensor: Tensor) -> bool:
    """No NaN or infinity in ``tensor``, checked a chunk at a time.

    ``torch.isfinite`` of a whole tensor allocates a mask and temporaries
    as many elements long (on vgg16 they raised the audit's peak memory from
    1.7 to 2.9 times that of a pass); a chunk's are a few MiB.
    """
    if tensor.device.type == "meta" or is_lazy(tensor):
        return True  # no values to check
    values = tensor.coalesce().values() if tensor.is_sparse else tensor
    flat = values.reshape(-1)
    return all(
        bool(torch.isfinite(flat[start : start + _CHUNK]).all())
        for start in range(0, flat.numel(), _CHUNK)
    )


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal values, NaN equal to NaN (strided tensors)."""
    if a.layout != b.layout or a.shape != b.shape:
        return False
    if a.is_floating_point() or a.is_complex():
        return a.shape == b.shape and torch.allclose(
            a, b, rtol=0, atol=0, equal_nan=True
        )
    return torch.equal(a, b)


def _leaves(outputs: list[Tensor]) -> dict[int, Tensor]:
    """The leaf tensors that require grad in the graphs of ``outputs``.

    Walked from each output's ``grad_fn`` to its ``AccumulateGrad`` nodes,
    without recursion, each node once (kept alive while walking, so that its
    Python object, and its id, stay the same).
    """
    leaves = {id(o): o for o in outputs if o.grad_fn is None and o.requires_grad}
    stack: list[Any] = [o.grad_fn for o in outputs if o.grad_fn is not None]
    seen: dict[int, object] = {}
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            leaves[id(variable)] = variable
        stack.extend(child for child, _ in node.next_functions)
    return leaves


_LOOKED_AT = 20_000  # objects searched, at most, for the names of unregistered leaves


# What the name search does not look into: plain values, code, classes.
_OPAQUE = (
    str, bytes, int, float, complex, bool, type(None), type, types.ModuleType,
    types.FunctionType, types.MethodType, types.BuiltinFunctionType,
    functools.partial,
)  # fmt: skip


def _inside(item: object, name: str) -> list[tuple[str, object]]:
    """What the name search looks into: (name, value) for one object.

    A module's tensors and attributes, a container's items, and any other
    object's ``__dict__`` and ``__slots__`` (a ``SimpleNamespace``, a
    dataclass, a callable wrapper); plain values are left out.
    """
    found: list[tuple[str, object]]
    if isinstance(item, nn.Module):
        inside = {**item._parameters, **item._buffers, **item._modules}
        inside.update((k, v) for k, v in vars(item).items() if k not in _INTERNALS)
        found = [(f"{name}.{_name(k)}", v) for k, v in inside.items()]
    elif isinstance(item, _CONTAINERS):
        found = _items(item, name)
    elif isinstance(item, _OPAQUE):
        return []
    else:
        state = getattr(item, "__dict__", None)
        found = [(f"{name}.{k}", v) for k, v in (state or {}).items()]
        for cls in type(item).__mro__:
            slots = vars(cls).get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot not in ("__dict__", "__weakref__") and hasattr(item, slot):
                    found.append((f"{name}.{slot}", getattr(item, slot)))
    return [(n, v) for n, v in found if not isinstance(v, _OPAQUE)]


def _locate(found: _Model, targets: set[int]) -> dict[int, tuple[str, str, str]]:
    """Where a model keeps each target tensor: id -> (module path, attribute, name).

    Searches the attributes of every registered module through containers,
    unregistered modules, dataclasses and plain objects (``SimpleNamespace``,
    any instance with a ``__dict__``), breadth first, up to a bound.
    """
    where: dict[int, tuple[str, str, str]] = {}
    budget = _LOOKED_AT
    seen: set[int] = set(found.modules)  # a registered module's tensors are named
    for path, module in found.modules.values():
        for attr, value in vars(module).items():
            if attr in _INTERNALS:
                continue
            queue = collections.deque([(_join(path, attr), value)])
            while queue and budget > 0:
                name, item = queue.popleft()
                budget -= 1
                if isinstance(item, Tensor):
                    if id(item) in targets:
                        where.setdefault(id(item), (path, attr, name))
                elif id(item) not in seen:
                    seen.add(id(item))
                    queue.extend(_inside(item, name))
    return where


def _unregistered(
    found: _Model,
    leaves: dict[int, Tensor],
    where: dict[int, tuple[str, str, str]],
    covered: set[tuple[str, str]],
) -> Iterator[Finding]:
    """hidden-module: leaves the forward pass trains that the model does not register.

    ``covered`` holds the (module path, attribute) pairs the static search
    reported already (plain lists, tuples, dicts, sets).
    """
    registered = found.params.keys() | found.buffers.keys()
    targets = {i for i in leaves if i not in registered}
    if not targets:
        return
    groups: dict[tuple[str, str], list[tuple[str, Tensor]]] = {}
    for i in sorted(targets, key=lambda i: where.get(i, ("", "", ""))):
        tensor = leaves[i]
        if i in where:
            path, attr, name = where[i]
            groups.setdefault((path, attr), []).append((name, tensor))
        elif isinstance(tensor, nn.Parameter):  # (a plain one may be made in forward)
            groups.setdefault(("", ""), []).append(("(name not found)", tensor))
    modules = {path: module for path, module in found.modules.values()}
    for (path, attr), items in groups.items():
        if (path, attr) in covered:
            continue
        one = len(items) == 1
        shown = ", ".join(f"`{n}` (shape {tuple(t.shape)})" for n, t in items[:_SHOWN])
        if len(items) > _SHOWN:
            shown += f" and {len(items) - _SHOWN} more"
        if attr:
            kind = type(getattr(modules[path], attr, None)).__name__
            holder = f"`{attr}` is a {kind}, which PyTorch does not look into"
        else:
            holder = "the model holds them where PyTorch does not look"
        them, they_are = ("it", "it is") if one else ("them", "they are")
        yield dataclasses.replace(
            _finding(
                "hidden-module",
                path,
                f"the forward pass trains {shown}, but {they_are} not registered: "
                f"{holder}, so {they_are} missing from parameters(), state_dict() "
                f"and .to(), and no optimizer built from parameters() updates {them}",
                "assign a module as an attribute (self.head = head) or keep modules "
                "in nn.ModuleList or nn.ModuleDict (parameters in nn.ParameterList "
                "or nn.ParameterDict), not in a SimpleNamespace, dataclass or "
                "other object",
            ),
            subject=_join(path, attr) if attr else "",
        )


@dataclass
class _Pass:
    """What one forward and backward pass of the copy showed."""

    after: _Model | None = None  # the copy after the forward pass
    where: dict[int, tuple[str, str, str]] = dataclasses.field(default_factory=dict)
    output: Any = None
    graded: list[Tensor] = dataclasses.field(default_factory=list)
    got: set[int] = dataclasses.field(default_factory=set)  # params with a gradient
    bad: set[int] = dataclasses.field(default_factory=set)  # ... a non-finite one
    leaves: dict[int, Tensor] = dataclasses.field(default_factory=dict)
    finite_output: bool = True
    error: BaseException | None = None


def _one_pass(
    twin: nn.Module, found: _Model, example_input: object, theirs: set[int]
) -> _Pass:
    """Forward and backward on ``twin``; each gradient is checked and freed at once.

    A hook after each parameter's gradient is accumulated records that it
    came and whether it is finite, then drops it: the pass never holds the
    gradients of the whole model (the memory of a forward pass and the copy).
    Hooks go on the copy's parameters before the pass (a layer under
    reentrant checkpointing builds its graph only during backward), on lazy
    ones and on unregistered tensors of the copy after it; any other leaf
    (the caller's tensors, the original model's in ``theirs``) keeps the
    gradient it had.
    """
    result = _Pass()
    handles = []
    hooked: set[int] = set()

    def check(p: Tensor) -> None:
        result.got.add(id(p))
        if p.grad is not None and not _finite(p.grad):
            result.bad.add(id(p))
        p.grad = None

    def hook(p: Tensor) -> None:
        if id(p) not in hooked and p.requires_grad and not is_lazy(p):
            hooked.add(id(p))
            handles.append(p.register_post_accumulate_grad_hook(check))

    try:
        for _, p in found.params.values():
            hook(p)
        result.output = _call(twin, example_input)
        result.graded = [o for o in _floats(result.output) if o.requires_grad]
        result.finite_output = all(_finite(o.detach()) for o in _floats(result.output))
        if result.graded:
            result.leaves = _leaves(result.graded)
            result.after = after = _Model.of(twin)  # (lazy layers materialized)
            for _, p in after.params.values():
                hook(p)
            registered = after.params.keys() | after.buffers.keys() | theirs
            hidden = {i for i in result.leaves if i not in registered}
            result.where = _locate(after, hidden) if hidden else {}
            for i in result.where:
                hook(result.leaves[i])
            kept = [  # (a gradient is accumulated in place: its values too)
                (t, t.grad, None if t.grad is None else t.grad.clone())
                for i, t in result.leaves.items()
                if i not in hooked
            ]
            loss = sum(
                (torch.view_as_real(o) if o.is_complex() else o).float().mean()
                for o in result.graded
            )
            try:
                loss.backward()  # type: ignore[union-attr]
            finally:
                for t, grad, values in kept:
                    t.grad = grad
                    if grad is not None and values is not None:
                        grad.copy_(values)
    except (Exception, SystemExit) as error:  # the model's own failure
        result.error = error
    finally:
        for handle in handles:
            handle.remove()
    return result


def _non_finite(found: _Model) -> list[str]:
    """The names of the parameters that hold NaN or inf.

    Parameters only: a buffer may hold infinity on purpose (an attention
    mask of -inf), and a batch norm's statistics are the pass's outcome.
    """
    return [
        names[0]
        for names, t in found.params.values()
        if (t.is_floating_point() or t.is_complex()) and not _finite(t.detach())
    ]


class _Guard:
    """What a pass that reaches the original model could change, and its undoing.

    The model's gradients, its modules' attributes (a hook bound to the
    original that stores an activation) and its tensors in place: versions
    for parameters, values for buffers (kernels such as batch norm's write
    running statistics without a new version; they are copied to restore).
    """

    def __init__(self, found: _Model) -> None:
        self.found = found
        self.grads = {pid: p.grad for pid, (_, p) in found.params.items()}
        self.attributes = {
            mid: dict(vars(module)) for mid, (_, module) in found.modules.items()
        }
        self.tensors = [t for _, t in (*found.params.values(), *found.buffers.values())]
        self.versions = {
            id(t): t._version
            for t in self.tensors
            if not is_lazy(t) and not t.is_inference()
        }
        self.saved = {
            id(t): t.detach().clone()
            for _, t in found.buffers.values()
            if not is_lazy(t) and t.device.type != "meta" and t.layout == torch.strided
        }

    def undo(self) -> bool:
        """Put back what changed; whether anything had."""
        changed = False
        for pid, (_, p) in self.found.params.items():
            if p.grad is not self.grads[pid]:
                p.grad, changed = self.grads[pid], True
        for mid, (_, module) in self.found.modules.items():
            now, before = vars(module), self.attributes[mid]
            if now.keys() != before.keys() or any(
                now[k] is not v for k, v in before.items()
            ):
                now.clear()
                now.update(before)
                changed = True
        for t in self.tensors:
            moved = id(t) in self.versions and t._version != self.versions[id(t)]
            differs = id(t) in self.saved and not _same(t, self.saved[id(t)])
            if id(t) in self.saved and (moved or differs):
                with torch.no_grad():
                    t.copy_(self.saved[id(t)])
            changed = changed or moved or differs
        return changed


def _rebind_hooks(found: _Model, memo: dict[int, Any]) -> None:
    """Hooks that are methods of the original's objects, bound to their copies.

    The copy's hook dictionaries are shallow copies: a hook such as
    ``self._save`` (a feature extractor storing activations) would still
    write to the original model.
    """
    for _, module in found.modules.values():
        for key in _BASE:
            table = vars(module).get(key)
            if not isinstance(table, dict):
                continue
            for hid, fn in list(table.items()):
                owner = getattr(fn, "__self__", None)
                if isinstance(fn, types.MethodType) and id(owner) in memo:
                    table[hid] = types.MethodType(fn.__func__, memo[id(owner)])


def _set_mode(twin: nn.Module, found: _Model, training: bool) -> None:
    """``twin.train(training)``; by each module's flag where modules form a cycle."""
    if found.cycles:  # (train() would recurse until RecursionError)
        for _, module in found.modules.values():
            module.training = training
    else:
        twin.train(training)


@dataclass
class _DryRun:
    findings: list[Finding]
    recomputed: set[str]  # (the subjects of) attributes the forward pass assigned anew


def _dry_run(
    found: _Model,
    model: nn.Module,
    example_input: object,
    covered: set[tuple[str, str]],
) -> _DryRun:
    """The rules that need an input: one pass on a copy, the model left as it was.

    ``covered``: the (module path, attribute) pairs the static rules reported;
    those the forward pass assigns anew come back as ``recomputed``.
    """
    if isinstance(model, torch.jit.ScriptModule):
        why = (
            "a TorchScript module runs its own compiled copy of the parameters"
            " (audit the eager module before scripting it)"
        )
        return _DryRun([_not_run(why)], set())
    memo: dict[int, Any] = {}
    try:
        with torch.inference_mode(False):  # (copies made in it cannot be trained)
            twin = _copy(model, memo)
    except Exception as error:  # any failure: report it, go on
        return _DryRun(
            [_not_run(f"the model cannot be copied ({_first_line(error)})")], set()
        )
    twin_found = _Model.of(twin)
    if any(pid in twin_found.params for pid in found.params):
        return _DryRun(
            [_not_run("the copy shares its parameters with the model")], set()
        )
    _rebind_hooks(twin_found, memo)
    for _, p in twin_found.params.values():
        p.grad = None
    modules = {path: module for path, module in twin_found.modules.values()}

    def held(path: str, attr: str) -> object:
        module = modules.get(path)
        return None if module is None else vars(module).get(attr)

    before_attrs = {key: held(*key) for key in covered}
    guard = _Guard(found)
    cuda = sorted(
        {t.device.index or 0 for t in guard.tensors if t.device.type == "cuda"}
    )
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    modes = {id(m): m.training for _, m in twin_found.modules.values()}
    theirs = found.params.keys() | found.buffers.keys()
    # Gradients on even under no_grad() or inference_mode(); torch's random
    # state, the default dtype and the thread count restored after. A model
    # in eval mode runs in train mode (what the gradients are for); one that
    # cannot (it needs targets to train) runs in the eval mode it is in. A
    # model in train mode runs as it is (a layer kept in eval mode stays so).
    failed_in_train = None
    try:
        with (
            torch.random.fork_rng(devices=cuda),
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            if model.training:
                run = _one_pass(twin, twin_found, example_input, theirs)
            else:
                try:
                    _set_mode(twin, twin_found, True)
                    run = _one_pass(twin, twin_found, example_input, theirs)
                except Exception as error:  # a train() of the model's own raised
                    run = _Pass(error=error)
                if run.error is not None:
                    failed_in_train = run.error
                    for _, module in twin_found.modules.values():
                        module.training = modes[id(module)]
                    run = _one_pass(twin, twin_found, example_input, theirs)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
    if guard.undo() or run.leaves.keys() & theirs:
        return _DryRun(
            [
                _not_run(
                    "the copy's forward pass reached the model itself (what it "
                    "changed there is undone)",
                    ran=True,
                )
            ],
            set(),
        )
    if run.error is not None:
        also = (
            f" (in the eval mode the model is in; in train mode it raised "
            f"{_first_line(failed_in_train)})"
            if failed_in_train is not None
            else ""
        )
        return _DryRun(
            [
                _finding(
                    "dry-run-failed",
                    "",
                    "a forward and backward pass on example_input raised "
                    f"{_first_line(run.error)}{also}",
                    "read the exception: a shape, dtype or device that does not "
                    "match at the first layer means example_input does not fit the "
                    "model; anywhere else, the model fails on its own (a "
                    "mixed-dtypes or mixed-devices finding, if any, names the cause)",
                )
            ],
            set(),
        )
    recomputed = {  # attributes the forward pass assigned anew
        _join(*key) for key, value in before_attrs.items() if held(*key) is not value
    }
    after = run.after or _Model.of(twin)  # (lazy layers materialized)
    findings = list(_unregistered(after, run.leaves, run.where, covered))
    trainable = [p for _, p in after.params.values() if p.requires_grad]
    if not run.graded and trainable:
        findings.append(
            _finding(
                "no-gradient",
                "",
                f"the output ({type(run.output).__name__}) holds no floating-point "
                "tensor that requires a gradient, so nothing can be backpropagated "
                "and no parameter gets a gradient: the forward pass cuts every path "
                "to the parameters (.data, .detach(), torch.no_grad(), an integer "
                "result such as argmax), or returns its result in a form the audit "
                "cannot read",
                "compute with the parameters themselves (self.weight, not "
                "self.weight.data), and return floating-point tensors (alone, or in "
                "a tuple, list, dict or dataclass)",
            )
        )
        return _DryRun(findings, recomputed)
    if not run.graded:
        return _DryRun(findings, recomputed)  # nothing to train: nothing to check
    findings += _values(after, found, run)
    findings += _gradients(after, run, failed_in_train)
    return _DryRun(findings, recomputed)


def _values(after: _Model, found: _Model, run: _Pass) -> Iterator[Finding]:
    """non-finite-value and non-finite-gradient: one finding for one cause.

    ``after`` is the copy after the pass, ``found`` the model as it was given.
    """
    bad_grads = [names[0] for pid, (names, _) in after.params.items() if pid in run.bad]
    if run.finite_output and not bad_grads:
        return
    bad = _non_finite(found)  # (read only when something is wrong)
    if bad:
        them = "it" if len(bad) == 1 else "them"
        yield _finding(
            "non-finite-value",
            "",
            f"{_names(bad)} {_is(bad)} NaN or infinite already: every output "
            f"computed from {them} is NaN or infinite (the gradients of {them} may "
            "stay finite, so a gradient check alone can miss it), and no training "
            "step can recover",
            "find where the values went wrong (a diverged training step, a bad "
            "initialization or checkpoint), then load or re-initialize them; "
            "torch.isfinite(t).all() checks one tensor",
        )
    elif not run.finite_output:
        yield _finding(
            "non-finite-value",
            "",
            "the output of the forward pass on example_input holds NaN or infinite "
            "values, though every parameter and buffer is finite: an overflow (exp "
            "of a large number), a log or division by 0, or the square root of a "
            "negative number; every loss computed from it is NaN",
            "clamp or rescale before exp, add an epsilon before log and division, use "
            "torch.logsumexp or log_softmax; torch.autograd.set_detect_anomaly(True) "
            "names the operation in the backward pass",
        )
    else:
        yield _finding(
            "non-finite-gradient",
            "",
            f"{_names(bad_grads)} {'has' if len(bad_grads) == 1 else 'have'} NaN or "
            "infinite values in the gradient after one backward pass on "
            "example_input: one optimizer step makes the weights NaN or infinite, "
            "and every later loss NaN",
            "look for log or division by 0, sqrt at 0 or an overflow in the forward "
            "pass; torch.autograd.set_detect_anomaly(True) names the operation",
        )


def _gradients(
    found: _Model, run: _Pass, failed_in_train: BaseException | None
) -> Iterator[Finding]:
    """no-gradient: parameters the backward pass did not reach, by module."""
    no_grad: dict[str, list[str]] = {}
    for pid, (names, p) in found.params.items():
        if p.requires_grad and not is_lazy(p) and pid not in run.got:
            path, _, leaf = names[0].rpartition(".")
            no_grad.setdefault(path, []).append(leaf)
    for path, leaves in no_grad.items():
        one = len(leaves) == 1
        get, they, require = (
            ("gets", "it", "requires") if one else ("get", "they", "require")
        )
        them, they_are = ("it", "it is") if one else ("them", "they are")
        finding = _finding(
            "no-gradient",
            path,
            f"{_names(leaves)} {get} no gradient from a backward pass on "
            f"example_input, though {they} {require} one: the forward pass does not "
            f"use {them} through autograd for this input (it reads .data or "
            ".detach(), or never calls the layer), so training leaves "
            f"{them} as {they_are}",
            "compute with the parameter itself (self.weight, not self.weight.data); "
            "remove an unused layer, or freeze it with requires_grad_(False)",
        )
        if failed_in_train is not None:
            finding = dataclasses.replace(
                finding,
                severity="warning",
                message=finding.message
                + f" (in eval mode: in train mode the model raised "
                f"{_first_line(failed_in_train)}, so the pass ran in eval mode, "
                "where what only training uses, such as an auxiliary head or a "
                "loss, gets no gradient)",
            )
        yield finding


# --- the entry point ------------------------------------------------------------


def audit(
    model: nn.Module,
    example_input: object = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    ignore: Iterable[str] = (),
) -> AuditReport:
    """Check ``model`` for the chapter's pitfalls; say what goes wrong and the fix.

    Without ``example_input`` the audit only reads the model: plain containers
    that hide modules or parameters, tensors that should be buffers,
    non-string keys, lazy parameters not materialized yet, parameters on
    several devices or of several dtypes, tied parameters. With
    ``example_input`` (a tensor, a tuple of positional arguments, or a dict of
    keyword arguments) it also runs one forward and backward pass, on a copy of
    the model, in train mode and with the random state restored, to find
    parameters that get no gradient or a NaN one, NaN or infinite values, and
    parameters the forward pass uses but the model does not register (held in
    any object). With ``optimizer`` it checks that the optimizer updates
    exactly the model's parameters. The model, its gradients, its mode, the
    input, the random state, the default dtype and the thread count are left
    as they were.

    Args:
        model: the module to check.
        example_input: an input for one forward pass, or ``None``.
        optimizer: the optimizer that will train ``model``, or ``None``.
        ignore: rule ids (``"tensor-attribute"``), or names in the model (a
            module path or an attribute, such as ``"teacher"``), whose
            findings to leave out: for an idiom kept on purpose.

    Returns:
        AuditReport: the findings; ``report.ok`` is true when there is no error,
        and ``report.raise_for_errors()`` fails a test when there is.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``optimizer`` not a
            ``torch.optim.Optimizer``, or ``ignore`` a string, not a list of them.
        ValueError: an entry of ``ignore`` is neither a rule id nor a name in
            the model.

    Examples:
        The book's FixedHiddenMLP keeps its constant as a plain tensor, and the
        study notes' MySequential uses modules as keys:

        >>> from dlcomp.pitfalls import ModuleKeySequential, PlainTensorFixedHiddenMLP
        >>> report = audit(PlainTensorFixedHiddenMLP())
        >>> report.ok, [f.rule for f in report.findings]
        (True, ['tensor-attribute'])
        >>> report = audit(ModuleKeySequential(nn.Linear(4, 2)))
        >>> print(report.summary())
        audit of ModuleKeySequential: 1 error, 0 warnings, 0 notes
        >>> finding = report.errors[0]
        >>> finding.rule, finding.where, finding.fix[:32]
        ('non-string-key', '(model)', 'register under a string name: se')
        >>> print(finding.url)
        https://dlcomp.github.io/dlcomp/blocks.html#pitfall-module-key

        ``print(report)`` shows each finding's message, fix and link; in a
        notebook the report is a table.

        With an input, a forward pass that computes with ``.data`` is caught;
        the reference layer comes out clean:

        >>> from dlcomp import MyLinear
        >>> from dlcomp.pitfalls import DataMyLinear
        >>> X = torch.rand(2, 4)
        >>> net = nn.Sequential(nn.Linear(4, 3), DataMyLinear(3, 1))
        >>> [(f.rule, f.where) for f in audit(net, X).findings]
        [('no-gradient', '1')]
        >>> audit(nn.Sequential(nn.Linear(4, 3), MyLinear(3, 1)), X).findings
        ()

        And with the optimizer, parameters it does not update:

        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> optimizer = torch.optim.SGD(net[0].parameters(), lr=0.1)
        >>> (finding,) = audit(net, optimizer=optimizer).errors
        >>> finding.rule, finding.message[:53]
        ('optimizer-missing', '2 parameter(s) that require a gradient are not in the')
    """
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise TypeError(
            f"audit expects an nn.Module instance, got the class {model.__name__}: "
            f"pass {model.__name__}(...)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"audit expects an nn.Module, got {type(model).__name__}")
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: no
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        model = model._orig_mod  # torch.compile's wrapper: audit what it compiles
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "audit: optimizer must be a torch.optim.Optimizer or None, "
            f"got {type(optimizer).__name__}"
        )
    if example_input is not None:
        _check_input(example_input)
    if isinstance(ignore, str) or not isinstance(ignore, Iterable):
        raise TypeError(
            "audit: ignore must be a list of rule ids or names, such as "
            f"['teacher'], got {ignore!r}"
        )
    ignored = tuple(ignore)
    if not all(isinstance(entry, str) for entry in ignored):
        raise TypeError(
            f"audit: ignore must hold strings (rule ids or names), got {ignored!r}"
        )
    found = _Model.of(model)
    _check_ignore(found, ignored)
    covered: set[tuple[str, str]] = set()
    findings = [
        *_non_string_keys(found),
        *_cycles(found),
        *_attributes(found, covered),
        *_uninitialized(found),
        *_mixed(found),
        *_tied(found),
    ]
    rules = [
        "hidden-module",
        "tensor-attribute",
        "non-string-key",
        "module-cycle",
        "uninitialized",
        "mixed-devices",
        "mixed-dtypes",
        "tied-parameters",
    ]
    if example_input is not None:
        run = _dry_run(found, model, example_input, covered)
        findings = [  # tensors the forward pass recomputes are not state
            f
            for f in findings
            if not (f.rule == "tensor-attribute" and f.subject in run.recomputed)
        ]
        findings += run.findings
        rules += ["no-gradient", "non-finite-gradient", "non-finite-value"]
        rules += ["dry-run-failed", "not-copyable"]
    if optimizer is not None:
        findings += _optimizer(found, optimizer)
        rules += ["optimizer-missing", "optimizer-foreign"]
    findings = [f for f in findings if not _ignored(f, ignored)]
    findings.sort(key=lambda f: _ORDER[f.severity])  # stable: found order kept
    return AuditReport(type(model).__name__, tuple(findings), tuple(rules), ignored)


def _within(name: str, entry: str) -> bool:
    """Whether ``name`` is ``entry`` or inside it (``entry.x``, ``entry[0]``)."""
    return name == entry or name.startswith((f"{entry}.", f"{entry}["))


def _ignored(finding: Finding, ignored: tuple[str, ...]) -> bool:
    return any(
        entry == finding.rule
        or (entry and finding.path and _within(finding.path, entry))
        or (finding.subject and _within(finding.subject, entry))
        for entry in ignored
    )


def _check_ignore(found: _Model, ignored: tuple[str, ...]) -> None:
    """Each entry a rule id, a module path or an attribute of a module."""
    if all(entry in RULES for entry in ignored):
        return
    names = {path for path, _ in found.modules.values() if path}  # (not the model)
    for path, module in found.modules.values():
        names.update(
            _join(path, attr) for attr in vars(module) if attr not in _INTERNALS
        )
    unknown = [e for e in ignored if e not in RULES and e not in names]
    if unknown:
        raise ValueError(
            f"audit: ignore takes rule ids ({', '.join(RULES)}) or names in the "
            f"model (module paths, attributes); got {unknown[0]!r}"
        )


# --- what an audit costs ------------------------------------------------------


@dataclass(frozen=True)
class AuditCost:
    """What :func:`audit` costs on a model of ``modules`` modules (see its examples).

    Attributes:
        modules: the number of modules below the model (Linear and ReLU).
        batch: the rows of the example input.
        without_input: seconds per ``audit(model)``.
        with_input: seconds per ``audit(model, X)``.
        forward_backward: seconds per forward and backward pass of the model
            on ``X``, the cost the dry run is compared with.

    This is the result type of :func:`audit_cost`.
    """

    modules: int
    batch: int
    without_input: Measurement
    with_input: Measurement
    forward_backward: Measurement

    @property
    def ratio(self) -> float:
        """Median ``audit(model, X)`` time over one forward and backward pass."""
        fb = self.forward_backward.median
        return self.with_input.median / fb if fb > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: sizes, the three measurements and the ratio."""
        return {
            "modules": self.modules,
            "batch": self.batch,
            "without_input": self.without_input.as_dict(),
            "with_input": self.with_input.as_dict(),
            "forward_backward": self.forward_backward.as_dict(),
            "ratio": self.ratio,
        }


def audit_cost(
    modules: int = 100, width: int = 64, batch: int = 64, *, min_time: float = 0.2
) -> AuditCost:
    """Time :func:`audit` on a CPU model of ``modules`` modules, with and without input.

    The model alternates ``Linear(width, width)`` and ``ReLU`` layers. The
    audit with an input is timed interleaved with one forward and backward
    pass of the model itself (:func:`~dlcomp.interleaved`), so that the ratio
    of the two holds under a changing load.

    Args:
        modules: how many layers (at least 2).
        width: the features of each linear layer.
        batch: the rows of the example input.
        min_time: timed seconds to collect at least, per measurement.

    Returns:
        AuditCost: the three measurements and their ratio.

    Examples:
        >>> cost = audit_cost(10, min_time=0.01)
        >>> print(cost.without_input)  # doctest: +ELLIPSIS
        audit(model) on cpu: median ... (IQR ..., ... runs x ...)
        >>> cost.ratio > 0, cost.as_dict()["modules"]
        (True, 10)
    """
    modules = check_int(modules, "modules", minimum=2, who="audit_cost")
    width = check_int(width, "width", minimum=1, who="audit_cost")
    batch = check_int(batch, "batch", minimum=1, who="audit_cost")
    min_time = check_float(min_time, "min_time", minimum=0, who="audit_cost")
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(
            *(
                nn.Linear(width, width) if i % 2 == 0 else nn.ReLU()
                for i in range(modules)
            )
        )
    X = torch.rand(batch, width, generator=generator)

    def forward_backward() -> None:
        net.zero_grad(set_to_none=True)
        net(X).mean().backward()

    bare = benchmark(lambda: audit(net), label="audit(model)", min_time=min_time)
    pair = interleaved(
        {
            "audit(model, X)": lambda: audit(net, X),
            "forward+backward": forward_backward,
        },
        min_time=min_time,
    )
    return AuditCost(modules, batch, bare, *pair.values())
