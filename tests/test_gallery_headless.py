"""A gallery script that plots, run as `python script.py` with no display.

It cannot show its figure: it saves it next to the script and says where
(inside the gallery's build it leaves the figure to sphinx-gallery).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

GALLERY = Path(__file__).resolve().parents[1] / "gallery"
SCRIPT = GALLERY / "parameters" / "plot_02_lazy_input_sizes.py"


def test_plotting_script_saves_its_figure_without_a_display(tmp_path: Path):
    script = tmp_path / SCRIPT.name
    shutil.copy2(SCRIPT, script)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")
    }
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")  # no settings from this machine
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", script.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figure = tmp_path / "plot_02_lazy_input_sizes.png"
    assert figure.is_file(), sorted(p.name for p in tmp_path.iterdir())
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"figure saved to {figure}" in done.stdout, done.stdout[-2000:]


def test_every_plotting_script_saves_without_a_display():
    """The same ending in every script that shows a figure."""
    for script in sorted(GALLERY.glob("*/plot_*.py")):
        source = script.read_text("utf-8")
        if "plt.subplots(" not in source:
            continue
        assert "plt.show()" not in source, script.name  # dlcomp.bench.show does it
        assert 'show(fig, globals().get("__file__")' in source, script.name


def test_the_downloads_runner_accepts_the_figure_a_script_says_it_saved():
    """`nox -s downloads` runs each script alone: the figure is expected there."""
    from run_downloads import run_file

    outcome = run_file(SCRIPT)
    assert outcome.problems == [], outcome.output[-2000:]
    assert "figure saved to" in outcome.output
