"""The site serves the wheel of the dlcomp it was built from, and how to install it.

A reader who downloads a gallery script needs ``dlcomp`` of the same version
(and matplotlib, numpy: the ``gallery`` extra). This extension:

- builds that wheel at the end of every HTML build, into
  ``<outdir>/dist/dlcomp-<version>-py3-none-any.whl`` (that path is a
  contract: the checks of the downloads read the wheel from there);
- gives the ``dlcomp-install`` directive: the "Install" box with the one
  command that works (``dlcomp-install`` on the landing page,
  ``dlcomp-install gallery`` in the gallery);
- puts the gallery box at the top of every gallery page, and the command at
  the top of every downloaded script's docstring; :func:`notebook_cell` is
  the first cell of every gallery notebook (``first_notebook_cell`` in
  conf.py).

The command depends on whether the site knows its own address
(``html_baseurl``, set from the hosting environment): then pip installs
straight from the wheel's URL; otherwise (a local build) the reader
downloads the wheel and installs the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

from dlcomp_config import gallery_dir, gallery_label
from dlcomp_i18n import site_text  # docs/_ext: the Install box in each language
from docutils import nodes
from packaging.version import Version
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from (and nothing else: no tests, no build output).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "dlcomp")
EXTRA = "gallery"
EXTRA_WHAT = "matplotlib and numpy, which the gallery scripts use"
SHORT = "matplotlib, numpy"


def wheel_name(version: str) -> str:
    """The file name setuptools gives the wheel of ``version`` (normalized)."""
    return f"dlcomp-{Version(version)}-py3-none-any.whl"


def wheel_url(version: str, baseurl: str) -> str:
    """The wheel's address on the hosted site; ``""`` where the site has none."""
    if not baseurl:
        return ""
    return f"{baseurl.rstrip('/')}/dist/{wheel_name(version)}"


def install_command(version: str, baseurl: str) -> str:
    """The one pip command that installs this site's dlcomp with its gallery extra."""
    url = wheel_url(version, baseurl)
    if url:
        return f'pip install "dlcomp[{EXTRA}] @ {url}"'
    return f'pip install "./{wheel_name(version)}[{EXTRA}]"'


def notebook_cell(version: str, baseurl: str) -> str:
    """The first cell of every gallery notebook: how to install what it needs."""
    text = f"This notebook needs dlcomp {version} and its {EXTRA} extra ({SHORT})."
    if not wheel_url(version, baseurl):
        text += (
            f" First download {wheel_name(version)} (the Install box on the"
            " landing page of the site this notebook came from) into the"
            " notebook's folder."
        )
    text += (
        " To install them into the notebook's environment, uncomment the %pip"
        " line and run this cell once:"
    )
    lines = textwrap.wrap(text, 76, initial_indent="# ", subsequent_indent="# ")
    return "\n".join([*lines, f"# %{install_command(version, baseurl)}"])


def docstring_note(version: str, baseurl: str) -> str:
    """The paragraph the downloaded scripts carry under their title."""
    text = f"This script needs dlcomp {version} and its ``{EXTRA}`` extra ({SHORT})."
    if wheel_url(version, baseurl):
        text += " Install them with::"
    else:
        text += (
            f" Download {wheel_name(version)} from the Install box on the landing"
            " page of the site this script came from, then, in the folder you"
            " saved it to::"
        )
    return f"\n{textwrap.fill(text, 76)}\n\n    {install_command(version, baseurl)}\n"


# -- the Install box -----------------------------------------------------------

#: PyTorch's index of CPU-only wheels (the "cpu" variant of its builds).
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _built_torch() -> str:
    """The torch this build runs with (the one that executed the pages)."""
    import torch

    return str(torch.__version__)


def _paragraph(*parts: str | nodes.Node) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _untranslatable(box: nodes.Element) -> nodes.Element:
    """The box is written in the site's language: no catalog translates it."""
    for node in box.findall(nodes.TextElement):
        node["translatable"] = False
    return box


class InstallBox(SphinxDirective):
    """The "Install" box: ``dlcomp-install`` (landing page) or ``... gallery``."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        kind = self.arguments[0] if self.arguments else "full"
        if kind not in ("full", "gallery"):
            raise self.error(f"dlcomp-install: no argument or 'gallery', not {kind!r}")
        config = self.config
        version, baseurl = config.release, config.html_baseurl
        name = wheel_name(version)
        # A plain link to the file the build writes (html builder: pages are
        # name.html, so the site root is one ../ per folder of the docname).
        href = "../" * self.env.docname.count("/") + f"dist/{name}"
        link = nodes.reference(name, "", nodes.literal(name, name), refuri=href)
        link["classes"].append("dlcomp-wheel")
        code = install_command(version, baseurl)
        extra = nodes.literal(EXTRA, EXTRA)

        def _(text: str, **fields: str) -> str:  # the site's language
            return site_text(config.language, text, **fields)

        box = nodes.admonition(classes=["dlcomp-install"])
        box += nodes.title(_("Install"), _("Install"))
        if kind == "gallery":
            lead = _(
                "To run the gallery's scripts and notebooks, install dlcomp "
                "{version}, the version this site was built from, with its ",
                version=version,
            )
        else:
            lead = _(
                "Install dlcomp {version}, the version this site was built from, "
                "with its ",
                version=version,
            )
        what = _(EXTRA_WHAT)
        hosted = bool(wheel_url(version, baseurl))
        if hosted:
            box += _paragraph(lead, extra, _(" extra ({what}):", what=what))
        else:
            box += _paragraph(
                lead,
                extra,
                _(" extra ({what}): download the wheel ", what=what),
                link,
                _(", then, in the folder you saved it to, run"),
            )
        box += nodes.literal_block(code, code, language="bash")
        after: list[str | nodes.Node] = (
            [_("The wheel: "), link, _(". ")] if hosted else []
        )
        if kind == "gallery":
            more = addnodes.pending_xref(
                "",
                nodes.inline("", _("the landing page")),
                refdomain="std",
                reftype="ref",
                reftarget="install",
                refexplicit=True,
                refwarn=True,
            )
            box += _paragraph(*after, _("More on "), more, _("."))
            return [_untranslatable(box)]
        requires = config.dlcomp_requires
        if requires:
            box += _paragraph(
                _(
                    "On a machine without an NVIDIA GPU, install the CPU build of "
                    "torch first, from PyTorch's CPU wheel index (under 1 GB "
                    "installed, against about 4.5 GB for the default build on "
                    "Linux x86-64 with its CUDA libraries), then dlcomp:"
                )
            )
            cpu = f'pip install "torch{requires["torch"]}" --index-url {CPU_INDEX}'
            both = f"{cpu}\n{code}"
            box += nodes.literal_block(both, both, language="bash")
            box += _paragraph(
                _(
                    "dlcomp needs Python {python} and torch {torch}; it is tested "
                    "with torch {tested}. This site was built with torch {built}.",
                    python=requires["python"],
                    torch=requires["torch"],
                    tested=requires["tested"],
                    built=_built_torch(),
                )
            )
        box += _paragraph(
            *after,
            _(
                "pip also installs torch if the environment has none (from PyPI: on "
                "Linux a CUDA build); to keep the torch you have, install into the "
                "environment that has it. Without an extra you get the library alone "
                "(torch and safetensors); the "
            ),
            nodes.literal("bench", "bench"),
            _(" extra adds matplotlib for the plots of "),
            nodes.literal("python -m dlcomp bench", "python -m dlcomp bench"),
            _("bench-tail"),
        )
        source = config.dlcomp_urls.get("Source", "")
        if source:
            box += _paragraph(
                _("The source: "),
                nodes.reference(source, source, refuri=source),
                _("."),
            )
        return [_untranslatable(box)]


# -- gallery pages -------------------------------------------------------------

_EXAMPLE_TITLE = ".. rst-class:: sphx-glr-example-title\n"
_BOX = "\n.. dlcomp-install:: gallery\n\n"


def _gallery_box(app: Sphinx, docname: str, source: list[str]) -> None:
    """Put the gallery's Install box at the top of every generated gallery page."""
    gallery = re.escape(gallery_dir(app.config))
    if re.fullmatch(rf"{gallery}/(?:.+/)?plot_[^/]+", docname):
        if _EXAMPLE_TITLE not in source[0]:
            raise ExtensionError(f"{docname}: no {_EXAMPLE_TITLE.strip()!r} line")
        source[0] = source[0].replace(_EXAMPLE_TITLE, _BOX + _EXAMPLE_TITLE, 1)
    elif re.fullmatch(rf"{gallery}/[^/]+/index", docname):
        title = (
            rf"(\.\. _sphx_glr_{gallery_label(app.config)}_\w+:\n\n[^\n]+\n-{{3,}}\n)"
        )
        source[0], found = re.subn(title, r"\1" + _BOX, source[0], count=1)
        if not found:
            raise ExtensionError(f"{docname}: no gallery section title")


# -- the wheel and the downloads ------------------------------------------------

# The module docstring's opening and its reST title (after optional comments).
_TITLE = re.compile(r'\A((?:#[^\n]*\n)*[rR]?"""\n[^\n]+\n[=#*~^-]{3,}\n)')


def _with_note(script: str, note: str, name: str) -> str:
    if note in script:
        return script
    text, found = _TITLE.subn(lambda m: m.group(1) + note, script, count=1)
    if not found:
        raise ExtensionError(f"{name}: no titled docstring at the top")
    return text


def _note_downloads(outdir: Path, note: str) -> int:
    """Add ``note`` under the title of every downloadable gallery script."""
    count = 0
    downloads = outdir / "_downloads"
    for path in sorted(downloads.glob("*/plot_*.py")):
        path.write_text(_with_note(path.read_text("utf-8"), note, path.name), "utf-8")
        count += 1
    for path in sorted(downloads.glob("*/*.zip")):
        with zipfile.ZipFile(path) as archive:
            members = [(info, archive.read(info)) for info in archive.infolist()]
        if not any(Path(i.filename).name.startswith("plot_") for i, _ in members):
            continue
        tmp = path.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in members:
                name = Path(info.filename).name
                if name.startswith("plot_") and name.endswith(".py"):
                    text = _with_note(data.decode("utf-8"), note, info.filename)
                    data = text.encode("utf-8")
                    count += 1
                archive.writestr(info, data)
        tmp.replace(path)
    return count


def build_wheel(dist: Path, version: str) -> Path:
    """Build dlcomp's wheel from a clean copy of its sources into ``dist``.

    A copy, because setuptools keeps ``build/lib`` in the tree it builds: in
    the checkout, a module deleted since would stay in the next wheel.
    Offline: the docs environment's setuptools, no build isolation.
    """
    name = wheel_name(version)
    with tempfile.TemporaryDirectory(prefix="dlcomp-wheel-") as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for item in WHEEL_SOURCES:
            if (ROOT / item).is_dir():
                shutil.copytree(
                    ROOT / item,
                    src / item,
                    ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"),
                )
            else:
                shutil.copy2(ROOT / item, src / item)
        out = Path(tmp, "out")
        run = subprocess.run(
            [sys.executable, "-c",
             "import sys; from setuptools import build_meta as b;"
             " print(b.build_wheel(sys.argv[1]))", str(out)],
            cwd=src, capture_output=True, text=True, check=False,
        )  # fmt: skip
        built = run.stdout.strip().splitlines()[-1:] if run.returncode == 0 else []
        if built != [name]:
            raise ExtensionError(
                f"building the wheel gave {built or 'nothing'} (expected {name}):\n"
                + run.stdout[-3000:]
                + run.stderr[-3000:]
            )
        dist.mkdir(parents=True, exist_ok=True)
        for old in dist.glob("dlcomp-*.whl"):
            old.unlink()
        shutil.copy2(out / name, dist / name)
    return dist / name


def _built_with(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """The footer's line: which torch printed the outputs of the pages.

    Cached outputs are keyed on torch's version too (dlcomp_cachekey), so they
    were printed by this torch; a build that runs nothing says nothing.
    """
    if app.config.nb_execution_mode == "off":
        return
    context["dlcomp_built_with"] = site_text(
        app.config.language,
        "The outputs on this site were printed by torch {torch}.",
        torch=_built_torch(),
    )


def _finish(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    version, baseurl = app.config.release, app.config.html_baseurl
    outdir = Path(app.outdir)
    wheel = build_wheel(outdir / "dist", version)
    count = _note_downloads(outdir, docstring_note(version, baseurl))
    logger.info(
        f"dlcomp: wheel {wheel.relative_to(outdir)}; install note in {count} scripts"
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("dlcomp_urls", {}, "env")
    # {"python": ">=3.11", "torch": ">=2.11,<2.15", "tested": "2.11.0, ..."}
    app.add_config_value("dlcomp_requires", {}, "env")
    app.add_directive("dlcomp-install", InstallBox)
    app.connect("source-read", _gallery_box)
    app.connect("build-finished", _finish)
    app.connect("html-page-context", _built_with)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
