"""The Chinese edition's search: Sphinx's Chinese search, made to work.

Sphinx 9.0's ``SearchChinese`` writes a ``language_data.js`` that names a
stemmer nothing defines (sphinx-doc/sphinx#14229, fixed by #14416), and
drops one-character words; a query typed without spaces must be cut into
the words the index holds. And Sphinx segments Chinese text with jieba: the
glossary's terms (延后初始化, 检查点, ...) are added to its dictionary as
whole words, so that a query for one finds the pages that use it.
"""

from __future__ import annotations

import re
from pathlib import Path


def _chinese_search():
    """Sphinx 9.0's Chinese search, with a stemmer its script defines.

    ``SearchChinese`` stems Latin words with the English stemmer, but the
    ``language_data.js`` it writes ends with ``window.Stemmer =
    ChineseStemmer``, a name nothing defines: the search page stops with
    "ChineseStemmer is not defined" and finds nothing. This subclass ships
    the same stemmer under the name it has.
    """
    from sphinx.search import _MINIFIED_JS_PATH
    from sphinx.search.zh import SearchChinese

    class ChineseSearch(SearchChinese):
        js_stemmer_rawcode = ""
        js_stemmer_code = "\n".join(
            (
                (_MINIFIED_JS_PATH / "base-stemmer.js").read_text("utf-8"),
                (_MINIFIED_JS_PATH / "english-stemmer.js").read_text("utf-8"),
                "window.Stemmer = EnglishStemmer;",
            )
        )

        # A reader types words without spaces (保存模型): the query is cut
        # into the words the index holds, longest first from the left, as
        # jieba cut the pages (its words, the glossary's terms); a Han
        # character that starts no indexed word stands alone.
        js_splitter_code = CHINESE_SPLITTER

        def word_filter(self, stemmed_word: str) -> bool:
            # Sphinx drops one-letter words; a Chinese word of one character
            # (层, 块) is a word a reader searches for.
            return len(stemmed_word) > 1 or bool(HAN.fullmatch(stemmed_word))

    return ChineseSearch


HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
CHINESE_SPLITTER = r"""
var splitQuery = (query) => {
  const index = typeof Search !== "undefined" && Search._index ? Search._index : {};
  const has = (table, word) =>
    !!table && Object.prototype.hasOwnProperty.call(table, word);
  const known = (word) => has(index.terms, word) || has(index.titleterms, word);
  const words = [];
  for (const run of query.split(/[^\p{Letter}\p{Number}_\p{Emoji_Presentation}]+/gu)) {
    for (const part of run.split(/(\p{Script=Han}+)/u)) {
      if (!part) continue;
      if (!/\p{Script=Han}/u.test(part)) {
        words.push(part);
        continue;
      }
      for (let start = 0; start < part.length; ) {
        let end = Math.min(part.length, start + 8);
        while (end > start + 1 && !known(part.slice(start, end))) end--;
        words.push(part.slice(start, end));
        start = end;
      }
    }
  }
  return words;
};
"""


def glossary_dictionary(app, config) -> None:
    """config-inited: jieba's extra words, the glossary's Chinese terms."""
    if not config.language.startswith("zh"):
        return
    from dlcomp_catalogs import glossary

    words = Path(app.doctreedir) / "jieba-glossary.txt"
    words.parent.mkdir(parents=True, exist_ok=True)
    terms = sorted({row["chinese"] for row in glossary()})
    words.write_text(
        "".join(f"{t} 1000 n\n" for t in terms if not t.isascii()), "utf-8"
    )
    config.html_search_options = {**config.html_search_options, "dict": str(words)}


def setup(app) -> dict:
    import sphinx.search

    sphinx.search.languages["zh"] = _chinese_search()
    app.connect("config-inited", glossary_dictionary)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
