"""Every box of reference code on the seven chapter pages is learner code.

A box shows a dlcomp object's source as the chapter's code (the directive
``dlcomp-source``). What a reader copies from it must not lean on the
library's private helpers or carry comments written for type checkers and
formatters. Library tools whose code is not the chapter's (the timer, the
checkpoint manager) are linked to the API pages instead, where their source
is one click away. The pages of 5.1-5.4 also paste each box into a fresh
interpreter (test_blocks_layers_learner.py, test_params_lazy_learner.py).
"""

import re

import pytest
from sitepages import CHAPTER_PAGES
from test_blocks_layers_learner import boxes

pytestmark = pytest.mark.site


PRIVATE_OR_CHECKER = re.compile(
    r"(?<![\w.])_[a-z]\w*\(|\bcheck_\w+\(|dlcomp\._|# type: ignore|# noqa|# fmt:"
)


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_no_box_calls_a_private_helper_or_carries_checker_comments(site, page):
    found = {
        name: sorted(set(PRIVATE_OR_CHECKER.findall(code)))
        for name, code in boxes(site / page)
    }
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_check_sees_what_the_old_boxes_showed():
    # try_gpu, benchmark, logging_cost and load_matching as the pages showed them
    assert PRIVATE_OR_CHECKER.search('i = _index("try_gpu", i)')
    assert PRIVATE_OR_CHECKER.search("steps = check_int(steps, 'steps')")
    assert PRIVATE_OR_CHECKER.search("x = 1  # fmt: skip")
    assert not PRIVATE_OR_CHECKER.search("self._modules[str(idx)] = module")
