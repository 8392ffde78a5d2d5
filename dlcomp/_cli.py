"""Command-line options checked by the library's rules (private).

The workers' ``python -m`` command lines turn a refused value into an
argparse usage error (exit status 2) that names the option, before anything
runs: the same rule and message as the Python functions they call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from dlcomp._checks import check_int

__all__ = ["int_option", "number", "option", "steps_option"]

_T = TypeVar("_T")


def option(check: Callable[[str, str], _T], name: str) -> Callable[[str], _T]:
    """An argparse ``type``: ``check(text, name)``, a usage error if it refuses."""

    def parse(text: str) -> _T:
        try:
            return check(text, name)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def number(text: str) -> object:
    """``text`` as an int if it is one, else as it came (for the check to refuse)."""
    try:
        return int(text)
    except ValueError:
        return text


def int_option(name: str, minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an int ``>= minimum`` (:func:`check_int`'s rule)."""
    return option(lambda text, n: check_int(number(text), n, minimum=minimum), name)


# Both workers draw the batch of a step from seed * 2**20 + step.
MAX_STEPS = 2**20


def _steps(text: str, name: str) -> int:
    steps = check_int(number(text), name, minimum=1)
    if steps > MAX_STEPS:
        raise ValueError(f"{name} must be an int <= 2**20, got {steps}")
    return steps


steps_option = option(_steps, "--steps")
"""The workers' ``--steps``: an int from 1 to 2**20."""
