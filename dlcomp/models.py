"""The small model that the training runs of sections 5.5 and 5.5+ train.

The training workers (:mod:`dlcomp.train_worker`,
:mod:`dlcomp.distributed_worker`), the gallery scripts and the distributed
checkpoints page all build their model with :func:`mlp`, so that a
checkpoint written by one of them loads into a model built by another.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from dlcomp._checks import check_int

__all__ = ["mlp"]


def mlp(*sizes: int, seed: int | None = None) -> nn.Sequential:
    r"""A multilayer perceptron: ``nn.Linear`` layers of the given sizes, ``nn.ReLU`` between.

    ``mlp(16, 64, 64, 1)`` is ``nn.Sequential(nn.Linear(16, 64), nn.ReLU(),
    nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))``, initialized as PyTorch
    initializes ``nn.Linear``.

    Args:
        *sizes: the number of features of the input, of each hidden layer and
            of the output (at least two numbers, each at least 1).
        seed: if given (an int with ``0 <= seed < 2**63``), the parameters
            are drawn from ``torch.manual_seed(seed)`` without changing the
            global random state: the same seed gives bitwise the same model,
            and the same values as ``torch.manual_seed(seed)`` followed by
            ``mlp(*sizes)``.

    Shape:
        - Input: :math:`(*, \text{sizes}[0])`.
        - Output: :math:`(*, \text{sizes}[-1])`.

    Examples:
        >>> net = mlp(16, 64, 64, 1, seed=0)
        >>> net
        Sequential(
          (0): Linear(in_features=16, out_features=64, bias=True)
          (1): ReLU()
          (2): Linear(in_features=64, out_features=64, bias=True)
          (3): ReLU()
          (4): Linear(in_features=64, out_features=1, bias=True)
        )
        >>> net(torch.randn(8, 16)).shape
        torch.Size([8, 1])
        >>> torch.equal(net[0].weight, mlp(16, 64, 64, 1, seed=0)[0].weight)
        True
    """  # noqa: E501
    if len(sizes) < 2:
        raise ValueError(
            "mlp: give at least two sizes (input and output features), "
            f"got {len(sizes)}: {sizes!r}"
        )
    checked = [
        check_int(size, f"sizes[{i}]", minimum=1, who="mlp")
        for i, size in enumerate(sizes)
    ]
    if seed is None:
        return _build(checked)
    seed = check_int(seed, "seed", minimum=0, who="mlp")
    if seed >= 2**63:
        raise ValueError(f"mlp: seed must be an int < 2**63, got {seed}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(checked)


def _build(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (inputs, outputs) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)
