"""
Audit a model before you train it
=================================

A model can run, and even train, while something in it is silently wrong:
layers that PyTorch does not see, a constant that is not saved, a layer whose
weights never get a gradient, an optimizer that misses some of the parameters.
This script builds a small model with four of the chapter's pitfalls, lets
:func:`dlcomp.audit` find them (each finding with its fix and a link to the
section that explains it), trains it to show what the audit predicted, and
then audits and trains the fixed model, whose report is clean.
"""

# %%
# A model with four problems
# --------------------------
# ``Encoder`` keeps its hidden layers in a Python list and its scale as a plain
# tensor; ``Head`` computes with ``.data``, as the book's ``MyLinear`` does;
# and the optimizer is built from the encoder's input layer only.
import torch
from torch import nn
from torch.nn import functional as F

import dlcomp

torch.manual_seed(0)


class Encoder(nn.Module):
    def __init__(self, features: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.input = nn.Linear(features, hidden)
        self.hidden = [nn.Linear(hidden, hidden) for _ in range(depth)]  # a list
        self.scale = torch.tensor(0.5)  # a plain tensor

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = F.relu(self.input(X))
        for layer in self.hidden:
            X = F.relu(layer(X))
        return X * self.scale


class Head(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(hidden, 1) * 0.1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.weight.data + self.bias.data  # cut off from autograd


class Model(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(X))


broken = Model(Encoder(8, 16, 2), Head(16))
optimizer = torch.optim.SGD(broken.encoder.input.parameters(), lr=0.1)

# %%
# The audit
# ---------
# Given an example input and the optimizer, :func:`dlcomp.audit` reads the
# model, runs one forward and backward pass on a copy of it, and compares
# the optimizer's tensors with the model's. It prints errors first.
X = torch.randn(256, 8)
y = X[:, :1] - 0.5 * X[:, 1:2]
report = dlcomp.audit(broken, X, optimizer)
print(report)


# %%
# What the audit predicted, seen in training
# ------------------------------------------
# Train for a while and check which weights moved and which got a gradient.
# The hidden layers get gradients (autograd follows the computation), but no
# optimizer updates them; the head gets no gradient at all (and is not in the
# optimizer either: each of the two would keep it frozen).
def train(
    model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 200
) -> float:
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        optimizer.step()
    return loss.item()


hidden_before = broken.encoder.hidden[0].weight.detach().clone()
head_before = broken.head.weight.detach().clone()
loss = train(broken, optimizer)
print(f"final loss: {loss:.4f}")
moved = not torch.equal(broken.encoder.hidden[0].weight, hidden_before)
print("hidden layer 0 changed by training:", moved)
print(
    "head changed by training:          ",
    not torch.equal(broken.head.weight, head_before),
)
print(
    "hidden layer 0 has a gradient:", broken.encoder.hidden[0].weight.grad is not None
)
print("head has a gradient:          ", broken.head.weight.grad is not None)
print("saved state_dict:", list(broken.state_dict()))


# %%
# The fixed model
# ---------------
# Each fix is the one the report names: ``nn.ModuleList`` for the layers, a
# buffer for the scale, the parameters themselves in the head, and the
# optimizer built from ``model.parameters()``.
class FixedEncoder(Encoder):
    def __init__(self, features: int, hidden: int, depth: int) -> None:
        super().__init__(features, hidden, depth)
        self.hidden = nn.ModuleList(self.hidden)
        del self.scale
        self.register_buffer("scale", torch.tensor(0.5))


class FixedHead(Head):
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.weight + self.bias


torch.manual_seed(0)
fixed = Model(FixedEncoder(8, 16, 2), FixedHead(16))
optimizer = torch.optim.SGD(fixed.parameters(), lr=0.1)
print(dlcomp.audit(fixed, X, optimizer))

# %%
# Same data, same steps, the same initial weights: now every layer trains.
print(f"final loss: {train(fixed, optimizer):.4f}")
print("saved state_dict:", list(fixed.state_dict()))

# %%
# In your own tests
# -----------------
# ``report.raise_for_errors()`` raises :class:`dlcomp.AuditError` (an
# ``AssertionError``) with the report as its message, so one line keeps a model
# clean. From a shell, ``python -m dlcomp audit mymodels:build --input-shape
# 2,8`` audits the model a function of yours builds, and exits with 1 when the
# report has an error.
dlcomp.audit(fixed, X, optimizer).raise_for_errors()
print("no errors")
