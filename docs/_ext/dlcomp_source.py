"""The source of a library object, as a page and its notebook show it.

Read from the installed library (one source of truth) and shown without its
docstrings: the ``dlcomp-source`` directive (:mod:`dlcomp_directives`) and
the chapters' notebooks (:mod:`dlcomp_notebooks`) use it. Plain Python.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from typing import Any


def resolve_object(dotted: str) -> Any:
    """Import ``a.b.Class.method``: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ValueError(f"cannot import {dotted}")


def source_without_docstring(obj: Any) -> str:
    """Return the source of a class or function with its docstring(s) removed."""
    source = textwrap.dedent(inspect.getsource(obj))
    lines = source.splitlines()
    drop: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                first, last = body[0].lineno, body[0].end_lineno or body[0].lineno
                drop.update(range(first - 1, last))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    # A docstring followed by a blank line leaves that blank line first.
    out: list[str] = []
    for line in kept:
        if not line.strip() and out and out[-1].rstrip().endswith(":"):
            continue
        out.append(line)
    return "\n".join(out)
