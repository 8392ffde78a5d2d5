"""Workarounds for what the site's tools get wrong, each with its gate.

Every workaround of the site is listed in :data:`WORKAROUNDS`: what it works
around, the upstream source or issue, the package it is for, where the code
lives, and a probe of the installed package that says whether the problem is
still there. The package's version range is the one ``pyproject.toml``'s
``docs`` group allows for it, which must have an upper bound: a workaround is
checked against the releases it was written for, and raising the bound means
checking it again. When the build starts (``builder-inited``), each
workaround's package must be installed inside that range and its probe must
still find the problem; otherwise the build fails, naming the workaround and
its link, so a fixed upstream cannot leave a workaround behind unnoticed.

The small ones live here too (:func:`unpublish_theme_templates`,
:func:`viewcode_spans`, :func:`one_tag_list`); the others live where they
act, named by ``where``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcomp_config import in_gallery

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Workaround:
    """One workaround: what, for which package, where, and whether still needed."""

    name: str
    package: str  # the distribution the problem is in
    link: str  # the upstream issue, or the upstream source that has the problem
    where: str  # the dotted name of the code that works around it
    still_needed: Callable[[], bool]  # a probe of the installed package


def _source(dotted: str) -> str:
    module, _, name = dotted.rpartition(":")
    obj: Any = importlib.import_module(module or dotted)
    if module:
        obj = getattr(obj, name)
    return inspect.getsource(obj)


def _chinese_stemmer_unnamed() -> bool:
    from sphinx.search.zh import SearchChinese

    # Sphinx writes `window.Stemmer = <language_name>Stemmer` after the raw
    # stemmer code; the Chinese search ships the English one.
    return (
        SearchChinese.js_stemmer_rawcode == "english-stemmer.js"
        and "{self.lang.language_name}Stemmer" in _source("sphinx.search")
    )


def _publish_msgstr_without_renderer() -> bool:
    # Read from Sphinx's file: the build replaces the function with the copy.
    import ast

    tree = ast.parse(_source("sphinx.transforms.i18n"))
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "_publish_msgstr"
    ]
    if not found:  # the copy no longer matches what it replaces
        return False
    function = found[0]
    expected = ["source", "source_path", "source_line", "config", "env",
                "registry", "settings"]  # fmt: skip
    names = [a.arg for a in (*function.args.args, *function.args.kwonlyargs)]
    return names == expected and "nb_renderer" not in ast.unparse(function)


def _cache_hit_writes_no_outputs() -> bool:
    # myst-nb writes the notebook it read, not the one the cache merged.
    source = _source("myst_nb.sphinx_")
    return "nbformat.writes(notebook)" in source and "merge_match" not in source


def _reads_only_rst_links() -> bool:
    # What sphinx-codeautolink found on a page is read back from its cache
    # only for .rst sources.
    return '(file + ".rst")' in _source("sphinx_codeautolink.extension.cache")


def _viewcode_div_in_pre() -> bool:
    return '<div class="viewcode-block"' in _source("sphinx.ext.viewcode")


def _tag_list_id_repeated() -> bool:
    return "<div id='sg-tag-list'" in _source("sphinx_gallery.gen_rst")


def _theme_ships_raw_template() -> bool:
    import pydata_sphinx_theme

    static = Path(pydata_sphinx_theme.__file__).parent / "theme"
    return any(static.rglob("static/webpack-macros.html"))


def _timing_tables_need_jquery() -> bool:
    import sphinx

    jquery = Path(sphinx.__file__).parent / "themes" / "basic" / "static"
    uses = "$(document).ready" in _source("sphinx_gallery.gen_gallery")
    return uses and not any(jquery.glob("jquery*.js"))


def _text_keeps_backslash() -> bool:
    from latex2mathml.converter import convert

    return "\\_" in convert(r"\text{fan\_in}")


WORKAROUNDS = (
    Workaround(
        "the Chinese search's stemmer has a name nothing defines",
        "sphinx",
        "https://github.com/sphinx-doc/sphinx/issues/14229 (fixed by #14416)",
        "dlcomp_search._chinese_search",
        _chinese_stemmer_unnamed,
    ),
    Workaround(
        "a translated message cannot see the page's glued values",
        "sphinx",
        "https://github.com/sphinx-doc/sphinx/blob/v9.0.4/sphinx/transforms/i18n.py",
        "dlcomp_i18n._glue_in_translations",
        _publish_msgstr_without_renderer,
    ),
    Workaround(
        "a page's notebook written on a cache hit has no outputs",
        "myst-nb",
        "https://github.com/executablebooks/MyST-NB/blob/v1.4.0/myst_nb/sphinx_.py",
        "dlcomp_chapters._with_cached_outputs",
        _cache_hit_writes_no_outputs,
    ),
    Workaround(
        "code links of a Markdown page last only one build",
        "sphinx-codeautolink",
        "https://github.com/felix-hilden/sphinx-codeautolink (its extension/cache.py)",
        "dlcomp_codelinks._reread_markdown_pages",
        _reads_only_rst_links,
    ),
    Workaround(
        "viewcode puts <div> blocks inside <pre>",
        "sphinx",
        "https://github.com/sphinx-doc/sphinx/blob/v9.0.4/sphinx/ext/viewcode.py",
        "dlcomp_upstream.viewcode_spans",
        _viewcode_div_in_pre,
    ),
    Workaround(
        "the gallery's tag-list id appears once per section",
        "sphinx-gallery",
        "https://github.com/sphinx-gallery/sphinx-gallery/blob/v0.22.1/sphinx_gallery/gen_rst.py",
        "dlcomp_upstream.one_tag_list",
        _tag_list_id_repeated,
    ),
    Workaround(
        "the theme copies its raw webpack template into _static",
        "pydata-sphinx-theme",
        "https://github.com/pydata/pydata-sphinx-theme",
        "dlcomp_upstream.unpublish_theme_templates",
        _theme_ships_raw_template,
    ),
    Workaround(
        "the gallery's timing tables need jQuery, which Sphinx 9 does not ship",
        "sphinx-gallery",
        "https://github.com/sphinx-gallery/sphinx-gallery/blob/v0.22.1/sphinx_gallery/gen_gallery.py",
        "conf.sphinx_gallery_conf['write_computation_times'] = False",
        _timing_tables_need_jquery,
    ),
    Workaround(
        "latex2mathml keeps the backslash of \\_ inside \\text{...}",
        "latex2mathml",
        "https://github.com/roniemartinez/latex2mathml",
        "dlcomp_math.mathml",
        _text_keeps_backslash,
    ),
)
"""Every workaround of the site."""


def docs_requirements() -> dict[str, str]:
    """The ``docs`` dependency group of pyproject.toml: package -> specifier."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    found = {}
    for requirement in data["dependency-groups"]["docs"]:
        name, specifier = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement).groups()
        found[name.lower()] = specifier.strip()
    return found


def problems() -> list[str]:
    """Why each workaround whose gate fails must be looked at again."""
    from packaging.specifiers import SpecifierSet

    allowed = docs_requirements()
    found = []
    for w in WORKAROUNDS:
        specifier = allowed.get(w.package, "")
        version = importlib.metadata.version(w.package)
        upper = ("<", "<=", "==", "~=")
        if not any(s.operator in upper for s in SpecifierSet(specifier)):
            found.append(
                f"{w.name}: pyproject.toml allows {w.package}{specifier or ' (any)'}"
                ", with no upper bound: bound it to the releases the workaround "
                f"was checked against ({w.link})"
            )
        elif version not in SpecifierSet(specifier):
            found.append(f"{w.name}: {w.package} {version} is installed, outside "
                         f"{specifier}: check {w.link}")  # fmt: skip
        elif not w.still_needed():
            found.append(f"{w.name}: {w.package} {version} no longer has the problem "
                         f"({w.link}): remove {w.where}")  # fmt: skip
    return found


# -- the workarounds that rewrite the built site ---------------------------------

THEME_TEMPLATES = ("webpack-macros.html",)
TAG_LIST = "<div id='sg-tag-list' class='sphx-glr-tag-list'></div>"


def unpublish_theme_templates(outdir: Path) -> None:
    """The theme's raw template is not a file of the site."""
    for name in THEME_TEMPLATES:
        (outdir / "_static" / name).unlink(missing_ok=True)


def viewcode_spans(outdir: Path) -> None:
    """Viewcode wraps each object's source in a <div> inside <pre>: invalid HTML."""
    for page in (outdir / "_modules").rglob("*.html"):
        text = page.read_text("utf-8")
        new = re.sub(
            r"<pre>.*?</pre>",
            lambda m: (
                m.group(0)
                .replace('<div class="viewcode-block"', '<span class="viewcode-block"')
                .replace("</div>", "</span>")
            ),
            text,
            flags=re.DOTALL,
        )
        if new != text:
            page.write_text(new, "utf-8")


def one_tag_list(app: Any, doctree: Any, docname: str) -> None:
    """doctree-resolved: Sphinx-Gallery writes its tag list's id once per
    section of a gallery index: the first keeps it."""
    from docutils import nodes

    if not in_gallery(app.config, docname):
        return
    lists = [n for n in doctree.findall(nodes.raw) if TAG_LIST in n.astext()]
    for node in lists[1:]:
        text = node.astext().replace(
            TAG_LIST, TAG_LIST.replace("id='sg-tag-list' ", "")
        )
        node.replace_self(nodes.raw(text, text, format="html"))


def _check(app: Any) -> None:
    from sphinx.errors import ExtensionError

    if found := problems():
        raise ExtensionError("workarounds to look at again:\n" + "\n".join(found))


def _rewrite(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    unpublish_theme_templates(outdir)
    viewcode_spans(outdir)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _check)
    app.connect("build-finished", _rewrite)
    app.connect("doctree-resolved", one_tag_list)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
