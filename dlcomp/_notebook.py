"""Display settings for the executed docs pages (private).

Each chapter page runs ``dlcomp._notebook.setup()`` in a hidden first cell:

- errors show as their last line (type and message), without the traceback
  (``%xmode Minimal``): the message is what the page is about;
- memory addresses in error messages (``<function f at 0x7f3a...>``) are
  shown as ``0x...``, since they change on every run and the pages must read
  the same on every build;
- printed text reaches the kernel's stream a whole line at a time
  (``WholeLines``): ``print(a, b)`` writes ``a``, a space and ``b``
  separately, and ipykernel sends what it holds on a timer, so on a busy
  build machine one printed line could arrive as two outputs, which myst-nb
  then shows on two lines.

An error still is an error: the cell's output is an error output, so a cell
that raises without the ``raises-exception`` tag still fails the build.

The notebooks the site offers for download leave that cell out (the build
drops it): a reader's kernel keeps its own settings, and the outputs they
download are the ones the build produced with these settings.
"""

from __future__ import annotations

import re
import sys
from typing import Any

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def _scrub(
    shell: Any, etype: type, evalue: BaseException, tb: Any, tb_offset: Any = None
) -> None:
    if evalue.args and all(isinstance(a, str) for a in evalue.args):
        evalue.args = tuple(_ADDRESS.sub("0x...", a) for a in evalue.args)
    shell.showtraceback((etype, evalue, tb), tb_offset=tb_offset)


class WholeLines:
    r"""A text stream that passes text on to ``stream`` a whole line at a time.

    Text after the last newline waits for the next newline or ``flush()``
    (ipykernel flushes ``sys.stdout`` when a cell ends).

    >>> import io
    >>> out = io.StringIO()
    >>> lines = WholeLines(out)
    >>> print("projections:", (16, 20), (16, 30), file=lines)
    >>> print("no newline yet", end="", file=lines)
    >>> out.getvalue()
    'projections: (16, 20) (16, 30)\n'
    >>> lines.flush()
    >>> out.getvalue()
    'projections: (16, 20) (16, 30)\nno newline yet'
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._stream.write(lines + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def setup() -> None:
    """Apply the settings to the running IPython kernel."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:  # not in IPython: nothing to set
        return
    shell.run_line_magic("xmode", "Minimal")
    shell.set_custom_exc((Exception,), _scrub)
    if not isinstance(sys.stdout, WholeLines):
        sys.stdout = WholeLines(sys.stdout)
