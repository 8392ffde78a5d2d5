"""Input checks shared by the reference modules (private).

Every message says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "check_callables",
    "check_features",
    "check_float",
    "check_int",
    "check_module",
    "check_optimizer",
    "check_sizes",
    "check_tensor",
]


def check_tensor(x: object, who: str) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise a :class:`TypeError`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    return x


def check_module(value: object, name: str, *, who: str) -> nn.Module:
    """Return ``value`` if it is an ``nn.Module``, else raise a :class:`TypeError`.

    The message names the caller and the argument, what came and what is
    expected: ``save_safetensors: model must be an nn.Module, got NoneType``.
    """
    if not isinstance(value, nn.Module):
        raise TypeError(
            f"{who}: {name} must be an nn.Module, got {type(value).__name__}"
        )
    return value


def check_optimizer(
    value: object, name: str = "optimizer", *, who: str
) -> torch.optim.Optimizer | None:
    """Return ``value`` if it is an optimizer or ``None``, else raise a TypeError.

    (A model given as the optimizer, say, would otherwise have its own
    ``state_dict`` saved as the optimizer's.)
    """
    if value is not None and not isinstance(value, torch.optim.Optimizer):
        raise TypeError(
            f"{who}: {name} must be a torch.optim.Optimizer or None, got "
            f"{type(value).__name__}"
        )
    return value


def check_features(x: object, expected: int, who: str) -> torch.Tensor:
    """Check that ``x`` is a tensor of shape ``(..., expected)``."""
    x = check_tensor(x, who)
    if x.dim() < 1 or x.shape[-1] != expected:
        raise ValueError(
            f"{who} expects input of shape (batch, {expected}) -- the last "
            f"dimension holds the {expected} features -- but got shape "
            f"{tuple(x.shape)}"
        )
    return x


def check_int(
    value: object, name: str, *, minimum: int | None = None, who: str | None = None
) -> int:
    """Return ``value`` as a Python int, or raise saying what came and what is allowed.

    The one rule for integer arguments (sizes, steps, counts, seeds): a
    :class:`TypeError` for anything that is not an integer (a bool, a float, a
    string), a :class:`ValueError` for an integer below ``minimum``. NumPy
    integers are accepted (they have ``__index__``). The message names the
    argument, prefixed by ``who`` (the caller) when given, e.g.
    ``MyLinear: units must be an int >= 1, got float 2.5``.
    """
    allowed = f"{who + ': ' if who else ''}{name} must be an int"
    if minimum is not None:
        allowed += f" >= {minimum}"
    try:
        if isinstance(value, bool) or (
            isinstance(value, torch.Tensor) and value.dim() != 0
        ):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{allowed}, got {type(value).__name__} {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{allowed}, got {number}")
    return number


def check_float(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    who: str | None = None,
) -> float:
    """Return ``value`` as a finite Python float, or raise saying what came.

    The rule for real-valued arguments (seconds, sizes in MiB): a
    :class:`TypeError` for what is not a real number (a bool, a string, a
    tensor), a :class:`ValueError` for NaN, an infinity, a value below
    ``minimum`` or not above ``above``. Ints and NumPy floats are accepted.
    """
    allowed = f"{who + ': ' if who else ''}{name} must be a finite number"
    if minimum is not None:
        allowed += f" >= {minimum}"
    if above is not None:
        allowed += f" > {above}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{allowed}, got {type(value).__name__} {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (above is not None and number <= above)
    ):
        raise ValueError(f"{allowed}, got {number!r}")
    return number


def check_sizes(sizes: object, name: str, *, who: str, real: bool = False) -> list[Any]:
    """A non-empty list of sizes: ints >= 1, or (``real``) finite floats > 0."""
    if isinstance(sizes, (str, bytes, Mapping)) or not isinstance(sizes, Iterable):
        raise TypeError(
            f"{who}: {name} must be a sequence of sizes, got {type(sizes).__name__}"
        )
    items = list(sizes)
    if not items:
        raise ValueError(f"{who}: {name} is empty; give at least one size")
    pairs = list(enumerate(items))
    if real:
        return [check_float(v, f"{name}[{i}]", above=0, who=who) for i, v in pairs]
    return [check_int(v, f"{name}[{i}]", minimum=1, who=who) for i, v in pairs]


def check_callables(fns: object, name: str, *, who: str) -> None:
    """A non-empty mapping of labels to callables, as a timing comparison takes."""
    if not isinstance(fns, Mapping):
        raise TypeError(
            f"{who}: {name} must be a mapping of labels to callables "
            f"({{'a': f, 'b': g}}), got {type(fns).__name__}"
        )
    if not fns:
        raise ValueError(f"{who}: {name} is empty; give at least one callable")
    for label, fn in fns.items():
        if not callable(fn):
            raise TypeError(
                f"{who}: {name}[{label!r}] must be callable, got {type(fn).__name__}"
            )
