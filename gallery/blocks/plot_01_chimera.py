"""
Inspect a network built from blocks
====================================

Build the book's "chimera" (an ``NestMLP``, a linear layer and a
``FixedHiddenMLP`` chained), print its module tree, count the parameters of
every block, trace the shapes that flow through it, and draw where its
parameters live. You will see that blocks nest, that parameter names follow
the nesting, and that the constant weight of ``FixedHiddenMLP`` is state but
not a parameter.
"""

# %%
# Build the network
# -----------------
# :func:`dlcomp.chimera` returns a fresh ``nn.Sequential`` of three blocks.
# Printing it shows the module tree.
import torch

from dlcomp import chimera

torch.manual_seed(0)
net = chimera()
net

# %%
# Count the parameters of every block
# -----------------------------------
# ``named_modules()`` walks the tree; a module's ``parameters(recurse=False)``
# are the ones it owns itself, so the counts below add up to the total without
# counting anything twice.
rows = []
for name, module in net.named_modules():
    own = sum(p.numel() for p in module.parameters(recurse=False))
    if own:
        rows.append((name, type(module).__name__, own))
total = sum(p.numel() for p in net.parameters())

for name, kind, count in rows:
    print(f"{name:18} {kind:8} {count:7,d}")
print(f"{'total':27} {total:7,d}")
assert sum(count for *_, count in rows) == total

# %%
# Buffers are state, not parameters
# ---------------------------------
# ``FixedHiddenMLP`` keeps its constant random weight in a buffer: it is saved
# in the ``state_dict`` (so the count of saved numbers is larger) but no
# optimizer ever changes it.
buffers = {name: tuple(b.shape) for name, b in net.named_buffers()}
saved = sum(t.numel() for t in net.state_dict().values())
print("buffers:", buffers)
print(f"numbers in state_dict: {saved:,d} = {total:,d} parameters + 400 buffer entries")

# %%
# Trace the shapes
# ----------------
# :func:`dlcomp.trace_shapes` hooks every block and runs one batch through the
# network. Containers finish after the blocks inside them, so they come later.
from dlcomp import trace_shapes

X = torch.rand(4, 20)
for row in trace_shapes(net, X):
    print(f"{row.name or '(net)':18} {row.kind:15} {row.inputs} -> {row.output}")

# %%
# Where the parameters live
# -------------------------
# One bar per block that owns parameters, coloured by the top-level block it
# belongs to.
import matplotlib.pyplot as plt

from dlcomp.bench import show

top_level = [name.split(".")[0] for name, *_ in rows]
colours = {key: f"C{i}" for i, key in enumerate(dict.fromkeys(top_level))}
labels = [f"{name} ({kind})" for name, kind, _ in rows]
counts = [count for *_, count in rows]

nest_share = sum(p.numel() for p in net[0].parameters()) / total
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
ax.barh(labels, counts, color=[colours[key] for key in top_level])
ax.invert_yaxis()
ax.set_xlabel("parameters (count)")
ax.set_title(f"The chimera: {total:,d} parameters, {nest_share:.0%} in the NestMLP")
for key, colour in colours.items():
    kind = type(net[int(key)]).__name__
    ax.bar(0, 0, color=colour, label=f"block {key}: {kind}")
ax.legend(loc="lower right", title=f"torch {torch.__version__}")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# See also
# --------
# - The chapter page: :doc:`/blocks`.
# - API: :func:`dlcomp.chimera`, :func:`dlcomp.trace_shapes`,
#   :class:`dlcomp.FixedHiddenMLP`.
