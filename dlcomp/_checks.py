"""Input checks shared by the reference modules (private).

Every message says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import operator

import torch

__all__ = ["check_features", "check_int", "check_tensor"]


def check_tensor(x: object, who: str) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise a :class:`TypeError`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    return x


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
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{allowed}, got {type(value).__name__} {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{allowed}, got {number}")
    return number
