"""
Watch activations with forward hooks
====================================

``net(X)`` runs the hooks registered on ``net``; ``net.forward(X)`` skips
them. This script uses hooks to record the activations of every layer of a
deep network built with :func:`dlcomp.stack_blocks`, and plots how their
spread changes with depth under PyTorch's default initialization. You will
see which hooks a direct ``forward`` call skips (only the called module's
own), and the spread of the activations fall several-fold over the first
blocks before it levels off.
"""

# %%
# A deep stack of blocks
# ----------------------
# Eight fresh copies of ``Linear(64, 64) -> ReLU``.
import torch
from torch import nn

from dlcomp import stack_blocks

torch.manual_seed(0)


def block() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU())


net = stack_blocks(block, 8)
X = torch.randn(512, 64)

# %%
# Record every ReLU's output with a hook
# --------------------------------------
# The hook stores a detached copy of the output; the handles let us remove the
# hooks afterwards, so the network is left as it was. One more hook on the
# whole network counts how often it is called.
activations: dict[str, torch.Tensor] = {}
calls = []


def record(name):
    def hook(module, args, output):
        activations[name] = output.detach()

    return hook


handles = [
    module.register_forward_hook(record(name))
    for name, module in net.named_modules()
    if isinstance(module, nn.ReLU)
]
handles.append(net.register_forward_hook(lambda module, args, out: calls.append(1)))

net.forward(X)  # skips net's own hooks; its blocks are still called via __call__
print(f"net.forward(X): net's hook ran {len(calls)}x, ReLU hooks {len(activations)}x")
activations.clear()
net(X)  # __call__: net's hook runs too
print(f"net(X):         net's hook ran {len(calls)}x, ReLU hooks {len(activations)}x")
for handle in handles:
    handle.remove()

# %%
# ``nn.Sequential.forward`` calls each block as ``block(X)``, so the blocks'
# hooks run either way; only the hook of the module whose ``forward`` you call
# yourself is skipped. A model driven through ``model.forward(X)`` hides from
# every tool that hooks the model itself.

# %%
# Plot the spread of the activations by depth
# -------------------------------------------
import matplotlib.pyplot as plt

from dlcomp.bench import show

names = list(activations)
stds = [activations[name].std().item() for name in names]
depth = range(1, len(names) + 1)
fall = stds[0] / min(stds)
print("std by depth:", [f"{s:.3g}" for s in stds])
print(f"the spread falls {fall:.1f}x from block 0 to its smallest value")

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
left.plot(depth, stds, marker="o")
left.set_xlabel("block (depth)")
left.set_ylabel("std of ReLU output")
left.set_yscale("log")
left.set_title(f"Spread falls {fall:.0f}x, then levels off")
for name in (names[0], names[len(names) // 2], names[-1]):
    right.hist(
        activations[name].flatten().numpy(),
        bins=60,
        histtype="step",
        label=f"block {name.split('.')[0]}",
        log=True,
    )
right.set_xlabel("activation value")
right.set_ylabel("count (log scale)")
right.set_title("Distribution at three depths")
right.legend(title=f"torch {torch.__version__}, CPU")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# PyTorch's default ``nn.Linear`` initialization (uniform weights with
# variance ``1/(3 fan_in)``) does not preserve the variance through ReLU
# layers: each block scales it down until the biases, which do not shrink,
# set the level. Section 5.2 shows how to choose the initialization yourself.
#
# See also
# --------
# - The chapter page: :doc:`/blocks` (``net(X)`` versus ``net.forward(X)``).
# - API: :func:`dlcomp.stack_blocks`, :func:`dlcomp.trace_shapes`.
