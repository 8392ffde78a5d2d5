"""Deliberately wrong code from the seed notes, kept so it can be proved wrong.

Each class here reproduces a mistake a reader of the chapter will have met.
The docs show it failing next to the fix, and the tests prove each claim.
None of it is re-exported from :mod:`dlcomp`: do not use it in real code.

Section 5.1:

- :class:`ModuleKeySequential`: ``self._modules[block] = block``.
- :class:`ListSequential`: blocks kept in a plain Python list (exercise 1).
- :class:`PlainTensorFixedHiddenMLP`: a constant weight kept as a plain tensor
  attribute instead of a buffer.

Section 5.2:

- :func:`init_normal_by_type`: ``if type(m) == nn.Linear``, which silently
  skips subclasses such as a lazy layer that has not seen data.

Section 5.4:

- :class:`DataMyLinear`: the book's own custom layer (both editions), whose
  forward pass reads ``.data``, so no gradient reaches its parameters and
  training changes nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "DataMyLinear",
    "ListSequential",
    "ModuleKeySequential",
    "PlainTensorFixedHiddenMLP",
    "init_normal_by_type",
]


class ModuleKeySequential(nn.Module):
    """The seed notes' MySequential: each block is its own key in ``_modules``.

    The forward pass works, which is why the bug goes unnoticed. But every
    method that builds a parameter name (``prefix + "." + key``) fails,
    because the key is a module, not a string: ``parameters()``,
    ``named_parameters()``, ``state_dict()`` and ``print(net)`` raise
    :class:`TypeError`, so no optimizer can even be built.
    Fixed in :class:`dlcomp.MySequential`.

    Examples:
        >>> net = ModuleKeySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 10])
        >>> net.state_dict()
        Traceback (most recent call last):
        ...
        TypeError: can only concatenate str (not "Linear") to str
    """

    def __init__(self, *args: nn.Module) -> None:
        super().__init__()
        for block in args:
            self._modules[block] = block  # the bug: the key is not a string

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Feed ``X`` through the blocks in order (this part works)."""
        for block in self._modules.values():
            X = block(X)
        return X


class ListSequential(nn.Module):
    """Blocks stored in a plain Python list: invisible to PyTorch (exercise 1).

    ``nn.Module`` registers a submodule only when it is assigned as an
    attribute (or kept in ``nn.ModuleList``/``nn.ModuleDict``/``_modules``).
    A list attribute is just a Python object, so ``parameters()`` and
    ``state_dict()`` are empty, ``.to()`` does not move the layers, and an
    optimizer cannot be built from it. The forward pass still works.
    Fixed in :class:`dlcomp.ModuleListSequential`.

    Examples:
        >>> net = ListSequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 1])
        >>> list(net.parameters()), net.state_dict()
        ([], OrderedDict())
    """

    def __init__(self, *args: nn.Module) -> None:
        super().__init__()
        self.blocks = list(args)  # the bug: a list, not nn.ModuleList

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Feed ``X`` through the blocks in order (this part works)."""
        for block in self.blocks:
            X = block(X)
        return X


class PlainTensorFixedHiddenMLP(nn.Module):
    """The book's FixedHiddenMLP: its constant weight is a plain tensor attribute.

    ``self.rand_weight = torch.rand(20, 20)`` is not registered, so it is
    missing from ``state_dict()`` (a saved model loses it, and a reloaded one
    computes something else), and ``.to()`` leaves it where it was: after
    ``net.to(torch.float64)`` (or ``net.to("cuda")``) the forward pass fails
    with a dtype (or device) mismatch. Fixed in :class:`dlcomp.FixedHiddenMLP`,
    which registers it as a buffer.

    Examples:
        >>> net = PlainTensorFixedHiddenMLP()
        >>> list(net.state_dict())
        ['linear.weight', 'linear.bias']
        >>> net = net.to(torch.float64)
        >>> net.rand_weight.dtype
        torch.float32
    """

    def __init__(self) -> None:
        super().__init__()
        self.rand_weight = torch.rand((20, 20), requires_grad=False)  # the bug
        self.linear = nn.Linear(20, 20)

    def forward(self, X: Tensor) -> Tensor:
        """Same computation as :class:`dlcomp.FixedHiddenMLP`."""
        X = self.linear(X)
        X = F.relu(torch.mm(X, self.rand_weight) + 1)
        X = self.linear(X)
        while X.abs().sum() > 1:
            X = X / 2
        return X.sum()


def init_normal_by_type(m: nn.Module) -> None:
    """The book's ``init_normal``: tests ``type(m) == nn.Linear``.

    An exact type test misses every subclass of ``nn.Linear``: a layer
    defined as ``class MyDense(nn.Linear)`` keeps PyTorch's default
    initialization, with no error. So does a :class:`torch.nn.LazyLinear`
    that has not seen data: it is skipped without a word, and after its first
    forward pass it carries PyTorch's default initialization, not the one
    asked for. Fixed in :func:`dlcomp.init_normal`,
    which uses ``isinstance`` and raises for an uninitialized lazy layer.

    Examples:
        >>> class MyDense(nn.Linear):
        ...     pass
        >>> net = nn.Sequential(nn.Linear(4, 8), MyDense(8, 1))
        >>> _ = net.apply(init_normal_by_type)  # no error
        >>> [bool((layer.bias == 0).all()) for layer in net]  # biases zeroed?
        [True, False]
        >>> net = nn.Sequential(nn.LazyLinear(1000))
        >>> _ = net.apply(init_normal_by_type)  # no error: the layer is skipped
        >>> _ = net(torch.rand(2, 1000))  # materializes with the default init
        >>> bool((net[0].bias == 0).all())  # not the zeros asked for
        False
    """
    if type(m) == nn.Linear:  # noqa: E721  (the bug: an exact type test)
        nn.init.normal_(m.weight, mean=0, std=0.01)
        nn.init.zeros_(m.bias)


class DataMyLinear(nn.Module):
    """The book's MyLinear: its forward pass computes with ``.data``.

    This is the PyTorch code of the book itself, not only of the study notes
    that copy it: both d2l-en (*Custom Layers*) and d2l-zh (5.4, 自定义层)
    write ``torch.matmul(X, self.weight.data) + self.bias.data``. The book
    only runs the layer forward, where nothing is wrong; a reader who trains
    with it trains nothing.

    ``self.weight.data`` is the parameter's values *cut off from autograd*.
    The output is right, but the graph does not lead back to the
    parameters: after ``backward()`` their ``.grad`` is ``None``, and an
    optimizer step changes nothing. With every layer built this way the
    output does not even require a gradient, and ``backward()`` raises.
    Fixed in :class:`dlcomp.MyLinear`, which uses the parameters themselves.

    Examples:
        >>> layer = DataMyLinear(5, 3)
        >>> out = layer(torch.rand(2, 5))
        >>> out.requires_grad
        False
    """

    def __init__(self, in_units: int, units: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``relu(X @ weight.data + bias.data)``: right values, no gradient."""
        linear = torch.matmul(X, self.weight.data) + self.bias.data  # the bug
        return F.relu(linear)
