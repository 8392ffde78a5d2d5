"""A real browser (Debian's Chromium, driven by Playwright) on the built site.

The site under build/html (or $DLCOMP_SITE) is served on 127.0.0.1 from a
thread. Chromium comes from Debian's package (``apt-get install chromium``),
found on PATH or at $DLCOMP_CHROMIUM; Playwright never downloads a browser.
A missing browser or site is a failure, not a skip.
"""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def site_dir() -> Path:
    path = Path(os.environ.get("DLCOMP_SITE", "build/html"))
    if not (path / "index.html").is_file():
        pytest.fail(f"no built site at {path}: run `nox -s docs` first")
    return path


@pytest.fixture(scope="session")
def base_url(site_dir):
    handler = functools.partial(QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="session")
def chromium():
    """Playwright's Chromium launcher and the binary it runs."""
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("DLCOMP_CHROMIUM") or shutil.which("chromium")
    if not executable:
        pytest.fail(
            "Chromium not found: apt-get install -y chromium (or set DLCOMP_CHROMIUM)"
        )
    with sync_playwright() as playwright:
        yield playwright.chromium, executable


@pytest.fixture(scope="session")
def browser(chromium):
    launcher, executable = chromium
    browser = launcher.launch(executable_path=executable, args=CHROMIUM_FLAGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def browser_with_scrollbars(chromium):
    """Chromium drawing scrollbars as a reader's does (headless hides them)."""
    launcher, executable = chromium
    browser = launcher.launch(
        executable_path=executable,
        args=CHROMIUM_FLAGS,
        ignore_default_args=["--hide-scrollbars"],
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()
