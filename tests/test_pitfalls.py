"""The book's and the seed notes' mistakes fail as the pages say; the fixes work."""

import pytest
import torch
from torch import nn

from dlcomp import (
    FixedHiddenMLP,
    ModuleListSequential,
    MyLinear,
    MySequential,
    init_lazy,
    init_normal,
    init_xavier,
    lazy_mlp,
    uninitialized_parameters,
)
from dlcomp.pitfalls import (
    DataMyLinear,
    ListSequential,
    ModuleKeySequential,
    PlainTensorFixedHiddenMLP,
    init_normal_by_type,
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


# --- type(m) == nn.Linear skips subclasses (5.2) ------------------------------------


class MyDense(nn.Linear):
    """A subclass that changes nothing, as on the 5.2 page."""


def test_an_exact_type_test_skips_a_subclass():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), MyDense(8, 1))
    net.apply(init_normal_by_type)  # no error ...
    assert bool((net[0].bias == 0).all())
    assert not bool((net[2].bias == 0).all())  # ... but MyDense kept its default


def test_isinstance_reaches_the_subclass():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), MyDense(8, 1))
    net.apply(init_normal)
    assert all(bool((net[i].bias == 0).all()) for i in (0, 2))


# --- calling forward skips the hooks that __call__ runs (5.1, 5.3) -----------------


def test_forward_skips_the_pre_hook_that_materializes_a_lazy_layer():
    layer = nn.LazyLinear(3)
    with pytest.raises(ValueError, match="uninitialized parameter"):
        layer.forward(torch.rand(2, 4))
    assert layer(torch.rand(2, 4)).shape == (2, 3)


@pytest.mark.parametrize(
    ("dry_run", "hook_calls"),
    [
        # d2l-en's apply_init: self.forward(*inputs), then apply(init)
        (lambda net, X: net.forward(X), 0),
        (lambda net, X: init_lazy(net, X, init_fn=init_xavier), 1),
    ],
    ids=["book-apply_init", "init_lazy"],
)
def test_a_dry_run_through_forward_skips_the_models_hooks(dry_run, hook_calls):
    net, calls = lazy_mlp(), []
    net.register_forward_hook(lambda module, args, output: calls.append(1))
    dry_run(net, torch.rand(1, 20))
    assert uninitialized_parameters(net) == []  # inner layers still materialize
    assert len(calls) == hook_calls


# --- the book's MyLinear computes with .data (5.4) ----------------------------------


def test_the_books_mylinear_gives_the_right_values_and_no_gradient():
    torch.manual_seed(0)
    broken, fixed = DataMyLinear(5, 3), MyLinear(5, 3)
    fixed.load_state_dict(broken.state_dict())
    X = torch.rand(4, 5)
    assert torch.equal(broken(X), fixed(X).detach())
    assert not broken(X).requires_grad
    fixed(X).sum().backward()
    assert fixed.weight.grad is not None
