"""Tests of dlcomp.layers: gradients, shapes, errors, and the two exercises' maths."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck

from dlcomp import CenteredLayer, HalfFourier, MyLinear, TensorReduction
from dlcomp.pitfalls import DataMyLinear

BOUNDED = settings(max_examples=40, deadline=None)
sizes = st.integers(min_value=1, max_value=6)


def f64(*shape):
    return torch.rand(*shape, dtype=torch.float64, requires_grad=True)


# --- CenteredLayer -------------------------------------------------------------------


def test_centered_layer_subtracts_the_mean():
    out = CenteredLayer()(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(out, torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]))


def test_centered_layer_in_a_model_has_mean_zero():
    net = nn.Sequential(nn.Linear(8, 128), CenteredLayer())
    Y = net(torch.rand(4, 8))
    assert abs(Y.mean().item()) < 1e-6
    assert list(CenteredLayer().parameters()) == []


@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        (torch.arange(5), TypeError, "floating point"),
        (torch.empty(0, 3), ValueError, "empty tensor of shape \\(0, 3\\)"),
    ],
)
def test_centered_layer_bad_input(X, error, message):
    with pytest.raises(error, match=message):
        CenteredLayer()(X)


# --- MyLinear ------------------------------------------------------------------------


def test_mylinear_parameters_and_repr():
    layer = MyLinear(5, 3)
    assert [(n, tuple(p.shape)) for n, p in layer.named_parameters()] == [
        ("weight", (5, 3)),
        ("bias", (3,)),
    ]
    assert repr(layer) == "MyLinear(in_units=5, units=3)"


def test_mylinear_computes_relu_of_affine_map():
    layer = MyLinear(4, 2)
    X = torch.randn(3, 4)
    expected = torch.relu(X @ layer.weight + layer.bias)
    assert torch.equal(layer(X), expected)
    assert (layer(X) >= 0).all()


def test_mylinear_factory_keywords():
    layer = MyLinear(2, 3, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == layer.bias.dtype == torch.float64


def test_mylinear_reset_parameters_redraws():
    layer = MyLinear(4, 4)
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(layer.weight, before)


def test_mylinear_in_sequential_trains():
    net = nn.Sequential(MyLinear(64, 8), MyLinear(8, 1))
    with torch.no_grad():
        for layer in net:
            layer.bias.fill_(10.0)  # every ReLU active, so every weight gets a gradient
    X = torch.rand(16, 64)
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    net(X).sum().backward()
    optimizer.step()
    for b, p in zip(before, net.parameters(), strict=True):
        assert not torch.equal(b, p)


def test_a_dead_final_relu_stops_all_gradients():
    net = nn.Sequential(MyLinear(64, 8), MyLinear(8, 1))
    with torch.no_grad():
        net[1].bias.fill_(-1e3)  # the last ReLU outputs 0 for every input
    net(torch.rand(16, 64)).sum().backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())


def test_data_mylinear_gets_no_gradient():
    layer = DataMyLinear(5, 3)
    hidden = nn.Linear(4, 5)
    out = layer(hidden(torch.rand(2, 4)))  # requires grad through `hidden` only
    out.sum().backward()
    assert layer.weight.grad is None
    assert layer.bias.grad is None
    assert hidden.weight.grad is not None


def test_data_mylinear_alone_cannot_even_backward():
    out = DataMyLinear(5, 3)(torch.rand(2, 5))
    assert not out.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 3), ValueError, "MyLinear: in_units must be an int >= 1, got 0"),
        ((3, -1), ValueError, "MyLinear: units must be an int >= 1, got -1"),
        ((2.5, 3), TypeError, "MyLinear: in_units must be an int >= 1, got float 2.5"),
    ],
)
def test_mylinear_bad_sizes(args, error, message):
    with pytest.raises(error, match=message):
        MyLinear(*args)


def test_mylinear_wrong_input_shape():
    with pytest.raises(
        ValueError, match=r"MyLinear expects input of shape \(batch, 5\)"
    ):
        MyLinear(5, 3)(torch.rand(2, 4))


# --- TensorReduction ---------------------------------------------------------------


def einsum_reference(x, W):
    return torch.einsum("bi,ijk,bj->bk", x, W, x)


@BOUNDED
@given(batch=sizes, n=sizes, m=sizes)
def test_tensor_reduction_matches_einsum(batch, n, m):
    layer = TensorReduction(n, m, dtype=torch.float64)
    x = torch.randn(batch, n, dtype=torch.float64)
    torch.testing.assert_close(layer(x), einsum_reference(x, layer.weight))


def test_tensor_reduction_by_the_definition():
    layer = TensorReduction(3, 2, dtype=torch.float64)
    x = torch.randn(1, 3, dtype=torch.float64)
    W = layer.weight.detach()
    y = [
        sum(W[i, j, k] * x[0, i] * x[0, j] for i in range(3) for j in range(3))
        for k in range(2)
    ]
    torch.testing.assert_close(layer(x)[0], torch.stack(y))


def test_tensor_reduction_extra_batch_dims_and_errors():
    layer = TensorReduction(4, 2)
    assert layer(torch.rand(5, 3, 4)).shape == (5, 3, 2)
    assert repr(layer) == "TensorReduction(in_features=4, out_features=2)"
    with pytest.raises(
        ValueError, match=r"TensorReduction expects input of shape \(batch, 4\)"
    ):
        layer(torch.rand(2, 3))


# --- HalfFourier -------------------------------------------------------------------


@BOUNDED
@given(batch=sizes, n=st.integers(min_value=1, max_value=33))
def test_half_fourier_is_the_leading_half_of_the_fft(batch, n):
    x = torch.randn(batch, n, dtype=torch.float64)
    out = HalfFourier()(x)
    assert out.shape == (batch, math.ceil(n / 2))
    torch.testing.assert_close(out, torch.fft.fft(x)[..., : math.ceil(n / 2)])
    if n % 2:  # odd length, real input: exactly rfft, nothing lost
        torch.testing.assert_close(out, torch.fft.rfft(x))
    else:  # even length: rfft has one more, the Nyquist coefficient
        torch.testing.assert_close(out, torch.fft.rfft(x)[..., :-1])


@BOUNDED
@given(n=st.integers(min_value=2, max_value=16))
def test_half_fourier_of_complex_input_loses_information(n):
    x = torch.randn(n, dtype=torch.complex128)
    y = x.clone()
    y_full = torch.fft.fft(y)
    y_full[math.ceil(n / 2) :] += 1  # change only the dropped coefficients
    y = torch.fft.ifft(y_full)
    assert not torch.allclose(x, y)
    torch.testing.assert_close(HalfFourier()(x), HalfFourier()(y))


def test_half_fourier_dtypes_and_errors():
    assert HalfFourier()(torch.rand(4)).dtype == torch.complex64
    assert HalfFourier()(torch.rand(4, dtype=torch.float64)).dtype == torch.complex128
    for bad in (torch.tensor(1.0), torch.empty(3, 0)):
        with pytest.raises(ValueError, match=r"shape \(\.\.\., n\) with n >= 1"):
            HalfFourier()(bad)


# --- gradients flow through every layer (float64 gradcheck) --------------------------


@pytest.mark.parametrize(
    "layer",
    [CenteredLayer(), HalfFourier()],
    ids=["CenteredLayer", "HalfFourier"],
)
def test_gradcheck_parameterless(layer):
    assert gradcheck(layer, (f64(3, 5),))


@pytest.mark.parametrize(
    "layer",
    [
        MyLinear(4, 3, dtype=torch.float64),
        TensorReduction(4, 3, dtype=torch.float64),
    ],
    ids=["MyLinear", "TensorReduction"],
)
def test_gradcheck_with_respect_to_input_and_parameters(layer):
    params = list(layer.parameters())
    names = [n for n, _ in layer.named_parameters()]

    def fn(x, *values):
        return torch.func.functional_call(
            layer, dict(zip(names, values, strict=True)), (x,)
        )

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    values = [p.detach().clone().requires_grad_(True) for p in params]
    assert gradcheck(fn, (x, *values))
