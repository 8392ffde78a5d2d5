"""Every task a person runs on dlcomp: `nox -l` lists them, `nox` runs the defaults.

Sessions use the virtualenv backend and pip, with torch pinned by
constraints.txt (on our build machines that is a CPU wheel on local disk).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests",
    "docs",
    "validate",
    "downloads",
    "browser",
]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
GALLERY = PYPROJECT["tool"]["dlcomp"]["gallery-dir"]  # the generated gallery, in docs/
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
BUILD = ROOT / "build" / "html"  # myst-nb keeps its cache in build/.jupyter_cache
NODE_TOOLS = ROOT / "tools" / "node"  # html-validate and Lighthouse, pinned by its lock
SPHINX = ["-W", "--keep-going", "-n", "-T", "-c", ".", "docs", str(BUILD)]


def install(session: nox.Session, *groups: str, project: bool = True) -> None:
    """Install dlcomp (editable) and dependency groups from pyproject.toml."""
    requirements = [
        r for g in groups for r in nox.project.dependency_groups(PYPROJECT, g)
    ]
    args = ["-e", "."] if project else []
    session.install(*CONSTRAINTS, *args, *requirements)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting (ruff) and the hosting configs (their schemas)."""
    install(session, "lint", project=False)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # Schemas vendored in check-jsonschema: no network needed.
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                ".github/workflows/docs.yml",
                ".github/workflows/release.yml")  # fmt: skip
    session.run("check-jsonschema", "--builtin-schema", "vendor.readthedocs",
                ".readthedocs.yaml")  # fmt: skip


@nox.session
def tests(session: nox.Session) -> None:
    """Run the unit tests and every docstring example (args after -- go to pytest)."""
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the checkpoint loaders: `nox -s fuzz -- --minutes 30` (default 10).

    Damaged and forged checkpoint files, each refused with CheckpointError
    or loaded exactly; never a hang, never more memory than about the file's
    size. A falsifying file is kept in build/fuzz.
    """
    install(session, "test")
    out = ROOT / "build" / "fuzz"
    out.mkdir(parents=True, exist_ok=True)
    args = session.posargs or ["--minutes", "10"]
    session.run("python", str(ROOT / "tests" / "fuzz" / "fuzz_checkpoints.py"),
                *args, "--out", str(out))  # fmt: skip


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check dlcomp with mypy --strict ([tool.mypy]): it ships py.typed."""
    install(session, "typecheck")
    session.run("mypy", *session.posargs)


# tools/build_site.py builds the published site: both editions, put together.
BUILD_SITE = str(ROOT / "tools" / "build_site.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build both editions strictly into build/html, then check the built pages.

    The English site is build/html, the Chinese edition build/html/zh_CN (its
    text from docs/locales; a message without its translation fails the build).
    Pages and gallery scripts run during the English build; unchanged ones are
    reused from the cache, and the Chinese build reuses the English outputs.
    The cache key includes the source of dlcomp, so a library change re-runs
    them (set CI=1 or DLCOMP_NB_EXECUTION=force to re-run all).
    `nox -s docs -- --fast` skips all execution (prose edits only),
    `nox -s docs -- --clean` deletes build/ and the generated gallery first,
    `nox -s docs -- --no-check` leaves the checks to `nox -s sitecheck`
    (CI runs them beside the browser tests).
    """
    install(session, "docs")
    options = [a for a in session.posargs if a in ("--clean", "--fast")]
    session.run("python", BUILD_SITE, *options)
    if "--fast" not in session.posargs and "--no-check" not in session.posargs:
        check_site(session)
    session.log(
        f"Built site: {BUILD / 'index.html'} and {BUILD / 'zh_CN' / 'index.html'}"
    )


def check_site(session: nox.Session) -> None:
    # The built pages must show outputs produced by this build.
    session.run("pytest", "-m", "site", "tests/site", env={"DLCOMP_SITE": str(BUILD)})


@nox.session
def sitecheck(session: nox.Session) -> None:
    """Check the built pages (tests/site), as `nox -s docs` does after building."""
    install(session, "docs")
    if not (BUILD / "index.html").is_file():
        session.error(f"no built site at {BUILD}: run `nox -s docs` first")
    check_site(session)


LOCALES = ROOT / "docs" / "locales"


@nox.session
def translations(session: nox.Session) -> None:
    """Update the catalogs in docs/locales from the English text; list what is left.

    Extracts every message (`sphinx-build -b gettext` into build/gettext;
    the pages' outputs come from the execution cache, so run it after
    `nox -s docs`: the alt text of an output's figure is a message too),
    drops the ones that stay English (docstrings, the gallery's running time,
    images' paths: docs/_ext/dlcomp_catalogs.py), and merges them into
    docs/locales/zh_CN/LC_MESSAGES/*.po with sphinx-intl: new messages come
    in empty, changed ones marked fuzzy with the old translation as a draft.
    Then prints each message a translator has to look at; the docs build
    fails until there are none.
    """
    install(session, "docs", "translations")
    out = ROOT / "build" / "gettext"
    shutil.rmtree(out, ignore_errors=True)
    session.run("sphinx-build", "-q", "-b", "gettext", "-c", ".", "docs", str(out),
                env={"DLCOMP_NB_EXECUTION": "cache", "CI": ""})  # fmt: skip
    # In the session's Python (babel, sphinx-intl), not nox's own.
    session.run("python", str(ROOT / "docs" / "_ext" / "dlcomp_catalogs.py"), "update",
                str(out), str(LOCALES), "zh_CN")  # fmt: skip


@nox.session
def downloads(session: nox.Session) -> None:
    """Run every script and notebook the built site offers, as a new reader would.

    Run `nox -s docs` first. Checks the wheel the site serves (only the
    package, py.typed and the license; the same files as a wheel built from
    this checkout) and that the landing page's install command names it; then
    installs that wheel with its `gallery` extra into a fresh virtualenv
    outside the repository and runs tests/downloads/run_downloads.py there.
    """
    import sys
    import tempfile

    sys.path.insert(0, str(ROOT / "tests" / "downloads"))
    from run_downloads import check_install_command, check_wheel, same_package

    if not (BUILD / "index.html").is_file():
        session.error(f"no built site at {BUILD}: run `nox -s docs` first")
    served = sorted((BUILD / "dist").glob("dlcomp-*-py3-none-any.whl"))
    if len(served) != 1:
        session.error(f"the site serves {len(served)} dlcomp wheels in dist/, not 1")
    wheel = served[0]
    problems = check_wheel(wheel) + check_install_command(BUILD / "index.html", wheel)
    with tempfile.TemporaryDirectory(prefix="dlcomp-downloads-") as tmp:
        # A wheel of this checkout, built from a copy (setuptools would leave
        # build/lib in the checkout), must hold what the site serves.
        src, fresh = Path(tmp) / "src", Path(tmp) / "wheel"
        src.mkdir()
        shutil.copytree(ROOT / "dlcomp", src / "dlcomp",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(ROOT / name, src / name)
        session.run("python", "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(fresh), str(src))  # fmt: skip
        built = sorted(fresh.glob("*.whl"))
        problems += same_package(wheel, built)
        if problems:
            session.error("; ".join(problems))
        venv = Path(tmp) / "reader"
        session.run("python", "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        reader = [f"{wheel}[gallery]", "nbclient", "ipykernel"]  # and Jupyter's runner
        session.run(python, "-m", "pip", "install", "--quiet", *CONSTRAINTS, *reader,
                    external=True)  # fmt: skip
        session.run(python, str(ROOT / "tests" / "downloads" / "run_downloads.py"),
                    str(BUILD), external=True)  # fmt: skip


@nox.session
def buildtime(session: nox.Session) -> None:
    """Time a clean build of both editions and a no-change rebuild; check the limits.

    The clean build's English part is a clean build of the English site; the
    Chinese edition, built after it from the same cache, may add at most 40%
    to it. A no-change rebuild of both must take under 15% of the clean one.
    """
    import json

    install(session, "docs")
    times = ROOT / "build" / "times.json"

    def build_site(*options: str) -> dict[str, float]:
        session.run("python", BUILD_SITE, "--quiet", "--times", str(times), *options,
                    env={"CI": ""})  # fmt: skip
        return json.loads(times.read_text())

    clean = build_site("--clean")
    again = build_site()
    english, both, rebuild = clean["en"], sum(clean.values()), sum(again.values())
    others = ", ".join(f"{k} {t:.1f} s" for k, t in clean.items() if k != "en")
    session.log(
        f"clean build: English {english:.1f} s, {others}, both {both:.1f} s "
        f"({both / english:.2f} x English); no-change rebuild of both "
        f"{rebuild:.1f} s ({rebuild / both:.1%} of the clean build)"
    )
    problems = []
    if both > 1.4 * english:
        problems.append(
            f"both editions took {both / english:.2f} x the English build (limit 1.4)"
        )
    if rebuild >= 0.15 * both:
        share = f"{rebuild / both:.0%}"
        problems.append(
            f"a no-change rebuild took {share} of a clean build (limit 15%)"
        )
    if problems:
        session.error("; ".join(problems))


@nox.session
def browser(session: nox.Session) -> None:
    """Drive Chromium over the built site (run `nox -s docs` first).

    Needs Debian's Chromium (`apt-get install -y chromium`, or DLCOMP_CHROMIUM
    pointing at a Chromium binary); Playwright does not download a browser.
    """
    install(session, "browser", project=False)
    session.run("pytest", "-m", "browser", "tests/browser", *session.posargs,
                env={"DLCOMP_SITE": str(BUILD)})  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """Measure this machine (python -m dlcomp bench); results go to build/bench.

    `nox -s bench -- --quick` for a short run; other args go to the command.
    Record a run from a GPU machine by copying its JSON to benchmarks/results/.
    """
    install(session, "bench")
    args = session.posargs or []
    if "--out" not in args:
        args = [*args, "--out", str(ROOT / "build" / "bench")]
    session.run("python", "-m", "dlcomp", "bench", *args)


# The torch releases dlcomp is tested against (`nox -s compat`), from
# pyproject.toml's [tool.dlcomp]: the oldest it supports (the floor of its
# range), the one it pins (constraints.txt) and the newest tested. Add a new
# release there, and raise the ceiling with it, once `nox -s compat` passes.
TORCH_TESTED = PYPROJECT["tool"]["dlcomp"]["torch-tested"]


def constraints_without_torch(session: nox.Session) -> list[str]:
    """constraints.txt less its torch pins, in the session's folder."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    keep = [ln for ln in lines if not ln.startswith(("torch==", "torchvision=="))]
    path = Path(session.virtualenv.location) / "constraints-without-torch.txt"
    path.write_text("\n".join(keep) + "\n")
    return ["-c", str(path)]


@nox.session
@nox.parametrize("torch", TORCH_TESTED)
def compat(session: nox.Session, torch: str) -> None:
    """The library's tests (doctests included) against each torch of the range.

    `nox -s compat` runs the floor, the pin and the newest release, each in
    its own virtualenv (pip's cache keeps the wheels); one of them:
    `nox -s "compat(torch='2.11.0')"`. Where PyPI serves only a CUDA build
    of a release, that is what it installs (several GB). Not run by CI: run
    it before a release and when raising the range (see README).
    """
    requirements = nox.project.dependency_groups(PYPROJECT, "test")
    pins = constraints_without_torch(session)
    session.install(f"torch=={torch}", "-e", ".", *pins, *requirements)
    session.run("python", "-c", "import torch; print('torch', torch.__version__)")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def zoo(session: nox.Session) -> None:
    """Audit stock models: every torchvision classifier and a timm sample.

    Runs tools/audit_zoo.py: each model in train and eval mode with an input
    and AdamW must give no error or warning and be left unchanged, and each
    rule's pitfall injected into real models must be caught; writes
    build/zoo.json with the audit's cost on each model. torchvision needs a
    torch built for it, so this session installs torch 2.14.1 with
    torchvision 0.29.1 (no constraints file; a CUDA build of several GB where
    no CPU wheel is at hand) and timm. `nox -s zoo -- --only resnet` for some.
    `nox -s tests` runs its torch-only sample (tests/test_audit_zoo.py).
    """
    session.install("torch==2.14.1", "torchvision==0.29.1", "timm>=1.0", "numpy")
    session.install("--no-deps", "-e", ".")
    (ROOT / "build").mkdir(exist_ok=True)
    out = ROOT / "build" / "zoo.json"
    session.run("python", "tools/audit_zoo.py", "--json", str(out), *session.posargs)


@nox.session(name="bench_checkpoints")
def bench_checkpoints(session: nox.Session) -> None:
    """Time checkpoint saves and loads against safetensors and torch.save.

    Runs benchmarks/checkpoints.py: ResNet-50 and a 256 MiB model, each
    measurement in a fresh process, 5 interleaved repeats; prints a table
    and writes build/bench/checkpoints.json. Args after -- go to the script
    (`-- --repeats 9`, `-- --cases resnet50`).
    """
    install(session, "bench-checkpoints")
    args = session.posargs or []
    if "--out" not in args:
        args = [*args, "--out", str(ROOT / "build" / "bench" / "checkpoints.json")]
    session.run("python", str(ROOT / "benchmarks" / "checkpoints.py"), *args)


GENERATED = rf"({GALLERY}|gen_modules|sg_execution_times|jupyter_cache|jupyter_execute)"


def node_tools(session: nox.Session) -> Path:
    """Install tools/node's pinned packages (npm ci) once per lock; return their bin."""
    if shutil.which("npm") is None:
        session.error("needs Node.js 20+ and npm (apt-get install -y nodejs npm)")
    prefix = ROOT / ".nox" / "node-tools"  # beside the sessions' virtualenvs
    prefix.mkdir(parents=True, exist_ok=True)
    lock = (NODE_TOOLS / "package-lock.json").read_bytes()
    if not (prefix / "package-lock.json").is_file() or (
        (prefix / "package-lock.json").read_bytes() != lock
        or not (prefix / "node_modules").is_dir()
    ):
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(NODE_TOOLS / name, prefix / name)
        session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", str(prefix),
                    external=True)  # fmt: skip
    return prefix / "node_modules" / ".bin"


def built_pages(session: nox.Session) -> list[str]:
    if not (BUILD / "index.html").is_file():
        session.error(f"no site in {BUILD}: run `nox -s docs` first")
    return sorted(
        str(p)
        for p in BUILD.rglob("*.html")
        if p.relative_to(BUILD).parts[0] not in {"_static", "_sources"}
    )


@nox.session(venv_backend="none")
def validate(session: nox.Session) -> None:
    """Check every built page with html-validate's `standard` preset: no error.

    Run `nox -s docs` first. Needs Node.js and npm; tools/node pins the version.
    """
    bin_dir = node_tools(session)
    pages = built_pages(session)
    session.log(f"html-validate on {len(pages)} pages")
    session.run(str(bin_dir / "html-validate"),
                "--config", str(NODE_TOOLS / ".htmlvalidate.json"),
                "--formatter", "stylish", *pages, external=True)  # fmt: skip


@nox.session(venv_backend="none")
def lighthouse(session: nox.Session) -> None:
    """Lighthouse on index, a chapter page and the gallery index (mobile and desktop).

    Run `nox -s docs` first. Serves build/html from 127.0.0.1 with gzip, as a
    host would, runs each audit 3 times (`-- --runs N` to change) and keeps
    the median; writes build/lighthouse/ and fails when a page misses its
    target (mobile performance 85, accessibility, best practices, SEO 100).
    A measurement, not a test: the figures depend on the machine and its load.
    Needs Node.js, npm and Chromium (DLCOMP_CHROMIUM, else `chromium` on PATH).
    """
    bin_dir = node_tools(session)
    built_pages(session)
    chromium = os.environ.get("DLCOMP_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        session.error("needs Chromium (apt-get install -y chromium) or DLCOMP_CHROMIUM")
    session.run("python3", str(ROOT / "benchmarks" / "lighthouse.py"),
                "--site", str(BUILD), "--out", str(ROOT / "build" / "lighthouse"),
                "--lighthouse", str(bin_dir / "lighthouse"), "--chromium", chromium,
                *session.posargs, external=True)  # fmt: skip


@nox.session
def serve(session: nox.Session) -> None:
    """Serve the site at http://127.0.0.1:8000, rebuilt live on every change."""
    install(session, "docs", "serve")
    session.run(
        "sphinx-autobuild",
        *SPHINX,
        "--host", "127.0.0.1",
        "--port", os.environ.get("PORT", "8000"),
        "--watch", "dlcomp",
        "--watch", "gallery",
        "--re-ignore", GENERATED,
    )  # fmt: skip
