"""The site's translations: catalogs, their checks, and the language switcher.

English is the source language. A translated edition (``DLCOMP_LANGUAGE=zh_CN``)
takes its prose from the gettext catalogs in ``docs/locales/<lang>/LC_MESSAGES``
and its code, outputs and figures from the English build.

- Docstrings stay English: :class:`KeepDocstrings` marks their text
  untranslatable before Sphinx looks for translations (and before the
  gettext builder extracts messages).
- The catalogs themselves (read, updated, checked) are :mod:`dlcomp_catalogs`.
- The Sphinx extension: in a translated build, every message of a page that
  the catalogs do not translate is a warning (an error under ``-W``), so an
  English change without its translation fails the build; every page gets
  links to the same page in the other editions.
"""

from __future__ import annotations

import re
from pathlib import Path

from dlcomp_catalogs import IMAGE_URI, RUNNING_TIME, from_docstring
from dlcomp_config import in_gallery

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
LOCALES = DOCS / "locales"

#: The editions: language code, its name in that language, its folder on the
#: site relative to the English root ("" for English itself).
EDITIONS = {"en": ("English", ""), "zh_CN": ("简体中文", "zh_CN/")}
#: The switcher's tooltip, in the language it switches to.
SWITCH_TITLE = {"en": "Read this page in English", "zh_CN": "阅读本页的中文版"}

#: Text the site's extensions write into pages themselves (not from a page's
#: source, so not in a catalog), in each translated edition. Keys are the
#: English text, with ``{name}`` fields filled in by the caller.
GENERATED = {
    "zh_CN": {
        "Exercises": "练习",
        "Show the answer to exercise {number}": "显示练习 {number} 的答案",
        "Download this page as a Jupyter notebook (.ipynb)": (
            # the notebook is made from the English page
            "下载本页的 Jupyter 笔记本（.ipynb，其中的说明文字为英文）"
        ),
        "Install": "安装",
        "To run the gallery's scripts and notebooks, install dlcomp {version}, "
        "the version this site was built from, with its ": (
            "要运行示例库的脚本和笔记本，请安装构建本站所用的 "
            "dlcomp {version}，以及它的 "
        ),
        "Install dlcomp {version}, the version this site was built from, with its ": (
            "安装构建本站所用的 dlcomp {version}，以及它的 "
        ),
        " extra ({what}):": " 附加依赖（{what}）：",
        " extra ({what}): download the wheel ": " 附加依赖（{what}）：下载 wheel 文件 ",
        ", then, in the folder you saved it to, run": "，然后在保存它的文件夹中运行",
        "matplotlib and numpy, which the gallery scripts use": (
            "示例库脚本用到的 matplotlib 和 numpy"
        ),
        "The wheel: ": "wheel 文件：",
        ". ": "。",
        ".": "。",
        "More on ": "详见",
        "the landing page": "首页",
        "pip also installs torch if the environment has none (from PyPI: on Linux "
        "a CUDA build); to keep the torch you have, install into the environment "
        "that has it. Without an extra you get the library alone (torch and "
        "safetensors); the ": (
            "如果环境中没有 torch，pip 也会安装它"
            "（来自 PyPI：在 Linux 上是 CUDA 版本）；要保留已有的 torch，"
            "请安装到已有 torch 的环境中。不带附加依赖时只安装库本身"
            "（以及 torch 和 safetensors）；"
        ),
        " extra adds matplotlib for the plots of ": " 附加依赖为 ",
        "bench-tail": " 的图表加装 matplotlib。",
        "The source: ": "源代码：",
        "The outputs on this site were printed by torch {torch}.": (
            "本站各页面的输出由 torch {torch} 打印。"
        ),
        "On a machine without an NVIDIA GPU, install the CPU build of torch "
        "first, from PyTorch's CPU wheel index (under 1 GB installed, against "
        "about 4.5 GB for the default build on Linux x86-64 with its CUDA "
        "libraries), then dlcomp:": (
            "在没有 NVIDIA GPU 的机器上，请先从 PyTorch 的 CPU wheel 索引安装 "
            "torch 的 CPU 版本（安装后不到 1 GB，而 Linux x86-64 上默认的版本连同 "
            "CUDA 库约占 4.5 GB），再安装 dlcomp："
        ),
        "dlcomp needs Python {python} and torch {torch}; it is tested with torch "
        "{tested}. This site was built with torch {built}.": (
            "dlcomp 需要 Python {python} 和 torch {torch}；测试所用的 torch 版本为 "
            "{tested}。构建本站所用的是 torch {built}。"
        ),
        "Pages under {name}": "{name} 下的页面",
        "Total running time of the script:": "脚本总运行时间：",
        " ({min} minutes {sec} seconds)": " {min} 分 {sec} 秒",
        "OUTPUTS_NOTE": (
            "页面上的输出来自英文版的构建：输出表格的表头和审查报告的摘要行"
            "已译成中文，库本身给出的消息（审查发现的问题、错误信息等）保持英文。"
        ),
        "DOCSTRINGS_NOTE": (
            "本 API 参考中各个对象的说明（即代码中的文档字符串）保持英文；"
            "页面的其余部分已译成中文。"
        ),
    }
}


#: English text of the keys in GENERATED that are not English text themselves.
ENGLISH = {"bench-tail": ".", "DOCSTRINGS_NOTE": "", "OUTPUTS_NOTE": ""}
ENGLISH_CLASS = "dlcomp-en"  # docstring text on a translated page


def site_text(language: str, english: str, **fields: str) -> str:
    """``english`` in ``language`` (see :data:`GENERATED`), its fields filled in."""
    text = GENERATED.get(language, {}).get(english, ENGLISH.get(english, english))
    return text.format(**fields) if fields else text


# -- Sphinx -------------------------------------------------------------------


def _keep_docstrings_transform():
    from docutils import nodes
    from sphinx.transforms import SphinxTransform

    class KeepDocstrings(SphinxTransform):
        """Docstrings stay English: their text is not offered for translation."""

        default_priority = 10  # before sphinx.transforms.i18n.Locale (20)

        def apply(self, **kwargs) -> None:
            translated = self.config.language != "en"
            for node in self.document.findall(nodes.TextElement):
                if node.source and from_docstring(node.source):
                    node["translatable"] = False
                    # On a translated page, the text is marked English (lang)
                    # after the build: a screen reader reads it so.
                    if translated and isinstance(node, ENGLISH_BLOCKS):
                        node["classes"].append(ENGLISH_CLASS)

    ENGLISH_BLOCKS = (nodes.paragraph, nodes.literal_block, nodes.doctest_block)

    return KeepDocstrings


def _glue_in_translations():
    """Glued values in a translated message: the page's notebook provides them.

    Sphinx parses each translated message as a small document of its own, and
    myst-nb's glue roles look their values up on the document they are in.
    myst-nb drops the page's renderer after parsing the page, but keeps what
    was glued in ``jupyter_execute/<page>.glue.json``: a transform hands a
    stand-in with those values to the settings the message's document shares,
    and Sphinx's ``_publish_msgstr`` (copied here, Sphinx 9.0) puts it on
    that document before parsing.
    """
    import json
    from types import SimpleNamespace

    import docutils.utils
    import sphinx.transforms.i18n as i18n
    from sphinx.transforms import SphinxTransform
    from sphinx.util import get_filetype
    from sphinx.util.docutils import LoggingReporter

    class ShareRenderer(SphinxTransform):
        default_priority = 15  # before sphinx.transforms.i18n.Locale (20)

        def apply(self, **kwargs) -> None:
            glued = Path(self.app.outdir).parent / "jupyter_execute"
            glued = glued.joinpath(*f"{self.env.docname}.glue.json".split("/"))
            renderer = None
            if self.config.language != "en" and glued.is_file():
                data = json.loads(glued.read_text("utf-8"))
                renderer = SimpleNamespace(
                    renderer=SimpleNamespace(nb_client=SimpleNamespace(glue_data=data))
                )
            self.document.settings.dlcomp_nb_renderer = renderer

    def publish_msgstr(source, source_path, source_line, *, config, env,
                       registry, settings):  # fmt: skip
        filetype = get_filetype(config.source_suffix, source_path)
        doc = docutils.utils.new_document(
            f"{source_path}:{source_line}:<translated>", settings
        )
        doc.reporter = LoggingReporter.from_reporter(doc.reporter)
        renderer = getattr(settings, "dlcomp_nb_renderer", None)
        if renderer is not None:
            doc["nb_renderer"] = renderer
        rst_prolog = config.rst_prolog
        config.rst_prolog = None
        try:
            parser = registry.create_source_parser(filetype, config=config, env=env)
            parser.parse(source, doc)
            doc.current_source = doc.current_line = None
        finally:
            config.rst_prolog = rst_prolog
        try:
            return doc[0]
        except IndexError:
            return doc

    i18n._publish_msgstr = publish_msgstr
    return ShareRenderer


def _catalog_ids(app) -> dict[str, dict[str, str]]:
    """Per textdomain (docname), the messages its catalog translates."""
    from babel.messages.pofile import read_po

    ids: dict[str, dict[str, str]] = {}
    root = Path(app.srcdir) / "locales" / app.config.language / "LC_MESSAGES"
    for po in root.rglob("*.po"):
        with po.open("rb") as f:
            catalog = read_po(f)
        domain = po.relative_to(root).with_suffix("").as_posix()
        ids[domain] = {
            str(m.id): str(m.string)
            for m in catalog
            if m.id and m.string and not m.fuzzy
        }
    return ids


def _catalogs(app) -> dict[str, dict[str, str]]:
    """:func:`_catalog_ids`, read once per build.

    Kept on the application: the environment is pickled between builds, and
    the catalogs may have changed since.
    """
    if not hasattr(app, "dlcomp_catalog_ids"):
        app.dlcomp_catalog_ids = _catalog_ids(app)
    return app.dlcomp_catalog_ids


def _translate_running_time(node, message: str, language: str) -> None:
    """sphinx-gallery's "**Total running time of the script:** (0 minutes 1.2 seconds)".

    Its value changes at every run, so no catalog can hold it: the label and
    the units are put into the edition's language here, the numbers kept.
    """
    from docutils import nodes

    match = RUNNING_TIME.match(message)
    strong = node.next_node(nodes.strong)
    if match is None or strong is None:
        return
    label = site_text(language, "Total running time of the script:")
    value = site_text(language, " ({min} minutes {sec} seconds)", **match.groupdict())
    strong.replace(strong.children[0], nodes.Text(label))
    for child in strong.parent.children[strong.parent.index(strong) + 1 :]:
        strong.parent.remove(child)
    strong.parent.append(nodes.Text(value))


def _failed(env) -> set[str]:
    """The pages whose last reading found a message without its translation."""
    if not hasattr(env, "dlcomp_untranslated"):
        env.dlcomp_untranslated = set()
    return env.dlcomp_untranslated


def reread_failed(app, env, added, changed, removed) -> list[str]:
    """env-get-outdated: a page that lacked translations is read (and checked) again.

    Without this, a second build after a failed one would pass: Sphinx
    reads only changed pages, and the check runs while a page is read.
    """
    return sorted(_failed(env) - set(removed))


def _purge(app, env, docname) -> None:
    _failed(env).discard(docname)


def _merge(app, env, docnames, other) -> None:
    _failed(env).update(_failed(other) & set(docnames))


def check_translated(app, doctree) -> None:
    """doctree-read: warn for each message of the page that is not translated."""
    from docutils import nodes
    from sphinx import addnodes
    from sphinx.util import logging
    from sphinx.util.nodes import extract_messages

    if app.config.language == "en" or app.builder.name == "gettext":
        return
    known = _catalogs(app).get(app.env.docname, {})
    logger = logging.getLogger(__name__)
    failed = _failed(app.env)
    failed.discard(app.env.docname)
    for node, message in extract_messages(doctree):
        if node.get("translated") or IMAGE_URI.match(message):
            continue
        if not re.search("[A-Za-z]", message):
            continue  # no English in it: Sphinx's own labels ("参数"), numbers
        if (
            isinstance(node, addnodes.toctree)
            and message in known
            and node.get("caption") == known[message]
        ):
            continue  # Sphinx translates the caption, keeps the raw one
        if RUNNING_TIME.match(message):
            _translate_running_time(node, message, app.config.language)
            continue
        if isinstance(node, nodes.image) and message in known.values():
            continue  # an image's alt text, translated (Sphinx sets no flag)
        if message in known and known[message] == message:
            continue  # translated as itself (a title that is a name, a link)
        failed.add(app.env.docname)  # read again next build: it warns again
        if message in known:
            logger.warning(
                "the translation of %r did not apply (Sphinx could not use what "
                "it parsed into: %r; check its markup in docs/locales/%s/"
                "LC_MESSAGES/%s.po)",
                message[:80],
                known[message][:80],
                app.config.language,
                app.env.docname,
                location=node,
                type="dlcomp",
                subtype="i18n",
            )
            continue
        logger.warning(
            "not translated into %s: %r (run `nox -s translations`, then "
            "translate it in docs/locales/%s/LC_MESSAGES/%s.po)",
            app.config.language,
            message[:80],
            app.config.language,
            app.env.docname,
            location=node,
            type="dlcomp",
            subtype="i18n",
        )


_ROLE_TEXT = re.compile(
    r":[\w:.-]+:`(?:[^`<]*<)?([^`>]*)>?`|``(.+?)``|\*\*?([^*]+)\*\*?"
)


def _plain(text: str) -> str:
    """reST text as sphinx-gallery writes it into a thumbnail: no markup."""
    text = _ROLE_TEXT.sub(lambda m: next(g for g in m.groups() if g is not None), text)
    return " ".join(text.split())


def _gallery_texts(app) -> dict[str, str]:
    """The gallery's titles and first paragraphs: English (plain) -> translated.

    Taken from the catalogs the build has read already (:func:`_catalogs`).
    """
    return {
        _plain(english): _plain(chinese)
        for domain, messages in _catalogs(app).items()
        if in_gallery(app.config, domain)
        and domain.rsplit("/", 1)[-1].startswith("plot_")
        for english, chinese in messages.items()
    }


_THUMB_TITLE = re.compile(r'(sphx-glr-thumbnail-title">)([^<]+)(<)')
_TOOLTIP = re.compile(r'(tooltip=")([^"]*)(")')


def translate_thumbnails(app, doctree) -> None:
    """doctree-read: the gallery's thumbnails show the example's title in this edition.

    sphinx-gallery writes each thumbnail's title and tooltip as raw HTML, so
    Sphinx does not translate them; the example's own catalog does.
    """
    import html

    from docutils import nodes

    if app.config.language == "en" or app.builder.name == "gettext":
        return
    if not hasattr(app, "dlcomp_gallery_texts"):
        app.dlcomp_gallery_texts = _gallery_texts(app)
    texts = app.dlcomp_gallery_texts

    def swap(match: re.Match) -> str:
        english = html.unescape(match.group(2))
        translated = texts.get(" ".join(english.split()))
        if translated is None:
            return match.group(0)
        return match.group(1) + html.escape(translated) + match.group(3)

    for raw in list(doctree.findall(nodes.raw)):
        text = raw.astext()
        if "sphx-glr-thumb" not in text:
            continue
        new = _TOOLTIP.sub(swap, _THUMB_TITLE.sub(swap, text))
        if new != text:
            raw.replace_self(nodes.raw("", new, format=raw.get("format", "html")))


def api_docstrings_note(app, doctree) -> None:
    """doctree-read: a translated API page says that its docstrings stay English."""
    from docutils import nodes

    note = site_text(app.config.language, "DOCSTRINGS_NOTE")
    if app.config.language == "en" or not app.env.docname.startswith("api/"):
        return
    if app.builder.name == "gettext":
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    para = nodes.paragraph(note, note, classes=["dlcomp-docstrings-note"])
    para["translatable"] = False
    box = nodes.note("", para)
    section.insert(1, box)


def language_links(app, pagename, templatename, context, doctree) -> None:
    """html-page-context: links to this page in the other editions."""
    here = app.config.language
    prefix = EDITIONS[here][1]
    depth = pagename.count("/") + prefix.count("/")
    up = "../" * depth
    # The 404 page is served at any URL: it sends the reader to the other
    # edition's start page (its links are relative to the site's root).
    target = "index" if pagename == "404" else pagename
    # Search engines want the alternates' absolute URLs (hreflang): known
    # when the build knows where the site is served from (html_baseurl, the
    # English edition's root); a local build keeps them relative.
    base = app.config.html_baseurl
    base = base if not base or base.endswith("/") else f"{base}/"
    links = []
    for code, (name, folder) in EDITIONS.items():
        links.append(
            {
                "code": code,
                "name": name,
                "lang": code.replace("_", "-"),
                "title": SWITCH_TITLE[code],
                "url": f"{up}{folder}{target}.html",
                "absolute": f"{base}{folder}{target}.html" if base else "",
                "current": code == here,
            }
        )
    context["dlcomp_languages"] = links


def setup(app) -> dict:
    app.add_transform(_keep_docstrings_transform())
    app.add_transform(_glue_in_translations())
    app.connect("doctree-read", check_translated)
    app.connect("env-get-outdated", reread_failed)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("doctree-read", translate_thumbnails)
    app.connect("doctree-read", api_docstrings_note)
    app.connect("html-page-context", language_links)
    # The parts a translated edition also needs.
    app.setup_extension("dlcomp_outputs")
    app.setup_extension("dlcomp_search")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
