"""The 5.1 and 5.3 pages show what their new cells printed when the site was built."""

from pathlib import Path

import pytest
from sitepages import page_text

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def blocks(site: Path) -> str:
    return page_text(site / "blocks.html")


@pytest.fixture(scope="module")
def deferred(site: Path) -> str:
    return page_text(site / "deferred-init.html")


@pytest.mark.parametrize(
    "printed",
    [
        # the study notes' typos, with the errors a reader gets
        "module 'torch.nn' has no attribute 'Moduel'",
        "module 'torch.nn' has no attribute 'Sequencial'",
        "as in the notes   SyntaxError: invalid syntax "
        "(line 4: hwile X.abs().sum() > 1:)",
        "hwile -> while    IndentationError: expected an indented block after "
        "'while' statement on line 4 (line 5: X /= 2)",
        "indent the body   SyntaxError: invalid syntax (line 6: reutnr X.sum())",
        "reutnr -> return  compiles",
        # torch.compile and the graph breaks of FixedHiddenMLP
        "torch.compile(net): ['_orig_mod.hidden.weight', '_orig_mod.hidden.bias'] ...",
        "net.compile():      ['hidden.weight', 'hidden.bias'] ...",
        "graphs: 4  graph breaks: 3",
        "break at 'while X.abs().sum() > 1:'",
        "Unsupported: Data-dependent branching",
        # exercise 1: one layer registered, the rest in a list
        "the optimizer sees: ['first.weight', 'first.bias']",
        "first.weight    has a gradient: True, changed by the step: True",
        "rest[2].weight  has a gradient: True, changed by the step: False",
        "half.training: False  dropout's training: True",
        "two evaluations agree: False",
        "one SGD step changed blocks.3.weight: True",
        "dropout's training: False  two evaluations agree: True",
        # a buffer that is not saved
        "buffers:    ['rand_weight', 'mask']  "
        "state_dict: ['rand_weight', 'linear.weight', 'linear.bias']",
        # the while loop in closed form: the loop's results, in one graph
        "same as the loop: [True, True, True, True] True",
        "compiled with fullgraph=True, same output: True",
        # exercise 3: a repeated block is one set of weights
        "parameters: 1680 = 4 x 420",
        "distinct parameter tensors (4 weights, 4 biases): 8",
        "parameters: 420 (one block's worth)",
    ],
)
def test_blocks_page_shows(blocks: str, printed: str):
    assert printed in blocks


def test_blocks_page_compiled_outputs_match_eager(blocks: str):
    assert blocks.count("same outputs as the eager block: True") == 2
    assert "same outputs as the eager block: False" not in blocks


@pytest.mark.parametrize(
    "printed",
    [
        # plain PyTorch before the helpers
        "parameters only: ['0.weight', '0.bias', '1.weight', '1.bias']",
        "with buffers:    ['0.weight', '0.bias', '1.weight', '1.bias', "
        "'1.running_mean', '1.running_var']",
        "still lazy: ['heads.regress.weight', 'heads.regress.bias']",
        "the forward pass did not reach every lazy module",
        # the CNN: the image size fixes the Linear layer
        "('4.weight', (10, 864))",
        "('4.weight', (10, 1176))",
        "3 Flatten   (1, 6, 14, 14) -> (1, 1176)",
        # a state_dict loaded into a lazy network
        "optimizer holds the loaded parameters: True",
        "The in_features inferred from input: 30 is not equal to in_features "
        "from self.weight: 20",
        "expected input[1, 1, 28, 28] to have 3 channels, but got 1 channels instead",
        "in_channels: 0  weight: (6, 3, 5, 5)",
        "still lazy: ['2.weight', '2.bias']",
        "size mismatch for 0.weight: copying a param with shape "
        "torch.Size([6, 3, 5, 5]) from checkpoint",
        # exercise 2: a mismatch between two layers
        "mat1 and mat2 shapes cannot be multiplied (2x256 and 128x10)",
        "LazyLinear (2, 10) Linear(in_features=256, out_features=10, bias=True)",
        # exercise 3: parameter tying for inputs of varying size
        "parameters, for every length: 40",
        "projections: (16, 20) (16, 30)",
        "one trunk weight: True",
    ],
)
def test_deferred_init_page_shows(deferred: str, printed: str):
    assert printed in deferred
