"""Tests of dlcomp.blocks: every claim the 5.1 page makes about its blocks."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dlcomp import (
    MLP,
    FixedHiddenMLP,
    ModuleListSequential,
    MySequential,
    NestMLP,
    ParallelBlock,
    chimera,
    stack_blocks,
    trace_shapes,
)


@pytest.fixture
def X() -> torch.Tensor:
    return torch.rand(2, 20)


def names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_parameters()]


def assert_every_parameter_gets_a_gradient(net: nn.Module, X: torch.Tensor) -> None:
    net(X).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert param.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


# --- shapes and parameter names ------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "out_shape"),
    [
        (MLP, (2, 10)),
        (NestMLP, (2, 16)),
        (FixedHiddenMLP, ()),
        (chimera, ()),
        (
            lambda: MySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10)),
            (2, 10),
        ),
        (lambda: ModuleListSequential(nn.Linear(20, 5)), (2, 5)),
        (lambda: ParallelBlock(MLP(), NestMLP()), (2, 26)),
    ],
)
def test_output_shapes(factory, out_shape, X):
    assert factory()(X).shape == out_shape


def test_parameter_names_of_the_section_blocks():
    assert names(MLP()) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert names(NestMLP()) == [
        "net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
        "linear.weight", "linear.bias",
    ]  # fmt: skip
    assert names(chimera()) == [
        "0.net.0.weight", "0.net.0.bias", "0.net.2.weight", "0.net.2.bias",
        "0.linear.weight", "0.linear.bias", "1.weight", "1.bias",
        "2.linear.weight", "2.linear.bias",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "factory",
    [MLP, NestMLP, FixedHiddenMLP, chimera, lambda: ParallelBlock(MLP(), MLP())],
)
def test_gradients_reach_every_parameter(factory, X):
    assert_every_parameter_gets_a_gradient(factory(), X)


@pytest.mark.parametrize("block", [MLP, NestMLP, FixedHiddenMLP])
@pytest.mark.parametrize("bad_shape", [(2, 19), (19,), (2, 20, 3)])
def test_wrong_feature_count_is_a_clear_error(block, bad_shape):
    with pytest.raises(
        ValueError, match=r"expects input of shape \(batch, 20\).*got shape"
    ):
        block()(torch.rand(bad_shape))


# --- MySequential ---------------------------------------------------------------


def test_mysequential_behaves_like_nn_sequential(X):
    layers = [nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10)]
    mine, theirs = MySequential(*layers), nn.Sequential(*layers)
    assert torch.equal(mine(X), theirs(X))
    assert list(mine.state_dict()) == list(theirs.state_dict())
    assert names(mine) == names(theirs) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert repr(mine).replace("MySequential", "Sequential") == repr(theirs)


def test_mysequential_runs_a_block_given_twice_twice(X):
    # The same module in two places runs at both (as in nn.Sequential).
    relu, linear = nn.ReLU(), nn.Linear(20, 20)
    mine = MySequential(linear, relu, linear, relu)
    assert torch.equal(mine(X), nn.Sequential(linear, relu, linear, relu)(X))


def test_mysequential_to_moves_every_block():
    net = MySequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)).to(torch.float64)
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    assert net(torch.rand(3, 4, dtype=torch.float64)).dtype == torch.float64


def test_mysequential_refuses_a_function():
    with pytest.raises(TypeError, match="is not a Module subclass"):
        MySequential(nn.Linear(2, 2), F.relu)


# --- FixedHiddenMLP -----------------------------------------------------------------


def test_fixed_weight_is_a_buffer_not_a_parameter():
    net = FixedHiddenMLP()
    assert names(net) == ["linear.weight", "linear.bias"]
    assert [name for name, _ in net.named_buffers()] == ["rand_weight"]
    assert not net.rand_weight.requires_grad
    assert "rand_weight" in net.state_dict()


def test_fixed_weight_is_untouched_by_an_optimizer_step(X):
    net = FixedHiddenMLP()
    before_weight = net.rand_weight.clone()
    before_linear = net.linear.weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net(X).backward()
    optimizer.step()
    assert torch.equal(net.rand_weight, before_weight)
    assert not torch.equal(net.linear.weight, before_linear)


def test_fixed_weight_moves_with_to_and_survives_a_state_dict_round_trip(X):
    net = FixedHiddenMLP()
    clone = FixedHiddenMLP()  # another random rand_weight
    assert not torch.equal(clone.rand_weight, net.rand_weight)
    clone.load_state_dict(net.state_dict())
    assert torch.equal(clone(X), net(X))
    net = net.to(torch.float64)
    assert net.rand_weight.dtype == torch.float64
    assert net(X.double()).dtype == torch.float64


def test_fixed_hidden_mlp_reuses_its_linear_layer(X):
    rows = trace_shapes(FixedHiddenMLP(), X)
    assert [row.name for row in rows] == ["linear", "linear", ""]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e6])
def test_control_flow_bounds_the_output(scale):
    out = FixedHiddenMLP()(torch.rand(8, 20) * scale)
    assert out.abs() <= 1


def test_non_finite_input_is_refused_instead_of_looping_forever():
    X = torch.rand(2, 20)
    X[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf or nan"):
        FixedHiddenMLP()(X)


# --- ParallelBlock ------------------------------------------------------------------


def test_parallel_block_concatenates_features(X):
    net1, net2 = MLP(), NestMLP()
    net = ParallelBlock(net1, net2)
    assert torch.equal(net(X), torch.cat((net1(X), net2(X)), dim=1))
    assert names(net)[:2] == ["net1.hidden.weight", "net1.hidden.bias"]


class TakeFirst(nn.Module):
    def forward(self, X):
        return X[:1]


def test_parallel_block_batch_mismatch_is_a_clear_error(X):
    net = ParallelBlock(nn.Identity(), TakeFirst())
    with pytest.raises(
        ValueError,
        match=r"net1 returned shape \(2, 20\) and net2 returned shape \(1, 20\)",
    ):
        net(X)


def test_parallel_block_scalar_output_is_a_clear_error(X):
    with pytest.raises(ValueError, match="net2 returned a tensor of shape \\(\\)"):
        ParallelBlock(MLP(), FixedHiddenMLP())(X)


def test_parallel_block_refuses_a_non_module():
    with pytest.raises(TypeError, match=r"net2 must be an nn\.Module, got a function"):
        ParallelBlock(MLP(), F.relu)


# --- stack_blocks -----------------------------------------------------------------


def test_stack_blocks_builds_n_independent_instances():
    net = stack_blocks(lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU()), 4)
    assert len(net) == 4
    assert net(torch.rand(3, 8)).shape == (3, 8)
    pointers = {p.data_ptr() for p in net.parameters()}
    assert len(pointers) == 8  # 4 weights + 4 biases, no storage shared
    assert sum(p.numel() for p in net.parameters()) == 4 * (8 * 8 + 8)


@pytest.mark.parametrize(
    ("n", "error", "message"),
    [
        (0, ValueError, "^stack_blocks: n must be an int >= 1, got 0$"),
        (2.0, TypeError, "^stack_blocks: n must be an int >= 1, got float 2.0$"),
    ],
)
def test_stack_blocks_bad_n(n, error, message):
    with pytest.raises(error, match=message):
        stack_blocks(MLP, n)


def test_stack_blocks_refuses_the_same_instance_twice():
    block = MLP()
    with pytest.raises(ValueError, match="share state: the block itself of instance 0"):
        stack_blocks(lambda: block, 2)


def test_stack_blocks_refuses_blocks_sharing_a_layer():
    shared = nn.Linear(4, 4)
    with pytest.raises(
        ValueError, match="share state: 0 of instance 0 is 0 of instance 1"
    ):
        stack_blocks(lambda: nn.Sequential(shared, nn.ReLU()), 2)


def test_stack_blocks_refuses_a_non_module():
    with pytest.raises(TypeError, match="is not a Module subclass"):
        stack_blocks(lambda: F.relu, 2)


# --- __call__ versus forward, and trace_shapes ----------------------------------------


def test_call_runs_hooks_and_forward_does_not(X):
    net = MLP()
    seen = []
    net.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert torch.equal(net(X), net.forward(X))  # same numbers ...
    assert seen == [torch.Size([2, 10])]  # ... but only net(X) ran the hook


def test_trace_shapes_of_the_chimera(X):
    rows = trace_shapes(chimera(), X)
    summary = [(row.name, row.kind, row.output) for row in rows]
    assert summary[-1] == ("", "Sequential", ())
    assert ("0", "NestMLP", (2, 16)) in summary
    assert ("1", "Linear", (2, 20)) in summary
    assert ("0.net", "Sequential", (2, 32)) in summary


def test_trace_shapes_removes_its_hooks_even_when_forward_fails():
    net = MLP()
    with pytest.raises(ValueError, match="expects input"):
        trace_shapes(net, torch.rand(2, 3))
    assert all(not m._forward_hooks for m in net.modules())
    trace_shapes(net, torch.rand(2, 20))
    assert all(not m._forward_hooks for m in net.modules())


def test_trace_shapes_records_tuple_outputs():
    lstm = nn.LSTM(4, 3, batch_first=True)
    (row,) = trace_shapes(lstm, torch.rand(2, 5, 4))
    assert row.output == ((2, 5, 3), ((1, 2, 3), (1, 2, 3)))


def test_trace_shapes_refuses_a_tensor():
    with pytest.raises(TypeError, match=r"expects an nn\.Module, got Tensor"):
        trace_shapes(torch.rand(2), torch.rand(2))


class HalfListed(nn.Module):
    """The page's exercise-1 block: one layer registered, the rest in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(20, 8)
        self.rest = [nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1)]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = self.first(X)
        for block in self.rest:
            X = block(X)
        return X


def test_a_half_listed_block_trains_only_its_registered_layer(X):
    net = HalfListed()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)  # no error: not empty
    assert names(net) == ["first.weight", "first.bias"]
    hidden = net.rest[2].weight
    before = hidden.detach().clone()
    net(X).pow(2).sum().backward()
    optimizer.step()
    assert hidden.grad is not None  # autograd follows the computation...
    assert torch.equal(hidden, before)  # ...the optimizer never saw the layer


def test_eval_does_not_reach_a_dropout_in_a_list(X):
    net = HalfListed().eval()
    assert not net.training
    assert net.rest[1].training  # .eval() never reached it
    with torch.no_grad():
        assert not torch.equal(net(X), net(X))
    fixed = ModuleListSequential(nn.Linear(20, 8), nn.Dropout(0.5)).eval()
    assert not fixed.blocks[1].training
    with torch.no_grad():
        assert torch.equal(fixed(X), fixed(X))


# Dynamo probes `.grad` of non-leaf tensors while tracing and hides the warning
# that causes; under filterwarnings=error it would become an internal error.
@pytest.mark.filterwarnings(
    "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"
)
def test_fixed_hidden_mlp_breaks_the_compiled_graph_at_its_data_dependent_tests(X):
    explanation = torch._dynamo.explain(FixedHiddenMLP())(X)
    lines = {
        brk.user_stack[-1].line.split("#")[0].strip()
        for brk in explanation.break_reasons
    }
    assert "while X.abs().sum() > 1:" in lines
    assert explanation.graph_break_count >= 1
    assert explanation.graph_count == explanation.graph_break_count + 1


def test_fullgraph_compile_refuses_the_data_dependent_loop(X):
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Data-dependent branching"):
        torch.compile(FixedHiddenMLP(), fullgraph=True)(X)
