"""The seed notes' mistakes fail exactly as the 5.1 page says, and the fixes work."""

import pytest
import torch
from torch import nn

from dlcomp import FixedHiddenMLP, ModuleListSequential, MySequential
from dlcomp.pitfalls import (
    ListSequential,
    ModuleKeySequential,
    PlainTensorFixedHiddenMLP,
)


def layers():
    return nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1)


# --- self._modules[block] = block -------------------------------------------------


def test_module_keys_still_run_forward():
    assert ModuleKeySequential(*layers())(torch.rand(2, 20)).shape == (2, 1)


@pytest.mark.parametrize(
    "use",
    [
        lambda net: list(net.parameters()),
        lambda net: list(net.named_parameters()),
        lambda net: net.state_dict(),
        repr,
        lambda net: torch.optim.SGD(net.parameters(), lr=0.1),
    ],
    ids=["parameters", "named_parameters", "state_dict", "print", "optimizer"],
)
def test_module_keys_break_everything_that_names_a_parameter(use):
    with pytest.raises(
        TypeError, match=r'can only concatenate str \(not "Linear"\) to str'
    ):
        use(ModuleKeySequential(*layers()))


def test_string_keys_fix_it():
    net = MySequential(*layers())
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    assert "(0): Linear(in_features=20, out_features=8, bias=True)" in repr(net)


# --- blocks in a Python list (exercise 1) -------------------------------------------


def test_a_list_hides_the_parameters_and_the_state():
    net = ListSequential(*layers())
    assert net(torch.rand(2, 20)).shape == (2, 1)  # forward works ...
    assert list(net.parameters()) == []  # ... but PyTorch sees nothing
    assert net.state_dict() == {}
    assert "Linear" not in repr(net)


def test_a_list_is_not_moved_by_to():
    net = ListSequential(*layers()).to(torch.float64)
    assert net.blocks[0].weight.dtype == torch.float32
    with pytest.raises(RuntimeError, match="dtype"):
        net(torch.rand(2, 20, dtype=torch.float64))


def test_a_list_cannot_be_trained():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        torch.optim.SGD(ListSequential(*layers()).parameters(), lr=0.1)


def test_module_list_fixes_it():
    net = ModuleListSequential(*layers())
    assert len(list(net.parameters())) == 4
    assert list(net.state_dict()) == [
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.2.weight",
        "blocks.2.bias",
    ]
    assert net.to(torch.float64).blocks[0].weight.dtype == torch.float64
    net = net.float()
    before = net.blocks[0].weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.rand(4, 20)).pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(net.blocks[0].weight, before)


# --- the constant weight as a plain tensor ------------------------------------------


def test_a_plain_tensor_attribute_is_not_saved():
    assert "rand_weight" not in PlainTensorFixedHiddenMLP().state_dict()
    assert "rand_weight" in FixedHiddenMLP().state_dict()


def test_a_plain_tensor_attribute_is_left_behind_by_to():
    net = PlainTensorFixedHiddenMLP().to(torch.float64)
    with pytest.raises(RuntimeError, match="dtype"):
        net(torch.rand(2, 20, dtype=torch.float64))
    fixed = FixedHiddenMLP().to(torch.float64)
    assert fixed(torch.rand(2, 20, dtype=torch.float64)).dtype == torch.float64


def test_a_reloaded_plain_tensor_model_computes_something_else():
    X = torch.rand(2, 20)
    net, clone = PlainTensorFixedHiddenMLP(), PlainTensorFixedHiddenMLP()
    clone.load_state_dict(net.state_dict())  # "succeeds"
    assert not torch.equal(clone(X), net(X))
