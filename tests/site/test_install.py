"""A reader of the built site can install the dlcomp it was built from.

The site serves the wheel of its own version at dist/, the landing page's
Install box names exactly that file, and every gallery page, downloaded
script and notebook says how to install it.
"""

import ast
import json
import re
import tomllib
import zipfile
from pathlib import Path

import pytest
from sitepages import cell_texts, page_text

import dlcomp

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[2]
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["urls"]
WHEEL = f"dlcomp-{dlcomp.__version__}-py3-none-any.whl"
# The two forms of the command: a downloaded file, or the wheel's URL.
COMMAND = re.compile(
    r'pip install "(?:\./(?P<file>\S+)\[gallery\]|dlcomp\[gallery\] @ (?P<url>\S+))"'
)
WHEEL_LINK = re.compile(r'<a class="dlcomp-wheel reference external" href="([^"]+)"')


def wheel(site: Path) -> Path:
    return site / "dist" / WHEEL


def box_commands(page: Path) -> list[str]:
    """The pip command of each Install box on a built page."""
    return [
        m.group(0)
        for text in cell_texts(page, "dlcomp-install", collapse=True)
        for m in [COMMAND.search(text)]
        if m
    ]


def served_name(command: str) -> str:
    """The file name of the wheel a pip command installs."""
    match = COMMAND.fullmatch(command)
    assert match, command
    if match["file"]:
        return match["file"]
    assert match["url"].rsplit("/", 2)[-2] == "dist", command
    return match["url"].rsplit("/", 1)[-1]


def gallery_pages(site: Path) -> list[Path]:
    pages = sorted((site / "auto_examples").rglob("*.html"))
    assert len(pages) >= 15, f"only {len(pages)} gallery pages"
    return pages


def test_the_site_serves_the_wheel_of_the_version_it_was_built_from(site: Path):
    assert [p.name for p in (site / "dist").iterdir()] == [WHEEL]
    with zipfile.ZipFile(wheel(site)) as archive:
        metadata = archive.read(
            f"dlcomp-{dlcomp.__version__}.dist-info/METADATA"
        ).decode()
    assert f"\nVersion: {dlcomp.__version__}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nProvides-Extra: gallery\n" in metadata
    for requirement in ("matplotlib", "numpy"):
        extra = rf'Requires-Dist: {requirement}\S* ?; extra == "gallery"'
        assert re.search(extra, metadata), requirement
    # The chapter pages need numpy without the gallery: torch's
    # all_gather_object (distributed page) and safetensors' safe_open (files).
    assert re.search(r"\nRequires-Dist: numpy>=[\d.]+\n", metadata)
    for label, url in URLS.items():
        assert f"\nProject-URL: {label}, {url}\n" in metadata


def test_the_wheel_holds_only_the_package_its_license_and_metadata(site: Path):
    with zipfile.ZipFile(wheel(site)) as archive:
        names = set(archive.namelist())
    info = f"dlcomp-{dlcomp.__version__}.dist-info/"
    package = {
        f"dlcomp/{p.name}"
        for p in (ROOT / "dlcomp").iterdir()
        if p.suffix == ".py" or p.name == "py.typed"
    }
    metadata = {
        info + name
        for name in ("METADATA", "WHEEL", "RECORD", "top_level.txt", "licenses/LICENSE")
    }
    assert names == package | metadata
    with zipfile.ZipFile(wheel(site)) as archive:
        license_text = archive.read(info + "licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text("utf-8")


def test_the_landing_page_install_command_names_the_served_wheel(site: Path):
    index = site / "index.html"
    source = index.read_text("utf-8")
    assert '<div class="dlcomp-install admonition" id="install">' in source
    commands = box_commands(index)
    assert len(commands) == 1, commands
    assert served_name(commands[0]) == WHEEL
    links = WHEEL_LINK.findall(source)
    assert links
    assert set(links) == {f"dist/{WHEEL}"}
    # The extras are named where the reader installs.
    text = page_text(index, collapse=True)
    assert "gallery extra (matplotlib and numpy" in text
    assert "bench extra adds matplotlib" in text


def test_every_gallery_page_links_the_wheel_and_shows_the_command(site: Path):
    landing = box_commands(site / "index.html")
    for page in gallery_pages(site):
        commands = box_commands(page)
        assert commands == landing, page.relative_to(site)
        links = WHEEL_LINK.findall(page.read_text("utf-8"))
        assert links, page.relative_to(site)
        for href in links:
            assert (page.parent / href).resolve() == wheel(site).resolve(), href
        assert "index.html#install" in page.read_text("utf-8"), page


def _docstring_has(text: str, command: str, name: str) -> None:
    docstring = ast.get_docstring(ast.parse(text)) or ""
    title = docstring.splitlines()[0]
    # Right under the title: the reader sees it when opening the file.
    head = "\n".join(docstring.splitlines()[:12])
    assert command in head, f"{name} ({title}): no install command under the title"


def test_every_downloaded_script_and_notebook_says_how_to_install(site: Path):
    (command,) = box_commands(site / "index.html")
    downloads = site / "_downloads"
    scripts = sorted(downloads.glob("*/plot_*.py"))
    notebooks = sorted(downloads.glob("*/plot_*.ipynb"))
    assert len(scripts) >= 10
    assert len(notebooks) == len(scripts)
    for path in scripts:
        _docstring_has(path.read_text("utf-8"), command, path.name)
    for path in notebooks:
        first = json.loads(path.read_text("utf-8"))["cells"][0]
        assert first["cell_type"] == "code"
        assert f"# %{command}" in "".join(first["source"]), path.name
    in_zips = 0
    for path in sorted(downloads.glob("*/*.zip")):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if Path(name).name.startswith("plot_") and name.endswith(".py"):
                    _docstring_has(archive.read(name).decode(), command, name)
                    in_zips += 1
    assert in_zips >= 2 * len(scripts)  # one zip per example, and the zip of all


def test_the_header_links_to_the_source_repository(site: Path):
    for page in (site / "index.html", gallery_pages(site)[0]):
        source = page.read_text("utf-8")
        assert re.search(
            rf'<a href="{re.escape(URLS["Source"])}" title="Source on GitHub"', source
        ), page


def test_the_install_box_gives_the_cpu_only_line_and_the_versions(site: Path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    torch_range = next(
        d.removeprefix("torch")
        for d in project["project"]["dependencies"]
        if d.startswith("torch>")
    )
    tested = ", ".join(project["tool"]["dlcomp"]["torch-tested"])
    (box,) = cell_texts(site / "index.html", "dlcomp-install", collapse=True)
    cpu = (
        f'pip install "torch{torch_range}" '
        "--index-url https://download.pytorch.org/whl/cpu"
    )
    assert cpu in box
    assert box.index(cpu) < box.rindex('pip install "')  # torch first, then dlcomp
    assert f"Python {project['project']['requires-python']}" in box
    assert f"tested with torch {tested}." in box
    assert re.search(r"This site was built with torch \d+\.\d+\.\d+", box)


def test_every_page_says_which_torch_printed_its_outputs(site: Path):
    line = re.compile(
        r'<p class="dlcomp-built-with">(The outputs on this site were printed by '
        r"torch|本站各页面的输出由 torch) \d+\.\d+\.\d+\S*"
    )
    for page in ("index.html", "gpu.html", "zh_CN/blocks.html", "api/auditing.html"):
        assert line.search((site / page).read_text("utf-8")), page
