"""dlcomp.audit: each rule finds its pitfall and stays quiet on the fixed model."""

import collections
import dataclasses
import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import dlcomp
import dlcomp.__main__
from dlcomp import AuditError, audit
from dlcomp.auditing import RULES, SITE_URL  # values: the doctests re-import it
from dlcomp.pitfalls import (
    DataMyLinear,
    ListSequential,
    ModuleKeySequential,
    PlainTensorFixedHiddenMLP,
    init_normal_by_type,
)

X20 = torch.rand(3, 20)


def rules(report):
    return sorted(f.rule for f in report.findings)


def only(report, rule):
    """The one finding of ``rule`` (and assert there is exactly one)."""
    found = [f for f in report.findings if f.rule == rule]
    assert len(found) == 1, report
    return found[0]


def mlp():
    return nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1))


class HalfListed(nn.Module):
    """The 5.1 exercise's model: one layer registered, the rest in a list."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(20, 8)
        self.rest = [nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1)]

    def forward(self, X):
        X = self.first(X)
        for block in self.rest:
            X = block(X)
        return X


# --- hidden-module ----------------------------------------------------------


def test_modules_in_a_plain_list_are_an_error():
    finding = only(audit(ListSequential(*mlp())), "hidden-module")
    assert finding.severity == "error"
    assert finding.path == ""
    assert "`blocks` is a plain list holding `blocks[0]` (Linear)" in finding.message


@pytest.mark.parametrize(
    ("container", "wrap"),
    [
        ("tuple", tuple),
        ("dict", lambda layers: {str(i): m for i, m in enumerate(layers)}),
        ("set", set),
    ],
)
def test_modules_in_a_tuple_dict_or_set_are_an_error(container, wrap):
    class Held(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = wrap([nn.Linear(2, 2), nn.Linear(2, 2)])

    finding = only(audit(Held()), "hidden-module")
    assert f"is a plain {container} holding" in finding.message
    assert finding.severity == "error"


def test_modules_in_nested_containers_are_found_at_their_path():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Module()])
            self.stages[0].groups = {"a": [nn.Linear(2, 2)], "b": ([nn.Linear(2, 2)],)}

    finding = only(audit(Nested()), "hidden-module")
    assert finding.path == "stages.0"
    assert "`groups['a'][0]` (Linear)" in finding.message
    assert "`groups['b'][0][0]` (Linear)" in finding.message


def test_parameters_in_a_plain_list_are_an_error():
    class Params(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = [nn.Parameter(torch.ones(2))]

    finding = only(audit(Params()), "hidden-module")
    assert "`weights[0]` (Parameter)" in finding.message


def test_stateless_modules_in_a_list_are_only_a_warning():
    class Acts(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.acts = [nn.ReLU(), nn.Tanh()]

    assert only(audit(Acts()), "hidden-module").severity == "warning"


def test_dropout_in_a_list_is_an_error_since_eval_does_not_reach_it():
    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = [nn.Dropout(0.5)]

    assert only(audit(Drop()), "hidden-module").severity == "error"


def test_registered_containers_and_references_to_registered_modules_are_clean():
    class Fine(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
            self.named = nn.ModuleDict({"a": nn.Linear(2, 2)})
            self.weights = nn.ParameterList([nn.Parameter(torch.ones(2))])
            self.shortcut = [self.blocks[0], self.named["a"]]  # already registered
            self.sizes = [2, 2]  # no modules at all

    assert audit(Fine()).findings == ()
    assert audit(dlcomp.ModuleListSequential(*mlp())).findings == ()


def test_a_reference_cycle_in_a_container_does_not_hang():
    class Cyclic(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.loop = []
            self.loop.append(self.loop)

    assert audit(Cyclic()).findings == ()


# --- tensor-attribute ---------------------------------------------------------


def test_a_plain_tensor_attribute_is_a_warning():
    finding = only(audit(PlainTensorFixedHiddenMLP()), "tensor-attribute")
    assert finding.severity == "warning"
    assert finding.message.startswith(
        "`rand_weight` (shape (20, 20), float32) is a plain tensor"
    )
    assert "register_buffer('rand_weight', tensor)" in finding.fix


def test_a_plain_tensor_that_requires_grad_is_an_error_it_is_never_trained():
    class Temperature(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.temperature = torch.ones(1, requires_grad=True)

    finding = only(audit(Temperature()), "tensor-attribute")
    assert finding.severity == "error"
    assert "requires a gradient: a weight to train, but not a parameter" in (
        finding.message
    )
    assert finding.fix.startswith("self.temperature = nn.Parameter(tensor)")


def test_tensors_in_a_container_attribute_are_found():
    class Consts(nn.Module):
        def __init__(self):
            super().__init__()
            self.consts = {"scale": torch.tensor(2.0)}

    assert "`consts['scale']`" in only(audit(Consts()), "tensor-attribute").message


def test_buffers_and_aliases_of_registered_tensors_are_clean():
    class Aliased(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.ones(3))
            self.register_buffer("scratch", torch.zeros(3), persistent=False)
            self.linear = nn.Linear(3, 3)
            self.view_of = [self.table, self.linear.weight]  # the same objects

    assert audit(Aliased()).findings == ()
    assert audit(dlcomp.FixedHiddenMLP()).findings == ()


# --- non-string-key -------------------------------------------------------------


def test_module_keys_that_are_modules_are_an_error():
    report = audit(ModuleKeySequential(*mlp()))
    finding = only(report, "non-string-key")
    assert finding.severity == "error"
    expected = "`_modules` has 3 keys that are not strings (Linear, ReLU, Linear)"
    assert expected in finding.message
    assert "add_module(str(i), block)" in finding.fix


def test_parameter_and_buffer_keys_that_are_not_strings_are_found():
    odd = nn.Linear(2, 2)
    odd._parameters[0] = nn.Parameter(torch.ones(1))
    odd._buffers[1] = torch.ones(1)
    messages = [f.message for f in audit(odd).findings if f.rule == "non-string-key"]
    assert [m.split(" has")[0] for m in messages] == ["`_parameters`", "`_buffers`"]


def test_string_keys_are_clean():
    assert audit(dlcomp.MySequential(*mlp())).findings == ()


# --- no-gradient, non-finite-gradient, dry-run-failed, not-copyable -----------


def test_a_forward_that_reads_data_is_caught_by_the_dry_run():
    net = nn.Sequential(nn.Linear(20, 8), DataMyLinear(8, 1))
    finding = only(audit(net, X20), "no-gradient")
    assert (finding.severity, finding.path) == ("error", "1")
    assert finding.message.startswith("`weight`, `bias` get no gradient")
    assert "though they require one" in finding.message
    assert audit(net).findings == ()  # it needs an input to be seen


def test_an_output_that_needs_no_gradient_is_one_finding_at_the_model():
    net = nn.Sequential(DataMyLinear(20, 3), DataMyLinear(3, 1))
    (finding,) = audit(net, X20).findings
    assert (finding.rule, finding.path) == ("no-gradient", "")
    assert finding.message.startswith(
        "the output (Tensor) holds no floating-point tensor that requires a gradient"
    )

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        label: torch.Tensor

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(20, 3)

        def forward(self, X):
            logits = self.linear(X)
            return Out(logits, logits.argmax(1))

    assert audit(Classifier(), X20).findings == ()  # read inside a dataclass

    class Labels(Classifier):
        def forward(self, X):
            return self.linear(X).argmax(1)  # integers only: nothing to train

    message = only(audit(Labels(), X20), "no-gradient").message
    assert message.startswith("the output (Tensor) holds no")


def test_an_unused_layer_gets_no_gradient():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(20, 1)
            self.spare = nn.Linear(20, 1)

        def forward(self, X):
            return self.used(X)

    finding = only(audit(Unused(), X20), "no-gradient")
    assert finding.path == "spare"
    assert "`weight`, `bias` get no gradient" in finding.message
    lone = nn.Linear(20, 1)
    lone.extra = nn.Parameter(torch.ones(1))
    message = only(audit(lone, X20), "no-gradient").message
    assert message.startswith("`extra` gets no gradient")
    assert "though it requires one" in message
    assert message.endswith("so training leaves it as it is")


def test_frozen_parameters_and_the_fixed_layers_are_clean():
    net = nn.Sequential(nn.Linear(20, 8), dlcomp.MyLinear(8, 1))
    net[0].requires_grad_(False)
    assert audit(net, X20).findings == ()


def test_nan_and_inf_gradients_are_an_error():
    class Sqrt(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(3))

        def forward(self, X):
            return (X * self.weight.sqrt()).sum()  # d sqrt(w)/dw at 0: inf

    finding = only(audit(Sqrt(), torch.rand(2, 3)), "non-finite-gradient")
    assert (finding.severity, finding.path) == ("error", "")
    assert finding.message.startswith("`weight` has NaN or infinite values")
    healthy = Sqrt()
    with torch.no_grad():
        healthy.weight.fill_(1.0)
    assert audit(healthy, torch.rand(2, 3)).findings == ()


def test_the_dry_run_computes_gradients_even_under_no_grad():
    net = nn.Sequential(nn.Linear(20, 8), DataMyLinear(8, 1))
    with torch.no_grad():
        report = audit(net, X20)
    assert [(f.rule, f.path) for f in report.findings] == [("no-gradient", "1")]


def test_a_forward_that_raises_is_reported_with_its_message():
    report = audit(dlcomp.MLP(), torch.rand(2, 21))
    finding = only(report, "dry-run-failed")
    assert finding.severity == "error"
    assert "ValueError: MLP expects input of shape (batch, 20)" in finding.message
    assert audit(dlcomp.MLP(), torch.rand(2, 20)).findings == ()


def test_the_book_plain_tensor_model_fails_after_to_double():
    net = PlainTensorFixedHiddenMLP().to(torch.float64)
    assert rules(audit(net, X20.double())) == ["dry-run-failed", "tensor-attribute"]


def test_a_model_that_cannot_be_copied_is_noted_not_run():
    class Uncopyable(nn.Linear):
        def __deepcopy__(self, memo):
            raise RuntimeError("holds a file handle")

    finding = only(audit(Uncopyable(20, 1), X20), "not-copyable")
    assert finding.severity == "warning"
    assert "RuntimeError: holds a file handle" in finding.message
    assert audit(nn.Linear(20, 1), X20).findings == ()


def test_inputs_as_a_tuple_or_a_dict_and_outputs_of_any_structure():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = DataMyLinear(2, 2)

        def forward(self, x, y):
            return {"a": [self.a(x)], "b": (self.b(y), torch.argmax(x, 1))}

    x, y = torch.rand(3, 2), torch.rand(3, 2)
    for example in ((x, y), {"x": x, "y": y}):
        assert only(audit(TwoInputs(), example), "no-gradient").path == "b"


def test_complex_outputs_carry_their_gradient():
    net = nn.Sequential(nn.Linear(16, 16), dlcomp.HalfFourier())
    assert audit(net, torch.rand(2, 16)).findings == ()


def test_the_dry_run_leaves_model_gradients_rng_and_statistics_as_they_were():
    net = nn.Sequential(nn.Linear(20, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
    net(X20).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    x = X20.clone().requires_grad_(True)
    audit(net, x)
    after = [p.grad for p in net.parameters()]
    assert all(torch.equal(a, g) for a, g in zip(after, grads, strict=True))
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert x.grad is None


# --- uninitialized --------------------------------------------------------------


def test_lazy_messages_agree_in_number():
    net = nn.Sequential(nn.LazyLinear(2, bias=False))
    message = only(audit(net), "uninitialized").message
    assert message.startswith("`weight` is not materialized yet")
    assert (
        "`weight`, `bias` are not materialized"
        in only(audit(nn.Sequential(nn.LazyLinear(2))), "uninitialized").message
    )


def test_lazy_parameters_are_a_warning_with_the_dry_run_fix():
    net = dlcomp.lazy_mlp().apply(init_normal_by_type)  # silently skipped
    report = audit(net)
    assert [(f.rule, f.severity, f.path) for f in report.findings] == [
        ("uninitialized", "warning", "0"),
        ("uninitialized", "warning", "2"),
    ]
    assert "dlcomp.materialize(net, X)" in report.findings[0].fix


def test_lazy_buffers_are_found_and_materialized_models_are_clean():
    net = nn.Sequential(nn.LazyBatchNorm1d())
    assert "`running_mean`" in only(audit(net), "uninitialized").message
    net = dlcomp.lazy_mlp()
    dlcomp.materialize(net, X20)
    assert audit(net, X20).findings == ()


def test_a_lazy_model_with_an_input_is_materialized_on_the_copy_only():
    net = dlcomp.lazy_mlp()
    report = audit(net, X20)
    assert rules(report) == ["uninitialized", "uninitialized"]  # no gradient errors
    assert dlcomp.uninitialized_parameters(net)  # the model itself still waits


# --- optimizer-missing, optimizer-foreign ----------------------------------------


def test_parameters_missing_from_the_optimizer_are_an_error():
    net = mlp()
    optimizer = torch.optim.SGD(net[0].parameters(), lr=0.1)
    finding = only(audit(net, optimizer=optimizer), "optimizer-missing")
    assert finding.message.startswith("2 parameter(s) that require a gradient")
    assert "`2.weight`, `2.bias`" in finding.message


def test_an_optimizer_of_another_model_is_an_error():
    net = mlp()
    optimizer = torch.optim.SGD(mlp().parameters(), lr=0.1)  # a new model
    report = audit(net, optimizer=optimizer)
    assert rules(report) == ["optimizer-foreign", "optimizer-missing"]
    assert (
        "holds 4 tensor(s) that are not in this model"
        in only(report, "optimizer-foreign").message
    )


def test_an_optimizer_built_before_a_layer_replaced_its_parameters():
    class Deferred(nn.Module):  # creates its weight at the first batch
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(0))

        def forward(self, X):
            if self.weight.numel() == 0:
                self.weight = nn.Parameter(torch.randn(X.shape[-1], 1))
            return X @ self.weight

    net = Deferred()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(X20)
    assert "(0,)" in only(audit(net, optimizer=optimizer), "optimizer-foreign").message


def test_an_optimizer_of_the_whole_model_is_clean_frozen_parts_allowed():
    net = mlp()
    net[0].requires_grad_(False)
    optimizer = torch.optim.Adam(net[2].parameters())
    assert audit(net, X20, optimizer).findings == ()
    lazy = dlcomp.lazy_mlp()
    optimizer = torch.optim.SGD(lazy.parameters(), lr=0.1)  # works: same objects
    dlcomp.materialize(lazy, X20)
    assert audit(lazy, optimizer=optimizer).findings == ()


# --- mixed-devices, mixed-dtypes --------------------------------------------------


def test_parameters_on_two_devices_are_a_warning():
    net = mlp()
    net[2].to("meta")  # a second device, on a machine with only a CPU
    finding = only(audit(net), "mixed-devices")
    assert finding.severity == "warning"
    assert "on 2 devices (cpu: `0.weight`, `0.bias`; meta: `2.weight`, `2.bias`)" in (
        finding.message
    )


def test_floating_dtypes_mixed_are_a_warning_integer_buffers_are_not():
    net = mlp()
    net[2].double()
    assert "float32" in only(audit(net), "mixed-dtypes").message
    clean = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))  # int64 counter buffer
    assert audit(clean).findings == ()
    assert audit(mlp().double()).findings == ()


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU; its CPU twin (a meta-device layer) ran above",
)
def test_parameters_on_cpu_and_gpu_are_found():
    net = mlp()
    net[2].to("cuda")
    assert "cuda:0" in only(audit(net), "mixed-devices").message
    assert audit(mlp().to("cuda"), X20.to("cuda")).findings == ()


# --- tied-parameters --------------------------------------------------------------


def test_tied_parameters_are_a_note():
    finding = only(audit(dlcomp.tied_mlp()), "tied-parameters")
    assert (finding.severity, finding.path) == ("note", "2")
    assert finding.message.startswith(
        "one Linear is used in 2 places (`2`, `4`), so its parameters (`weight`, "
        "`bias`) are shared"
    )
    assert "listed once by parameters() and the optimizer (state_dict() has every" in (
        finding.message
    )
    assert list(dlcomp.tied_mlp().state_dict())[4:6] == ["4.weight", "4.bias"]


def test_one_parameter_in_two_modules_is_a_note_with_both_names():
    class TiedLM(nn.Module):  # the embedding's weight is also the output layer's
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight

    finding = only(audit(TiedLM()), "tied-parameters")
    assert finding.message.startswith(
        "shared parameters (`embed.weight` = `out.weight`)"
    )


def test_equal_but_separate_parameters_are_not_tied():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    net[1].load_state_dict(net[0].state_dict())
    assert audit(net).findings == ()


# --- models PyTorch builds in other ways -------------------------------------------


def test_a_compiled_model_is_audited_through_its_original_module():
    net = mlp()
    with warnings.catch_warnings():  # torch.compile's imports touch TorchScript
        # a DeprecationWarning in torch 2.13, a FutureWarning in 2.14
        warnings.filterwarnings("ignore", "`torch.jit.script")
        compiled = torch.compile(net)
    report = audit(compiled, X20)  # the wrapper is unwrapped, not run
    assert report.findings == ()
    assert all(p.grad is None for p in net.parameters())


def test_a_copy_that_reaches_the_model_is_refused_and_its_gradients_restored():
    class Leaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(20, 1)
            inner = self.inner
            self.forward = lambda X: inner(X)  # a function kept in __dict__

    net = Leaky()
    finding = only(audit(net, X20), "not-copyable")
    assert "the copy's forward pass reached the model itself" in (finding.message)
    assert net.inner.weight.grad is None


def test_a_forward_that_writes_its_weights_does_not_change_the_model():
    embedding = nn.Embedding(10, 4, max_norm=0.1)  # renormalizes rows in place
    before = embedding.weight.detach().clone()
    audit(embedding, torch.tensor([[1, 2, 3]]))
    assert torch.equal(embedding.weight, before)


def test_under_inference_mode_a_correct_model_is_clean():
    with torch.inference_mode():
        x = torch.rand(3, 20)
        assert audit(mlp(), x).findings == ()


def test_sparse_meta_and_scripted_models_do_not_crash():
    sparse = nn.Embedding(10, 4, sparse=True)
    assert audit(sparse, torch.tensor([[1, 2]])).findings == ()
    meta = nn.Linear(4, 2, device="meta")
    assert audit(meta, torch.rand(2, 4, device="meta")).findings == ()
    with warnings.catch_warnings():  # torch deprecates TorchScript
        # a DeprecationWarning in torch 2.13, a FutureWarning in 2.14
        warnings.filterwarnings("ignore", "`torch.jit.script")
        scripted = torch.jit.script(mlp())
    assert audit(scripted).findings == ()
    finding = only(audit(scripted, X20), "not-copyable")
    assert "audit the eager module before scripting it" in finding.message


def test_pruned_layers_are_clean_and_still_run():
    from torch.nn.utils import prune

    net = mlp()
    prune.l1_unstructured(net[0], "weight", amount=0.5)  # weight = orig * mask
    assert audit(net, X20).findings == ()


# --- module-cycle ------------------------------------------------------------------


def test_a_module_registered_inside_itself_is_an_error():
    class Child(nn.Module):
        def __init__(self, parent):
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.parent = parent  # registers the parent as a submodule

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.child = Child(self)

    finding = only(audit(Parent()), "module-cycle")
    assert (finding.severity, finding.path) == ("error", "child")
    assert finding.message.startswith("`child.parent` is the model itself")
    me = nn.Linear(2, 2)
    me._modules["me"] = me
    assert "`me` is the model itself" in only(audit(me), "module-cycle").message


def test_a_parent_kept_outside_the_submodules_is_clean():
    class Child(nn.Module):
        def __init__(self, parent):
            super().__init__()
            self.linear = nn.Linear(4, 4)
            object.__setattr__(self, "parent", parent)

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.child = Child(self)

    assert audit(Parent()).findings == ()


def test_a_deeply_shared_module_is_walked_once():
    m = nn.Linear(2, 2)
    for _ in range(40):  # 2**40 paths: each module must be visited once
        m = nn.Sequential(m, m)
    report = audit(m)
    assert {f.rule for f in report.findings} == {"tied-parameters"}
    assert len(str(report)) < 20_000


def test_one_block_repeated_is_one_note_for_the_block():
    block = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    net = nn.Sequential(*[block] * 12)
    finding = only(audit(net), "tied-parameters")
    assert finding.message.startswith("one Sequential is used in 12 places")
    assert "(`0.weight`, `0.bias`, `2.weight`, `2.bias`)" in finding.message


# --- messages fitted to the case ----------------------------------------------------


def test_a_module_set_without_registering_it_says_so():
    class Bypass(nn.Module):
        def __init__(self):
            super().__init__()
            object.__setattr__(self, "head", nn.Linear(4, 2))

    finding = only(audit(Bypass()), "hidden-module")
    assert finding.message.startswith("`head` (Linear) is an attribute PyTorch did not")
    assert finding.fix.startswith("assign it normally (self.head = ...)")


def test_a_randomized_relu_in_a_list_is_an_error_eval_does_not_reach_it():
    class Acts(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.acts = [nn.RReLU()]

    assert only(audit(Acts()), "hidden-module").severity == "error"


def test_an_optimizer_holding_a_buffer_names_it():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    optimizer = torch.optim.SGD([*net.parameters(), net[1].running_mean], lr=0.1)
    finding = only(audit(net, optimizer=optimizer), "optimizer-foreign")
    assert finding.message.startswith(
        "the optimizer holds the buffer(s) `1.running_mean`"
    )


def test_a_hidden_parameter_in_the_optimizer_is_reported_once():
    class Params(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = [nn.Parameter(torch.ones(2))]

    net = Params()
    report = audit(net, optimizer=torch.optim.SGD(net.weights, lr=0.1))
    assert rules(report) == ["hidden-module"]


def test_tensors_in_one_container_are_one_finding_and_zero_dim_dtypes_mix():
    class Many(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.table = {str(i): torch.ones(2) for i in range(50)}
            self.register_buffer("scale", torch.tensor(2.0, dtype=torch.float64))

    report = audit(Many())
    finding = only(report, "tensor-attribute")  # no mixed-dtypes for a 0-dim
    assert "and 46 more are plain tensors" in finding.message


def test_modules_in_a_deque_are_found():
    class Queue(nn.Module):
        def __init__(self):
            super().__init__()
            self.queue = collections.deque([nn.Linear(2, 2)])

    assert "is a plain deque holding" in only(audit(Queue()), "hidden-module").message


def test_an_example_input_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"must be a tensor, a tuple of positional"):
        audit(mlp(), [X20])
    with pytest.raises(TypeError, match=r"keys must be strings; got int 0"):
        audit(mlp(), {0: X20})
    with pytest.raises(TypeError, match=r"got the class Linear: pass Linear\(\.\.\.\)"):
        audit(nn.Linear)


# --- the report -------------------------------------------------------------------


def test_every_rule_has_a_severity_and_a_page_on_the_site():
    for rule in RULES.values():
        assert rule.severity in ("error", "warning", "note")
        page, _, anchor = rule.page.partition("#")
        assert page.endswith(".html")
        assert anchor


def test_findings_come_errors_first_and_link_to_the_site():
    net = HalfListed()
    net.scale = torch.tensor(2.0)
    report = audit(net)
    assert [f.severity for f in report.findings] == ["error", "warning"]
    assert all(f.url.startswith(SITE_URL) for f in report.findings)
    assert not report.ok
    assert report.summary() == "audit of HalfListed: 1 error, 1 warning, 0 notes"


NOT_RUN = (
    "(not run: no-gradient, non-finite-gradient, non-finite-value and dry-run-failed "
    "need "
    "example_input; optimizer-missing and optimizer-foreign need the optimizer)"
)


def test_the_not_run_line_is_shown_only_on_a_report_without_errors():
    # A report with an error says what to fix; the caveat would be noise there.
    with_error = audit(ModuleKeySequential(nn.Linear(2, 2)))
    assert NOT_RUN not in str(with_error)
    assert NOT_RUN[1:-1] not in with_error._repr_html_()
    # A clean report must not read as "nothing wrong" for rules that never ran.
    clean = audit(nn.Sequential(nn.Linear(2, 2)))
    assert clean.ok
    assert not clean.findings
    assert str(clean).splitlines()[1] == NOT_RUN
    assert NOT_RUN[1:-1] in clean._repr_html_()
    # With an input and an optimizer every rule runs, and nothing is said.
    net = nn.Sequential(nn.Linear(2, 2))
    full = audit(net, torch.rand(3, 2), optimizer=torch.optim.SGD(net.parameters()))
    assert "not run" not in str(full)


def test_raise_for_errors_fails_a_test_with_the_report():
    with pytest.raises(AuditError, match=r"hidden-module\] at \(model\)"):
        audit(ListSequential(*mlp())).raise_for_errors()
    audit(PlainTensorFixedHiddenMLP()).raise_for_errors()  # a warning only: passes
    assert issubclass(AuditError, AssertionError)


def test_text_html_and_json_renderings():
    report = audit(ModuleKeySequential(nn.Linear(2, 2)))
    text = str(report)
    assert text.splitlines()[:3] == [
        "audit of ModuleKeySequential: 1 error, 0 warnings, 0 notes",
        "",
        "error [non-string-key] at (model)",
    ]
    page = report._repr_html_()
    link = f'<a href="{SITE_URL}blocks.html#pitfall-module-key">non-string-key</a>'
    assert link in page
    assert "<td><code>_modules</code> has a key that is not a string" in page
    assert "&#x27;.&#x27;" in page  # the message is escaped, the link is not
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is False
    assert (data["errors"], data["warnings"], data["notes"]) == (1, 0, 0)
    assert data["findings"][0]["where"] == "(model)"
    assert data["findings"][0]["rule"] == "non-string-key"
    assert data["rules"] == list(report.rules)


def test_rules_needing_an_input_or_optimizer_run_only_with_one():
    assert "no-gradient" not in audit(mlp()).rules
    assert "optimizer-missing" not in audit(mlp(), X20).rules
    every = audit(mlp(), X20, torch.optim.SGD(mlp().parameters(), lr=0.1)).rules
    assert sorted(every) == sorted(RULES)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(TypeError, match=r"audit expects an nn\.Module, got function"):
        audit(mlp)
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        audit(mlp(), optimizer=[torch.ones(1)])


# --- every model the site defines -------------------------------------------------


def reference_models():
    """Each model the library builds for the pages, with an input for it."""
    x4 = torch.rand(2, 4)
    yield "MLP", dlcomp.MLP(), X20
    yield "MySequential", dlcomp.MySequential(*mlp()), X20
    yield "ModuleListSequential", dlcomp.ModuleListSequential(*mlp()), X20
    yield "FixedHiddenMLP", dlcomp.FixedHiddenMLP(), X20
    yield "NestMLP", dlcomp.NestMLP(), X20
    yield "chimera", dlcomp.chimera(), X20
    yield "ParallelBlock", dlcomp.ParallelBlock(mlp(), mlp()), X20
    yield "stack_blocks", dlcomp.stack_blocks(lambda: nn.Linear(20, 20), 3), X20
    yield "rgnet", dlcomp.rgnet(), x4
    yield "block2", dlcomp.block2(), x4
    yield "MyLinear", dlcomp.MyLinear(20, 3), X20
    yield "CenteredLayer", dlcomp.CenteredLayer(), X20
    yield "TensorReduction", dlcomp.TensorReduction(20, 3), X20
    yield "HalfFourier", nn.Sequential(nn.Linear(20, 16), dlcomp.HalfFourier()), X20
    yield "models.mlp", dlcomp.models.mlp(20, 8, 1, seed=0), X20
    lazy = dlcomp.lazy_mlp()
    dlcomp.materialize(lazy, X20)
    yield "lazy_mlp (materialized)", lazy, X20
    own = nn.Sequential(dlcomp.LazyMyLinear(3))
    dlcomp.materialize(own, X20)
    yield "LazyMyLinear (materialized)", own, X20


@pytest.mark.parametrize(("name", "net", "x"), list(reference_models()))
def test_the_reference_models_come_out_clean(name, net, x):
    params = list(net.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1) if params else None
    report = audit(net, x, optimizer)
    assert report.findings == (), report


def test_the_tied_reference_model_has_only_its_note():
    net = dlcomp.tied_mlp()
    report = audit(net, torch.rand(2, 4), torch.optim.SGD(net.parameters(), lr=0.1))
    assert rules(report) == ["tied-parameters"]


@pytest.mark.parametrize(
    ("net", "x", "rule"),
    [
        (ModuleKeySequential(*mlp()), X20, "non-string-key"),
        (ListSequential(*mlp()), X20, "hidden-module"),
        (PlainTensorFixedHiddenMLP(), X20, "tensor-attribute"),
        (nn.Sequential(nn.Linear(20, 8), DataMyLinear(8, 1)), X20, "no-gradient"),
        (dlcomp.lazy_mlp().apply(init_normal_by_type), None, "uninitialized"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_each_pitfall_model_is_caught_by_its_rule(net, x, rule):
    assert rule in rules(audit(net, x))


# --- python -m dlcomp audit --------------------------------------------------------


def run(*args, status, cwd):
    """``python -m dlcomp *args`` in ``cwd``; its exit status checked, else stderr."""
    command = [sys.executable, "-m", "dlcomp", *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    assert result.returncode == status, (
        f"{command} exited with {result.returncode}, expected {status}; "
        f"the end of its stderr:\n{result.stderr[-2000:]}"
    )
    return result


@pytest.fixture
def models_file(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from dlcomp.pitfalls import ListSequential

            def good():
                return nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1))

            def bad():
                return ListSequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1))

            def not_a_model():
                return 42

            def noisy():
                print("building the model...")
                return good()

            def quits():
                raise SystemExit(3)

            NUMBER = 3
            """
        )
    )
    return tmp_path


@dataclasses.dataclass
class CliResult:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(models_file, monkeypatch, capsys):
    """``python -m dlcomp audit ...`` in this process, in the models' folder.

    The usage errors and outputs need no new interpreter: ``main(argv)`` is
    what ``python -m dlcomp`` runs (the two tests above start one each).
    """
    monkeypatch.chdir(models_file)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() adds the folder

    def call(*args: str, status: int) -> CliResult:
        capsys.readouterr()
        try:
            code = dlcomp.__main__.main(["audit", *args])
        except SystemExit as error:
            code = error.code
        out, err = capsys.readouterr()
        assert code == status, f"exited with {code}, expected {status}:\n{err}"
        return CliResult(code, out, err)

    yield call
    sys.modules.pop("mymodels", None)  # each test's folder has its own


def test_cli_prints_the_report_and_exits_0_on_a_clean_model(models_file):
    result = run(
        "audit", "mymodels:good", "--input-shape", "2,20", status=0, cwd=models_file
    )
    first = result.stdout.splitlines()[0]
    assert first == "audit of Sequential: 0 errors, 0 warnings, 0 notes"


def test_cli_exits_1_on_errors_and_prints_json(models_file):
    result = run("audit", "mymodels:bad", "--json", status=1, cwd=models_file)
    data = json.loads(result.stdout)
    assert (data["model"], data["ok"]) == ("ListSequential", False)
    assert [f["rule"] for f in data["findings"]] == ["hidden-module"]


def test_cli_json_stays_json_when_the_factory_prints(cli):
    result = cli("mymodels:noisy", "--json", status=0)
    assert json.loads(result.stdout)["ok"] is True
    assert "building the model..." in result.stderr


def test_cli_runs_the_dry_run_with_an_input_shape(cli):
    result = cli("mymodels:good", "--input-shape", "2,21", status=1)
    assert "dry-run-failed" in result.stdout


def test_cli_shows_the_traceback_when_the_factory_raises(cli):
    result = cli("dlcomp.pitfalls:DataMyLinear", status=2)
    assert "Traceback" in result.stderr  # it needs arguments: the reader's error
    assert "dlcomp.pitfalls:DataMyLinear() raised TypeError" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["mymodels"], "expected MODULE:CALLABLE, such as mymodels:build"),
        (["nothere:build"], "cannot import 'nothere'"),
        (["mymodels:missing"], "'mymodels' has no 'missing'"),
        (["mymodels:NUMBER"], "mymodels:NUMBER is a int, not a callable"),
        (["mymodels:not_a_model"], "returned a int, not an nn.Module"),
        (["mymodels:good", "--input-shape", "2,x"], "expected sizes >= 1"),
        (["mymodels:good", "--input-shape", "0"], "expected sizes >= 1"),
        (["mymodels:quits"], "mymodels:quits() called sys.exit(3)"),
        (
            ["mymodels:good", "--input-shape", "100000,100000,100000"],
            "cannot make a tensor of shape (100000, 100000, 100000)",
        ),
    ],
)
def test_cli_usage_errors_exit_2_and_say_what_was_expected(cli, args, says):
    result = cli(*args, status=2)
    assert says in result.stderr
    assert "Traceback" not in result.stderr
