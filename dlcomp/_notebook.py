"""Display settings for the executed docs pages (private).

Each chapter page runs ``dlcomp._notebook.setup()`` in a hidden first cell:

- errors show as their last line (type and message), without the traceback
  (``%xmode Minimal``): the message is what the page is about;
- memory addresses in error messages (``<function f at 0x7f3a...>``) are
  shown as ``0x...``, since they change on every run and the pages must read
  the same on every build.

An error still is an error: the cell's output is an error output, so a cell
that raises without the ``raises-exception`` tag still fails the build.

The notebooks the site offers for download leave that cell out (the build
drops it): a reader's kernel keeps its own settings, and the outputs they
download are the ones the build produced with these settings.
"""

from __future__ import annotations

import re
from typing import Any

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def _scrub(
    shell: Any, etype: type, evalue: BaseException, tb: Any, tb_offset: Any = None
) -> None:
    if evalue.args and all(isinstance(a, str) for a in evalue.args):
        evalue.args = tuple(_ADDRESS.sub("0x...", a) for a in evalue.args)
    shell.showtraceback((etype, evalue, tb), tb_offset=tb_offset)


def setup() -> None:
    """Apply the settings to the running IPython kernel."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:  # not in IPython: nothing to set
        return
    shell.run_line_magic("xmode", "Minimal")
    shell.set_custom_exc((Exception,), _scrub)
