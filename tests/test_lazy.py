"""Tests of dlcomp.lazy: deferred initialization in PyTorch."""

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from dlcomp import (
    LazyMyLinear,
    MyLinear,
    init_lazy,
    init_xavier,
    lazy_mlp,
    materialize,
    uninitialized_parameters,
)
from dlcomp.pitfalls import init_normal_by_type


def test_parameters_before_data_are_placeholders():
    net = lazy_mlp()
    assert all(isinstance(p, UninitializedParameter) for p in net.parameters())
    assert uninitialized_parameters(net) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(
        RuntimeError, match="Can't access the shape of an uninitialized"
    ):
        net[0].weight.shape  # noqa: B018


@pytest.mark.parametrize("in_features", [3, 20, 100])
def test_first_batch_fixes_the_shapes(in_features):
    net = materialize(lazy_mlp(), torch.rand(1, in_features))
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(256, in_features), (256,), (10, 256), (10,)]
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    assert uninitialized_parameters(net) == []


def test_materialize_builds_no_graph_and_returns_the_net():
    net = lazy_mlp()
    assert materialize(net, torch.rand(2, 20)) is net
    assert all(p.grad is None for p in net.parameters())


def test_materialize_needs_an_example():
    with pytest.raises(TypeError, match="needs an example input"):
        materialize(lazy_mlp())


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.LazyLinear(2), nn.LazyLinear(2)

    def forward(self, x, use_b=False):
        return self.b(x) if use_b else self.a(x)


def test_materialize_reports_lazy_modules_the_pass_did_not_reach():
    with pytest.raises(
        RuntimeError, match=r"\['b.weight', 'b.bias'\] are still uninitialized"
    ):
        materialize(Branchy(), torch.rand(1, 3))


def test_init_lazy_initializes_after_the_dry_run():
    net = init_lazy(lazy_mlp(), torch.rand(1, 20), init_fn=init_xavier)
    bound = (6 / (20 + 256)) ** 0.5
    assert net[0].weight.abs().max() <= bound


def test_init_lazy_on_the_book_initializer_is_no_longer_skipped():
    net = init_lazy(
        nn.Sequential(nn.LazyLinear(1000)),
        torch.rand(1, 50),
        init_fn=init_normal_by_type,
    )
    # after the dry run the layer *is* an nn.Linear, so even type(m) == works
    assert net[0].weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_first_layer_given_later_layers_lazy():
    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.LazyLinear(10))
    assert net[0].weight.shape == (256, 20)  # initialized at once
    assert uninitialized_parameters(net) == ["2.weight", "2.bias"]
    net(torch.rand(2, 20))
    assert net[2].weight.shape == (10, 256)


def test_mismatched_dimensions_fail_at_the_first_forward():
    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.LazyLinear(10))
    with pytest.raises(
        RuntimeError,
        match=r"mat1 and mat2 shapes cannot be multiplied \(2x30 and 20x256\)",
    ):
        net(torch.rand(2, 30))


def test_a_materialized_lazy_layer_is_fixed_to_its_first_shape():
    net = materialize(lazy_mlp(), torch.rand(1, 5))
    with pytest.raises(RuntimeError, match=r"2x7 and 5x256"):
        net(torch.rand(2, 7))


def test_adagrad_built_before_the_dry_run_fails():
    net = lazy_mlp()
    with pytest.raises(ValueError, match="uninitialized parameter"):
        torch.optim.Adagrad(net.parameters())
    materialize(net, torch.rand(1, 20))
    torch.optim.Adagrad(net.parameters())  # after the dry run: fine


def test_sgd_built_before_the_dry_run_holds_the_same_parameters():
    net = lazy_mlp()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    ids = [id(p) for p in net.parameters()]
    net(torch.rand(4, 20)).sum().backward()
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == ids
    before = net[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(net[0].weight, before)


def test_lazy_init_draws_in_a_different_order():
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    torch.manual_seed(0)
    lazy = nn.Sequential(nn.LazyLinear(4), nn.Linear(4, 2))
    materialize(lazy, torch.rand(1, 3))
    assert not torch.equal(eager[1].weight, lazy[1].weight)


def test_convert_dtype_before_the_dry_run():
    net = lazy_mlp().to(torch.float64)
    materialize(net, torch.rand(1, 20, dtype=torch.float64))
    assert {p.dtype for p in net.parameters()} == {torch.float64}


# --- LazyMyLinear ---------------------------------------------------------------------


def test_lazy_mylinear_becomes_mylinear():
    layer = LazyMyLinear(3)
    assert repr(layer) == "LazyMyLinear(in_units=0, units=3)"
    assert isinstance(layer.weight, UninitializedParameter)
    out = layer(torch.rand(2, 7))
    assert out.shape == (2, 3)
    assert type(layer) is MyLinear
    assert (layer.in_units, tuple(layer.weight.shape), tuple(layer.bias.shape)) == (
        7,
        (7, 3),
        (3,),
    )


def test_lazy_mylinear_constructor_allocates_and_initializes_nothing(monkeypatch):
    made, drawn = [], []
    empty, normal_ = torch.empty, nn.init.normal_

    def recording_empty(*args, **kwargs):
        made.append(tensor := empty(*args, **kwargs))
        return tensor

    def recording_normal_(tensor, *args, **kwargs):
        drawn.append(tuple(tensor.shape))
        return normal_(tensor, *args, **kwargs)

    monkeypatch.setattr(torch, "empty", recording_empty)
    monkeypatch.setattr(nn.init, "normal_", recording_normal_)
    layer = LazyMyLinear(3)
    assert isinstance(layer.weight, UninitializedParameter)
    assert isinstance(layer.bias, UninitializedParameter)
    assert [t.numel() for t in made] == [0] * len(made)  # no (1, units) weight
    assert drawn == []  # nothing initialized before the first batch
    layer(torch.rand(2, 5))
    assert drawn == [(5, 3), (3,)]  # once, at the first batch, with the real shapes


def test_lazy_mylinear_draws_what_mylinear_draws():
    X = torch.rand(2, 5)
    torch.manual_seed(0)
    lazy = LazyMyLinear(3)
    lazy(X)
    torch.manual_seed(0)
    eager = MyLinear(5, 3)
    assert torch.equal(lazy.weight, eager.weight)
    assert torch.equal(lazy.bias, eager.bias)
    assert torch.equal(lazy(X), eager(X))


def test_lazy_mylinear_keeps_device_and_dtype_of_the_placeholders():
    layer = LazyMyLinear(2, device="meta", dtype=torch.float64)
    assert (layer.weight.device.type, layer.weight.dtype) == ("meta", torch.float64)
    assert (layer.bias.device.type, layer.bias.dtype) == ("meta", torch.float64)


def test_lazy_mylinear_in_a_network_trains():
    net = nn.Sequential(LazyMyLinear(8), LazyMyLinear(1))
    materialize(net, torch.rand(1, 64))
    X = torch.rand(16, 64)
    net(X).sum().backward()
    assert net[1].weight.grad is not None


def test_lazy_mylinear_dtype_and_scalar_input():
    layer = LazyMyLinear(2, dtype=torch.float64)
    layer(torch.rand(1, 3, dtype=torch.float64))
    assert layer.weight.dtype == torch.float64
    with pytest.raises(ValueError, match="got a scalar"):
        LazyMyLinear(2)(torch.tensor(1.0))


def lazy_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.LazyConv2d(6, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.LazyLinear(10),
    )


@pytest.mark.parametrize(
    ("image", "conv_weight", "linear_weight"),
    [((1, 28, 28), (6, 1, 5, 5), (10, 864)), ((3, 32, 32), (6, 3, 5, 5), (10, 1176))],
)
def test_the_image_size_fixes_the_linear_layer_of_a_lazy_cnn(
    image, conv_weight, linear_weight
):
    cnn = materialize(lazy_cnn(), torch.zeros(1, *image))
    assert tuple(cnn[0].weight.shape) == conv_weight
    assert tuple(cnn[4].weight.shape) == linear_weight


def test_uninitialized_parameters_lists_lazy_buffers_too():
    net = nn.Sequential(nn.LazyLinear(8), nn.LazyBatchNorm1d())
    assert uninitialized_parameters(net) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
    ]


def test_uninitialized_parameters_knows_lazy_buffers_by_type_not_by_name():
    class RunningStat(UninitializedBuffer):
        pass

    module = nn.Module()
    module.register_buffer("stat", RunningStat())
    module.register_buffer("fixed", torch.zeros(2))
    assert uninitialized_parameters(module) == ["stat"]


def test_load_state_dict_materializes_a_lazy_network_in_place():
    trained = materialize(lazy_mlp(), torch.rand(1, 20))
    fresh = lazy_mlp()
    optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1)
    fresh.load_state_dict(trained.state_dict())
    assert uninitialized_parameters(fresh) == []
    assert [tuple(p.shape) for p in fresh.parameters()] == [
        (256, 20),
        (256,),
        (10, 256),
        (10,),
    ]
    for p, q in zip(fresh.parameters(), trained.parameters(), strict=True):
        assert torch.equal(p, q)
    # materialized in place: an optimizer built before the load is not stale
    held = optimizer.param_groups[0]["params"]
    assert all(p is q for p, q in zip(held, fresh.parameters(), strict=True))
    assert type(fresh[0]) is nn.LazyLinear  # until its first call
    fresh(torch.rand(2, 20))
    assert type(fresh[0]) is nn.Linear
    assert fresh[0].in_features == 20


def test_a_lazy_network_takes_any_checkpoint_shape_but_a_dry_run_first_refuses():
    color = materialize(lazy_cnn(), torch.zeros(1, 3, 32, 32)).state_dict()
    gray = lazy_cnn()
    gray.load_state_dict(color)  # no complaint: it becomes the color network
    assert tuple(gray[0].weight.shape) == (6, 3, 5, 5)
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 1"):
        gray(torch.zeros(1, 1, 28, 28))
    checked = materialize(lazy_cnn(), torch.zeros(1, 1, 28, 28))
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.weight"):
        checked.load_state_dict(color)


def test_a_lazy_conv_loaded_from_a_checkpoint_keeps_in_channels_zero():
    color = materialize(lazy_cnn(), torch.zeros(1, 3, 32, 32)).state_dict()
    loaded = lazy_cnn()
    loaded.load_state_dict(color)
    loaded(torch.zeros(1, 3, 32, 32))
    assert type(loaded[0]) is nn.Conv2d
    assert loaded[0].in_channels == 0  # PyTorch leaves it; the weight knows 3
    assert loaded[0].weight.shape[1] == 3


def test_a_partial_checkpoint_with_strict_false_leaves_layers_lazy():
    state = materialize(lazy_mlp(), torch.rand(1, 20)).state_dict()
    fresh = lazy_mlp()
    fresh.load_state_dict({k: state[k] for k in ("0.weight", "0.bias")}, strict=False)
    assert uninitialized_parameters(fresh) == ["2.weight", "2.bias"]


def test_layer_to_layer_mismatch_fails_at_the_first_forward():
    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(RuntimeError, match=r"\(2x256 and 128x10\)"):
        net(torch.rand(2, 20))
    fixed = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.LazyLinear(10))
    assert fixed(torch.rand(2, 20)).shape == (2, 10)
