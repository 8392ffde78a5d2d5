"""How a file downloaded from the site links back to it.

A chapter's notebook and a gallery example's notebook are made from the
page's text, whose cross-references (roles, ``minigallery``) must become
plain Markdown links. They point at the hosted pages when ``html_baseurl``
is set; without it they are relative to the file's place in the built site
(they work from the site, not from a download).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from dlcomp_notebooks import LinkResolver
from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.errors import NoUri
from sphinx.util.nodes import clean_astext


def site_url(app: Sphinx, uri: str, depth: int) -> str:
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


def link_resolver(app: Sphinx, docname: str, depth: int) -> LinkResolver:
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
        return ref.astext(), site_url(app, uri, depth)

    return link


def gallery_links(app: Sphinx, depth: int) -> Callable[[list[str]], str]:
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
        uri = site_url(app, app.builder.get_target_uri(docname), depth)
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
