"""The standing fuzzer of the checkpoint loaders, run for a minute and a half.

``nox -s fuzz -- --minutes N`` runs it longer; tests/fuzz/fuzz_checkpoints.py
says what it tries and what it holds the loaders to.
"""

import os
import subprocess
import sys
from pathlib import Path

FUZZER = Path(__file__).parent / "fuzz" / "fuzz_checkpoints.py"


def test_no_damaged_or_forged_checkpoint_breaks_the_loaders_promise(tmp_path):
    minutes = float(os.environ.get("DLCOMP_FUZZ_MINUTES", "1.5"))
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZER),
            "--minutes",
            str(minutes),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=minutes * 60 + 300,  # start-up and the last cases, on a loaded machine
    )
    assert done.returncode == 0, done.stdout + done.stderr[-6000:]
    assert "none broke the promise" in done.stdout
    print(done.stdout)
