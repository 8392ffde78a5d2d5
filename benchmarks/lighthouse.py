"""Lighthouse on the built site, served from 127.0.0.1 the way a host serves it.

Run by ``nox -s lighthouse`` (after ``nox -s docs``). The server compresses
text with gzip and lets browsers cache static files, as Read the Docs and
GitHub Pages do; Lighthouse (its own default: a simulated mid-range phone on
a slow 4G link; and its desktop preset) audits each page ``--runs`` times and
the median run is kept. Prints a table, writes ``lighthouse.json`` and each
run's full report to ``--out``, and exits 1 when a page misses a target.

Lighthouse's performance score is measured, so it varies with the machine
and its load: the median of several runs on an idle machine is the figure
to quote, labelled with the date and the Lighthouse and Chromium versions.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

PAGES = {
    "index": "index.html",
    "chapter page (5.1 blocks)": "blocks.html",
    "gallery index": "auto_examples/index.html",
}
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
# The lowest score each category may have, mobile and desktop alike.
TARGETS = {"performance": 85, "accessibility": 100, "best-practices": 100, "seo": 100}
METRICS = {
    "first-contentful-paint": "FCP",
    "largest-contentful-paint": "LCP",
    "total-blocking-time": "TBT",
    "cumulative-layout-shift": "CLS",
    "speed-index": "SI",
}
COMPRESSIBLE = (".html", ".css", ".js", ".json", ".svg", ".txt", ".ipynb", ".py")


class HostLikeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with gzip and caching headers, as a documentation host sends."""

    def log_message(self, format, *args):
        """Log nothing: the table is the output."""

    def end_headers(self):
        """Let browsers cache static files for an hour, as hosts do."""
        if "/_static/" in self.path or "/_images/" in self.path:
            self.send_header("Cache-Control", "public, max-age=3600")
        super().end_headers()

    def send_head(self):
        """Send a text file gzip-compressed when the browser accepts it."""
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        wants_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        if not (wants_gzip and path.is_file() and path.suffix in COMPRESSIBLE):
            return super().send_head()
        body = gzip.compress(path.read_bytes(), compresslevel=6)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Accept-Encoding")
        self.end_headers()
        return _Body(body)


class _Body:
    """What send_head returns: something copyfile can read, then close."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, size=-1):
        data, self.data = self.data, b""
        return data

    def close(self):
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site`` from a free port of 127.0.0.1 in a thread; return the URL."""
    handler = functools.partial(HostLikeHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_lighthouse(lighthouse: str, chromium: str, url: str, form: str, out: Path):
    """Audit ``url`` once; return its scores, metrics, bytes and failed audits."""
    cmd = [
        lighthouse, url,
        "--quiet",
        "--output=json", f"--output-path={out}",
        f"--only-categories={','.join(CATEGORIES)}",
        "--chrome-flags=--headless=new --no-sandbox --disable-gpu",
    ]  # fmt: skip
    if form == "desktop":
        cmd.append("--preset=desktop")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "CHROME_PATH": chromium}
    )
    if proc.returncode != 0:
        sys.exit(f"lighthouse failed on {url} ({form}):\n{proc.stderr}")
    report = json.loads(out.read_text("utf-8"))
    scores = {c: round(report["categories"][c]["score"] * 100) for c in CATEGORIES}
    metrics = {
        short: report["audits"][audit]["numericValue"]
        for audit, short in METRICS.items()
    }
    weight = report["audits"]["total-byte-weight"]["numericValue"]
    failed = {
        c: [
            ref["id"]
            for ref in report["categories"][c]["auditRefs"]
            if ref["weight"] > 0
            and report["audits"][ref["id"]]["score"] is not None
            and report["audits"][ref["id"]]["score"] < 1
        ]
        for c in CATEGORIES[1:]
    }
    return {
        "scores": scores,
        "metrics": metrics,
        "bytes": weight,
        "failed_audits": failed,
        "versions": {
            "lighthouse": report["lighthouseVersion"],
            "user_agent": report["environment"]["hostUserAgent"],
        },
    }


def main(argv=None) -> int:
    """Audit every page in both form factors; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lighthouse", required=True, help="the lighthouse command")
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    server, base = serve(args.site)
    results = []
    try:
        for name, path in PAGES.items():
            for form in ("mobile", "desktop"):
                runs = [
                    run_lighthouse(
                        args.lighthouse,
                        args.chromium,
                        f"{base}/{path}",
                        form,
                        args.out / f"{path.replace('/', '_')}-{form}-{i}.json",
                    )
                    for i in range(args.runs)
                ]
                perf = [r["scores"]["performance"] for r in runs]
                median = sorted(runs, key=lambda r: r["scores"]["performance"])[
                    len(runs) // 2
                ]
                results.append(
                    {"page": name, "path": path, "form": form,
                     "performance_runs": perf, **median}
                )  # fmt: skip
    finally:
        server.shutdown()
    lines = [
        "| page | form | performance (runs) | accessibility | best practices | SEO "
        "| FCP | LCP | TBT | CLS | bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    misses = []
    for r in results:
        s, m = r["scores"], r["metrics"]
        lines.append(
            f"| {r['page']} | {r['form']} | {s['performance']} "
            f"({', '.join(map(str, r['performance_runs']))}) | {s['accessibility']} "
            f"| {s['best-practices']} | {s['seo']} | {m['FCP'] / 1000:.1f} s "
            f"| {m['LCP'] / 1000:.1f} s | {m['TBT']:.0f} ms | {m['CLS']:.3f} "
            f"| {r['bytes'] / 1024:.0f} KiB |"
        )
        for category, lowest in TARGETS.items():
            if s[category] < lowest:
                failed = r["failed_audits"].get(category, "")
                misses.append(
                    f"{r['page']} ({r['form']}): {category} {s[category]} < {lowest}"
                    f" {failed}"
                )
    versions = results[0]["versions"]
    summary = {
        "date": datetime.date.today().isoformat(),
        "lighthouse": versions["lighthouse"],
        "browser": versions["user_agent"],
        "runs_per_page": args.runs,
        "results": results,
    }
    (args.out / "lighthouse.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"Lighthouse {versions['lighthouse']}, {versions['user_agent']}, "
        f"{summary['date']}, median of {args.runs} runs:"
    )
    print("\n".join(lines))
    for miss in misses:
        print("below target:", miss)
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
