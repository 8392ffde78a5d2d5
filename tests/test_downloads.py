"""The download runner (tests/downloads/run_downloads.py) catches what it promises.

`nox -s downloads` runs every script and notebook of the built site with it;
these tests show that it fails a file that errors, writes into its working
directory or leaves temporary files, and that it finds the site's links.
"""

import zipfile
from pathlib import Path

import nbformat
import pytest
from run_downloads import (
    check_install_command,
    check_notebook,
    check_wheel,
    code_key,
    linked_downloads,
    main,
    run_file,
    same_package,
)


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plot_x.py"
    path.write_text(body)
    return path


def test_a_clean_script_passes(tmp_path):
    outcome = run_file(script(tmp_path, "print('hello')\n"))
    assert outcome.problems == [], outcome.output
    assert "hello" in outcome.output


def test_a_script_that_fails_is_reported_with_its_output(tmp_path):
    outcome = run_file(script(tmp_path, "raise SystemExit('no dlcomp here')\n"))
    assert outcome.problems == ["exited with 1"]
    assert "no dlcomp here" in outcome.output


def test_a_script_that_writes_into_its_working_directory_fails(tmp_path):
    outcome = run_file(script(tmp_path, "open('mlp.params', 'w').write('x')\n"))
    assert outcome.problems == ["wrote into its working directory: mlp.params"]


def test_a_script_that_leaves_a_temporary_directory_fails(tmp_path):
    body = "import tempfile\nprint(tempfile.mkdtemp())\n"
    outcome = run_file(script(tmp_path, body))
    assert len(outcome.problems) == 1
    assert outcome.problems[0].startswith("left temporary files behind: tmp")


def test_a_script_that_cleans_up_its_temporary_directory_passes(tmp_path):
    body = (
        "import tempfile, pathlib\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    (pathlib.Path(d) / 'x').write_text('x')\n"
    )
    assert run_file(script(tmp_path, body)).problems == []


def test_the_links_of_the_site_are_found(tmp_path):
    site = tmp_path / "site"
    (site / "_downloads" / "abc").mkdir(parents=True)
    (site / "_downloads" / "abc" / "plot_a.py").write_text("")
    (site / "_notebooks").mkdir()
    (site / "_notebooks" / "blocks.ipynb").write_text("{}")
    (site / "gallery").mkdir()
    (site / "gallery" / "plot_a.html").write_text(
        '<a class="download" href="../_downloads/abc/plot_a.py">download</a>'
        '<a href="https://example.org/other.py">elsewhere</a>'
        '<a href="../_downloads/abc/missing.py">broken</a>'
    )
    (site / "blocks.html").write_text('<a href="_notebooks/blocks.ipynb#top">nb</a>')
    assert [p.name for p in linked_downloads(site)] == ["blocks.ipynb", "plot_a.py"]


def two_editions(tmp_path: Path, english: str, chinese: str) -> Path:
    """A site whose two editions each link their copy of plot_a.py."""
    site = tmp_path / "site"
    for edition, body in (("", english), ("zh_CN/", chinese)):
        folder = site / edition / "_downloads" / "abc"
        folder.mkdir(parents=True)
        (folder / "plot_a.py").write_text(body)
        (site / edition / "plot_a.html").write_text(
            '<a href="_downloads/abc/plot_a.py">download</a>'
        )
    return site


def counting_script(counter: Path, text: str = "") -> str:
    return f"open({str(counter)!r}, 'a').write('ran\\n')  # {text}\n"


def test_the_editions_copies_of_one_script_run_once(tmp_path, capsys):
    counter = tmp_path / "runs.txt"
    body = counting_script(counter)
    assert main(two_editions(tmp_path, body, body)) == 0
    assert counter.read_text().splitlines() == ["ran"]
    assert "same code as _downloads/abc/plot_a.py: ok" in capsys.readouterr().out


def test_copies_whose_code_differs_each_run(tmp_path):
    counter = tmp_path / "runs.txt"
    english, chinese = counting_script(counter, "a"), counting_script(counter, "b")
    assert main(two_editions(tmp_path, english, chinese), jobs=2) == 0
    assert counter.read_text().splitlines() == ["ran", "ran"]


def test_a_failing_copy_fails_the_run_even_when_run_once(tmp_path):
    body = "raise SystemExit('broken')\n"
    assert main(two_editions(tmp_path, body, body)) == 1


def notebook(path: Path, markdown: str, code: str, tags=()) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata["tags"] = list(tags)
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), cell]
    nbformat.write(nb, path)
    return path


def test_notebooks_that_differ_only_in_markdown_run_the_same_code(tmp_path):
    english = notebook(tmp_path / "en.ipynb", "Blocks", "print(1)")
    chinese = notebook(tmp_path / "zh.ipynb", "块", "print(1)")
    assert code_key(english) == code_key(chinese)


@pytest.mark.parametrize(
    ("code", "tags"), [("print(2)", ()), ("print(1)", ("raises-exception",))]
)
def test_notebooks_whose_code_or_tags_differ_each_run(tmp_path, code, tags):
    english = notebook(tmp_path / "en.ipynb", "Blocks", "print(1)")
    chinese = notebook(tmp_path / "zh.ipynb", "Blocks", code, tags)
    assert code_key(english) != code_key(chinese)


def test_a_copy_that_is_not_a_valid_notebook_fails(tmp_path):
    good = notebook(tmp_path / "good.ipynb", "Blocks", "print(1)")
    assert check_notebook(good) == []
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [], "nbformat": 4}')
    assert check_notebook(bad)[0].startswith("not a valid notebook")


def make_wheel(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, "")
    return path


GOOD = [
    "dlcomp/__init__.py",
    "dlcomp/py.typed",
    "dlcomp-0.1.0.dist-info/METADATA",
    "dlcomp-0.1.0.dist-info/WHEEL",
    "dlcomp-0.1.0.dist-info/RECORD",
    "dlcomp-0.1.0.dist-info/top_level.txt",
    "dlcomp-0.1.0.dist-info/licenses/LICENSE",
]


def test_a_wheel_with_the_package_typed_marker_and_license_passes(tmp_path):
    assert check_wheel(make_wheel(tmp_path / "w.whl", GOOD)) == []


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ([*GOOD, "tests/test_x.py"], "unexpected file tests/test_x.py"),
        ([*GOOD, "docs/conf.py"], "unexpected file docs/conf.py"),
        ([n for n in GOOD if "LICENSE" not in n], "no license file"),
        ([n for n in GOOD if "py.typed" not in n], "no dlcomp/py.typed"),
    ],
)
def test_a_wheel_with_more_or_less_fails(tmp_path, names, problem):
    assert problem in check_wheel(make_wheel(tmp_path / "w.whl", names))


def test_the_install_command_must_name_the_served_wheel(tmp_path):
    wheel = tmp_path / "dlcomp-0.1.0-py3-none-any.whl"
    index = tmp_path / "index.html"
    index.write_text(
        '<pre>pip install "./dlcomp-0.1.0-py3-none-any.whl[gallery]"</pre>'
    )
    assert check_install_command(index, wheel) == []
    index.write_text('<pre>pip install "./dlcomp-0.0.9-py3-none-any.whl"</pre>')
    assert check_install_command(index, wheel)[0].startswith("no install command")
    index.write_text("<p>Install it.</p>")
    assert check_install_command(index, wheel) == [
        "the landing page has no pip install command for dlcomp"
    ]


def test_the_served_wheel_must_hold_this_checkouts_package(tmp_path):
    served = tmp_path / "site" / "dlcomp-0.1.0-py3-none-any.whl"
    built = tmp_path / "fresh" / "dlcomp-0.1.0-py3-none-any.whl"
    for path in (served, built):
        path.parent.mkdir()
    with zipfile.ZipFile(served, "w") as archive:
        archive.writestr("dlcomp/__init__.py", "x = 1\n")
    with zipfile.ZipFile(built, "w") as archive:
        archive.writestr("dlcomp/__init__.py", "x = 1\n")
    assert same_package(served, [built]) == []
    with zipfile.ZipFile(built, "w") as archive:
        archive.writestr("dlcomp/__init__.py", "x = 2\n")
        archive.writestr("dlcomp/new.py", "")
    assert same_package(served, [built]) == [
        "the served wheel's package differs from this checkout's: "
        "['dlcomp/__init__.py', 'dlcomp/new.py']"
    ]
    other = tmp_path / "fresh" / "dlcomp-0.2.0-py3-none-any.whl"
    built.rename(other)
    assert same_package(served, [other])[0].startswith("this checkout builds")


def test_torch_compiles_own_cache_in_the_temporary_folder_is_not_a_leftover(tmp_path):
    body = (
        "import os, pathlib, tempfile\n"
        "cache = pathlib.Path(tempfile.gettempdir(), 'torchinductor_reader')\n"
        "(cache / 'precompiled_headers').mkdir(parents=True)\n"
    )
    assert run_file(script(tmp_path, body)).problems == []
