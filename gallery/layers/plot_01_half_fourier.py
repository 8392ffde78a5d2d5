"""
Fourier features with a custom layer
====================================

Feed signals made of a few sine waves through :class:`dlcomp.HalfFourier`,
the layer from the section's second exercise, and plot the magnitudes of the
coefficients it returns. You will see a peak at each frequency in the
signal, and, for a real signal of odd length, the signal rebuilt exactly
from the half that the layer keeps.
"""

# %%
# Signals with known frequencies
# ------------------------------
# Three signals of length 101 (odd), each a sum of sines at whole numbers of
# cycles per window, plus a little noise.
import math

import torch

from dlcomp import HalfFourier

torch.manual_seed(0)
n = 101
t = torch.arange(n) / n
frequencies = [(3,), (5, 12), (8, 20, 33)]
signals = torch.stack(
    [
        sum(torch.sin(2 * math.pi * f * t) for f in freqs) + 0.1 * torch.randn(n)
        for freqs in frequencies
    ]
)  # (3, n)

# %%
# The layer
# ---------
# ``HalfFourier`` keeps the first ``ceil(n / 2) = 51`` of the 101 coefficients.
layer = HalfFourier()
coefficients = layer(signals)  # (3, 51), complex
print(coefficients.shape, coefficients.dtype)
peaks = [
    sorted(c.abs().topk(len(f)).indices.tolist())
    for c, f in zip(coefficients, frequencies, strict=True)
]
print(
    "largest coefficients at:",
    peaks,
    "- the frequencies:",
    [list(f) for f in frequencies],
)

# %%
# Nothing is lost for a real signal of odd length
# -----------------------------------------------
# The other 50 coefficients are complex conjugates of these, so the inverse
# real FFT rebuilds each signal.
rebuilt = torch.fft.irfft(coefficients, n=n)
print("signals rebuilt exactly:", torch.allclose(rebuilt, signals, atol=1e-5))

# %%
# Plot the spectra
# ----------------
import matplotlib.pyplot as plt

from dlcomp.bench import show

fig, axes = plt.subplots(len(frequencies), 2, figsize=(9, 6), layout="constrained")
for row, (signal, coeff, freqs) in enumerate(
    zip(signals, coefficients, frequencies, strict=True)
):
    axes[row, 0].plot(t, signal)
    axes[row, 0].set_ylabel("amplitude")
    axes[row, 1].stem(coeff.abs().numpy(), markerfmt=" ", basefmt=" ")
    axes[row, 1].set_ylabel("|coefficient|")
    axes[row, 1].set_title(f"peaks at {list(freqs)} cycles", fontsize="small")
axes[-1, 0].set_xlabel("time (fraction of the window)")
axes[-1, 1].set_xlabel("frequency (cycles per window)")
kept = coefficients.shape[-1]
fig.suptitle(f"HalfFourier keeps {kept} of {n} coefficients: one peak per sine")
fig.text(0.99, 0.0, f"torch {torch.__version__}, CPU", ha="right", fontsize="small")
show(fig, globals().get("__file__"))  # or saved next to the script

# %%
# See also
# --------
# - The chapter page: :doc:`/custom-layers` (exercise 2).
# - API: :class:`dlcomp.HalfFourier`.
