"""Build the published site: the English edition, each translation, put together.

    python tools/build_site.py [--fast] [--clean] [--quiet] [--times FILE]

Run with the docs' requirements installed (``nox -s docs`` runs it; so do
``nox -s buildtime``, the GitHub workflow through ``.ci/run`` and Read the
Docs through ``nox -s docs``). The English site is built strictly
(``sphinx-build -W --keep-going -n``) into build/html; each translation into
build/<language>/html (myst-nb keeps its executed notebooks beside the output
folder, so the builds must not share one), then copied into the English
site's <language>/ folder, with the one wheel of the site.

Every edition runs its pages from one execution cache: the English build runs
them, a translation reuses their outputs. With ``CI`` set, or
``DLCOMP_NB_EXECUTION=force``, every page and script runs again: the cache is
emptied first (not bypassed), so the translations still find the outputs.

- ``--fast``: run nothing (``DLCOMP_FAST=1``: prose edits only);
- ``--clean``: delete build/ and the generated gallery first;
- ``--quiet``: Sphinx's ``-q``;
- ``--times FILE``: write the seconds each edition took as JSON (a
  translation's include its copy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "html"
CACHE = ROOT / "build" / ".jupyter_cache"  # conf.py's nb_execution_cache_path
TRANSLATED = ("zh_CN",)
STRICT = ["-W", "--keep-going", "-n", "-T", "-c", ".", "docs"]  # from ROOT


def gallery_dir() -> str:
    """The generated gallery's folder below docs/ ([tool.dlcomp] in pyproject.toml)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    return data["tool"]["dlcomp"]["gallery-dir"]


def edition(language: str) -> Path:
    """Where an edition is built: build/html for English."""
    return BUILD if language == "en" else ROOT / "build" / language / "html"


def clean() -> None:
    """Delete the built site, myst-nb's cache and the generated gallery."""
    docs = ROOT / "docs"
    for path in (ROOT / "build", docs / gallery_dir(), docs / "gen_modules"):
        shutil.rmtree(path, ignore_errors=True)


def sphinx(language: str, env: dict[str, str], quiet: bool) -> None:
    """Build one edition strictly; a warning fails it."""
    out = edition(language).relative_to(ROOT)
    command = [sys.executable, "-m", "sphinx", *(["-q"] if quiet else []),
               *STRICT, str(out)]  # fmt: skip
    print("build_site: sphinx-build", *command[3:], flush=True)
    env = {**env, "DLCOMP_LANGUAGE": language}
    subprocess.run(command, env=env, check=True, cwd=ROOT)


def build(*, fast: bool = False, quiet: bool = False) -> dict[str, float]:
    """Build every edition; return the seconds each took."""
    env = dict(os.environ)
    if fast:
        env["DLCOMP_FAST"] = "1"
    force = env.get("CI") or env.get("DLCOMP_NB_EXECUTION") == "force"
    if force and not fast:
        shutil.rmtree(CACHE, ignore_errors=True)
        env["DLCOMP_NB_EXECUTION"] = "cache"
    times = {}
    start = time.perf_counter()
    sphinx("en", env, quiet)
    times["en"] = time.perf_counter() - start
    for language in TRANSLATED:
        start = time.perf_counter()
        sphinx(language, env, quiet)
        target = BUILD / language
        shutil.rmtree(target, ignore_errors=True)
        skip = shutil.ignore_patterns(".doctrees", ".buildinfo")
        shutil.copytree(edition(language), target, ignore=skip)
        # One wheel for the whole site: the edition's copy is the same file.
        for wheel in (target / "dist").glob("*.whl"):
            shutil.copy2(BUILD / "dist" / wheel.name, wheel)
        times[language] = time.perf_counter() - start
    return times


def main(argv: list[str] | None = None) -> int:
    """Build the site as the command line says; 1 if a build failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="run no page or script")
    parser.add_argument("--clean", action="store_true", help="delete build/ first")
    parser.add_argument("--quiet", action="store_true", help="sphinx-build -q")
    parser.add_argument("--times", type=Path, help="write each edition's seconds here")
    args = parser.parse_args(argv)
    if args.clean:
        clean()
    try:
        times = build(fast=args.fast, quiet=args.quiet)
    except subprocess.CalledProcessError as error:
        print(f"build_site: {error}", file=sys.stderr)
        return 1
    if args.times:
        args.times.parent.mkdir(parents=True, exist_ok=True)
        args.times.write_text(json.dumps(times) + "\n", "utf-8")
    pages = [
        BUILD / "index.html",
        *(BUILD / lang / "index.html" for lang in TRANSLATED),
    ]
    print("build_site: built", ", ".join(map(str, pages)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
