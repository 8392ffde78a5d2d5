"""Check a saved optimizer state against the optimizer that will use it (private).

``optimizer.load_state_dict`` copies whatever it is given: Adam state whose
``exp_avg_sq`` was renamed, a 0-dim ``exp_avg``, ``lr='fast'`` all load, and
the next ``step()`` raises (or trains on garbage). :func:`check_optimizer_state`
refuses such a state, with :class:`~dlcomp.CheckpointError`, before anything
is copied. It checks the state against what the optimizer's own class
creates:

- **Structure**: the layout of ``optimizer.state_dict()``
  (``{"state": {id: {name: value}}, "param_groups": [{..., "params": [id]}]}``),
  with ids that are parameter numbers (torch's own ``state_dict``) or the
  fully qualified names that
  :func:`torch.distributed.checkpoint.state_dict.get_state_dict` uses (pass
  them as ``keys``); as many groups as the optimizer, of the same sizes; no
  state for an id that no group lists.
- **Settings** (``lr``, ``betas``, ``amsgrad``...): each of the optimizer's
  group settings keeps its type: a number stays a number (a float ``lr`` may
  also be a one-element tensor, as torch allows), a bool a bool, a tuple a
  tuple (or list) of the same length holding what the optimizer holds, None
  stays None unless the class's signature allows more (``foreach``:
  ``bool | None``). Settings the file has and the optimizer lacks
  (``initial_lr`` from a scheduler) must be plain values.
- **Per-parameter state**: the names the class creates with these settings
  (``amsgrad``, ``momentum``, ``centered`` change them), each a tensor of the
  shape and dtype kind (real, complex, integer, bool) the class creates, or
  the Python value it keeps (SparseAdam's int ``step``). A Python number is
  accepted for a 0-dim tensor the class itself turns numbers into when
  loading (``step`` of checkpoints from older torch). A parameter may have no
  state (it never had a gradient), unless the class creates state with the
  optimizer (Adagrad).
- **Settings that change the state**: the file's settings, stepped in a
  probe (once per group, number of dimensions and dtype), must create the
  same state names and shapes as this optimizer's
  (SGD with ``momentum=0`` saved, ``momentum=0.9`` here: the file has no
  buffers and its setting would turn momentum off), and must run at all
  (a setting the class needs and the file lacks is refused).

**How the expected state is found: probes.** A probe optimizer of the same
class is built over stand-in parameters of the same shapes and dtypes, with
the group's settings (``foreach=False``, ``fused=False``, ``capturable=False``,
``differentiable=False``: the plain loop), given zero gradients, and stepped
once: its state holds the names and shapes the class creates. One probe runs
per group and distinct (shape, dtype), not per parameter; none holds memory
in proportion to the model. In order, with torch 2.13:

1. **Meta device**: parameters of the real shapes on the ``meta`` device.
   Works for Adadelta, Adagrad, Adam, AdamW, Adamax, Muon, NAdam, RAdam,
   RMSprop, SGD (no state while ``momentum=0``), Rprop (not for 0-dim
   parameters) and most classes outside ``torch.optim``.
2. **Small CPU stand-ins**: a tensor with the parameter's number of
   dimensions and sizes 2, 3, 5, 7, 11, 13 (at most 6 dimensions; 30,030
   elements), then the same with a sparse zero gradient. A state dimension of
   size 1 stays 1 and one of the stand-in's sizes maps back to the
   parameter's dimension of that size: Adafactor's factored ``row_var`` of
   ``(2, 1)`` for a ``(2, 3)`` stand-in is ``(rows, 1)`` for the parameter.
   For Adafactor and ASGD (``.item()`` on meta), Rprop's 0-dim parameters,
   and SparseAdam (sparse gradients only).
3. **LBFGS** keeps one global state under its first parameter, which grows
   over the steps (a state after a step that met its tolerance has only
   ``func_evals`` and ``n_iter``): its settings are probed on CPU stand-ins
   with a quadratic closure (``max_iter`` and ``max_eval`` capped at 3), and its
   state is checked by a rule: only the first parameter has state; its names
   are among LBFGS's; ``func_evals`` and ``n_iter`` are ints; ``d``,
   ``prev_flat_grad`` and every entry of ``old_dirs`` and ``old_stps`` are
   1-D real tensors of as many elements as all the parameters together;
   ``ro`` is as long as ``old_dirs``; ``t``, ``H_diag``, ``prev_loss`` are
   numbers or 0-dim tensors.
4. **No probe runs** (a class outside ``torch.optim`` whose constructor or step
   the probes cannot call, integer parameters): the saved state is checked
   for its own consistency (every parameter's state has the same names, and
   each name the same kind of value: parameter-shaped or 0-dim tensors of one
   dtype kind, or Python values), each tensor has the parameter's shape or is
   0-dim, and where this optimizer already has state, the file's has the same
   names, shapes and kinds. Settings are checked as above, and a setting the
   optimizer has and the file lacks is refused unless the class's
   ``__setstate__`` fills it in.

Load-state-dict pre-hooks registered on the optimizer are not run: a state
that only fits after such a hook is refused.
"""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dlcomp._checkpoint import CheckpointError, names

__all__ = ["ADVICE", "check_optimizer_state", "dtype_kind"]

ADVICE = (
    "Build the optimizer as when saving (the same class, parameter groups and "
    "settings), or load the model alone (optimizer=None). Nothing was loaded"
)

# Settings that choose an implementation (a loop, fused kernels, CUDA graphs),
# not the state: every probe runs the plain loop.
_PLAIN_LOOP = {
    "foreach": False,
    "fused": False,
    "capturable": False,
    "differentiable": False,
}
_STAND_IN_SIZES = (2, 3, 5, 7, 11, 13)  # distinct, > 1: a state's size maps back
_LBFGS_NAMES = {
    "func_evals",
    "n_iter",
    "d",
    "t",
    "old_dirs",
    "old_stps",
    "ro",
    "H_diag",
    "prev_flat_grad",
    "prev_loss",
    "al",
}
_NOT_SETTINGS = ("params", "param_names")


def check_optimizer_state(
    optimizer: torch.optim.Optimizer,
    state: object,
    where: str,
    *,
    keys: Sequence[Hashable] | None = None,
) -> None:
    """Raise CheckpointError unless ``state`` can be loaded into ``optimizer``.

    Args:
        optimizer: the optimizer that will load the state (its class, parameter
            groups and settings are what the state is checked against).
        state: a state in the layout of ``optimizer.state_dict()``.
        where: where the state comes from (a path, "this checkpoint"), for
            the messages.
        keys: the ids the state uses for this optimizer's parameters, in the
            order of its groups (the fully qualified names of a DCP state dict);
            ``None`` for parameter numbers, mapped by their place in the
            groups as ``optimizer.load_state_dict`` maps them.

    Raises:
        CheckpointError: the state is damaged or does not fit; the message
            names the group or parameter, the setting or state name, what the
            file has and what this optimizer expects.

    Examples:
        >>> net = nn.Linear(3, 2)
        >>> adam = torch.optim.Adam(net.parameters())
        >>> net(torch.ones(1, 3)).sum().backward()
        >>> adam.step()
        >>> saved = adam.state_dict()
        >>> check_optimizer_state(torch.optim.Adam(net.parameters()), saved, "c.pt")
        >>> saved["state"][0]["exp_avg"] = torch.tensor(0.0)
        >>> check_optimizer_state(torch.optim.Adam(net.parameters()), saved, "c.pt")
        Traceback (most recent call last):
        ...
        dlcomp.CheckpointError: the optimizer state in c.pt does not fit this
        optimizer: parameter 0 exp_avg: () in the file, (2, 3) expected. ...
    """
    groups, entries = _structure(optimizer, state, where, keys)
    problems: list[str] = []
    group_of = [n for n, g in enumerate(optimizer.param_groups) for _ in g["params"]]
    labels = _labels(optimizer, keys)
    if isinstance(optimizer, torch.optim.LBFGS):
        problems += _lbfgs_problems(optimizer, entries, labels)
    for n, (theirs, ours) in enumerate(
        zip(groups, optimizer.param_groups, strict=True)
    ):
        bad_settings = _setting_problems(type(optimizer), n, theirs, ours)
        problems += bad_settings
        if isinstance(optimizer, torch.optim.LBFGS):
            if not bad_settings:
                problems += _lbfgs_settings_run(optimizer, n, theirs, ours)
            continue
        members = [j for j, m in enumerate(group_of) if m == n]
        problems += _group_problems(
            optimizer, n, theirs, ours, members, entries, labels, not bad_settings
        )
    if problems:
        raise CheckpointError(
            f"the optimizer state in {where} does not fit this optimizer: "
            f"{names(problems)}. {ADVICE}"
        )


# --- structure ---------------------------------------------------------------------


def _structure(
    optimizer: torch.optim.Optimizer,
    state: object,
    where: str,
    keys: Sequence[Hashable] | None,
) -> tuple[list[Mapping[Any, Any]], list[Mapping[Any, Any] | None]]:
    """The saved groups, and each of this optimizer's parameters' saved state.

    Raises CheckpointError for a damaged layout or groups of other sizes.
    """
    numbers = keys is None
    listing = "parameter numbers" if numbers else "parameter names"

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(
            f"the optimizer state in {where} is damaged ({why}). Nothing was loaded"
        )

    groups = state.get("param_groups") if isinstance(state, Mapping) else None
    saved = state.get("state") if isinstance(state, Mapping) else None
    if not (
        isinstance(groups, list | tuple)
        and all(
            isinstance(g, Mapping)
            and isinstance(g.get("params"), list | tuple)
            and all(_is_id(i, numbers) for i in g["params"])
            for g in groups
        )
        and isinstance(saved, Mapping)
        and all(_is_id(i, numbers) for i in saved)
    ):
        raise damaged(f"param_groups should list {listing}, state map them to dicts")
    sizes = [len(g["params"]) for g in groups]
    own_sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != own_sizes:
        raise CheckpointError(
            f"the optimizer state in {where} does not fit this optimizer: parameter "
            f"groups of sizes {sizes} in the file, {own_sizes} here. {ADVICE}"
        )
    ids = [i for g in groups for i in g["params"]]
    if len(set(ids)) != len(ids):
        raise damaged("a parameter is listed twice in param_groups")
    if not numbers:
        assert keys is not None
        start = 0
        for n, group in enumerate(groups):
            found, own = (
                list(group["params"]),
                list(keys[start : start + len(group["params"])]),
            )
            start += len(found)
            if found != own:
                raise CheckpointError(
                    f"the optimizer state in {where} does not fit this optimizer: "
                    f"parameter group {n} holds {names([str(k) for k in found])}, "
                    f"this optimizer's {names([str(k) for k in own])}. {ADVICE}"
                )
    listed = set(ids)
    unlisted = [str(i) for i in saved if i not in listed]
    if unlisted:
        raise damaged(f"state for parameter {names(unlisted)}, which no group lists")
    entries: list[Mapping[Any, Any] | None] = []
    for number, i in enumerate(ids):
        entry = saved.get(i)
        if i in saved and not isinstance(entry, Mapping):  # None too: not "no state"
            raise damaged(
                f"the state of parameter {number} is a {type(entry).__name__}, "
                "not a dict"
            )
        entries.append(entry or None)  # an empty dict: no state, as torch reads it
    return list(groups), entries


def _is_id(value: object, numbers: bool) -> bool:
    return type(value) is int if numbers else isinstance(value, str)


def _labels(
    optimizer: torch.optim.Optimizer, keys: Sequence[Hashable] | None
) -> list[str]:
    """How messages name each parameter: its number, and its name where known."""
    if keys is not None:
        return [f"parameter {k}" for k in keys]
    labels: list[str] = []
    for group in optimizer.param_groups:
        found = group.get("param_names")
        for i, _ in enumerate(group["params"]):
            name = found[i] if isinstance(found, list) and i < len(found) else None
            labels.append(f"parameter {len(labels)}" + (f" ({name})" if name else ""))
    return labels


# --- settings ----------------------------------------------------------------------


def _setting_problems(
    cls: type, n: int, theirs: Mapping[Any, Any], ours: Mapping[Any, Any]
) -> list[str]:
    """Each setting of the file's group ``n`` against this optimizer's."""
    problems = []
    hints = _annotations(cls)
    for key, value in theirs.items():
        if key == "params":
            continue
        if key == "param_names":
            if not (
                isinstance(value, list | tuple)
                and len(value) == len(theirs["params"])
                and all(isinstance(v, str) for v in value)
            ):
                problems.append(f"group {n} param_names: not a list of names")
        elif key not in ours:
            if not _plain(value):
                problems.append(
                    f"group {n} {key}: a {type(value).__name__} in the file, not a "
                    "number, string, tensor or list of them"
                )
        else:
            expected = _expected(key, ours[key], hints.get(str(key)))
            if not _fits(value, expected):
                problems.append(
                    f"group {n} {key}: {_shown(value)} in the file, "
                    f"{_describe(expected)} here"
                )
    return problems


@dataclass(frozen=True)
class _Allowed:
    """The values a setting may take: these kinds (and, for a tuple, per element)."""

    kinds: frozenset[str]
    items: tuple[_Allowed, ...] | None = None  # a tuple's elements, if known


def _expected(key: object, ours: object, hint: str | None) -> _Allowed:
    """What a saved setting may be where this optimizer has ``ours``.

    From the value's type, widened by the constructor's annotation of the
    setting (``foreach: bool | None``, ``lr: float | Tensor``).
    """
    kinds = set(_kinds_of_value(ours))
    parsed = _parse_hint(hint) if hint else None
    if parsed is not None:
        kinds |= parsed.kinds
    elif isinstance(ours, int) and not isinstance(ours, bool):
        kinds.add("float")  # no annotation: momentum=0 may be saved as 0.9
    if key == "lr" and kinds & {"int", "float"}:
        kinds.add("tensor")  # torch takes a tensor lr
    items = None
    if isinstance(ours, tuple | list):
        inner = parsed.items if parsed is not None and parsed.items else None
        if inner is not None and len(inner) != len(ours):
            inner = None
        items = tuple(
            _expected(None, element, None)
            if inner is None
            else _merge(_expected(None, element, None), inner[i])
            for i, element in enumerate(ours)
        )
    return _Allowed(frozenset(kinds), items)


def _merge(a: _Allowed, b: _Allowed) -> _Allowed:
    return _Allowed(a.kinds | b.kinds, a.items or b.items)


def _kinds_of_value(value: object) -> set[str]:
    if isinstance(value, bool):
        return {"bool"}
    if isinstance(value, int):
        return {"int"}
    if isinstance(value, float):
        return {"float"}
    if isinstance(value, Tensor):
        return {"tensor", "float"}
    if value is None:
        return {"None"}
    if isinstance(value, str):
        return {"str"}
    if isinstance(value, tuple | list):
        return {"sequence"}
    return {f"type:{type(value).__qualname__}"}


_WORDS = {
    "bool": "bool",
    "int": "int",
    "float": "float",
    "Tensor": "tensor",
    "None": "None",
    "NoneType": "None",
    "str": "str",
}


def _parse_hint(text: str) -> _Allowed | None:
    """The kinds an annotation such as ``tuple[float | None, float]`` names."""
    kinds: set[str] = set()
    items: tuple[_Allowed, ...] | None = None
    for part in _split(text, "|"):
        part = part.strip()
        head, _, inner = part.partition("[")
        inner = inner[:-1] if inner.endswith("]") else inner
        head = head.rsplit(".", 1)[-1]
        if head == "Optional":
            sub = _parse_hint(inner)
            kinds |= {"None"} | (sub.kinds if sub else set())
        elif head == "Union":
            for element in _split(inner, ","):
                sub = _parse_hint(element)
                if sub:
                    kinds |= sub.kinds
        elif head.lower() in ("tuple", "list", "sequence"):
            kinds.add("sequence")
            if inner and "..." not in inner:
                parsed = [_parse_hint(e) for e in _split(inner, ",")]
                if all(p is not None for p in parsed):
                    items = tuple(p for p in parsed if p is not None)
        elif head in _WORDS:
            kinds.add(_WORDS[head])
        else:
            return None  # a type this check does not know: go by the value
    return _Allowed(frozenset(kinds), items)


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _annotations(cls: type) -> dict[str, str]:
    """The constructor's annotations, as text, by parameter name."""
    try:
        parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    except (TypeError, ValueError):
        return {}
    return {
        name: a if isinstance(a, str) else inspect.formatannotation(a)
        for name, p in parameters.items()
        if (a := p.annotation) is not inspect.Parameter.empty
    }


def _fits(value: object, allowed: _Allowed) -> bool:
    kinds = allowed.kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool(kinds & {"int", "float"})
    if isinstance(value, float):
        return "float" in kinds
    if isinstance(value, Tensor):
        return (
            "tensor" in kinds
            and value.numel() == 1
            and not (value.is_complex() or value.dtype == torch.bool)
            and value.device.type != "meta"
        )
    if value is None:
        return "None" in kinds
    if isinstance(value, str):
        return "str" in kinds
    if isinstance(value, tuple | list):
        if "sequence" not in kinds:
            return False
        if allowed.items is None:
            return all(_plain(v) for v in value)
        return len(value) == len(allowed.items) and all(
            _fits(v, a) for v, a in zip(value, allowed.items, strict=True)
        )
    return f"type:{type(value).__qualname__}" in kinds


def _describe(allowed: _Allowed) -> str:
    if allowed.items is not None:
        inner = ", ".join(_describe(a) for a in allowed.items)
        return f"a {len(allowed.items)}-tuple of ({inner})"
    words = {
        "bool": "a bool",
        "int": "an int",
        "float": "a number",
        "tensor": "a one-element tensor",
        "None": "None",
        "str": "a string",
        "sequence": "a tuple",
    }
    kinds = set(allowed.kinds)
    if "float" in kinds:
        kinds.discard("int")
    shown = sorted(words.get(k, "a " + k.removeprefix("type:")) for k in kinds)
    return " or ".join(shown)


def _shown(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def _plain(value: object, depth: int = 0) -> bool:
    """A value torch's own optimizers could keep: numbers, strings, tensors, lists."""
    if depth > 4:
        return False
    if value is None or isinstance(value, bool | int | float | str | Tensor):
        return True
    if isinstance(value, tuple | list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(
            isinstance(k, str | int) and _plain(v, depth + 1) for k, v in value.items()
        )
    return False


# --- probes ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """What a class keeps under one state name."""

    shape: tuple[int, ...] | None  # a tensor's shape; None: not a tensor
    kind: str  # a tensor's dtype kind, or the Python type's name
    layout: torch.layout | None = None


@dataclass(frozen=True)
class _Spec:
    """The per-parameter state a class creates for one shape and dtype."""

    values: Mapping[Hashable, _Value]
    initial: bool  # created with the optimizer, before any step (Adagrad)
    numbers: frozenset[Hashable]  # 0-dim tensors the class makes from numbers


class _ProbeFailed(Exception):
    pass


def dtype_kind(dtype: torch.dtype) -> str:
    """What a state tensor's dtype must keep: complex, real floating, integer, bool."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "real floating"
    return "bool" if dtype == torch.bool else "integer"


def _probe(
    optimizer: torch.optim.Optimizer,
    ours: Mapping[Any, Any],
    theirs: Mapping[Any, Any] | None,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> _Spec:
    """The state one step of a probe creates for a parameter of ``shape``.

    With this optimizer's group settings ``ours``, or, with ``theirs`` given,
    the file's settings put in as ``load_state_dict`` puts them. Raises
    _ProbeFailed with the last error if no probe runs.
    """
    error: BaseException | None = None
    for how in ("meta", "dense", "sparse"):
        if how != "meta" and len(shape) > len(_STAND_IN_SIZES):
            break
        try:
            return _probe_once(optimizer, ours, theirs, shape, dtype, how)
        except Exception as failed:  # whatever the class raises
            error = failed
    raise _ProbeFailed(f"{type(error).__name__}: {_first_line(error)}")


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""


def _constructor_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's defaults its constructor takes as keyword arguments."""
    try:
        parameters = inspect.signature(type(optimizer).__init__).parameters
    except (TypeError, ValueError):
        return {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    settings = {
        k: v
        for k, v in optimizer.defaults.items()
        if takes_any or (k in parameters and k not in ("self", "params"))
    }
    settings.update({k: v for k, v in _PLAIN_LOOP.items() if k in settings})
    return settings


def _settings(group: Mapping[Any, Any]) -> dict[Any, Any]:
    settings = {k: v for k, v in group.items() if k not in _NOT_SETTINGS}
    settings.update({k: v for k, v in _PLAIN_LOOP.items() if k in settings})
    return settings


def _probe_once(
    optimizer: torch.optim.Optimizer,
    ours: Mapping[Any, Any],
    theirs: Mapping[Any, Any] | None,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    how: str,
) -> _Spec:
    cls = type(optimizer)
    small = _STAND_IN_SIZES[: len(shape)]
    if how == "meta":
        param = torch.empty(shape, dtype=dtype, device="meta", requires_grad=True)
    else:
        param = torch.zeros(small, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = cls(
            [{**_settings(ours), "params": [param]}], **_constructor_settings(optimizer)
        )
        initial = bool(probe.state.get(param))
        if theirs is not None:  # as load_state_dict does, without the state
            probe.__setstate__(
                {
                    "state": probe.state,
                    "param_groups": [{**_settings(theirs), "params": [param]}],
                }
            )
            probe.param_groups[0].update(
                {k: v for k, v in _PLAIN_LOOP.items() if k in probe.param_groups[0]}
            )
        grad = torch.zeros_like(param)
        param.grad = grad.to_sparse() if how == "sparse" else grad
        probe.step()
        entry = dict(probe.state.get(param, {}))
        numbers = _numbers_made_tensors(probe, param, entry)
    values: dict[Hashable, _Value] = {}
    for name, value in entry.items():
        if isinstance(value, Tensor):
            found = tuple(value.shape)
            real = found if how == "meta" else _real_shape(found, small, shape)
            if real is None:
                raise _ProbeFailed(f"{name} of shape {found} for a {small} stand-in")
            values[name] = _Value(real, dtype_kind(value.dtype), value.layout)
        else:
            values[name] = _Value(None, type(value).__name__)
    return _Spec(values, initial, numbers)


def _real_shape(
    found: tuple[int, ...], small: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...] | None:
    """A stand-in's state shape, for the parameter: 1 stays 1, a size maps back."""
    real = []
    for size in found:
        if size == 1:
            real.append(1)
        elif size in small:
            real.append(shape[small.index(size)])
        else:
            return None
    return tuple(real)


def _numbers_made_tensors(
    probe: torch.optim.Optimizer, param: Tensor, entry: Mapping[Hashable, Any]
) -> frozenset[Hashable]:
    """The 0-dim tensors of ``entry`` the class makes from saved numbers.

    Its ``__setstate__`` (run by ``load_state_dict``) turns a number into a
    tensor, as for the ``step`` of checkpoints from older torch.
    """
    scalars = {
        k
        for k, v in entry.items()
        if isinstance(v, Tensor) and v.dim() == 0 and v.device.type != "meta"
    }
    if not scalars:
        return frozenset()
    as_numbers = {k: float(v) if k in scalars else v for k, v in entry.items()}
    try:
        probe.__setstate__(
            {
                "state": defaultdict(dict, {param: as_numbers}),
                "param_groups": probe.param_groups,
            }
        )
    except Exception:  # a class that cannot: no numbers accepted
        return frozenset()
    converted = probe.state.get(param, {})
    return frozenset(k for k in scalars if isinstance(converted.get(k), Tensor))


def _missing_settings(
    optimizer: torch.optim.Optimizer,
    theirs: Mapping[Any, Any],
    ours: Mapping[Any, Any],
) -> list[str]:
    """This optimizer's settings that the file's group lacks.

    Less those the class's ``__setstate__`` (run by ``load_state_dict``) fills in.
    """
    missing = [k for k in ours if k not in theirs]
    if not missing:
        return []
    cls = type(optimizer)
    try:
        blank = cls.__new__(cls)
        group = {**_settings(theirs), "params": []}
        blank.__setstate__(
            {"defaults": dict(optimizer.defaults), "state": {}, "param_groups": [group]}
        )
    except Exception:  # nothing known to be filled in
        return [str(k) for k in missing]
    return [str(k) for k in missing if k not in group]


# --- per-parameter state -------------------------------------------------------------


def _group_problems(
    optimizer: torch.optim.Optimizer,
    n: int,
    theirs: Mapping[Any, Any],
    ours: Mapping[Any, Any],
    members: list[int],
    entries: list[Mapping[Any, Any] | None],
    labels: list[str],
    settings_ok: bool,
) -> list[str]:
    """The state of group ``n``'s parameters, against probes with its settings."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    specs: dict[tuple[tuple[int, ...], torch.dtype], _Spec | None] = {}
    settings_probed: set[tuple[int, torch.dtype]] = set()
    problems: list[str] = []
    for j in members:
        signature = (tuple(params[j].shape), params[j].dtype)
        if signature in specs:
            continue
        try:
            spec: _Spec | None = _probe(optimizer, ours, None, *signature)
        except _ProbeFailed:
            spec = None
        specs[signature] = spec
        # the file's settings: once per number of dimensions and dtype
        rank = (len(signature[0]), signature[1])
        if spec is None or not settings_ok or rank in settings_probed:
            continue
        settings_probed.add(rank)
        try:
            with_theirs = _probe(optimizer, ours, theirs, *signature)
        except _ProbeFailed as error:
            missing = _missing_settings(optimizer, theirs, ours)
            problems.append(
                f"group {n}: the file lacks the settings {names(missing)}"
                if missing
                else f"group {n}: this optimizer does not step with the file's "
                f"settings ({error})"
            )
            settings_ok = False
            continue
        if (with_theirs.values, with_theirs.initial) != (spec.values, spec.initial):
            differ = [
                k
                for k in ours
                if k not in _NOT_SETTINGS
                and k not in _PLAIN_LOOP
                and (k not in theirs or not _same(theirs[k], ours[k]))
            ]
            file_side = names([f"{k}={_shown(theirs.get(k))}" for k in differ])
            our_side = names([f"{k}={_shown(ours[k])}" for k in differ])
            problems.append(
                f"group {n}: with the file's settings ({file_side}) the state of a "
                f"parameter of shape {signature[0]} is {_names_of(with_theirs)}, "
                f"with this optimizer's ({our_side}) {_names_of(spec)}"
            )
            settings_ok = False
    if settings_ok and all(s is None for s in specs.values()):
        missing = _missing_settings(optimizer, theirs, ours)
        if missing:
            problems.append(f"group {n}: the file lacks the settings {names(missing)}")
    unknown = []
    for j in members:
        spec = specs[(tuple(params[j].shape), params[j].dtype)]
        if spec is None:
            unknown.append(j)
        else:
            problems += _entry_problems(labels[j], entries[j], spec)
    if unknown:
        problems += _consistency_problems(optimizer, unknown, params, entries, labels)
    return problems


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors of other shapes, say
        return False


def _names_of(spec: _Spec) -> str:
    return "[" + ", ".join(sorted(str(k) for k in spec.values)) + "]"


def _entry_problems(
    label: str, entry: Mapping[Any, Any] | None, spec: _Spec
) -> list[str]:
    expected = sorted(str(k) for k in spec.values)
    if entry is None:
        return (
            [f"{label}: no state in the file, and this optimizer keeps {expected}"]
            if spec.initial
            else []
        )
    found = sorted(str(k) for k in entry)
    if found != expected:
        return [f"{label}: state {found} in the file, {expected} expected"]
    problems = []
    for name, value in entry.items():
        problem = _value_problem(value, spec.values[name], name in spec.numbers)
        if problem:
            problems.append(f"{label} {name}: {problem}")
    return problems


def _value_problem(value: object, want: _Value, number_ok: bool) -> str | None:
    """Why ``value`` cannot stand where the class keeps ``want``, or None."""
    if want.shape is not None:
        if not isinstance(value, Tensor):
            if number_ok and _is_number(value):
                return None
            return f"a {type(value).__name__} in the file, a tensor expected"
        if tuple(value.shape) != want.shape:
            return f"{tuple(value.shape)} in the file, {want.shape} expected"
        if dtype_kind(value.dtype) != want.kind:
            return f"{value.dtype} in the file, a {want.kind} tensor expected"
        if want.layout is not None and value.layout != want.layout:
            return f"{value.layout} in the file, {want.layout} expected"
        if value.device.type == "meta":
            return "on the meta device in the file (it has no values)"
        return None
    fits: Callable[[object], bool] = {
        "int": _is_int,
        "float": _is_number,
        "bool": lambda v: isinstance(v, bool),
        "NoneType": lambda v: v is None,
        "str": lambda v: isinstance(v, str),
        "list": lambda v: isinstance(v, list | tuple) and _plain(v),
        "tuple": lambda v: isinstance(v, list | tuple) and _plain(v),
    }.get(want.kind, lambda v: type(v).__name__ == want.kind)
    if fits(value):
        return None
    article = "an" if want.kind[0] in "aeiou" else "a"
    return f"a {type(value).__name__} in the file, {article} {want.kind} expected"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _consistency_problems(
    optimizer: torch.optim.Optimizer,
    members: list[int],
    params: list[Tensor],
    entries: list[Mapping[Any, Any] | None],
    labels: list[str],
) -> list[str]:
    """Parameters no probe ran for: the file's state against itself.

    And against the parameter's shape, and this optimizer's own state where
    it has some.
    """
    problems: list[str] = []
    first: tuple[str, list[str]] | None = None
    kinds: dict[Hashable, tuple[str, str, str]] = {}  # name: (rank, kind, label)
    for j in members:
        entry, param = entries[j], params[j]
        if entry is None:
            continue
        found = sorted(str(k) for k in entry)
        if first is None:
            first = (labels[j], found)
        elif found != first[1]:
            problems.append(
                f"{labels[j]}: state {found} in the file, {first[1]} for {first[0]}"
            )
            continue
        own = optimizer.state.get(param)
        if own and sorted(str(k) for k in own) != found:
            problems.append(
                f"{labels[j]}: state {found} in the file, "
                f"{sorted(str(k) for k in own)} here"
            )
            continue
        for name, value in entry.items():
            problem = _loose_problem(value, param, None if not own else own.get(name))
            if problem:
                problems.append(f"{labels[j]} {name}: {problem}")
                continue
            if isinstance(value, Tensor):
                kind = f"{dtype_kind(value.dtype)} tensor"
                # a 0-dim parameter's state is both parameter-shaped and 0-dim
                rank = (
                    ""
                    if param.dim() == 0
                    else "0-dim "
                    if value.dim() == 0
                    else ("parameter-shaped ")
                )
            else:
                kind, rank = type(value).__name__, ""
            seen = kinds.get(name)
            if seen is None or (rank and not seen[0]):
                kinds[name] = (rank, kind, labels[j])
            elif seen[1] != kind or (rank and seen[0] != rank):
                problems.append(
                    f"{labels[j]} {name}: a {rank}{kind} in the file, a "
                    f"{seen[0]}{seen[1]} for {seen[2]}"
                )
    return problems


def _loose_problem(value: object, param: Tensor, own: object) -> str | None:
    if isinstance(value, Tensor):
        if value.dim() > 0 and tuple(value.shape) != tuple(param.shape):
            return (
                f"shape {tuple(value.shape)} in the file, the parameter's "
                f"{tuple(param.shape)} (or 0-dim) expected"
            )
        if value.layout != torch.strided or value.device.type == "meta":
            return f"a {value.layout} tensor on {value.device.type} in the file"
        if isinstance(own, Tensor):
            if tuple(own.shape) != tuple(value.shape):
                return (
                    f"shape {tuple(value.shape)} in the file, {tuple(own.shape)} here"
                )
            if dtype_kind(own.dtype) != dtype_kind(value.dtype):
                return f"{value.dtype} in the file, {own.dtype} here"
        return None
    if not _plain(value):
        return f"a {type(value).__name__} in the file, not a tensor or number"
    if isinstance(own, Tensor) and not (own.dim() == 0 and _is_number(value)):
        return f"a {type(value).__name__} in the file, a tensor here"
    return None


# --- LBFGS -------------------------------------------------------------------------


def _lbfgs_problems(
    optimizer: torch.optim.Optimizer,
    entries: list[Mapping[Any, Any] | None],
    labels: list[str],
) -> list[str]:
    """LBFGS's one global state, kept under its first parameter."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    problems = [
        f"{labels[j]}: state in the file; LBFGS keeps its state under the first "
        "parameter only"
        for j, entry in enumerate(entries)
        if j > 0 and entry is not None
    ]
    entry = entries[0] if entries else None
    if entry is None:
        return problems
    label = labels[0]
    unknown = sorted(str(k) for k in entry if k not in _LBFGS_NAMES)
    if unknown:
        return [*problems, f"{label}: state {unknown} in the file, not LBFGS's"]
    written_together = _LBFGS_NAMES - {"al", "func_evals", "n_iter"}
    if written_together & set(entry) and not written_together <= set(entry):
        lacking = sorted(written_together - set(entry))
        problems.append(f"{label}: the file's state lacks {lacking}")
    numel = sum(p.numel() for p in params)

    def flat(value: object) -> bool:
        return (
            isinstance(value, Tensor)
            and tuple(value.shape) == (numel,)
            and dtype_kind(value.dtype) == "real floating"
            and value.layout == torch.strided
            and value.device.type != "meta"
        )

    def scalar(value: object) -> bool:
        return _is_number(value) or (
            isinstance(value, Tensor)
            and value.dim() == 0
            and dtype_kind(value.dtype) in ("real floating", "integer")
            and value.device.type != "meta"
        )

    history = optimizer.param_groups[0].get("history_size")
    dirs = entry.get("old_dirs")
    kept = len(dirs) if isinstance(dirs, list) else -1  # how many steps it keeps
    for name, value in entry.items():
        if name in ("func_evals", "n_iter"):
            ok, want = _is_int(value), "an int"
        elif name in ("d", "prev_flat_grad"):
            ok, want = flat(value), f"a 1-D real tensor of {numel} elements"
        elif name in ("old_dirs", "old_stps"):
            ok = isinstance(value, list) and all(flat(v) for v in value)
            want = f"a list of 1-D real tensors of {numel} elements"
        elif name == "ro":
            ok = (
                isinstance(value, list)
                and all(scalar(v) for v in value)
                and len(value) == kept
            )
            want = "a list of numbers as long as old_dirs"
        elif name == "al":
            ok = isinstance(value, list) and all(v is None or scalar(v) for v in value)
            want = "a list of numbers"
        else:  # t, H_diag, prev_loss
            ok, want = scalar(value), "a number"
        if ok and name in ("old_dirs", "old_stps") and isinstance(history, int):
            ok = len(value) <= history and len(value) == kept
            want += f", at most history_size={history}, as many as old_dirs"
        if not ok:
            problems.append(
                f"{label} {name}: {_shown(value)} in the file, {want} expected"
            )
    return problems


def _lbfgs_settings_run(
    optimizer: torch.optim.Optimizer,
    n: int,
    theirs: Mapping[Any, Any],
    ours: Mapping[Any, Any],
) -> list[str]:
    """Step a small LBFGS with the file's settings (and a quadratic closure)."""
    cls = type(optimizer)
    params = [torch.ones(2, 3, requires_grad=True), torch.ones(3, requires_grad=True)]

    def closure() -> Tensor:
        for p in params:
            p.grad = None
        loss = sum((p * p).sum() for p in params)
        assert isinstance(loss, Tensor)
        loss.backward()
        return loss

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = cls(
                [{**_settings(ours), "params": params}],
                **_constructor_settings(optimizer),
            )
            group = {**_settings(theirs), "params": params}
            for cap in ("max_iter", "max_eval"):  # a short run: the types matter
                if _is_int(group.get(cap)) and group[cap] > 3:
                    group[cap] = 3
            probe.__setstate__({"state": probe.state, "param_groups": [group]})
            step: Callable[..., Any] = probe.step
            step(closure)
    except Exception as error:  # whatever the settings make it raise
        missing = _missing_settings(optimizer, theirs, ours)
        if missing:
            return [f"group {n}: the file lacks the settings {names(missing)}"]
        return [
            f"group {n}: this optimizer does not step with the file's settings "
            f"({type(error).__name__}: {_first_line(error)})"
        ]
    return []
