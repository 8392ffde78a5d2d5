"""Run every script and notebook the built site offers for download, as a reader would.

Usage (by ``nox -s downloads``, with the Python of a fresh virtualenv that has
only the site's wheel, its ``gallery`` extra, and nbclient/ipykernel)::

    python tests/downloads/run_downloads.py build/html [--jobs 2]

Each file is copied alone into an empty working directory and run there with
``MPLBACKEND=Agg`` (a script) or executed by nbclient in a fresh kernel (a
notebook; a cell tagged ``raises-exception`` may raise, no other). A file
fails if it errors, leaves anything in its working directory besides itself
(and the figure a plotting script says it saved there), or leaves anything
in its own temporary directory (``TMPDIR``). Caches that
libraries keep on purpose (matplotlib's, torch.compile's) go to folders
outside both. Files that run the same code (the two editions' copies of a
script; their notebooks, which differ only in Markdown) run once, the other
copies only checked to be valid notebooks. Prints one line per file, and each
failure with its output.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

TIMEOUT = 900  # seconds for one file (the slowest gallery script takes ~1 min)


@dataclass
class Outcome:
    """What running one downloaded file did."""

    name: str
    seconds: float
    problems: list[str]
    output: str = ""


def linked_downloads(site: Path) -> list[Path]:
    """Every ``.py`` and ``.ipynb`` file of the site that a page links to."""
    found: set[Path] = set()
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        for href in re.findall(r'href="([^"#?]+\.(?:py|ipynb))(?:[#?][^"]*)?"', text):
            href = html.unescape(unquote(href))
            if urlsplit(href).scheme:  # an outside link, not a download
                continue
            target = (page.parent / href).resolve()
            if target.is_file() and site.resolve() in target.parents:
                found.add(target)
    return sorted(found, key=lambda p: (p.name, str(p)))


WHEEL_FILES = re.compile(
    r"dlcomp/[\w/]+\.py|dlcomp/py\.typed"
    r"|dlcomp-[^/]+\.dist-info/(?:METADATA|WHEEL|RECORD|top_level\.txt|licenses/LICENSE)"
)


def check_wheel(wheel: Path) -> list[str]:
    """What the wheel holds besides the package, py.typed and the license."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    problems = [f"unexpected file {n}" for n in names if not WHEEL_FILES.fullmatch(n)]
    if not any(n.endswith("/licenses/LICENSE") for n in names):
        problems.append("no license file")
    if "dlcomp/py.typed" not in names:
        problems.append("no dlcomp/py.typed")
    return problems


def same_package(served: Path, built: list[Path]) -> list[str]:
    """The served wheel must be the one wheel ``built`` from this checkout."""
    import zipfile

    if [p.name for p in built] != [served.name]:
        names = [p.name for p in built]
        return [f"this checkout builds {names}, the site serves {served.name}"]

    def package(wheel: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(wheel) as archive:
            return {
                n: archive.read(n)
                for n in archive.namelist()
                if n.startswith("dlcomp/")
            }

    theirs, ours = package(served), package(built[0])
    if differ := sorted(
        n for n in theirs.keys() | ours.keys() if theirs.get(n) != ours.get(n)
    ):
        return [f"the served wheel's package differs from this checkout's: {differ}"]
    return []


def check_install_command(index: Path, wheel: Path) -> list[str]:
    """The landing page's install command must name the wheel the site serves."""
    text = html.unescape(re.sub(r"<[^>]+>", "", index.read_text(encoding="utf-8")))
    commands = re.findall(r"pip install [^\n]*dlcomp[^\n]*", text)
    if not commands:
        return ["the landing page has no pip install command for dlcomp"]
    if not any(wheel.name in command for command in commands):
        return [
            f"no install command on the landing page names {wheel.name}: {commands}"
        ]
    return []


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def run_file(source: Path, python: str = sys.executable) -> Outcome:
    """Run one downloaded file in an empty folder of its own; report problems."""
    with tempfile.TemporaryDirectory(prefix="dlcomp-download-") as box:
        box = Path(box)
        work, tmp, caches = box / "work", box / "tmp", box / "caches"
        for folder in (work, tmp, caches):
            folder.mkdir()
        shutil.copy(source, work / source.name)
        env = {
            **os.environ,
            "MPLBACKEND": "Agg",
            "TMPDIR": str(tmp),
            "MPLCONFIGDIR": str(caches / "matplotlib"),
            "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
            "TRITON_CACHE_DIR": str(caches / "triton"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        start = time.perf_counter()
        if source.suffix == ".py":
            command = [python, source.name]
        else:
            command = [python, "-c", NOTEBOOK_RUNNER, source.name]
        try:
            proc = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True,
                timeout=TIMEOUT, check=False,
            )  # fmt: skip
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as expired:
            output = f"{expired.stdout or ''}{expired.stderr or ''}"
            code = f"killed after {TIMEOUT} s"
        seconds = time.perf_counter() - start
        problems = []
        if code != 0:
            problems.append(f"exited with {code}")
        # A plotting script run with no display saves its figure next to
        # itself and says so (the gallery's scripts end that way): expected.
        keep = {source.name}
        figure = work / f"{source.stem}.png"
        if source.suffix == ".py" and f"figure saved to {figure}" in output:
            keep.add(figure.name)
        if extra := _leftovers(work, keep):
            problems.append(f"wrote into its working directory: {', '.join(extra)}")
        # torch.compile keeps precompiled headers in <tmp>/torchinductor_<user>
        # whatever TORCHINDUCTOR_CACHE_DIR says: a cache torch reuses from run
        # to run, not a file the download forgot.
        caches_in_tmp = {p.name for p in tmp.glob("torchinductor_*")}
        if extra := _leftovers(tmp, caches_in_tmp):
            problems.append(f"left temporary files behind: {', '.join(extra)}")
        return Outcome(source.name, seconds, problems, output)


# Executes a notebook in place of a reader's Jupyter: a fresh kernel of this
# Python, the notebook's folder as working directory; nbclient lets a cell
# tagged raises-exception raise and stops at any other error.
NOTEBOOK_RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3").execute()
print(f"executed {sum(c.cell_type == 'code' for c in nb.cells)} code cells")
"""


def code_key(source: Path) -> tuple[str, str]:
    """What running ``source`` executes: a script's bytes, a notebook's code cells.

    The two editions offer the same programs: a gallery script is the same
    file in both, a notebook differs only in its Markdown. Files with one
    key run the same code in the same way, so one run answers for all.
    """
    if source.suffix == ".py":
        return ("py", source.read_text(encoding="utf-8"))
    import json

    cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
    code = [
        (
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
            sorted(c.get("metadata", {}).get("tags", [])),
        )
        for c in cells
        if c.get("cell_type") == "code"
    ]
    return ("ipynb", json.dumps(code))


def check_notebook(source: Path) -> list[str]:
    """A notebook not run (its code ran in another file) must still be valid."""
    import nbformat

    try:
        nbformat.validate(nbformat.read(source, as_version=4))
    except Exception as error:  # any reason it is not a notebook
        return [f"not a valid notebook: {error}"]
    return []


def main(site: Path, jobs: int = 2) -> int:
    from concurrent.futures import ThreadPoolExecutor

    files = linked_downloads(site)
    if not files:
        print(f"no downloadable .py or .ipynb linked from {site}", file=sys.stderr)
        return 1
    first: dict[tuple[str, str], Path] = {}
    same: dict[Path, Path] = {}
    for source in files:
        same[source] = first.setdefault(code_key(source), source)
    unique = list(first.values())
    print(
        f"{len(files)} downloads linked from the site, {len(unique)} different "
        f"programs; each runs alone, {jobs} at a time"
    )
    outcomes = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for outcome in pool.map(run_file, unique):
            outcomes.append(outcome)
            verdict = "ok" if not outcome.problems else "; ".join(outcome.problems)
            print(f"{outcome.seconds:7.1f} s  {outcome.name:45}  {verdict}", flush=True)
    for source, runner in same.items():
        if runner is source:
            continue
        site_path = source.relative_to(site)
        problems = check_notebook(source) if source.suffix == ".ipynb" else []
        outcomes.append(Outcome(str(site_path), 0.0, problems))
        verdict = "ok" if not problems else "; ".join(problems)
        print(f"{'':9}  {site_path!s:45}  same code as {runner.relative_to(site)}: "
              f"{verdict}")  # fmt: skip
    failed = [o for o in outcomes if o.problems]
    for outcome in failed:
        print(f"\n--- {outcome.name}: {'; '.join(outcome.problems)} ---")
        print(outcome.output[-4000:])
    total = sum(o.seconds for o in outcomes)
    print(
        f"\n{len(outcomes) - len(failed)} of {len(outcomes)} ran clean "
        f"({len(unique)} runs, {total:.0f} s of running)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--jobs", type=int, default=2, help="files run at once")
    args = parser.parse_args()
    sys.exit(main(args.site, args.jobs))
