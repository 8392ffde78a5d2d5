"""Tests of dlcomp.parameters: every claim the 5.2 page makes."""

import copy
import math

import pytest
import torch
from torch import nn

from dlcomp import (
    block2,
    init_42,
    init_constant,
    init_normal,
    init_xavier,
    my_init,
    parameter_table,
    rgnet,
    tied_mlp,
    track_norms,
)
from dlcomp.pitfalls import init_normal_by_type

INITIALIZERS = [init_normal, init_constant, init_xavier, init_42, my_init]


def big_layer() -> nn.Linear:
    return nn.Linear(1000, 1000)  # a million weights: tight statistics


# --- initializer statistics -------------------------------------------------------


def test_init_normal_statistics():
    layer = big_layer().apply(init_normal)
    w = layer.weight.detach()
    assert abs(w.mean().item()) < 1e-4  # standard error 1e-5
    assert w.std().item() == pytest.approx(0.01, rel=0.01)
    assert torch.equal(layer.bias, torch.zeros(1000))


def test_init_constant_values():
    layer = nn.Linear(4, 8).apply(init_constant)
    assert torch.equal(layer.weight, torch.ones(8, 4))
    assert torch.equal(layer.bias, torch.zeros(8))


def test_init_xavier_statistics():
    layer = nn.Linear(1000, 500).apply(init_xavier)
    bound = math.sqrt(6 / (1000 + 500))
    w = layer.weight.detach()
    assert w.abs().max().item() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_init_xavier_and_42_leave_the_bias_alone():
    for init in (init_xavier, init_42):
        layer = nn.Linear(4, 8)
        bias = layer.bias.detach().clone()
        layer.apply(init)
        assert torch.equal(layer.bias, bias)


def test_init_42_values():
    layer = nn.Linear(3, 5).apply(init_42)
    assert torch.equal(layer.weight, torch.full((5, 3), 42.0))


def test_my_init_three_way_distribution():
    w = big_layer().apply(my_init).weight.detach()
    zero, high, low = (w == 0), (w >= 5) & (w <= 10), (w <= -5) & (w >= -10)
    assert bool((zero | high | low).all())  # nothing else, e.g. nothing in (0, 5)
    n = w.numel()  # standard error of each share is below 5e-4
    assert zero.sum().item() / n == pytest.approx(0.5, abs=0.005)
    assert high.sum().item() / n == pytest.approx(0.25, abs=0.005)
    assert low.sum().item() / n == pytest.approx(0.25, abs=0.005)
    # within each band, uniform: its mean is the middle of the band
    assert w[high].mean().item() == pytest.approx(7.5, abs=0.02)
    assert w[low].mean().item() == pytest.approx(-7.5, abs=0.02)


@pytest.mark.parametrize("init", INITIALIZERS)
def test_initializers_touch_only_linear_layers(init):
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    before = copy.deepcopy(net[1].state_dict())
    net.apply(init)
    after = net[1].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("init", INITIALIZERS)
def test_initializers_refuse_an_unmaterialized_lazy_layer(init):
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 1))
    # isinstance finds the lazy layer, and torch.nn.init refuses it, with the fix
    fix = r"uninitialized parameter.*Call `forward` with a dummy batch"
    with pytest.raises(ValueError, match=fix):
        net.apply(init)


@pytest.mark.parametrize("init", INITIALIZERS)
def test_initializers_work_on_a_materialized_lazy_layer(init):
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 1))
    net(torch.rand(2, 4))  # net[0] is now a Linear(4, 8)
    plain = nn.Linear(4, 8)
    torch.manual_seed(0)
    net.apply(init)
    torch.manual_seed(0)
    plain.apply(init)
    # the same values as on a layer that was never lazy, from the same seed
    assert torch.equal(net[0].weight, plain.weight)
    if init in (init_normal, init_constant):  # these set the bias too
        assert torch.equal(net[0].bias, plain.bias)


def test_book_initializer_silently_skips_a_lazy_layer():
    net = nn.Sequential(nn.LazyLinear(1000))
    net.apply(init_normal_by_type)  # no error ...
    net(torch.rand(2, 1000))
    # ... and the layer has PyTorch's default init, std 1/sqrt(3 * 1000)
    assert net[0].weight.std().item() == pytest.approx(1 / math.sqrt(3000), rel=0.05)


# --- setting parameters directly --------------------------------------------------


def test_editing_data_after_forward_silently_corrupts_the_gradient():
    weight = nn.Linear(3, 1, bias=False).weight
    original = weight.detach().clone()
    loss = (weight**2).sum()  # d loss / d weight = 2 * weight, saved for backward
    weight.data += 1  # autograd is not told
    loss.backward()  # no error ...
    torch.testing.assert_close(weight.grad, 2 * (original + 1))  # ... wrong gradient
    assert not torch.allclose(weight.grad, 2 * original)


def test_editing_under_no_grad_after_forward_is_caught():
    weight = nn.Linear(3, 1, bias=False).weight
    loss = (weight**2).sum()
    with torch.no_grad():
        weight += 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --- nested names -------------------------------------------------------------------


def test_rgnet_names_follow_the_nesting():
    names = [name for name, _ in rgnet().named_parameters()]
    assert names[:2] == ["0.block 0.0.weight", "0.block 0.0.bias"]
    assert names[-2:] == ["1.weight", "1.bias"]
    assert len(names) == 4 * 4 + 2


def test_block2_children_are_named_blocks():
    assert [n for n, _ in block2().named_children()] == [f"block {i}" for i in range(4)]


# --- tied parameters ----------------------------------------------------------------


def test_tied_layers_are_the_same_object():
    net = tied_mlp()
    assert net[2] is net[4]
    assert net[2].weight is net[4].weight
    with torch.no_grad():
        net[2].weight[0, 0] = 100.0
    assert net[4].weight[0, 0] == 100.0


def test_tied_gradient_is_the_sum_of_the_gradients_of_its_uses():
    torch.manual_seed(0)
    tied = tied_mlp()
    untied = copy.deepcopy(tied)
    untied[4] = copy.deepcopy(untied[2])  # same values, separate parameters
    assert untied[2].weight is not untied[4].weight
    X = torch.rand(8, 4)
    tied(X).sum().backward()
    untied(X).sum().backward()
    for attr in ("weight", "bias"):
        summed = getattr(untied[2], attr).grad + getattr(untied[4], attr).grad
        torch.testing.assert_close(getattr(tied[2], attr).grad, summed)
        assert not torch.allclose(getattr(untied[2], attr).grad, summed)


# --- parameter_table -----------------------------------------------------------------


def test_table_of_an_untied_net():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    table = parameter_table(net)
    assert [row.name for row in table] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert table.total == table.total_by_name == 49
    assert table.total == sum(p.numel() for p in net.parameters())
    assert all(row.shared_with == () for row in table)


def test_table_of_a_tied_net_counts_shared_storage_once():
    table = parameter_table(tied_mlp())
    rows = {row.name: row for row in table}
    assert list(rows) == [
        "0.weight", "0.bias", "2.weight", "2.bias",
        "4.weight", "4.bias", "6.weight", "6.bias",
    ]  # fmt: skip
    assert rows["2.weight"].shared_with == ("4.weight",)
    assert rows["4.bias"].shared_with == ("2.bias",)
    assert table.total == 40 + 72 + 9  # what the optimizer trains
    assert table.total_by_name == 40 + 72 + 72 + 9
    assert table.total == sum(p.numel() for p in tied_mlp().parameters())
    # the page's plain-PyTorch counts: parameters() once, state_dict() per name
    by_name = tied_mlp().state_dict().values()
    assert table.total_by_name == sum(v.numel() for v in by_name)


def test_table_finds_tying_by_assignment():
    encoder, decoder = nn.Linear(6, 3, bias=False), nn.Linear(3, 6, bias=False)
    net = nn.Sequential(encoder, decoder)
    decoder.weight = nn.Parameter(encoder.weight.T)  # a view of the same storage
    table = parameter_table(net)
    assert table.rows[1].shared_with == ("0.weight",)
    assert table.total == 36  # the transposed view is a different view: counted


def test_table_columns_and_renderings():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    net[1].bias.requires_grad_(False)
    net = net.to(torch.float64)
    table = parameter_table(net)
    row = table.rows[3]
    assert (row.shape, row.dtype, row.device, row.numel, row.requires_grad) == (
        (1,), "float64", "cpu", 1, False,
    )  # fmt: skip
    text = str(table)
    assert text.splitlines()[0].split() == [
        "name", "shape", "dtype", "device", "numel", "grad", "shared", "with",
    ]  # fmt: skip
    assert text.splitlines()[-1] == "13 parameters"
    html = table._repr_html_()
    assert html.count("<tr>") == 1 + 4
    assert "<caption>13 parameters</caption>" in html


def test_table_escapes_names_in_html():
    net = nn.Module()
    net.register_parameter("a<b>", nn.Parameter(torch.zeros(1)))
    assert "a&lt;b&gt;" in parameter_table(net)._repr_html_()


def test_table_of_a_lazy_net():
    table = parameter_table(nn.Sequential(nn.LazyLinear(8), nn.Linear(8, 1)))
    assert table.uninitialized == 2
    assert table.rows[0].shape is None
    assert table.total == 9
    assert "2 not initialized yet (lazy)" in str(table)


def test_table_refuses_a_non_module():
    with pytest.raises(TypeError, match=r"expects an nn\.Module, got dict"):
        parameter_table({})


# --- track_norms ---------------------------------------------------------------------


def test_track_norms_records_every_step():
    net = tied_mlp()
    X, y = torch.rand(32, 4), torch.rand(32, 1)
    history = track_norms(net, X, y, steps=20)
    assert len(history.loss) == 20
    assert set(history.weight_norm) == set(history.grad_norm)
    assert "4.weight" not in history.grad_norm  # the tied layer is listed once
    assert all(len(v) == 20 for v in history.grad_norm.values())
    assert history.loss[-1] < history.loss[0]
    assert history.weight_norm["6.weight"][-1] == pytest.approx(
        net[6].weight.norm().item()
    )


def test_track_norms_bad_arguments():
    X, y = torch.rand(2, 4), torch.rand(2, 1)
    wrong = r"track_norms: steps must be an int >= 1, got 0$"
    with pytest.raises(ValueError, match=wrong):
        track_norms(tied_mlp(), X, y, steps=0)
    with pytest.raises(TypeError, match=r"steps must be an int >= 1, got float 2\.5"):
        track_norms(tied_mlp(), X, y, steps=2.5)
    with pytest.raises(ValueError, match="no parameters"):
        track_norms(nn.ReLU(), torch.rand(2, 4), torch.rand(2, 4))
