"""Section 5.3, "Deferred initialization", in PyTorch.

A *lazy* layer (:class:`torch.nn.LazyLinear` and friends) is created without
its input size. Its parameters are :class:`torch.nn.UninitializedParameter`
placeholders until the first forward pass, which reads the input's shape,
*materializes* them, initializes them, and turns the layer into its ordinary
class (``LazyLinear`` becomes ``Linear``).

- :func:`~dlcomp.lazy_mlp`: the section's network with lazy layers.
- :func:`~dlcomp.materialize`: the "dry run" that fixes every shape.
- :func:`~dlcomp.init_lazy`: dry run, then a custom initializer.
- :func:`~dlcomp.uninitialized_parameters`: which parameters still wait.
- :class:`~dlcomp.LazyMyLinear`: a lazy layer of our own, built like
  PyTorch's (``LazyModuleMixin``, ``cls_to_become``), that becomes
  :class:`~dlcomp.MyLinear`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from dlcomp._checks import check_int, check_tensor
from dlcomp.layers import MyLinear

__all__ = [
    "LazyMyLinear",
    "init_lazy",
    "lazy_mlp",
    "materialize",
    "uninitialized_parameters",
]


def lazy_mlp() -> nn.Sequential:
    """The section's MLP without input sizes: LazyLinear(256) -> ReLU -> LazyLinear(10).

    Examples:
        >>> net = lazy_mlp()
        >>> net[0].weight
        <UninitializedParameter>
        >>> net(torch.rand(2, 20)).shape
        torch.Size([2, 10])
        >>> net[0]
        Linear(in_features=20, out_features=256, bias=True)
    """
    return nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))


def uninitialized_parameters(net: nn.Module) -> list[str]:
    """Names of the parameters (and buffers) of ``net`` that are still lazy.

    Examples:
        >>> uninitialized_parameters(nn.Sequential(nn.Linear(4, 8), nn.LazyLinear(2)))
        ['1.weight', '1.bias']
    """
    if not isinstance(net, nn.Module):
        kind = type(net).__name__
        who = "uninitialized_parameters"
        raise TypeError(f"{who}: net must be an nn.Module, got {kind}")
    return [
        name
        for name, tensor in [*net.named_parameters(), *net.named_buffers()]
        if isinstance(tensor, UninitializedParameter | UninitializedBuffer)
    ]


def materialize(net: nn.Module, *example_inputs: object) -> nn.Module:
    """Fix every lazy shape with one forward pass ("dry run"); return ``net``.

    Runs ``net(*example_inputs)`` under :func:`torch.no_grad` (no graph is
    built; only shapes matter, and the output is thrown away). Convert the
    network to its dtype and device *before*: the example inputs must match
    them. After the call, build the optimizer and apply any initializer.

    Args:
        net: a network that may contain lazy modules.
        *example_inputs: a sample batch (only its shapes matter).

    Returns:
        The same ``net``, every parameter materialized.

    Raises:
        RuntimeError: if a lazy module was not reached by the forward pass
            (for example one used only on some branch), listing its parameters.

    Examples:
        >>> net = materialize(lazy_mlp(), torch.rand(1, 20))
        >>> [tuple(p.shape) for p in net.parameters()]
        [(256, 20), (256,), (10, 256), (10,)]
    """
    if not isinstance(net, nn.Module):
        kind = type(net).__name__
        raise TypeError(f"materialize: net must be an nn.Module, got {kind}")
    if not example_inputs:
        raise TypeError(
            "materialize needs an example input (a sample batch) to infer the "
            "shapes from, e.g. materialize(net, torch.rand(1, 20))"
        )
    with torch.no_grad():
        net(*example_inputs)
    if missing := uninitialized_parameters(net):
        raise RuntimeError(
            f"the forward pass did not reach every lazy module: {missing} are "
            "still uninitialized; call the network on inputs that use every layer"
        )
    return net


def init_lazy(
    net: nn.Module, *example_inputs: Any, init_fn: Callable[[nn.Module], None]
) -> nn.Module:
    """Materialize ``net`` with a dry run, then ``net.apply(init_fn)``; return ``net``.

    What d2l-en's ``apply_init`` does (initializers need shapes, and a lazy
    layer has none until it has seen data, so the dry run comes first), with
    one difference: the dry run is ``net(*example_inputs)``, through
    ``__call__`` and so through the model's hooks, where ``apply_init`` calls
    ``self.forward(*inputs)`` directly.

    Args:
        net: a network that may contain lazy modules.
        *example_inputs: a sample batch for the dry run.
        init_fn: called on every submodule, e.g. :func:`dlcomp.init_xavier`.

    Returns:
        The same ``net``, materialized and initialized.

    Examples:
        >>> from dlcomp import init_42
        >>> net = init_lazy(lazy_mlp(), torch.rand(1, 20), init_fn=init_42)
        >>> bool((net[0].weight == 42).all())
        True
    """
    materialize(net, *example_inputs)
    net.apply(init_fn)
    return net


class _SizelessMyLinear(MyLinear):
    """MyLinear's methods without its ``__init__``, which allocates for a known ``in_units``.

    Sits between the mixin and :class:`~dlcomp.MyLinear` in
    :class:`LazyMyLinear`'s bases, so that the mixin's ``__init__`` (which
    registers its hooks, then calls the next ``__init__``) creates no tensor.
    """  # noqa: E501

    def __init__(self) -> None:
        nn.Module.__init__(self)


class LazyMyLinear(LazyModuleMixin, _SizelessMyLinear):
    """A lazy :class:`~dlcomp.MyLinear`: ``in_units`` is read from the first batch.

    Built the way PyTorch builds ``LazyLinear``: the mixin
    (:class:`torch.nn.modules.lazy.LazyModuleMixin`) registers a hook that
    runs before the first forward pass and calls
    ``initialize_parameters`` with the input; that method materializes
    the placeholders and initializes them. Then the mixin changes the
    object's class to ``cls_to_become``, an ordinary ``MyLinear``.

    One difference: ``LazyLinear`` runs ``Linear.__init__(0, 0)``, which
    accepts a size of 0, while ``MyLinear.__init__`` refuses one. So the
    constructor skips ``MyLinear.__init__`` (through ``_SizelessMyLinear``)
    and creates only the placeholders: no weight is allocated or initialized
    before the first batch.

    Args:
        units: size of each output sample.
        device: where to create the parameters.
        dtype: their floating point type.

    Examples:
        >>> layer = LazyMyLinear(3)
        >>> layer
        LazyMyLinear(in_units=0, units=3)
        >>> layer(torch.rand(2, 5)).shape
        torch.Size([2, 3])
        >>> layer
        MyLinear(in_units=5, units=3)
        >>> type(layer).__name__, layer.weight.shape
        ('MyLinear', torch.Size([5, 3]))
    """

    cls_to_become = MyLinear
    # Until the first batch; torch.nn.LazyLinear declares its own the same way
    # (and, like it, needs the ignores: UninitializedParameter.__new__ is
    # annotated "-> None" in torch, which hides its device and dtype).
    weight: UninitializedParameter  # type: ignore[assignment]
    bias: UninitializedParameter  # type: ignore[assignment]

    def __init__(
        self,
        units: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()  # the mixin's hooks; no weight allocated, none initialized
        self.in_units = 0  # unknown until the first batch
        self.units = check_int(units, "units", minimum=1, who="LazyMyLinear")
        self.weight = UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]
        self.bias = UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]

    def reset_parameters(self) -> None:
        """Initialize, unless the shapes are still unknown (then the first batch will)."""  # noqa: E501
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, X: Tensor) -> None:
        """Materialize ``weight`` as ``(X.shape[-1], units)`` and ``bias`` as ``(units,)``."""  # noqa: E501
        check_tensor(X, "LazyMyLinear")
        if X.dim() == 0:
            raise ValueError(
                "LazyMyLinear needs a batch of shape (..., in_units) to infer "
                "in_units from, got a scalar"
            )
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.in_units = X.shape[-1]
                self.weight.materialize((self.in_units, self.units))
                self.bias.materialize((self.units,))
                self.reset_parameters()
