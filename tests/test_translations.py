"""The Chinese edition's catalogs: complete, not fuzzy, markup kept, glossary terms.

The catalogs (docs/locales/zh_CN/LC_MESSAGES) hold every message of the site
that is translated. The strict docs build fails on a page message the
catalogs lack (docs/_ext/dlcomp_i18n.py); these tests read the catalogs
(docs/_ext/dlcomp_catalogs.py) themselves, so a translator sees each problem
without building the site.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import dlcomp_catalogs  # noqa: E402  (docs/_ext: the catalogs' reader and checks)

MESSAGES = ROOT / "docs" / "locales" / "zh_CN" / "LC_MESSAGES"
CATALOGS = sorted(MESSAGES.rglob("*.po"))
HEADER = '# Test catalog.\nmsgid ""\nmsgstr ""\n"Language: zh_CN\\n"\n\n'


def catalog(tmp_path: Path, *entries: tuple[str, str], fuzzy: bool = False) -> Path:
    path = tmp_path / "page.po"
    flag = "#, fuzzy\n" if fuzzy else ""
    body = "".join(
        f'#: ../../docs/page.md:1\n{flag}msgid "{source}"\nmsgstr "{text}"\n\n'
        for source, text in entries
    )
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_every_page_has_a_catalog() -> None:
    pages = {"index", "blocks", "parameters", "deferred-init", "custom-layers",
             "read-write", "distributed-checkpoints", "gpu", "api/index",
             "api/auditing", "auto_examples/index"}  # fmt: skip
    have = {p.relative_to(MESSAGES).with_suffix("").as_posix() for p in CATALOGS}
    assert pages <= have, f"no catalog for {sorted(pages - have)}"


@pytest.mark.parametrize(
    "po", CATALOGS, ids=lambda p: p.relative_to(MESSAGES).as_posix()
)
def test_catalog_is_complete_and_consistent(po: Path) -> None:
    problems = dlcomp_catalogs.check_catalog(po)
    assert not problems, "\n".join(problems)


def test_catalogs_use_only_glossary_terms() -> None:
    rows = dlcomp_catalogs.glossary()
    assert {"block", "layer", "tied parameters", "deferred initialization",
            "checkpoint", "accelerator", "tensor", "gradient",
            "optimizer"} <= {r["english"] for r in rows}  # fmt: skip
    for row in rows:
        for word in filter(None, row["avoid"].split("|")):
            assert word not in row["chinese"], row


def test_an_empty_or_fuzzy_message_is_reported(tmp_path: Path) -> None:
    empty = dlcomp_catalogs.check_catalog(catalog(tmp_path, ("A block", "")))
    assert empty == ["page.po: 'A block': not translated"]
    fuzzy = dlcomp_catalogs.check_catalog(
        catalog(tmp_path, ("A block", "块"), fuzzy=True)
    )
    assert len(fuzzy) == 1
    assert "fuzzy" in fuzzy[0]


def test_a_glossary_synonym_is_reported(tmp_path: Path) -> None:
    po = catalog(
        tmp_path, ("Tied parameters", "参数绑定"), ("Tied layers", "共享参数的层")
    )
    problems = dlcomp_catalogs.check_catalog(po)
    assert len(problems) == 1, problems
    assert "'参数绑定'" in problems[0]
    assert "'tied parameters'" in problems[0]


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("Call {func}`dlcomp.audit` first.", "先调用 {func}`dlcomp.audit_cost`。"),
        ("Call `net(X)`.", "调用 net(X)。"),
        ("See :doc:`/blocks`.", "参见 :doc:`/gpu`。"),
        ("Took {glue:text}`ms:.2f` ms.", "耗时 {glue:text}`ms:.1f` 毫秒。"),
        ("Read [the book](https://d2l.ai).", "阅读[原书](https://zh.d2l.ai)。"),
        ("{claim}`It is faster <fast>`.", "{claim}`它更快 <slow>`。"),
    ],
)
def test_lost_or_changed_markup_is_reported(tmp_path: Path, source, text) -> None:
    problems = dlcomp_catalogs.check_catalog(catalog(tmp_path, (source, text)))
    assert len(problems) == 1, problems
    assert "markup differs" in problems[0], problems


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("Call {func}`dlcomp.audit` on `net`.", "对 `net` 调用 {func}`dlcomp.audit`。"),
        ("{claim}`It is faster <fast>`.", "{claim}`它更快 <fast>`。"),
        (":ref:`Go to the end <end>` to download.", ":ref:`跳到末尾 <end>` 下载。"),
        ("Read [the book](https://d2l.ai).", "阅读[原书](https://d2l.ai)。"),
    ],
)
def test_translated_titles_keep_their_targets(tmp_path: Path, source, text) -> None:
    assert dlcomp_catalogs.check_catalog(catalog(tmp_path, (source, text))) == []


def test_a_numbered_heading_must_escape_its_dot(tmp_path: Path) -> None:
    bad = catalog(tmp_path, ("1. What goes wrong?", "1. 会出什么问题？"))
    problems = dlcomp_catalogs.check_catalog(bad)
    assert len(problems) == 1, problems
    assert "escaped dot" in problems[0]
    good = catalog(tmp_path, ("1. What goes wrong?", "1\\\\. 会出什么问题？"))
    assert dlcomp_catalogs.check_catalog(good) == []


def test_rest_markup_touching_a_fullwidth_bracket_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "plot.po"
    path.write_text(
        HEADER
        + '#: ../../gallery/plot.py:3\nmsgid "Run ``x`` (fast)."\n'
        + 'msgstr "运行 ``x``（很快）。"\n\n'
        + '#: ../../gallery/plot.py:4\nmsgid "Run ``y`` (fast)."\n'
        + 'msgstr "运行 ``y`` （很快）。"\n',
        encoding="utf-8",
    )
    problems = dlcomp_catalogs.check_catalog(path)
    assert len(problems) == 1, problems
    assert "``x``" in problems[0] or "Run ``x``" in problems[0], problems
