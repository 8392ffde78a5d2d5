"""dlcomp.audit on the structures of real models (torchvision, timm, torch.nn).

Each test rebuilds, in a few lines, the structure of a stock model on which the
audit went wrong; ``nox -s zoo`` runs the real models (tools/audit_zoo.py).
"""

import dataclasses
import json
import sys
import textwrap
import types
import warnings

import pytest
import torch
from torch import nn

from dlcomp import audit
from dlcomp.auditing import RULES

X = torch.rand(4, 6)


def rules(report):
    return sorted(f.rule for f in report.findings)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def bn_net():
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))


# --- D1: an in-place compiled model is audited, never run ---------------------------


def test_an_in_place_compiled_model_is_audited_eagerly_and_left_untouched():
    net = bn_net()
    net.compile(backend="eager")  # sets net._compiled_call_impl
    before = state(net)
    report = audit(net, X)
    assert report.findings == (), report
    assert same(state(net), before)  # the running statistics did not move
    assert all(p.grad is None for p in net.parameters())


def test_a_forward_that_updates_the_model_itself_is_reported_and_undone():
    class Leaky(nn.Module):  # its forward closes over the original's BatchNorm
        def __init__(self):
            super().__init__()
            self.net = bn_net()
            inner = self.net
            self.forward = lambda X: inner(X)

    net = Leaky()
    before = state(net)
    report = audit(net, X)
    assert "not-copyable" in rules(report)
    assert same(state(net), before)


# --- D2: parameters in objects PyTorch does not look into ------------------------


@dataclasses.dataclass
class Heads:
    fc: nn.Linear


class Holder:
    def __init__(self, layer):
        self.layer = layer


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: types.SimpleNamespace(fc=m),
        Heads,
        Holder,
    ],
    ids=["SimpleNamespace", "dataclass", "plain-object"],
)
def test_layers_in_any_object_are_found_by_the_dry_run(wrap):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 5)
            self.extra = wrap(nn.Linear(5, 2))

        def forward(self, X):
            layer = vars(self.extra)
            (head,) = layer.values()
            return head(self.body(X))

    report = audit(Model(), X)
    (finding,) = report.errors
    assert finding.rule == "hidden-module"
    assert "`extra" in finding.message
    assert "weight" in finding.message
    assert "not registered" in finding.message


def test_a_plain_list_is_reported_once_by_the_static_search():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(6, 2)]

        def forward(self, X):
            return self.layers[0](X)

    assert rules(audit(Model(), X)) == ["hidden-module"]


# --- D3: NaN or inf in the values, not only in the gradients -----------------------


def test_a_nan_weight_is_one_finding_that_names_it():
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        net[2].bias[0] = float("nan")
    report = audit(net, X)
    assert not report.ok
    (finding,) = report.findings
    assert finding.rule == "non-finite-value"
    assert "`2.bias`" in finding.message


def test_a_nan_weight_deep_in_a_model_is_one_finding_not_one_per_parameter():
    net = nn.Sequential(*(nn.Linear(6, 6) for _ in range(12)))
    with torch.no_grad():
        net[1].weight[0, 0] = float("inf")
    report = audit(net, X)
    assert rules(report) == ["non-finite-value"], report


def test_an_output_that_overflows_is_an_error():
    class Exp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, X):
            return torch.exp(self.fc(X).abs() + 1e3)  # exp(1000) is inf in float32

    finding = audit(Exp(), X).errors[0]
    assert finding.rule == "non-finite-value"
    assert "output" in finding.message


def test_nan_gradients_of_several_parameters_are_one_finding():
    class Sqrt(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 1)

        def forward(self, X):
            return self.b(torch.sqrt(self.a(X) * 0))  # d sqrt(0) = inf

    report = audit(Sqrt(), X)
    assert rules(report) == ["non-finite-gradient"], report


# --- D4: train-only branches in eval mode ------------------------------------------


class AuxHead(nn.Module):
    """googlenet's shape: an auxiliary head used only in training."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 5)
        self.aux = nn.Linear(5, 2)
        self.fc = nn.Linear(5, 2)

    def forward(self, X):
        h = self.body(X)
        if self.training:
            return self.fc(h), self.aux(h)
        return self.fc(h)


def test_an_auxiliary_head_is_clean_in_eval_mode_the_dry_run_trains():
    net = AuxHead().eval()
    report = audit(net, X)
    assert report.findings == (), report
    assert not net.training  # the model's own mode is left as it was


class TargetsInTraining(AuxHead):
    """Faster R-CNN's shape: training needs targets, so only eval mode runs."""

    def forward(self, X):
        if self.training:
            raise ValueError("targets should not be None in training mode")
        return self.fc(self.body(X))


def test_a_model_that_trains_only_with_targets_is_checked_in_eval_mode_as_a_warning():
    report = audit(TargetsInTraining().eval(), X)
    assert report.ok, report
    (finding,) = report.findings
    assert (finding.rule, finding.severity) == ("no-gradient", "warning")
    assert "eval mode" in finding.message


# --- D5: tensors recomputed every forward or derived from configuration ---------------


def test_a_tensor_the_forward_replaces_is_not_state():
    class Anchors(nn.Module):  # torchvision AnchorGenerator's set_cell_anchors
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)
            self.cell_anchors = [torch.ones(2), torch.zeros(2)]

        def forward(self, X):
            self.cell_anchors = [a.to(X.dtype) for a in self.cell_anchors]
            return self.fc(X) + self.cell_anchors[0]

    assert audit(Anchors(), X).findings == ()
    assert rules(audit(Anchors())) == ["tensor-attribute"]  # no input: cannot know


def test_legacy_spectral_and_weight_norm_are_clean():
    from torch.nn.utils import spectral_norm, weight_norm

    for wrap in (spectral_norm, weight_norm):
        with torch.no_grad(), warnings.catch_warnings():
            # (weight_norm's weight has no history when built under no_grad;
            # the legacy weight_norm warns that parametrizations replace it)
            warnings.filterwarnings(
                "ignore", "`torch.nn.utils.weight_norm`", FutureWarning
            )
            net = nn.Sequential(wrap(nn.Linear(6, 5)), nn.ReLU(), nn.Linear(5, 2))
        assert audit(net).findings == (), wrap
        assert audit(net, X).findings == (), wrap


# --- what the audit must never do ----------------------------------------------------


def test_an_input_the_forward_changes_in_place_is_left_as_it_was():
    class Zeroes(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, X):
            X.zero_()
            return self.fc(X)

    x = X.clone()
    audit(Zeroes(), x)
    assert torch.equal(x, X)


def test_global_settings_the_forward_changes_are_restored():
    class Settings(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, X):
            torch.set_default_dtype(torch.float64)
            torch.set_num_threads(1)
            return self.fc(X)

    threads = torch.get_num_threads()
    audit(Settings(), X)
    assert torch.get_default_dtype() == torch.float32
    assert torch.get_num_threads() == threads


def test_a_forward_that_exits_is_a_failed_dry_run():
    class Exits(nn.Module):
        def forward(self, X):
            raise SystemExit(0)

    finding = audit(Exits(), X).errors[0]
    assert finding.rule == "dry-run-failed"
    assert "SystemExit" in finding.message


def test_an_attribute_nested_5000_deep_does_not_overflow_the_stack():
    net = nn.Linear(6, 2)
    nested: list = [nn.ReLU()]
    for _ in range(5000):
        nested = [nested]
    net.deep = nested
    assert rules(audit(net)) == ["hidden-module"]


def test_the_audit_does_not_import_dynamo():
    import subprocess
    import sys

    code = (
        "import sys, torch, dlcomp; from torch import nn;"
        "dlcomp.audit(nn.Linear(2, 1), torch.rand(1, 2));"
        "print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", result.stderr


# --- ignore= ------------------------------------------------------------------------


class Distiller(nn.Module):
    """A teacher kept in a list on purpose: not trained, not saved."""

    def __init__(self):
        super().__init__()
        self.student = nn.Linear(6, 2)
        self.teacher = [nn.Linear(6, 2)]

    def forward(self, X):
        return self.student(X)


def test_ignore_drops_the_findings_of_a_rule_or_a_name():
    assert rules(audit(Distiller())) == ["hidden-module"]
    assert audit(Distiller(), ignore=["teacher"]).findings == ()
    assert audit(Distiller(), X, ignore=["hidden-module"]).findings == ()
    report = audit(Distiller(), ignore=["teacher"])
    assert report.ignored == ("teacher",)


def test_ignore_refuses_what_is_neither_a_rule_nor_a_name():
    with pytest.raises(
        ValueError, match=r"rule ids .* or names in the model.*'tacher'"
    ):
        audit(Distiller(), ignore=["tacher"])
    with pytest.raises(TypeError, match="ignore must be"):
        audit(Distiller(), ignore="teacher")


def test_every_rule_is_documented():
    assert "non-finite-value" in RULES


# --- the command line: exit statuses mean what the README says ----------------------
# (0 no error found, 1 errors found, 2 a usage error, 3 the audit itself failed;
# in-process through main(argv): the subprocess runs are in test_auditing.py)


@pytest.fixture
def cli(tmp_path, monkeypatch, request, capsys):
    """main(argv) in tmp_path; returns (status, stdout, stderr)."""
    from dlcomp.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = (
        f"cli_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    )

    def run(source, *args):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        argv = ["audit", *(a.replace("MOD", name) for a in args)]
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code
        out, err = capsys.readouterr()
        return status, out, err

    yield run
    sys.modules.pop(name, None)


MODEL = """
    import sys
    import torch
    from torch import nn

    class Exits(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(20, 1)

        def forward(self, X):
            sys.exit(0)

    class Distiller(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.Linear(20, 1)
            self.teacher = [nn.Linear(20, 1)]

        def forward(self, X):
            return self.student(X)
    """


def test_cli_a_forward_that_exits_is_an_error_found_not_a_clean_exit(cli):
    status, out, _ = cli(MODEL, "MOD:Exits", "--input-shape", "2,20")
    assert status == 1
    assert "dry-run-failed" in out
    assert "SystemExit" in out


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "raise RuntimeError('no GPU here')\n",
            "raised RuntimeError (traceback above)",
        ),
        ("import sys\nsys.exit(5)\n", "called sys.exit(5)"),
        ("import not_a_module_anywhere\n", "raised ModuleNotFoundError"),
    ],
    ids=["raises", "exits", "imports-a-missing-module"],
)
def test_cli_a_module_that_fails_at_import_is_a_usage_error(cli, source, says):
    status, _, err = cli(source, "MOD:build")
    assert status == 2, err
    assert says in err


def test_cli_an_input_shape_too_large_for_an_int_is_a_usage_error(cli):
    status, _, err = cli(
        MODEL, "MOD:Distiller", "--input-shape", "99999999999999999999,20"
    )
    assert status == 2, err
    assert "cannot make a tensor of shape" in err


def test_cli_ignore_leaves_out_a_rule_or_a_name(cli):
    status, out, _ = cli(MODEL, "MOD:Distiller", "--input-shape", "2,20")
    assert status == 1
    assert "hidden-module" in out
    status, out, _ = cli(MODEL, "MOD:Distiller", "--ignore", "teacher", "--json")
    assert status == 0
    assert json.loads(out)["ignored"] == ["teacher"]
    status, _, err = cli(MODEL, "MOD:Distiller", "--ignore", "tacher")
    assert status == 2
    assert "argument --ignore: ignore takes rule ids" in err


# --- found by attacking the audit: each failed before its fix ------------------------


def test_ignore_takes_any_iterable_and_refuses_none_empty_and_parameter_names():
    assert audit(Distiller(), ignore=(e for e in ["teacher"])).findings == ()
    with pytest.raises(TypeError, match="ignore must be a list"):
        audit(Distiller(), ignore=None)
    for entry in ["", "student.weight"]:  # the model itself; a parameter
        with pytest.raises(ValueError, match="ignore takes rule ids"):
            audit(Distiller(), ignore=[entry])


def test_a_layer_under_reentrant_checkpointing_gets_its_gradient():
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, X):
            return checkpoint(self.b, self.a(X), use_reentrant=True)

    assert audit(Checkpointed(), X).findings == ()


def test_a_hook_bound_to_the_model_runs_on_the_copy():
    class Extractor(nn.Module):  # Grad-CAM's pattern: a method hook keeps activations
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)
            self.fc.register_forward_hook(self.keep)

        def keep(self, module, inputs, output):
            self.activation = output

        def forward(self, X):
            return self.fc(X)

    net = Extractor()
    assert audit(net, X).findings == ()
    assert "activation" not in vars(net)


def test_a_closure_that_writes_to_the_model_is_undone_and_reported():
    net = nn.Linear(6, 2)
    net.register_forward_hook(lambda m, i, o: setattr(net, "seen", o))  # the original
    report = audit(net, X)
    assert "reached the model itself" in report.warnings[0].message
    assert "seen" not in vars(net)


def test_an_input_in_a_namedtuple_keeps_its_values_and_gradient():
    import collections

    Batch = collections.namedtuple("Batch", "x")

    class Doubles(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, batch):
            batch.x.mul_(2)
            return self.fc(batch.x)

    x = X.clone()
    audit(Doubles(), (Batch(x),))
    assert torch.equal(x, X)
    leaf = X.clone().requires_grad_()
    leaf.grad = torch.full_like(leaf, 7.0)

    class Uses(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, holder):
            return self.fc(holder.x)

    audit(Uses(), (types.SimpleNamespace(x=leaf),))  # a container the audit keeps
    assert torch.equal(leaf.grad, torch.full_like(leaf, 7.0))


def test_non_finite_values_blame_parameters_as_given_not_masks_or_statistics():
    class Log(nn.Module):
        def forward(self, X):
            return torch.log(X - 0.5)  # NaN below 0.5

    net = nn.Sequential(nn.Linear(6, 4), Log(), nn.BatchNorm1d(4)).eval()
    (finding,) = audit(net, torch.rand(8, 6)).errors
    assert finding.rule == "non-finite-value"
    assert "the output" in finding.message
    assert "running_mean" not in finding.message

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)
            self.w = nn.Parameter(torch.zeros(2))
            self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))

        def forward(self, X):
            scores = self.fc(X) + self.mask
            return scores.softmax(-1) * self.w.sqrt()  # sqrt at 0

    report = audit(Masked(), X)
    assert [f.rule for f in report.findings] == ["non-finite-gradient"], report
    assert "`w`" in report.findings[0].message


def test_a_sparse_buffer_does_not_crash_the_dry_run():
    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("adjacency", torch.eye(4).to_sparse())
            self.fc = nn.Linear(6, 2)

        def forward(self, X):
            return torch.sparse.mm(self.adjacency, self.fc(X))

    assert audit(Graph(), X).findings == ()


def test_a_train_method_that_raises_falls_back_to_eval_mode():
    class InferenceOnly(nn.Linear):
        def train(self, mode=True):
            if mode:
                raise ValueError("inference-only")
            return super().train(False)

    net = InferenceOnly(6, 2).eval()
    assert audit(net, X).findings == ()


def test_both_modes_failing_names_both():
    class Broken(nn.Module):
        def forward(self, X):
            if self.training:
                raise ValueError("needs targets")
            raise RuntimeError("no weights")

    finding = audit(Broken().eval(), X).errors[0]
    assert "RuntimeError: no weights" in finding.message
    assert "in train mode it raised ValueError: needs targets" in finding.message


def test_a_layer_kept_in_eval_mode_stays_so_in_a_training_model():
    net = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[1].eval()  # frozen statistics: batches of one row are fine
    assert audit(net, torch.rand(1, 6)).findings == ()


@dataclasses.dataclass(slots=True)
class Slotted:
    layer: nn.Linear


class CallableWrapper:
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, X):
        return self.layer(X)


@pytest.mark.parametrize(
    "holder",
    [Slotted, CallableWrapper],
    ids=["slots-dataclass", "callable-object"],
)
def test_layers_behind_slots_or_callables_are_named(holder):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.vocab = {str(i): i for i in range(30_000)}  # plain values: no cost
            self.h = holder(nn.Linear(6, 2))

        def forward(self, X):
            return self.h.layer(X)

    (finding,) = audit(Model(), X).errors
    assert "`h.layer.weight`" in finding.message, finding
    assert finding.subject == "h"
    assert audit(Model(), X, ignore=["h"]).findings == ()


def test_the_cycle_fix_does_not_suggest_a_weakref():
    class Child(nn.Module):
        def __init__(self, parent):
            super().__init__()
            self.parent = parent

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.child = Child(self)

    (finding,) = audit(Parent()).errors
    assert "weakref" not in finding.fix


def test_cli_an_unexpected_error_inside_the_audit_is_status_3(cli, monkeypatch):
    import dlcomp.auditing

    def broken(*args, **kwargs):
        raise ValueError("a bug in the audit")

    monkeypatch.setattr(dlcomp.auditing, "audit", broken)
    status, _, err = cli(MODEL, "MOD:Distiller")
    assert status == 3, err
    assert "the audit itself failed" in err


def test_finiteness_is_checked_in_every_chunk_of_a_large_tensor():
    from dlcomp.auditing import _CHUNK, _finite

    values = torch.zeros(2 * _CHUNK + 8)
    assert _finite(values)
    values[-1] = float("inf")  # in the last, short chunk
    assert not _finite(values)
    values[-1] = 0.0
    values[_CHUNK + 1] = float("nan")
    assert not _finite(values.view(-1, 4))  # any shape


def test_each_gradient_is_freed_as_soon_as_it_is_checked():
    # What the API page says of the cost: the audit never holds the whole
    # model's gradients. When the gradient reaches the first layer's output,
    # the last layer's gradients are already gone (in plain training, there).
    seen = []

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, X):
            h = self.a(X)
            h.register_hook(lambda g: seen.append(self.b.weight.grad))
            return self.b(h)

    net = Two()
    assert audit(net, X).findings == ()
    assert seen == [None]
    seen.clear()
    net(X).mean().backward()  # without the audit: the gradient is kept
    assert seen[0] is not None
