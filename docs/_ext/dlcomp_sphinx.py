"""Sphinx helpers for the dlcomp site (loaded by conf.py; not part of the library).

- ``reset_torch``: sphinx-gallery's per-example reset, named by a dotted string
  in ``sphinx_gallery_conf["reset_modules"]``.
- ``.. dlcomp-source:: dotted.name``: shows the source of a dlcomp object
  *without* its docstring, read from the installed library (one source of
  truth), so a chapter page shows the code it then runs.
- ``.. dlcomp-api:: dlcomp.module``: documents every name in the module's
  ``__all__`` (autodoc), each followed by the gallery examples that use it.
- Chapter pages (``dlcomp_chapter_pages`` in conf.py): each exercise's answer
  under the "Exercises" heading is folded (``<details>``), and a link offers
  the executed page as a Jupyter notebook, written next to the HTML when the
  build finishes: plain Markdown with links to the hosted pages, the code of
  each ``dlcomp-source`` block, and without the site's hidden setup cell
  (``dlcomp_notebooks``).
- The gallery's notebook downloads (each example's ``.ipynb``, its zip and
  the zip of all notebooks): reST roles in their text become links.
- Links in downloaded notebooks point at the hosted pages when
  ``html_baseurl`` is set; without it they are relative to the file's place
  in the built site (they work from the site, not from a download).
- ``{claim}`sentence <key>```: a sentence stating an outcome that the page's
  own cell measured. The cell glues a bool under ``key`` (myst-nb ``glue``);
  the build warns (an error under ``-W``) when it is not ``True``, so a page
  cannot state an outcome that its output contradicts.
- The execution cache key of a page includes the library's source: each
  page's hidden setup cell (``dlcomp._notebook.setup()``) gets a comment with
  a hash of every ``.py`` file of the packages in ``dlcomp_source_packages``
  (``source-read``), and the page depends on those files. myst-nb's cache
  (jupyter-cache) keys on the code cells' text, so a change in the library
  re-reads and re-executes the pages that run it; an unchanged library reuses
  the cache. sphinx-gallery keys its scripts on their own text: when the
  library's hash differs from the one the last build stored in the gallery's
  folder, every script runs again (its ``run_stale_examples``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

from dlcomp_i18n import site_text  # the text this extension writes, per language
from dlcomp_notebooks import (
    SITE_SETUP,
    LinkResolver,
    MystToMarkdown,
    RestToMarkdown,
    chapter_notebook,
    gallery_notebook,
    resolve_object,
    source_without_docstring,
)
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.errors import NoUri
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole
from sphinx.util.nodes import clean_astext


def reset_torch(gallery_conf: dict[str, Any], fname: str) -> None:
    """Seed torch before each gallery example, so every build prints the same."""
    import torch

    torch.manual_seed(0)


class DlcompSource(SphinxDirective):
    """``.. dlcomp-source:: dlcomp.blocks.MLP``: the object's code, no docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        dotted = self.arguments[0]
        obj = resolve_object(dotted)
        path = inspect.getsourcefile(obj)
        if path:
            self.env.note_dependency(path)  # re-read this page when the code changes
        code = source_without_docstring(obj)
        block = nodes.literal_block(code, code, language="python")
        name = f"{obj.__module__}.{obj.__qualname__}"
        caption = nodes.caption("", "", nodes.literal(name, name))
        container = nodes.container(
            "", caption, block, classes=["literal-block-wrapper"]
        )
        container["literal_block"] = True
        self.set_source_info(container)
        return [container]


class DlcompApi(SphinxDirective):
    """``.. dlcomp-api:: dlcomp.blocks``: autodoc for every name in ``__all__``.

    Objects re-exported by :mod:`dlcomp` are documented as ``dlcomp.NAME``
    (the name readers import); others under their own module (``:as:``).
    """

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"as": directives.unchanged}

    def _has_examples(self, dotted: str) -> bool:
        """Whether sphinx-gallery found an example using ``dotted``."""
        conf = self.config.sphinx_gallery_conf
        path = self.env.srcdir / conf["backreferences_dir"] / f"{dotted}.examples"
        return path.is_file() and path.stat().st_size > 0

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        self.env.note_dependency(inspect.getsourcefile(module) or "")
        public = self.options.get("as", module_name)
        rst = [
            f".. automodule:: {module_name}",
            "   :no-members:",
            "",
            f".. currentmodule:: {public}",
            "",
            ".. autosummary::",
            "",
            *(f"   {name}" for name in module.__all__),
            "",
        ]
        for name in module.__all__:
            obj = getattr(module, name)
            kind = "autoclass" if inspect.isclass(obj) else "autofunction"
            rst += [f".. {kind}:: {name}"]
            if inspect.isclass(obj):
                # Members a class inherits from dlcomp's own (private) bases are
                # documented; those of PyTorch's and Python's bases are not.
                rst += [
                    "   :members:",
                    "   :inherited-members: Module, LazyModuleMixin, tuple, object, "
                    "BaseException",
                ]
            rst += [""]
            if self._has_examples(f"{public}.{name}"):
                rst += [
                    f".. rubric:: Gallery examples using ``{name}``",
                    "",
                    f".. minigallery:: {public}.{name}",
                    "",
                ]
        # Feed the generated reST back into the parser at this point of the
        # page (not into a container), so it is parsed like hand-written text.
        self.state_machine.insert_input(rst, f"<dlcomp-api {module_name}>")
        return []


NOTEBOOKS = "_notebooks"  # folder of the built site that holds the .ipynb files


def _fold_answers(section: nodes.section, summary: Callable[[str], str]) -> None:
    """Wrap everything under each exercise's heading in a closed <details>.

    Its summary names the exercise (``summary(number)``): the number that
    starts the exercise's title ("2. A block that ..."), else its place
    among the exercises, so that the answers of a page read apart (a screen
    reader lists them by their summary).
    """
    place = 0
    for exercise in section.findall(nodes.section):
        if exercise is section:
            continue
        title = exercise.children[0]
        answer = exercise.children[1:]
        if not answer:
            continue
        place += 1
        numbered = re.match(r"\s*(\d+)[.\u3001\uff0e]", title.astext())
        number = numbered.group(1) if numbered else str(place)
        exercise.children = [
            title,
            nodes.raw(
                "",
                f'<details class="dlcomp-answer"><summary>{summary(number)}</summary>',
                format="html",
            ),
            *answer,
            nodes.raw("", "</details>", format="html"),
        ]
        for child in exercise.children:
            child.parent = exercise


def _chapter_page(app: Sphinx, doctree: nodes.document) -> None:
    """doctree-read: fold the answers, add the notebook download link."""
    docname = app.env.docname
    if docname not in app.config.dlcomp_chapter_pages:
        return
    for section in doctree.findall(nodes.section):
        title = section.children[0] if section.children else None
        if isinstance(title, nodes.title) and title.astext() == site_text(
            app.config.language, "Exercises"
        ):
            _fold_answers(
                section,
                lambda number: site_text(
                    app.config.language,
                    "Show the answer to exercise {number}",
                    number=number,
                ),
            )
    if app.config.dlcomp_notebook_links:
        top = next(iter(doctree.findall(nodes.section)), None)
        if top is not None:
            href = f"{NOTEBOOKS}/{docname}.ipynb"
            text = "Download this page as a Jupyter notebook (.ipynb)"
            link = nodes.reference(
                "", site_text(app.config.language, text), refuri=href
            )
            link["classes"].append("dlcomp-notebook-link")
            top.insert(1, nodes.paragraph("", "", link, classes=["dlcomp-notebook"]))


def _site_url(app: Sphinx, uri: str, depth: int) -> str:
    """The URL of ``uri`` (relative to the site's root) for a downloaded file.

    With ``html_baseurl`` set, the hosted page (absolute). Without it, a link
    relative to the file's place in the built site, ``depth`` folders below
    its root: it works for the file on the site, not once it is downloaded.
    """
    if urlsplit(uri).scheme:  # already absolute (intersphinx)
        return uri
    base = app.config.html_baseurl
    if base:
        return urljoin(base.rstrip("/") + "/", uri)
    return "../" * depth + uri


def _link_resolver(app: Sphinx, docname: str, depth: int) -> LinkResolver:
    """Resolve a cross-reference role of ``docname`` as the site does.

    Returns the resolved title (for ``doc``/``ref``) and the URL, or
    ``(None, None)`` where the site shows plain text (an unresolved name of
    Python or PyTorch in an offline build).
    """
    env, builder, root = app.env, app.builder, app.config.root_doc

    def link(role: str, target: str, title: str | None) -> tuple[str | None, ...]:
        domain_name, _, kind = role.rpartition(":")
        if not domain_name:
            domain_name = "std" if kind in ("doc", "ref", "term", "numref") else "py"
        if kind in ("ref", "numref", "term"):
            target = target.lower()
        contnode = nodes.literal(title or target, title or target)
        node = addnodes.pending_xref(
            "",
            contnode,
            refdomain=domain_name,
            reftype=kind,
            reftarget=target,
            refexplicit=title is not None,
            refwarn=False,
            refdoc=docname,
        )
        node["py:module"] = node["py:class"] = None
        try:
            ref = env.get_domain(domain_name).resolve_xref(
                env, root, builder, kind, target, node, contnode
            )
            if ref is None:
                ref = app.events.emit_firstresult(
                    "missing-reference", env, node, contnode,
                    allowed_exceptions=(NoUri,),
                )  # fmt: skip
        except NoUri:
            ref = None
        if ref is None:
            return None, None
        uri = ref.get("refuri") or builder.get_target_uri(root) + "#" + ref["refid"]
        return ref.astext(), _site_url(app, uri, depth)

    return link


def _gallery_links(app: Sphinx, depth: int) -> Callable[[list[str]], str]:
    """Markdown for ``.. minigallery::``: a link to each example it shows.

    Paths (``../gallery/files/plot_*.py``) list the examples they match, by
    title; an object name links to the gallery's index.
    """
    conf = app.config.sphinx_gallery_conf
    examples = conf["examples_dirs"]
    galleries = conf["gallery_dirs"]
    pairs = list(
        zip(
            [examples] if isinstance(examples, str) else examples,
            [galleries] if isinstance(galleries, str) else galleries,
            strict=True,
        )
    )
    srcdir = Path(app.srcdir)

    def link(docname: str) -> str:
        title = clean_astext(app.env.titles[docname])
        uri = _site_url(app, app.builder.get_target_uri(docname), depth)
        return f"- [{title}]({uri})"

    def gallery(arguments: list[str]) -> str:
        items = []
        for argument in arguments:
            if not argument.endswith(".py"):
                items.append(link(f"{pairs[0][1]}/index"))
                continue
            for path in sorted((srcdir / argument).parent.glob(Path(argument).name)):
                for examples_dir, gallery_dir in pairs:
                    base = (srcdir / examples_dir).resolve()
                    if path.resolve().is_relative_to(base):
                        relative = path.resolve().relative_to(base).with_suffix("")
                        items.append(link(f"{gallery_dir}/{relative.as_posix()}"))
        if not items:
            raise ValueError(f"minigallery {arguments}: no gallery example matches")
        return "\n".join(dict.fromkeys(items))

    return gallery


def _with_cached_outputs(app: Sphinx, notebook: dict[str, Any]) -> dict[str, Any]:
    """The notebook with its outputs, also when myst-nb took them from its cache.

    On a cache hit, myst-nb 1.4 renders the page from the cached outputs but
    writes the notebook it read (no outputs) to ``jupyter_execute``; the
    outputs are merged back here from the same cache.
    """
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    if app.config.nb_execution_mode != "cache" or any(c.get("outputs") for c in code):
        return notebook
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(app.env.mystnb_config.execution_cache_path)  # set by myst-nb
    _, merged = cache.merge_match_into_notebook(
        nbformat.reads(json.dumps(notebook), as_version=4)
    )
    return json.loads(nbformat.writes(merged))


def _copy_notebooks(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: the chapter pages' notebooks, for download next to the HTML.

    Each is the page's executed notebook made a plain Jupyter notebook (see
    ``dlcomp_notebooks.chapter_notebook``): Markdown instead of MyST, links
    to the hosted pages, the reference code the page shows, and no hidden
    cell that changes the reader's kernel.
    """
    if exception is not None or app.builder.format != "html":
        return
    if not app.config.dlcomp_notebook_links:
        return
    executed = Path(app.outdir).parent / "jupyter_execute"
    target = Path(app.outdir) / NOTEBOOKS
    target.mkdir(exist_ok=True)
    for docname in app.config.dlcomp_chapter_pages:
        source = executed / f"{docname}.ipynb"
        if not source.is_file():
            raise FileNotFoundError(
                f"{source} is missing: myst-nb did not write the executed notebook "
                f"of {docname}, so its download link would be broken"
            )
        glue_file = executed / f"{docname}.glue.json"
        glued = {}
        if glue_file.is_file():
            for key, output in json.loads(glue_file.read_text("utf-8")).items():
                plain = output.get("data", {}).get("text/plain", "")
                glued[key] = "".join(plain) if isinstance(plain, list) else plain
        depth = 1 + docname.count("/")  # _notebooks/<docname>.ipynb
        converter = MystToMarkdown(
            _link_resolver(app, docname, depth),
            glued=glued,
            gallery=_gallery_links(app, depth),
        )
        executed_nb = _with_cached_outputs(app, json.loads(source.read_text("utf-8")))
        notebook = chapter_notebook(executed_nb, converter)
        out = target / f"{docname}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        out.write_text(text, "utf-8")


def _gallery_downloads(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: reST roles in the gallery's notebooks become Markdown links.

    sphinx-gallery writes each example's notebook from its reST text and
    leaves roles (``:func:`...```) as they are. The downloads (each
    notebook, each example's zip, and the zip of all notebooks) are
    rewritten here, the notebooks in a zip from the same converted text as
    the single download. Sphinx copies the downloads again on every build;
    the conversion changes nothing in a converted notebook.
    """
    if exception is not None or app.builder.format != "html":
        return
    if not hasattr(app.config, "sphinx_gallery_conf"):
        return
    downloads = Path(app.outdir) / "_downloads"
    labels = list(app.env.get_domain("std").labels)  # type: ignore[attr-defined]
    converted: dict[str, str] = {}  # docname of the example -> notebook text

    def convert(text: str, docname: str, depth: int) -> str:
        if docname not in converted:
            converter = RestToMarkdown(_link_resolver(app, docname, depth), labels)
            notebook = gallery_notebook(json.loads(text), converter)
            converted[docname] = json.dumps(notebook, indent=2) + "\n"
        return converted[docname]

    files = sorted(app.env.dlfiles.items(), key=lambda item: item[0].suffix != ".ipynb")
    for source, (_docnames, dest) in files:
        path = downloads / dest
        folder = Path(source).parent.as_posix()
        if not path.is_file():
            continue
        if path.suffix == ".ipynb":
            docname = f"{folder}/{path.stem}"
            path.write_text(convert(path.read_text("utf-8"), docname, 2), "utf-8")
        elif path.suffix == ".zip":
            _rewrite_zip(
                path,
                lambda name, text, folder=folder: convert(
                    text, f"{folder}/{name.removesuffix('.ipynb')}", 2
                ),
            )


def _rewrite_zip(path: Path, convert: Callable[[str, str], str]) -> None:
    """Rewrite the notebooks in the zip at ``path`` with ``convert(name, text)``."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    if not any(info.filename.endswith(".ipynb") for info, _ in members):
        return
    temporary = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(temporary, "w") as archive:
        for info, data in members:
            if info.filename.endswith(".ipynb"):
                data = convert(info.filename, data.decode("utf-8")).encode("utf-8")
            archive.writestr(info, data)
    temporary.replace(path)


logger = logging.getLogger(__name__)


class Claim(SphinxRole):
    """``{claim}`sentence <key>```: the sentence, checked against glued ``key``.

    ``key`` names a bool that a cell of the same page glued (``glue(key,
    bool(...), display=False)``). Anything but ``True`` is a warning naming
    the sentence and what the cell measured. With execution off (a prose-only
    build) there is nothing to check against, and the sentence is shown as is.
    """

    pattern = re.compile(r"^(?P<sentence>.+?)\s*<(?P<key>[\w.-]+)>$", re.DOTALL)

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        match = self.pattern.match(self.text.strip())
        if match is None:
            logger.warning(
                "claim %r: expected `sentence <key>`",
                self.text,
                location=self.get_location(),
                type="dlcomp",
                subtype="claim",
            )
            return [nodes.inline(self.text, self.text)], []
        sentence, key = match["sentence"], match["key"]
        node = nodes.inline(sentence, sentence, classes=["dlcomp-claim"])
        if self.config.nb_execution_mode == "off":
            return [node], []
        measured = self._glued(key)
        if measured != "True":
            logger.warning(
                "the page states %r, but the cell that measured it glued %s=%s",
                sentence,
                key,
                measured,
                location=self.get_location(),
                type="dlcomp",
                subtype="claim",
            )
            node["classes"].append("dlcomp-claim-false")
        return [node], []

    def _glued(self, key: str) -> str:
        """The text of the value glued under ``key`` on this page, or why none."""
        from myst_nb.core.variables import RetrievalError
        from myst_nb.ext.glue.utils import retrieve_glue_data

        try:
            data = retrieve_glue_data(self.inliner.document, key).data
        except RetrievalError:
            return "<nothing: no cell glued this key>"
        text = str(data.get("text/plain", "<no text>"))
        if text not in ("True", "False"):
            return f"{text} (not a bool)"
        return text


# -- the execution cache key: the library's source -----------------------------

SETUP_CALL = re.compile(
    rf"^(?P<call>[ \t]*{re.escape(SITE_SETUP)}\.setup\(\))[^\n]*$", re.MULTILINE
)


def _package_sources(packages: list[str]) -> list[Path]:
    """Every ``.py`` file of the installed ``packages``, in a stable order."""
    files: list[Path] = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"dlcomp_source_packages: {package!r} is not a package")
        for location in spec.submodule_search_locations:
            files += sorted(Path(location).rglob("*.py"))
    return files


def source_hash(packages: list[str]) -> tuple[str, list[Path]]:
    """A hash of the source of ``packages`` and of torch's version, and the files.

    The torch version is part of it: outputs printed by another torch are
    run again (every page's footer names the torch that printed them).
    """
    import torch

    files = _package_sources(packages)
    digest = hashlib.sha256(f"torch {torch.__version__}\0".encode())
    for path in files:
        package_root = next(
            parent for parent in path.parents if not (parent / "__init__.py").is_file()
        )
        digest.update(path.relative_to(package_root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16], files


def _key_on_library_source(app: Sphinx, docname: str, source: list[str]) -> None:
    """source-read: put the library's source hash into the page's setup cell.

    jupyter-cache keys a notebook on its code cells' text, so the comment
    makes a changed library a cache miss; the noted dependencies make Sphinx
    read the page again when a library file changes.
    """
    if not app.config.dlcomp_source_packages:
        return
    text = source[0]
    if not SETUP_CALL.search(text):
        if docname in app.config.dlcomp_chapter_pages:
            logger.warning(
                "%s: no `%s.setup()` cell, so its cached outputs would not be "
                "renewed when the library changes",
                docname,
                SITE_SETUP,
                location=docname,
                type="dlcomp",
                subtype="cache",
            )
        return
    key, files = source_hash(app.config.dlcomp_source_packages)
    for path in files:
        app.env.note_dependency(str(path))
    source[0] = SETUP_CALL.sub(
        lambda m: f"{m['call']}  # library source: {key}", text, count=1
    )


GALLERY_KEY = ".dlcomp-source"  # in the generated gallery folder: the last build's


def _gallery_key_file(app: Sphinx) -> Path | None:
    conf = getattr(app.config, "sphinx_gallery_conf", None)
    if not conf or not app.config.dlcomp_source_packages:
        return None
    galleries = conf["gallery_dirs"]
    first = galleries if isinstance(galleries, str) else galleries[0]
    return Path(app.srcdir) / first / GALLERY_KEY


def _rerun_gallery_on_library_change(app: Sphinx) -> None:
    """builder-inited: run every gallery script again if the library changed."""
    path = _gallery_key_file(app)
    if path is None or not path.parent.is_dir():
        return  # no gallery, or a first build: every script runs anyway
    key, _ = source_hash(app.config.dlcomp_source_packages)
    stored = path.read_text("utf-8").strip() if path.is_file() else ""
    if stored != key:
        logger.info("dlcomp: the library changed since the last build: "
                    "running every gallery script again")  # fmt: skip
        app.config.sphinx_gallery_conf["run_stale_examples"] = True


def _store_gallery_key(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: remember which library the gallery's outputs come from."""
    path = _gallery_key_file(app)
    if exception is not None or path is None or not path.parent.is_dir():
        return
    if not app.config.sphinx_gallery_conf.get("plot_gallery"):
        return  # nothing ran: the outputs are still those of the stored key
    key, _ = source_hash(app.config.dlcomp_source_packages)
    path.write_text(key + "\n", "utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_role("claim", Claim())
    app.add_directive("dlcomp-source", DlcompSource)
    app.add_directive("dlcomp-api", DlcompApi)
    app.add_config_value("dlcomp_chapter_pages", [], "env")
    app.add_config_value("dlcomp_notebook_links", True, "env")
    app.add_config_value("dlcomp_source_packages", ["dlcomp"], "env")
    app.connect("source-read", _key_on_library_source)
    # after sphinx-gallery fills its configuration (10), before it runs (500)
    app.connect("builder-inited", _rerun_gallery_on_library_change, priority=100)
    app.connect("build-finished", _store_gallery_key)
    app.connect("doctree-read", _chapter_page)
    app.connect("build-finished", _copy_notebooks)
    app.connect("build-finished", _gallery_downloads)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
