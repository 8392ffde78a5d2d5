"""Section 5.1, "Layers and blocks": the chapter's blocks, done right.

A *block* is any :class:`torch.nn.Module`: one layer, a group of layers, or a
whole model. This module holds the section's reference blocks
(:class:`~dlcomp.MLP`, :class:`~dlcomp.MySequential`,
:class:`~dlcomp.FixedHiddenMLP`, :class:`~dlcomp.NestMLP`,
:func:`~dlcomp.chimera`), the answers to its exercises
(:class:`~dlcomp.ModuleListSequential`, :class:`~dlcomp.ParallelBlock`,
:func:`~dlcomp.stack_blocks`) and :func:`~dlcomp.trace_shapes`, which uses the
forward hooks that ``net(X)`` runs and ``net.forward(X)`` skips.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "FixedHiddenMLP",
    "LayerShapes",
    "MLP",
    "ModuleListSequential",
    "MySequential",
    "NestMLP",
    "ParallelBlock",
    "chimera",
    "stack_blocks",
    "trace_shapes",
]


class MLP(nn.Module):
    r"""The section's multilayer perceptron: 20 inputs, 256 hidden units, 10 outputs.

    Computes :math:`y = W_2\,\mathrm{ReLU}(W_1 x + b_1) + b_2`.

    Shape:
        - Input: :math:`(N, 20)`.
        - Output: :math:`(N, 10)`.

    Attributes:
        hidden (nn.Linear): the hidden layer, 20 -> 256.
        out (nn.Linear): the output layer, 256 -> 10.

    Examples:
        >>> net = MLP()
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 10])
        >>> [name for name, _ in net.named_parameters()]
        ['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias']
    """

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.out = nn.Linear(256, 10)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Map a batch of shape ``(N, 20)`` to scores of shape ``(N, 10)``."""
        if X.shape[-1:] != (20,):  # a clearer error than "mat1 and mat2 shapes..."
            raise ValueError(
                f"MLP expects input of shape (batch, 20), got shape {tuple(X.shape)}"
            )
        scores: torch.Tensor = self.out(F.relu(self.hidden(X)))  # (N, 256) -> (N, 10)
        return scores


class MySequential(nn.Module):
    """A minimal :class:`torch.nn.Sequential`: runs its blocks in the order given.

    Each block is registered under a *string* key (``"0"``, ``"1"``, ...), so
    :meth:`~torch.nn.Module.named_parameters`, :meth:`~torch.nn.Module.state_dict`,
    ``print(net)`` and :meth:`~torch.nn.Module.to` all see it. (The seed notes'
    ``self._modules[block] = block`` uses the module itself as the key; see
    :class:`dlcomp.pitfalls.ModuleKeySequential` for what that breaks.)

    Args:
        *args: the blocks, each an :class:`torch.nn.Module`, in the order they run.

    Shape:
        - Input: whatever the first block takes.
        - Output: whatever the last block returns.

    Examples:
        >>> net = MySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 10])
        >>> list(net.state_dict())
        ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *args: nn.Module) -> None:
        super().__init__()
        for idx, module in enumerate(args):
            # The key must be a string: it becomes part of every parameter name.
            # (add_module also refuses what is not an nn.Module, such as F.relu.)
            self.add_module(str(idx), module)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Feed ``X`` through every block, in the order they were added."""
        for block in self._modules.values():  # in the order they were added
            X = block(X)
        return X


class ModuleListSequential(nn.Module):
    """Blocks kept in an :class:`torch.nn.ModuleList`: the fix for a plain list.

    A plain Python list hides its blocks from PyTorch (the first exercise; see
    :class:`dlcomp.pitfalls.ListSequential`). :class:`torch.nn.ModuleList` is a
    list that registers what it holds, so the parameters are found, saved,
    moved and trained.

    Args:
        *args: the blocks, each an :class:`torch.nn.Module`, in the order they run.

    Attributes:
        blocks (nn.ModuleList): the registered blocks.

    Examples:
        >>> net = ModuleListSequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> len(list(net.parameters()))
        4
        >>> list(net.state_dict())
        ['blocks.0.weight', 'blocks.0.bias', 'blocks.2.weight', 'blocks.2.bias']
    """

    def __init__(self, *args: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(args)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Feed ``X`` through every block, in order."""
        for block in self.blocks:
            X = block(X)
        return X


class FixedHiddenMLP(nn.Module):
    r"""A block with a constant weight, a reused layer and Python control flow.

    Computes :math:`h = \mathrm{ReLU}(\mathrm{linear}(x)\,W_{\text{rand}} + 1)`,
    then :math:`z = \mathrm{linear}(h)` with the *same* linear layer (its
    parameters are used twice), halves :math:`z` while
    :math:`\sum |z| > 1`, and returns :math:`\sum z`, a scalar.

    :math:`W_{\text{rand}}` is drawn once, at construction, and never trained.
    It is a *buffer* (``register_buffer``), not a parameter: the optimizer
    does not see it, but ``.to()`` moves it and ``state_dict()`` saves it.
    (The book stores it as a plain tensor attribute, which ``.to()`` leaves
    behind and ``state_dict()`` forgets; see
    :class:`dlcomp.pitfalls.PlainTensorFixedHiddenMLP`.)

    Shape:
        - Input: :math:`(N, 20)`, finite values.
        - Output: :math:`()`, a scalar.

    Attributes:
        rand_weight (Tensor): the constant :math:`(20, 20)` weight, a buffer.
        linear (nn.Linear): the layer applied twice, 20 -> 20.

    Examples:
        >>> net = FixedHiddenMLP()
        >>> net(torch.rand(2, 20)).shape
        torch.Size([])
        >>> [name for name, _ in net.named_parameters()]
        ['linear.weight', 'linear.bias']
        >>> list(net.state_dict())
        ['rand_weight', 'linear.weight', 'linear.bias']
    """

    rand_weight: torch.Tensor  # a buffer (register_buffer below)

    def __init__(self) -> None:
        super().__init__()
        # A constant that is never trained: a buffer, so .to() moves it and
        # state_dict() saves it, but the optimizer does not see it.
        self.register_buffer("rand_weight", torch.rand(20, 20))
        self.linear = nn.Linear(20, 20)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return the scalar described above for a batch of shape ``(N, 20)``."""
        if X.shape[-1:] != (20,):
            raise ValueError(
                "FixedHiddenMLP expects input of shape (batch, 20), "
                f"got shape {tuple(X.shape)}"
            )
        X = self.linear(X)  # (N, 20)
        X = F.relu(X @ self.rand_weight + 1)  # (N, 20), constant weight
        X = self.linear(X)  # (N, 20), the same layer again
        if not torch.isfinite(X).all():  # inf / 2 is inf: the loop would never end
            raise ValueError("FixedHiddenMLP got an input that produces inf or nan")
        while X.abs().sum() > 1:  # Python control flow, decided by the data
            X = X / 2
        return X.sum()  # ()


class NestMLP(nn.Module):
    """An MLP whose first layers are themselves a block (an ``nn.Sequential``).

    Shape:
        - Input: :math:`(N, 20)`.
        - Output: :math:`(N, 16)`.

    Attributes:
        net (nn.Sequential): 20 -> 64 -> ReLU -> 32 -> ReLU.
        linear (nn.Linear): 32 -> 16.

    Examples:
        >>> net = NestMLP()
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 16])
        >>> [name for name, _ in net.named_parameters()]
        ['net.0.weight', 'net.0.bias', 'net.2.weight', 'net.2.bias',
         'linear.weight', 'linear.bias']
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU()
        )
        self.linear = nn.Linear(32, 16)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Map ``(N, 20)`` to ``(N, 16)``."""
        if X.shape[-1:] != (20,):
            raise ValueError(
                "NestMLP expects input of shape (batch, 20), "
                f"got shape {tuple(X.shape)}"
            )
        out: torch.Tensor = self.linear(self.net(X))  # (N, 32) -> (N, 16)
        return out


def chimera() -> nn.Sequential:
    """Build the book's "chimera": blocks nested inside blocks.

    ``nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())``: a
    custom block, a built-in layer and another custom block, chained. It maps
    a batch of shape ``(N, 20)`` to a scalar.

    Returns:
        nn.Sequential: a new, freshly initialized chimera.

    Examples:
        >>> net = chimera()
        >>> net(torch.rand(2, 20)).shape
        torch.Size([])
        >>> [type(block).__name__ for block in net]
        ['NestMLP', 'Linear', 'FixedHiddenMLP']
    """
    return nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())


class ParallelBlock(nn.Module):
    """Run two blocks on the same input and concatenate their outputs (exercise 2).

    Both outputs must have the same shape except in the last (feature)
    dimension; they are joined along it.

    Args:
        net1 (nn.Module): the first block; its features come first.
        net2 (nn.Module): the second block.

    Shape:
        - Input: what both blocks take.
        - Output: :math:`(*, F_1 + F_2)` where ``net1`` returns :math:`(*, F_1)`
          and ``net2`` returns :math:`(*, F_2)`.

    Raises:
        ValueError: when an output has no feature dimension (a scalar), or the
            two outputs disagree in a leading dimension such as the batch.

    Examples:
        >>> net = ParallelBlock(MLP(), NestMLP())
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 26])
    """

    def __init__(self, net1: nn.Module, net2: nn.Module) -> None:
        super().__init__()
        for name, net in (("net1", net1), ("net2", net2)):
            if not isinstance(net, nn.Module):
                raise TypeError(
                    f"ParallelBlock's {name} must be an nn.Module, "
                    f"got a {type(net).__name__}"
                )
        self.net1 = net1
        self.net2 = net2

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return ``torch.cat((net1(X), net2(X)), dim=-1)``, after checking shapes."""
        Y1 = self.net1(X)  # (*, F1)
        Y2 = self.net2(X)  # (*, F2)
        for name, Y in (("net1", Y1), ("net2", Y2)):
            if Y.dim() == 0:
                raise ValueError(
                    "ParallelBlock concatenates along the last (feature) "
                    f"dimension, so each block must return a tensor of shape "
                    f"(batch, features); {name} returned a tensor of shape ()"
                )
        if Y1.shape[:-1] != Y2.shape[:-1]:
            raise ValueError(
                "ParallelBlock's outputs must agree in every dimension but the "
                f"last: net1 returned shape {tuple(Y1.shape)} and net2 returned "
                f"shape {tuple(Y2.shape)}"
            )
        return torch.cat((Y1, Y2), dim=-1)  # (*, F1 + F2)


def stack_blocks(factory: "Callable[[], nn.Module]", n: int) -> nn.Sequential:
    """Chain ``n`` fresh instances of a block into one network (exercise 3).

    ``factory`` is called ``n`` times; every call must return a *new* block
    with parameters of its own. A factory that returns the same object twice,
    or blocks that share a layer, would tie their weights silently; that is
    refused here (tie weights on purpose as shown in section 5.2).

    Args:
        factory: a callable with no arguments that returns an ``nn.Module``,
            for example a class or a ``lambda``.
        n: how many instances to chain, at least 1.

    Returns:
        nn.Sequential: the ``n`` blocks, named ``"0"`` to ``str(n - 1)``.

    Raises:
        ValueError: for ``n < 1``, or when two instances share a module or a
            parameter.
        TypeError: when ``factory`` is a block instead of a callable, ``n`` is
            not an int, or ``factory`` returns something that is not an
            ``nn.Module`` (``nn.Sequential`` refuses it).

    Examples:
        >>> net = stack_blocks(lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU()), 3)
        >>> net(torch.rand(4, 8)).shape
        torch.Size([4, 8])
        >>> len(list(net.parameters()))  # 3 blocks x (weight, bias), none shared
        6
    """
    if isinstance(factory, nn.Module) or not callable(factory):
        got = type(factory).__name__
        raise TypeError(
            "stack_blocks: factory must be a callable that returns a new block, got "
            f"{'a ' + got + ' instance' if isinstance(factory, nn.Module) else got}; "
            "pass a factory such as lambda: nn.Linear(...)"
        )
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(
            f"stack_blocks: n must be an int >= 1, got {type(n).__name__} {n!r}"
        )
    if n < 1:
        raise ValueError(f"stack_blocks: n must be an int >= 1, got {n}")
    n = int(n)
    net = nn.Sequential(*[factory() for _ in range(n)])  # refuses a non-module
    owner: dict[int, tuple[int, str]] = {}  # id of a module or parameter -> (i, name)
    for i, block in enumerate(net):
        for name, obj in [*block.named_modules(), *block.named_parameters()]:
            if id(obj) in owner:
                j, other = owner[id(obj)]
                raise ValueError(
                    "factory returned blocks that share state: "
                    f"{other or 'the block itself'} of instance {j} is "
                    f"{name or 'the block itself'} of instance {i}. Build the "
                    "layers inside the factory, or tie weights explicitly"
                )
            owner[id(obj)] = (i, name)
    return net


class LayerShapes(NamedTuple):
    """One row of :func:`trace_shapes`: a block and the shapes it saw.

    Examples:
        >>> row = trace_shapes(nn.Linear(3, 2), torch.rand(4, 3))[0]
        >>> row
        LayerShapes(name='', kind='Linear', inputs=((4, 3),), output=(4, 2))
    """

    name: str
    """Qualified name of the block in the network (``""`` for the network)."""
    kind: str
    """The block's class name."""
    inputs: tuple[object, ...]
    """Shape of each positional input."""
    output: object
    """Shape of the output (a tuple of shapes for a tuple output)."""


def _shape(value: object) -> object:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return tuple(_shape(v) for v in value)
    return type(value).__name__


def trace_shapes(net: nn.Module, *inputs: Any) -> list[LayerShapes]:
    """Run ``net`` once and record the input and output shape of every block.

    It registers a forward hook on every submodule, calls ``net(*inputs)``
    under :func:`torch.no_grad`, and removes the hooks again (also when the
    forward pass fails). Hooks only run through ``net(...)``, that is
    ``__call__``; calling ``net.forward(...)`` directly would skip them.

    Rows come in the order the blocks *finished*, so a container follows the
    blocks inside it. A block used twice (like ``FixedHiddenMLP.linear``)
    appears twice.

    Args:
        net: the network to trace.
        *inputs: the inputs of one forward pass, for example a sample batch.

    Returns:
        list[LayerShapes]: one row per call of a block.

    Examples:
        >>> for row in trace_shapes(MLP(), torch.rand(2, 20)):
        ...     print(row.name, row.kind, row.inputs, "->", row.output)
        hidden Linear ((2, 20),) -> (2, 256)
        out Linear ((2, 256),) -> (2, 10)
         MLP ((2, 20),) -> (2, 10)
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"trace_shapes expects an nn.Module, got {type(net).__name__}")
    rows: list[LayerShapes] = []

    def make_hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            rows.append(
                LayerShapes(
                    name,
                    type(module).__name__,
                    tuple(_shape(a) for a in args),
                    _shape(output),
                )
            )

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in net.named_modules()]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return rows
