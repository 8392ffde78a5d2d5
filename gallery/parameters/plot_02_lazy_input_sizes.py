"""
One lazy network, many input sizes
===================================

Define the section's MLP once with lazy layers (:func:`dlcomp.lazy_mlp`) and
materialize copies of it for inputs of different sizes
(:func:`dlcomp.materialize`). You will see that only the first layer depends
on the input size, and that the parameter count grows linearly with it:
:math:`256(n + 1) + 10 \\cdot 257`.
"""

# %%
# Materialize one copy per input size
# -----------------------------------
# Each copy learns its first layer's input size from one example batch.
import torch

from dlcomp import lazy_mlp, materialize, parameter_table

torch.manual_seed(0)
sizes = [4, 16, 64, 256, 784, 1024]
counts = {}
for n in sizes:
    net = materialize(lazy_mlp(), torch.rand(1, n))
    counts[n] = parameter_table(net).total
    shape = tuple(net[0].weight.shape)
    print(f"n = {n:5}: first layer {shape}, {counts[n]:,d} parameters")

# %%
# The count follows the formula exactly
# -------------------------------------
# ``256 * (n + 1)`` for the first layer (weights and biases) plus
# ``10 * (256 + 1)`` for the output layer, whatever ``n`` is.
formula = {n: 256 * (n + 1) + 10 * 257 for n in sizes}
print("matches the formula:", counts == formula)

# %%
# Plot
# ----
import matplotlib.pyplot as plt

from dlcomp.bench import show

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.plot(sizes, [counts[n] for n in sizes], marker="o", label="materialized lazy_mlp()")
ax.plot(
    sizes,
    [formula[n] for n in sizes],
    linestyle=":",
    color="k",
    label="256(n+1) + 2570",
)
ax.set_xlabel("input features n")
ax.set_ylabel("parameters (count)")
ax.set_title("Only the first layer grows with the input size")
ax.legend(title=f"torch {torch.__version__}")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# See also
# --------
# - The chapter page: :doc:`/deferred-init`.
# - API: :func:`dlcomp.lazy_mlp`, :func:`dlcomp.materialize`,
#   :func:`dlcomp.parameter_table`.
