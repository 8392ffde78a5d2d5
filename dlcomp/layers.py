r"""Section 5.4, "Custom layers": layers with and without parameters.

- :class:`~dlcomp.CenteredLayer`: subtracts the mean; no parameters.
- :class:`~dlcomp.MyLinear`: the book's dense layer (with its ReLU), written
  so that gradients reach its parameters. The notes' version computes with
  ``self.weight.data`` and trains nothing; see
  :class:`dlcomp.pitfalls.DataMyLinear`.
- The exercises: :class:`~dlcomp.TensorReduction`
  (:math:`y_k = \sum_{i,j} W_{ijk} x_i x_j`) and :class:`~dlcomp.HalfFourier`
  (the leading half of the Fourier coefficients).
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CenteredLayer", "HalfFourier", "MyLinear", "TensorReduction"]


class CenteredLayer(nn.Module):
    r"""Subtract the mean of the whole input: :math:`y = x - \bar{x}`.

    A layer without parameters. The mean is taken over *all* elements (the
    book's definition), so the output of a batch has mean 0 up to rounding.

    Shape:
        - Input: any shape, floating point or complex, at least one element.
        - Output: same shape as the input.

    Examples:
        >>> layer = CenteredLayer()
        >>> layer(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
        tensor([-2., -1.,  0.,  1.,  2.])
        >>> list(layer.parameters())
        []
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return ``X - X.mean()``."""
        if not (X.is_floating_point() or X.is_complex()):
            raise TypeError(
                "CenteredLayer expects a floating point (or complex) tensor, got "
                f"dtype {X.dtype}; convert it first, e.g. X.float()"
            )
        if X.numel() == 0:
            raise ValueError(
                f"CenteredLayer got an empty tensor of shape {tuple(X.shape)}; "
                "the mean of no values is undefined"
            )
        return X - X.mean()


class MyLinear(nn.Module):
    r"""The book's dense layer with ReLU: :math:`y = \mathrm{ReLU}(x W + b)`.

    Note the orientation: ``weight`` has shape ``(in_units, units)`` and the
    layer computes ``X @ weight`` (PyTorch's :class:`torch.nn.Linear` stores
    the transpose). The forward pass uses the parameters themselves, so
    autograd reaches them; it must not read ``.data`` (see
    :class:`dlcomp.pitfalls.DataMyLinear`).

    Args:
        in_units: size of each input sample.
        units: size of each output sample.
        device: where to create the parameters.
        dtype: their floating point type.

    Shape:
        - Input: :math:`(*, \text{in\_units})`.
        - Output: :math:`(*, \text{units})`, non-negative.

    Attributes:
        weight (torch.nn.Parameter): shape ``(in_units, units)``, drawn from
            :math:`\mathcal{N}(0, 1)` as in the book.
        bias (torch.nn.Parameter): shape ``(units,)``, drawn from
            :math:`\mathcal{N}(0, 1)`.

    Examples:
        >>> layer = MyLinear(5, 3)
        >>> layer
        MyLinear(in_units=5, units=3)
        >>> layer(torch.rand(2, 5)).shape
        torch.Size([2, 3])
        >>> layer(torch.rand(2, 5)).sum().backward()
        >>> layer.weight.grad.shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        in_units: int,
        units: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, size in (("in_units", in_units), ("units", units)):
            allowed = f"MyLinear: {name} must be an int >= 1"
            if isinstance(size, bool) or not hasattr(size, "__index__"):
                raise TypeError(f"{allowed}, got {type(size).__name__} {size!r}")
            if size < 1:
                raise ValueError(f"{allowed}, got {size}")
        self.in_units, self.units = int(in_units), int(units)  # NumPy ints too
        self.weight = nn.Parameter(
            torch.empty(self.in_units, self.units, device=device, dtype=dtype)
        )
        self.bias = nn.Parameter(torch.empty(self.units, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw weight and bias from the standard normal (the book's init)."""
        nn.init.normal_(self.weight)
        nn.init.normal_(self.bias)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return ``relu(X @ weight + bias)``; gradients reach both parameters."""
        if X.shape[-1:] != (self.in_units,):  # say which sizes disagree
            raise ValueError(
                f"{type(self).__name__} expects input of shape "
                f"(batch, {self.in_units}), got shape {tuple(X.shape)}"
            )
        return F.relu(X @ self.weight + self.bias)  # (*, units)

    def extra_repr(self) -> str:
        """Say what ``print(layer)`` shows: the two sizes."""
        return f"in_units={self.in_units}, units={self.units}"


class TensorReduction(nn.Module):
    r"""Exercise 1: a quadratic form per output, :math:`y_k = \sum_{i,j} W_{ijk}\, x_i x_j`.

    Every output is a weighted sum of all *pairwise products* of the inputs.
    Computed with :func:`torch.nn.functional.bilinear` (both inputs ``x``);
    the tests check it against ``torch.einsum("bi,ijk,bj->bk", x, W, x)``.

    Args:
        in_features: size :math:`n` of each input sample.
        out_features: number of outputs :math:`m`.
        device: where to create the weight.
        dtype: its floating point type.

    Shape:
        - Input: :math:`(*, n)`.
        - Output: :math:`(*, m)`.

    Attributes:
        weight (torch.nn.Parameter): shape ``(n, n, m)``, drawn from :math:`U(-1/n, 1/n)`.

    Examples:
        >>> layer = TensorReduction(4, 2)
        >>> x = torch.rand(3, 4)
        >>> layer(x).shape
        torch.Size([3, 2])
        >>> torch.allclose(layer(x), torch.einsum("bi,ijk,bj->bk", x, layer.weight, x))
        True
    """  # noqa: E501

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = (("in_features", in_features), ("out_features", out_features))
        for name, size in sizes:
            allowed = f"TensorReduction: {name} must be an int >= 1"
            if isinstance(size, bool) or not hasattr(size, "__index__"):
                raise TypeError(f"{allowed}, got {type(size).__name__} {size!r}")
            if size < 1:
                raise ValueError(f"{allowed}, got {size}")
        self.in_features, self.out_features = n, m = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(n, n, m, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the weight from :math:`U(-1/n, 1/n)`, keeping outputs of order 1."""
        bound = 1 / self.in_features
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`y_k = x^\top W_{::k}\, x` for every sample."""
        if X.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"TensorReduction expects input of shape (batch, {self.in_features}), "
                f"got shape {tuple(X.shape)}"
            )
        # bilinear wants the weight as (out, in1, in2): W[:, :, k] -> A[k]
        return F.bilinear(X, X, self.weight.permute(2, 0, 1))  # (*, m)

    def extra_repr(self) -> str:
        """Say what ``print(layer)`` shows: the two sizes."""
        return f"in_features={self.in_features}, out_features={self.out_features}"


class HalfFourier(nn.Module):
    r"""Exercise 2: the leading half of the discrete Fourier coefficients.

    For a signal :math:`x` of length :math:`n` along the last dimension, returns
    :math:`X_0, \dots, X_{h-1}` of :math:`X = \mathrm{DFT}(x)`
    (:func:`torch.fft.fft`), with :math:`h = \lceil n/2 \rceil`.

    - Odd :math:`n`: :math:`h = (n+1)/2`. For *real* input these are exactly
      the coefficients :func:`torch.fft.rfft` returns: the rest are their
      complex conjugates, so nothing is lost.
    - Even :math:`n`: :math:`h = n/2`, which leaves out the Nyquist
      coefficient :math:`X_{n/2}` (``rfft``'s last one) for real input.
    - *Complex* input has no such symmetry: the second half carries
      information that is dropped.

    The output is complex (``complex64`` for ``float32`` input). Gradients
    flow through it (the DFT is linear).

    Shape:
        - Input: :math:`(*, n)`, :math:`n \ge 1`.
        - Output: :math:`(*, \lceil n/2 \rceil)`, complex.

    Examples:
        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
        >>> HalfFourier()(x).shape
        torch.Size([3])
        >>> torch.allclose(HalfFourier()(x), torch.fft.rfft(x))  # odd n, real input
        True
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Return ``torch.fft.fft(X)[..., :ceil(n / 2)]``."""
        if X.dim() == 0 or X.shape[-1] == 0:
            raise ValueError(
                "HalfFourier expects signals along the last dimension, shape "
                f"(..., n) with n >= 1, got shape {tuple(X.shape)}"
            )
        n = X.shape[-1]
        spectrum: torch.Tensor = torch.fft.fft(X, dim=-1)
        return spectrum[..., : (n + 1) // 2]  # (*, ceil(n/2))
