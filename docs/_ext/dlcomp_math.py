"""Math rendered when the site is built: MathML in the page, no script, no network.

Sphinx's ``sphinx.ext.mathjax`` sends TeX to the browser and typesets it
there with MathJax: 1.1 MB of script (and its fonts) on every page with a
formula, for the few dozen short formulas this chapter has, and raw TeX on
the page until it has run, or for good when MathJax cannot load. This
renderer turns each formula into MathML while the site is built
(``latex2mathml``, pure Python), which every current browser draws natively
and screen readers read as math. The TeX stays in the page as the formula's
``<annotation>`` (not shown; kept for copying and for tools).

Registered as the HTML math renderer ``mathml`` (``html_math_renderer`` in
conf.py). Inline math (``$...$``, ``:math:``) becomes ``<math>`` in a
``<span class="math">``, display math a ``<math display="block">`` in a
``<div class="math">``, numbered like Sphinx's own renderers.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.application import Sphinx
from sphinx.locale import _
from sphinx.util.math import get_node_equation_number
from sphinx.writers.html5 import HTML5Translator

# latex2mathml keeps the backslash of \_ inside \text{...} (fan\_in).
_TEXT = re.compile(r"\\(text|mathrm|operatorname)\{([^{}]*)\}")
_MATH = re.compile(r"^(<math\b[^>]*>)(.*)(</math>)$", re.DOTALL)


def mathml(tex: str, *, display: bool = False) -> str:
    """One formula as MathML, its TeX kept as an annotation."""
    source = _TEXT.sub(lambda m: f"\\{m[1]}{{{m[2].replace(chr(92) + '_', '_')}}}", tex)
    converted = convert(source.strip(), display="block" if display else "inline")
    found = _MATH.match(converted)
    if found is None:  # what latex2mathml returns has changed shape
        raise ValueError(f"latex2mathml returned no <math> element for {tex!r}")
    head, body, tail = found.groups()
    annotation = (
        '<annotation encoding="application/x-tex">'
        f"{tex.strip().replace('&', '&amp;').replace('<', '&lt;')}</annotation>"
    )
    return f"{head}<semantics>{body}{annotation}</semantics>{tail}"


def visit_math(self: HTML5Translator, node: nodes.math) -> None:
    self.body.append(
        self.starttag(node, "span", "", CLASS="math notranslate")
        + mathml(node.astext())
        + "</span>"
    )
    raise nodes.SkipNode


def visit_displaymath(self: HTML5Translator, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, _("Link to this equation"))
        self.body.append("</span>")
    tex = node.astext()
    if not node.get("nowrap"):
        # Several equations (blank-line separated) each get a row.
        parts = [p for p in tex.split("\n\n") if p.strip()]
        if len(parts) > 1:
            tex = r"\begin{aligned}" + r"\\".join(parts) + r"\end{aligned}"
    self.body.append(mathml(tex, display=True))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_html_math_renderer(
        "mathml",
        inline_renderers=(visit_math, None),
        block_renderers=(visit_displaymath, None),
    )
    return {"parallel_read_safe": True, "parallel_write_safe": True}
