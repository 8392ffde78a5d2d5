"""
Train a network with a tied layer and watch its norms
=====================================================

Train the section's network whose middle ``Linear(8, 8)`` is used twice
(:func:`dlcomp.tied_mlp`) next to an untied twin that starts from the same
values but has two separate layers. Record, at every step, the norm of each
layer's weight and of its gradient (:func:`dlcomp.track_norms`), and plot
them. You will see that the shared weight's gradient is exactly the sum of
the two untied gradients, and how the two networks train from there.
"""

# %%
# Two networks, same starting point
# ---------------------------------
# The untied twin is a deep copy with a *copy* of the shared layer put at
# position 4: equal values, separate parameters.
import copy

import torch

from dlcomp import parameter_table, tied_mlp, track_norms

torch.manual_seed(0)
tied = tied_mlp()
untied = copy.deepcopy(tied)
untied[4] = copy.deepcopy(untied[2])
print("tied:  ", parameter_table(tied).summary())
print("untied:", parameter_table(untied).summary())

# %%
# One backward pass: the shared gradient is the sum
# -------------------------------------------------
# While the two networks hold equal values, the gradient of the shared weight
# is exactly the sum of the gradients of the two untied copies.
X, y = torch.rand(64, 4), torch.rand(64, 1)
for net in (tied, untied):
    torch.nn.functional.mse_loss(net(X), y).backward()
summed = untied[2].weight.grad + untied[4].weight.grad
print(
    "shared grad == sum of untied grads:", torch.allclose(tied[2].weight.grad, summed)
)
tied.zero_grad()
untied.zero_grad()

# %%
# Train both on the same data
# ---------------------------
# A random regression target; 300 steps of SGD on one batch of 64 examples.
steps = 300
h_tied = track_norms(tied, X, y, steps=steps, lr=0.1)
h_untied = track_norms(untied, X, y, steps=steps, lr=0.1)

first = h_tied.grad_norm["2.weight"][0]
parts = h_untied.grad_norm["2.weight"][0], h_untied.grad_norm["4.weight"][0]
print(f"step 0 gradient norm, shared weight: {first:.4f}")
print(f"step 0 gradient norms, untied 2 and 4: {parts[0]:.4f}, {parts[1]:.4f}")
print(f"final loss: tied {h_tied.loss[-1]:.4f}, untied {h_untied.loss[-1]:.4f}")

# %%
# Plot weight and gradient norms per layer
# ----------------------------------------
import matplotlib.pyplot as plt

from dlcomp.bench import show

fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True, layout="constrained")
series = [
    ("tied", h_tied, ["0.weight", "2.weight", "6.weight"]),
    ("untied", h_untied, ["0.weight", "2.weight", "4.weight", "6.weight"]),
]
for col, (kind, history, names) in enumerate(series):
    for name in names:
        label = name + (
            " (used twice)" if kind == "tied" and name == "2.weight" else ""
        )
        axes[0, col].plot(history.weight_norm[name], label=label)
        axes[1, col].plot(history.grad_norm[name], label=label)
    axes[0, col].set_title(f"{kind}: final loss {history.loss[-1]:.4f}")
    axes[0, col].set_ylabel("weight norm (L2)")
    axes[1, col].set_ylabel("gradient norm (L2)")
    axes[1, col].set_yscale("log")
    axes[1, col].set_xlabel("training step")
    axes[0, col].legend(title=f"torch {torch.__version__}, CPU", fontsize="small")
fig.suptitle("Weight and gradient norms per layer, tied vs untied")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# See also
# --------
# - The chapter page: :doc:`/parameters` (tied parameters, exercise 3).
# - API: :func:`dlcomp.tied_mlp`, :func:`dlcomp.track_norms`,
#   :func:`dlcomp.parameter_table`.
