"""Sphinx configuration for the dlcomp site: settings only.

The published site is built by ``tools/build_site.py`` (``nox -s docs`` runs
it): one strict ``sphinx-build -W --keep-going -n -T -c . docs <out>`` per
edition, from the repository root, English into build/html, each translation
(``DLCOMP_LANGUAGE``) into build/<language>/html, then copied into the
English site's <language>/ folder. What the site adds to Sphinx lives in
docs/_ext (``dlcomp_sphinx`` and the extensions listed below). Paths below
follow Sphinx's rules: the static/template paths are relative to this file
(the conf dir), while ``exclude_patterns`` and every sphinx-gallery path are
relative to docs/.

Environment variables:

- ``DLCOMP_INTERSPHINX=1``: link to the Python and PyTorch docs (needs the
  network to fetch their inventories; off by default so offline builds pass).
- ``DLCOMP_NB_EXECUTION``: myst-nb's execution mode. Default ``cache``
  (re-run a page only when its text or the library changed); with ``CI``
  set, tools/build_site.py empties the cache first, so every page runs.
- ``DLCOMP_FAST=1``: prose-only build: run no notebook and no gallery script.
- ``DLCOMP_BASE_URL``: the address the site is served from (the GitHub Pages
  workflow sets it; on Read the Docs ``READTHEDOCS_CANONICAL_URL`` is used).
  With it, the install command names the wheel's URL; without it (a local
  build), the reader downloads the wheel and installs the file.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "docs" / "_ext"))  # dlcomp_sphinx (gallery reset)

import dlcomp_wheel  # noqa: E402  (docs/_ext: the wheel and the install command)

import dlcomp  # noqa: E402  (installed with `pip install -e .`)

# The project's addresses are set once, in pyproject.toml.
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
# The generated gallery's folder below docs/ (nox reads it there too; the
# extensions read sphinx_gallery_conf["gallery_dirs"], docs/_ext/dlcomp_config.py).
GALLERY = PYPROJECT["tool"]["dlcomp"]["gallery-dir"]
dlcomp_urls = PYPROJECT["project"]["urls"]  # Documentation, Source, Issues
# The Install box states the Python and torch versions: the range dlcomp
# declares, and the releases `nox -s compat` tests (both set in pyproject.toml).
dlcomp_requires = {
    "python": PYPROJECT["project"]["requires-python"],
    "torch": next(
        d.removeprefix("torch")
        for d in PYPROJECT["project"]["dependencies"]
        if d.startswith("torch>")
    ),
    "tested": ", ".join(PYPROJECT["tool"]["dlcomp"]["torch-tested"]),
}

FAST = os.environ.get("DLCOMP_FAST") == "1"

project = "dlcomp"
author = "The dlcomp engineers"
copyright = {"zh_CN": "2026，dlcomp 的工程师们"}.get(
    os.environ.get("DLCOMP_LANGUAGE", "en"), "2026, the dlcomp engineers"
)
release = dlcomp.__version__
version = release
# Where the site is served from, if the build knows it: the install command
# then names the wheel's URL (html_baseurl/dist/dlcomp-<version>-...whl).
html_baseurl = os.environ.get("READTHEDOCS_CANONICAL_URL") or os.environ.get(
    "DLCOMP_BASE_URL", ""
)

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "dlcomp_math",  # docs/_ext: math as MathML, rendered at build time
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_nb",  # loads myst_parser itself: do not list both
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "sphinx_design",
    "dlcomp_sphinx",  # docs/_ext: directives, chapter pages, downloads, cache key
    "dlcomp_wheel",  # docs/_ext: the wheel in dist/, the Install box
    "notfound.extension",  # 404.html with absolute links, for any URL depth
    "dlcomp_codelinks",  # docs/_ext: sphinx-codeautolink, the gallery skipped
    "dlcomp_rules",  # docs/_ext: the audit's rules table, from dlcomp.auditing.RULES
]

# -- languages --------------------------------------------------------------
# English is the source; the Chinese edition (DLCOMP_LANGUAGE=zh_CN, built by
# `nox -s docs` into build/html/zh_CN/) takes its text from the gettext
# catalogs in docs/locales/zh_CN/LC_MESSAGES/ (`nox -s translations` updates
# them). Code, outputs and figures are the English build's.
language = os.environ.get("DLCOMP_LANGUAGE", "en")  # not -D: conf.py reads it
locale_dirs = ["locales/"]  # relative to docs/
gettext_compact = False  # one catalog per page
gettext_uuid = False
gettext_location = True
# Figures' alt text is read aloud: it is translated too.
gettext_additional_targets = ["image"]
# Chinese search: docs/_ext/dlcomp_search.py gives jieba the glossary's terms.

# The site's path on its host, for the links of the 404 page: "/" for a
# custom domain or local serving, "/dlcomp/" for a GitHub Pages project site;
# a translation lives in its folder below it (zh_CN/).
notfound_urls_prefix = os.environ.get("DLCOMP_URL_PREFIX", "/")
NOT_FOUND = {
    "en": (
        "Page not found",
        "This page does not exist (any more). Start from the "
        '<a href="{root}index.html">chapter map</a> or use the search.',
    ),
    "zh_CN": (
        "页面不存在",
        '这个页面不存在（或已移除）。请从<a href="{root}index.html">章节目录</a>'
        "开始，或者使用搜索。",
    ),
}
if language != "en":
    notfound_urls_prefix += f"{language}/"
notfound_context = {
    "title": NOT_FOUND[language][0],
    "body": f"<h1>{NOT_FOUND[language][0]}</h1><p>"
    + NOT_FOUND[language][1].format(root=notfound_urls_prefix)
    + "</p>",
}

root_doc = "index"
exclude_patterns = [
    "_build",
    "locales",  # the translations' catalogs and their README, not pages
    "**.ipynb_checkpoints",
    # sphinx-gallery writes name.py and name.ipynb next to name.rst; without
    # these, myst-nb would pick the notebook over the rst and run it again.
    *(f"{GALLERY}/**/*.{kind}" for kind in ("ipynb", "py", "json", "zip")),
]
nitpicky = True

# -- myst / myst-nb ---------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("DLCOMP_NB_EXECUTION", "cache")
if FAST or nb_execution_mode == "off":
    nb_execution_mode = "off"
    # No cell runs, so nothing is glued: {glue:text} has no value to paste
    # (a prose-only build; the real build checks every glued value and claim).
    suppress_warnings = ["mystnb.glue"]
# One cache for every edition: the Chinese build reuses the English outputs.
nb_execution_cache_path = str(ROOT / "build" / ".jupyter_cache")
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True  # and the log shows its traceback
nb_execution_timeout = 300
nb_execution_excludepatterns = [f"{GALLERY}/**"]
nb_merge_streams = True
# The prompts of folded cells (myst-nb's own words) in the edition's language.
if language == "zh_CN":
    nb_code_prompt_show = "显示代码单元"
    nb_code_prompt_hide = "隐藏代码单元"
# The gettext builder keeps an output's figure (myst-nb keeps only text for
# it): its alt text is a message to translate, as in the HTML build.
nb_mime_priority_overrides = [
    ("gettext", "image/png", 5),
    ("gettext", "image/svg+xml", 6),
]
# Error outputs carry ANSI colours and free text (backticks, URLs) that the
# default ipythontb lexer fails on (a warning, so an error under -W).
nb_render_error_lexer = "myst-ansi"

# -- autodoc / napoleon -----------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autosummary_generate = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Shape", "Notes")]  # PyTorch's "Shape:" section
napoleon_use_rtype = False

# -- intersphinx: opt-in, because the inventories need the network ----------
if os.environ.get("DLCOMP_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
    }
    nitpick_ignore_regex: list[tuple[str, str]] = []
else:
    intersphinx_mapping = {}
    # Offline, references into Python's and PyTorch's docs cannot resolve.
    # Ignore exactly those; a broken reference to dlcomp itself still fails.
    nitpick_ignore_regex = [
        (r"py:.*", r"(torch|collections|typing|os|pathlib)(\..*)?"),
        (r"py:.*", r"(Tensor|nn\.Module|nn\.Linear|nn\.Sequential|nn\.ModuleList)"),
        (r"py:.*", r"(int|float|str|bool|object|tuple|list|dict|None|Callable|Any)"),
        (r"py:.*", r"(TypeError|ValueError|RuntimeError|IndexError|NamedTuple)"),
    ]

# -- sphinx-codeautolink: names in code link to their API entries ----------
# A page's cells are one program: a name imported in an earlier cell links too.
codeautolink_concat_default = True
# Docstring examples, matched without the doctest flags the HTML leaves out.
codeautolink_custom_blocks = {"pycon": "dlcomp_codelinks.clean_pycon"}

# -- sphinx-gallery ---------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../gallery",
    "gallery_dirs": GALLERY,
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    # Sections in the chapter's order (5.1 ... 5.6), not the folders' names.
    "subsection_order": [
        "../gallery/blocks",
        "../gallery/parameters",
        "../gallery/layers",
        "../gallery/files",
        "../gallery/gpu",
    ],
    # Seed torch (and reset matplotlib) before every example; dotted names,
    # because a function object here would make the config unpicklable.
    # dlcomp_gallery.run_timing_alone makes an example that times something
    # run alone (a file lock, taken before the example, released after it):
    # a parallel neighbour would otherwise compete for the cores it measures.
    "reset_modules": (
        "matplotlib",
        "dlcomp_sphinx.reset_torch",
        "dlcomp_gallery.run_timing_alone",
    ),
    "reset_modules_order": "both",  # before each example, and after it
    "doc_module": ("dlcomp",),
    "backreferences_dir": "gen_modules/backreferences",
    "capture_repr": ("_repr_html_", "__repr__"),
    "remove_config_comments": True,
    "download_all_examples": True,
    # Every notebook starts with how to install what it needs (the scripts
    # carry the same command in their docstring: dlcomp_wheel).
    "first_notebook_cell": dlcomp_wheel.notebook_cell(release, html_baseurl),
    "show_signature": False,
    "plot_gallery": "False" if FAST else "True",
    "matplotlib_animations": False,
    # Its timing tables need jQuery, which Sphinx 9 no longer ships ("$ is not
    # defined" in the browser); the build log prints the same times.
    "write_computation_times": False,
    # Run the scripts in parallel processes (joblib). They seed torch
    # themselves through reset_modules and write only to temporary folders;
    # the timing scripts still run alone (run_timing_alone, above).
    "parallel": 2,
}

# -- HTML -------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "dlcomp"
html_static_path = ["docs/_static"]
# docs/_templates/layout.html: the search index only on the search page.
templates_path = ["docs/_templates"]
html_css_files = ["dlcomp.css"]
# Formulas become MathML while the site is built (docs/_ext/dlcomp_math.py).
html_math_renderer = "mathml"
html_favicon = "docs/_static/favicon.svg"  # also spares browsers a 404 for /favicon.ico
# docs/_ext/dlcomp_site.py: a meta description per page, named sidebar
# toggles, and a tidy output (no theme template, a 404 that works anywhere).
extensions.append("dlcomp_site")
# docs/_ext/dlcomp_i18n.py: the untranslated-message gate, the language links.
extensions.append("dlcomp_i18n")
dlcomp_site_description = PYPROJECT["project"]["description"]
dlcomp_site_descriptions = {
    "zh_CN": "《动手学深度学习》“深度学习计算”一章（PyTorch）可执行、经过测试的参考",
}
html_theme_options = {
    "navigation_with_keys": False,
    # One header row from 1024 px up: two chapters, the rest under "More",
    # and the search as a button (Ctrl+K still opens it).
    "header_links_before_dropdown": 2,
    # docs/_templates/dlcomp-languages.html: this page in the other edition,
    # in the header at every width (persistent items stay out of the drawer).
    "navbar_persistent": ["search-button", "dlcomp-languages"],
    # docs/_templates/dlcomp-source-link.html: the GitHub link, an inline SVG.
    "navbar_end": ["theme-switcher", "dlcomp-source-link"],
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["dlcomp-built-with", "sphinx-version"],
    # The theme's own labels that its catalogs do not translate.
    "icon_links_label": {"zh_CN": "图标链接"}.get(language, "Icon Links"),
    "search_bar_text": {"zh_CN": "搜索文档……"}.get(language, "Search the docs ..."),
    "header_dropdown_text": {"zh_CN": "更多"}.get(language, "More"),
}
# Chapter pages are top-level (nothing to list in a section sidebar); the
# gallery and API sections keep their navigation.
CHAPTER_PAGES = [
    "blocks",
    "parameters",
    "deferred-init",
    "custom-layers",
    "read-write",
    "distributed-checkpoints",
    "gpu",
]
html_sidebars = {page: [] for page in ["index", *CHAPTER_PAGES, "404"]}
dlcomp_chapter_pages = CHAPTER_PAGES
# Executed notebooks exist only when pages are executed.
dlcomp_notebook_links = not FAST
html_show_sourcelink = True
# Without a default, a first visit logs "Got invalid theme mode" (console error).
html_context = {
    "default_mode": "auto",
    "dlcomp_source_url": dlcomp_urls["Source"],
    "dlcomp_source_label": {"zh_CN": "GitHub 上的源代码"}.get(
        language, "Source on GitHub"
    ),
}
# Snippets of search results come from the index (docs/_ext/dlcomp_site.py,
# docs/_static/dlcomp-search.js), not from downloading every result's page.
html_show_search_summary = False
# Copy buttons on code only: not on a cell's output, nor on a gallery
# script's output (a reader copies code; outputs are read).
copybutton_selector = "div:not(.output):not(.sphx-glr-script-out) > div.highlight > pre"
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
