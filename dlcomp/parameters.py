"""Section 5.2, "Parameter management": access, initialization and tying.

- Initializers to pass to :meth:`torch.nn.Module.apply`: :func:`~dlcomp.init_normal`,
  :func:`~dlcomp.init_constant`, :func:`~dlcomp.init_xavier`,
  :func:`~dlcomp.init_42` and the book's custom :func:`~dlcomp.my_init`.
- The section's networks: :func:`~dlcomp.block1`, :func:`~dlcomp.block2`,
  :func:`~dlcomp.rgnet` (nested) and :func:`~dlcomp.tied_mlp` (a shared layer).
- :func:`~dlcomp.parameter_table`: one row per parameter, with tied parameters
  found and counted once.
- :func:`~dlcomp.track_norms`: train a network and record each parameter's
  norm and gradient norm at every step (exercise 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from dlcomp._checks import check_float, check_int
from dlcomp._identity import storage_key, view_key
from dlcomp._table import html_table, text_table

__all__ = [
    "NormHistory",
    "ParameterRow",
    "ParameterTable",
    "block1",
    "block2",
    "init_42",
    "init_constant",
    "init_normal",
    "init_xavier",
    "my_init",
    "parameter_table",
    "rgnet",
    "tied_mlp",
    "track_norms",
]


# --- initializers -------------------------------------------------------------


def init_normal(m: nn.Module) -> None:
    r"""Draw linear weights from :math:`\mathcal{N}(0, 0.01^2)` and zero the biases.

    Use with ``net.apply(init_normal)``, which calls it on every submodule;
    modules other than :class:`torch.nn.Linear` (and its subclasses, such as
    :class:`torch.nn.LazyLinear`) are left alone.

    Args:
        m: a module (``apply`` passes each one in turn).

    Raises:
        ValueError: from :mod:`torch.nn.init`, for a lazy linear layer that has
            not seen data yet (its weight has no shape).

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> _ = net.apply(init_normal)
        >>> torch.equal(net[0].bias, torch.zeros(8))
        True
        >>> bool(net[0].weight.abs().max() < 0.1)
        True
    """
    if isinstance(m, nn.Linear):  # subclasses too, unlike type(m) == nn.Linear
        nn.init.normal_(m.weight, mean=0.0, std=0.01)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_constant(m: nn.Module) -> None:
    """Set linear weights to 1 and biases to 0.

    A constant initialization makes every unit of a layer compute the same
    thing, and gradient descent keeps them equal: the section shows it only
    to demonstrate the API.

    Args:
        m: a module (``apply`` passes each one in turn).

    Raises:
        ValueError: from :mod:`torch.nn.init`, for a lazy linear layer that has
            not seen data yet (its weight has no shape).

    Examples:
        >>> layer = nn.Linear(4, 8)
        >>> _ = layer.apply(init_constant)
        >>> torch.equal(layer.weight, torch.ones(8, 4)), torch.equal(layer.bias, torch.zeros(8))
        (True, True)
    """  # noqa: E501
    if isinstance(m, nn.Linear):
        nn.init.constant_(m.weight, 1.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_xavier(m: nn.Module) -> None:
    r"""Xavier (Glorot) uniform initialization of linear weights; biases unchanged.

    Weights are drawn from :math:`U(-a, a)` with
    :math:`a = \sqrt{6 / (\text{fan\_in} + \text{fan\_out})}`, which keeps the
    variance of activations and gradients roughly constant across layers.

    Args:
        m: a module (``apply`` passes each one in turn).

    Raises:
        ValueError: from :mod:`torch.nn.init`, for a lazy linear layer that has
            not seen data yet (its weight has no shape).

    Examples:
        >>> layer = nn.Linear(4, 8)
        >>> _ = layer.apply(init_xavier)
        >>> bound = (6 / (4 + 8)) ** 0.5
        >>> bool(layer.weight.abs().max() <= bound)
        True
    """
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)


def init_42(m: nn.Module) -> None:
    """Set linear weights to the constant 42; biases unchanged.

    Args:
        m: a module (``apply`` passes each one in turn).

    Raises:
        ValueError: from :mod:`torch.nn.init`, for a lazy linear layer that has
            not seen data yet (its weight has no shape).

    Examples:
        >>> layer = nn.Linear(2, 3)
        >>> _ = layer.apply(init_42)
        >>> layer.weight
        Parameter containing:
        tensor([[42., 42.],
                [42., 42.],
                [42., 42.]], requires_grad=True)
    """
    if isinstance(m, nn.Linear):
        nn.init.constant_(m.weight, 42.0)


def my_init(m: nn.Module) -> None:
    r"""The book's custom initializer for linear weights; biases unchanged.

    Each weight :math:`w` is drawn from

    .. math::

        w \sim \begin{cases}
            U(5, 10) & \text{with probability } \tfrac14 \\
            0 & \text{with probability } \tfrac12 \\
            U(-10, -5) & \text{with probability } \tfrac14
        \end{cases}

    by drawing from :math:`U(-10, 10)` and zeroing the values with
    :math:`|w| < 5`.

    Args:
        m: a module (``apply`` passes each one in turn).

    Raises:
        ValueError: from :mod:`torch.nn.init`, for a lazy linear layer that has
            not seen data yet (its weight has no shape).

    Examples:
        >>> layer = nn.Linear(100, 100)
        >>> _ = layer.apply(my_init)
        >>> w = layer.weight.detach()
        >>> bool(((w == 0) | (w.abs() >= 5)).all())
        True
    """
    if isinstance(m, nn.Linear):
        with torch.no_grad():
            nn.init.uniform_(m.weight, -10.0, 10.0)
            m.weight *= m.weight.abs() >= 5


# --- the section's networks -----------------------------------------------------


def block1() -> nn.Sequential:
    """The section's small block: 4 -> 8 -> ReLU -> 4 -> ReLU.

    Examples:
        >>> block1()(torch.rand(2, 4)).shape
        torch.Size([2, 4])
    """
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())


def block2() -> nn.Sequential:
    """Four :func:`block1` blocks in a row, named ``"block 0"`` to ``"block 3"``.

    Examples:
        >>> [name for name, _ in block2().named_children()]
        ['block 0', 'block 1', 'block 2', 'block 3']
    """
    net = nn.Sequential()
    for i in range(4):
        net.add_module(f"block {i}", block1())  # a name of our choosing
    return net


def rgnet() -> nn.Sequential:
    """The section's nested network: :func:`block2` followed by ``Linear(4, 1)``.

    Parameter names spell the path through the nesting, e.g.
    ``"0.block 1.0.bias"``: block 0 of the outer ``Sequential``, its child
    ``"block 1"``, that block's layer 0.

    Examples:
        >>> net = rgnet()
        >>> net(torch.rand(2, 4)).shape
        torch.Size([2, 1])
        >>> net.state_dict()["0.block 1.0.bias"].shape
        torch.Size([8])
    """
    return nn.Sequential(block2(), nn.Linear(4, 1))


def tied_mlp() -> nn.Sequential:
    """The section's network with one linear layer used twice (tied parameters).

    ``nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared,
    nn.ReLU(), nn.Linear(8, 1))``: positions 2 and 4 hold the *same*
    ``Linear(8, 8)`` object, so they share one weight and one bias, and the
    gradient of that weight is the sum of the gradients of its two uses.

    Examples:
        >>> net = tied_mlp()
        >>> net[2].weight is net[4].weight
        True
        >>> net(torch.rand(2, 4)).shape
        torch.Size([2, 1])
    """
    shared = nn.Linear(8, 8)
    return nn.Sequential(
        nn.Linear(4, 8),
        nn.ReLU(),
        shared,
        nn.ReLU(),
        shared,
        nn.ReLU(),
        nn.Linear(8, 1),
    )


# --- the parameter inspector ----------------------------------------------------


@dataclass(frozen=True)
class ParameterRow:
    """One parameter of a network, as listed by :func:`parameter_table` (see its examples)."""  # noqa: E501

    name: str
    """Qualified name, as in ``named_parameters()``."""
    shape: tuple[int, ...] | None
    """Shape, or ``None`` for a lazy parameter not materialized yet."""
    dtype: str
    """Element type, e.g. ``"float32"``."""
    device: str
    """Where the data lives, e.g. ``"cpu"`` or ``"cuda:0"``."""
    numel: int
    """Number of elements (0 while uninitialized)."""
    requires_grad: bool
    """Whether autograd computes a gradient for it."""
    shared_with: tuple[str, ...]
    """The other names whose data is the same storage (tied parameters)."""


@dataclass(frozen=True)
class ParameterTable:
    """The parameters of a network: rows, totals, and text and HTML renderings.

    ``print(table)`` gives an aligned text table; in a notebook the table
    renders as HTML. Iterating yields the :class:`ParameterRow` objects.

    Returned by :func:`parameter_table` (see its examples).

    Attributes:
        rows: one :class:`ParameterRow` per parameter name, tied names included.
        total: number of distinct values (shared storage counted once).
        total_by_name: the sum of ``numel`` over all names (shared counted twice).
        uninitialized: how many parameters are lazy and not materialized yet.
    """

    rows: tuple[ParameterRow, ...]
    total: int
    total_by_name: int
    uninitialized: int = 0

    _HEADER = ("name", "shape", "dtype", "device", "numel", "grad", "shared with")

    def __iter__(self) -> Iterator[ParameterRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def _cells(self) -> list[tuple[str, ...]]:
        return [
            (
                row.name,
                "uninitialized" if row.shape is None else str(tuple(row.shape)),
                row.dtype,
                row.device,
                f"{row.numel:,d}",
                "yes" if row.requires_grad else "no",
                ", ".join(row.shared_with) or "-",
            )
            for row in self.rows
        ]

    def summary(self) -> str:
        """One line with the totals."""
        line = f"{self.total:,d} parameters"
        if self.total != self.total_by_name:
            line += f" ({self.total_by_name:,d} counting each tied name separately)"
        if self.uninitialized:
            line += f"; {self.uninitialized} not initialized yet (lazy)"
        return line

    def __str__(self) -> str:
        # numel (column 4) is right-aligned
        return text_table(self._HEADER, self._cells(), self.summary(), frozenset({4}))

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_table(self._HEADER, self._cells(), self.summary())


def parameter_table(net: nn.Module) -> ParameterTable:
    """List every parameter of ``net``: name, shape, dtype, device, size, tying.

    Unlike ``net.named_parameters()``, which reports a shared parameter once
    (under its first name), the table lists every name, and says which names
    share storage. Its ``total`` counts shared storage once: the number of
    values an optimizer actually trains.

    Args:
        net: any module.

    Returns:
        ParameterTable: printable as text, rendered as HTML in notebooks.

    Examples:
        >>> print(parameter_table(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))))
        name      shape   dtype    device  numel  grad  shared with
        --------  ------  -------  ------  -----  ----  -----------
        0.weight  (8, 4)  float32  cpu        32  yes   -
        0.bias    (8,)    float32  cpu         8  yes   -
        2.weight  (1, 8)  float32  cpu         8  yes   -
        2.bias    (1,)    float32  cpu         1  yes   -
        49 parameters

        With tied parameters, count what an optimizer trains, and find the tied
        names (iterating over the table yields its :class:`ParameterRow` rows):

        >>> table = parameter_table(tied_mlp())
        >>> table.total, table.total_by_name
        (121, 193)
        >>> [row.name for row in table if row.shared_with]
        ['2.weight', '2.bias', '4.weight', '4.bias']
        >>> table.rows[2]
        ParameterRow(name='2.weight', shape=(8, 8), dtype='float32', device='cpu', numel=64, requires_grad=True, shared_with=('4.weight',))
    """  # noqa: E501
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"parameter_table expects an nn.Module, got {type(net).__name__}"
        )
    named = list(net.named_parameters(remove_duplicate=False))
    names_by_storage: dict[tuple[object, ...], list[str]] = {}
    numel_by_view: dict[tuple[object, ...], int] = {}
    for name, param in named:
        names_by_storage.setdefault(storage_key(param), []).append(name)
        lazy = isinstance(param, UninitializedParameter)
        numel_by_view[view_key(param)] = 0 if lazy else param.numel()
    rows = []
    uninitialized = 0
    for name, param in named:
        lazy = isinstance(param, UninitializedParameter)
        uninitialized += lazy
        rows.append(
            ParameterRow(
                name=name,
                shape=None if lazy else tuple(param.shape),
                dtype=str(param.dtype).removeprefix("torch."),
                device=str(param.device),
                numel=0 if lazy else param.numel(),
                requires_grad=param.requires_grad,
                shared_with=tuple(
                    n for n in names_by_storage[storage_key(param)] if n != name
                ),
            )
        )
    return ParameterTable(
        rows=tuple(rows),
        total=sum(numel_by_view.values()),
        total_by_name=sum(row.numel for row in rows),
        uninitialized=uninitialized,
    )


# --- training with norms recorded (exercise 3) ------------------------------------


@dataclass
class NormHistory:
    """What :func:`track_norms` recorded, one list entry per training step.

    Returned by :func:`track_norms` (see its examples).

    Attributes:
        loss: the loss before each step.
        weight_norm: parameter name -> L2 norm of the parameter after each step.
        grad_norm: parameter name -> L2 norm of its gradient at each step.
    """

    loss: list[float] = field(default_factory=list)
    weight_norm: dict[str, list[float]] = field(default_factory=dict)
    grad_norm: dict[str, list[float]] = field(default_factory=dict)


def track_norms(
    net: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    steps: int = 100,
    lr: float = 0.05,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> NormHistory:
    """Train ``net`` on one batch with SGD, recording every parameter's norms.

    Each step computes the loss (mean squared error unless ``loss_fn`` is
    given), runs backward, records the gradient norm of every parameter,
    takes an SGD step and records the parameter norms. A tied parameter
    appears once, under its first name, with the gradient summed over its
    uses (that is what autograd accumulates into it).

    Args:
        net: the network to train (changed in place).
        X: the input batch.
        y: the targets.
        steps: how many SGD steps, at least 1.
        lr: the learning rate.
        loss_fn: ``loss_fn(net(X), y)`` -> scalar; default
            :func:`torch.nn.functional.mse_loss`.

    Returns:
        NormHistory: the loss and the norms, one entry per step.

    Examples:
        >>> net = tied_mlp()
        >>> X, y = torch.rand(16, 4), torch.rand(16, 1)
        >>> history = track_norms(net, X, y, steps=5)
        >>> list(history.grad_norm)
        ['0.weight', '0.bias', '2.weight', '2.bias', '6.weight', '6.bias']
        >>> len(history.loss), history.loss[-1] < history.loss[0]
        (5, True)
    """
    who = "track_norms"
    if not isinstance(net, nn.Module):
        raise TypeError(f"{who}: net must be an nn.Module, got {type(net).__name__}")
    for name, value in (("X", X), ("y", y)):
        if not isinstance(value, Tensor):
            kind = type(value).__name__
            raise TypeError(f"{who}: {name} must be a torch.Tensor, got {kind}")
    steps = check_int(steps, "steps", minimum=1, who=who)
    lr = check_float(lr, "lr", above=0, who=who)
    loss_fn = loss_fn or nn.functional.mse_loss
    named = list(net.named_parameters())  # tied parameters once
    if not named:
        raise ValueError("net has no parameters to train")
    optimizer = torch.optim.SGD([p for _, p in named], lr=lr)
    history = NormHistory(
        weight_norm={name: [] for name, _ in named},
        grad_norm={name: [] for name, _ in named},
    )
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(net(X), y)
        if not isinstance(loss, Tensor):
            kind = type(loss).__name__
            raise TypeError(f"{who}: loss_fn must return a tensor, got {kind}")
        loss.backward()
        history.loss.append(loss.item())
        for name, param in named:
            grad = param.grad
            history.grad_norm[name].append(0.0 if grad is None else grad.norm().item())
        optimizer.step()
        for name, param in named:
            history.weight_norm[name].append(param.detach().norm().item())
    return history
