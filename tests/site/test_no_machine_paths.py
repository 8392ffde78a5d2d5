"""No file of the built site shows a path of the machine that built it."""

import re
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.site

ROOT = str(Path(__file__).resolve().parents[2])
TEXT = {".html", ".ipynb", ".py", ".txt", ".md", ".js", ".json", ".rst"}
# Where a build machine keeps things: the checkout, environments, temp files,
# home directories.
MACHINE_PATH = re.compile(
    "|".join(
        [
            re.escape(ROOT),
            r"site-packages",
            r"dist-packages",
            r"/\.nox/",
            r"/\.venv/",
            r"/tmp/\w",
            r"/home/\w",
            r"/root/",
            r"/usr/(?:local/)?lib/python",
        ]
    )
)


def texts(site: Path):
    """(name, text) of every text file of the site, and of each file in its zips."""
    for path in sorted(site.rglob("*")):
        if path.suffix in TEXT:
            yield str(path.relative_to(site)), path.read_text(errors="replace")
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if Path(name).suffix in TEXT:
                        text = archive.read(name).decode(errors="replace")
                        yield f"{path.relative_to(site)}:{name}", text


def test_no_file_of_the_site_shows_a_path_of_the_build_machine(site: Path):
    found, count = [], 0
    for name, text in texts(site):
        count += 1
        for match in MACHINE_PATH.finditer(text):
            context = text[max(0, match.start() - 40) : match.end() + 40]
            found.append(f"{name}: ...{context!r}...")
    assert count > 100, f"only {count} text files: is this the built site?"
    assert not found, "build-machine paths on the site:\n" + "\n".join(found[:30])


def test_the_path_check_finds_a_machine_path():
    assert MACHINE_PATH.search(f"File {ROOT}/dlcomp/blocks.py, line 3")
    assert MACHINE_PATH.search("/srv/x/.nox/docs/lib/python3.11/site-packages/torch")
    assert not MACHINE_PATH.search("torch.save(net.state_dict(), 'mlp.params')")
