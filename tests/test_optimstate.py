"""Optimizer state checked against the optimizer that will use it (dlcomp._optimstate).

A saved optimizer state must have the state names, shapes, dtype kinds and
setting types that the optimizer's own class creates with these settings,
or it is refused with CheckpointError before anything is copied: through
load_checkpoint (checkpoint files) and DistributedCheckpointManager.restore
(DCP directories).
"""

import copy

import pytest
import torch
from checkpoint_files import rewrite
from torch import nn

from dlcomp import (
    CheckpointError,
    DistributedCheckpointManager,
    load_checkpoint,
    save_checkpoint,
)


def check(*args, **kwargs):
    """check_optimizer_state, imported here so this file collects on any revision."""
    from dlcomp._optimstate import check_optimizer_state

    return check_optimizer_state(*args, **kwargs)


class Net(nn.Module):
    """Parameters of 0, 1, 2 and 3 dimensions.

    In the order of ``parameters()``: 0 scale (), 1 lin.weight (3, 4),
    2 lin.bias (3,), 3 conv.weight (2, 1, 2), 4 conv.bias (2,).
    """

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.conv = nn.Conv1d(1, 2, 2)  # weight (2, 1, 2)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.conv(self.lin(x).unsqueeze(1)).flatten(1) * self.scale


def embedding():
    return nn.Embedding(5, 3, sparse=True)  # SparseAdam needs sparse gradients


# name: (model, optimizer of the model); every class of torch.optim
OPTIMIZERS = {
    "Adadelta": (Net, lambda m: torch.optim.Adadelta(m.parameters())),
    "Adafactor": (Net, lambda m: torch.optim.Adafactor(m.parameters())),
    "Adagrad": (Net, lambda m: torch.optim.Adagrad(m.parameters())),
    "Adam": (Net, lambda m: torch.optim.Adam(m.parameters())),
    "AdamW": (Net, lambda m: torch.optim.AdamW(m.parameters(), amsgrad=True)),
    "Adamax": (Net, lambda m: torch.optim.Adamax(m.parameters())),
    "ASGD": (Net, lambda m: torch.optim.ASGD(m.parameters())),
    "LBFGS": (Net, lambda m: torch.optim.LBFGS(m.parameters(), history_size=3)),
    "Muon": (Net, lambda m: torch.optim.Muon([m.lin.weight])),  # 2-D only
    "NAdam": (Net, lambda m: torch.optim.NAdam(m.parameters())),
    "RAdam": (Net, lambda m: torch.optim.RAdam(m.parameters())),
    "RMSprop": (
        Net,
        lambda m: torch.optim.RMSprop(m.parameters(), momentum=0.5, centered=True),
    ),
    "Rprop": (Net, lambda m: torch.optim.Rprop(m.parameters())),
    "SGD": (Net, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)),
    "SparseAdam": (embedding, lambda m: torch.optim.SparseAdam(m.parameters())),
}
# get_state_dict (DCP) fills a fresh optimizer's state by stepping it with
# zero gradients and closure=None; these two classes cannot take that step.
DCP_CANNOT = {
    "LBFGS": "get_state_dict steps a fresh optimizer with closure=None; LBFGS "
    "needs a closure",
    "SparseAdam": "get_state_dict steps a fresh optimizer with dense zero "
    "gradients; SparseAdam takes sparse gradients only",
}


def test_every_optimizer_class_of_torch_optim_is_listed():
    classes = {
        name
        for name in dir(torch.optim)
        if isinstance(getattr(torch.optim, name), type)
        and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
        and name != "Optimizer"
    }
    assert classes == set(OPTIMIZERS)


def loss(model):
    if isinstance(model, nn.Embedding):
        return model(torch.tensor([0, 2, 2])).pow(2).sum()
    return model(torch.randn(3, 4)).pow(2).sum()


def train(model, optimizer, steps=2):
    for _ in range(steps):

        def closure():
            optimizer.zero_grad()
            value = loss(model)
            value.backward()
            return value

        if isinstance(optimizer, torch.optim.LBFGS):
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
    return model, optimizer


def trained(name, steps=2):
    make_model, make_optimizer = OPTIMIZERS[name]
    model = make_model()
    return train(model, make_optimizer(model), steps)


def fresh(name):
    make_model, make_optimizer = OPTIMIZERS[name]
    model = make_model()
    return model, make_optimizer(model)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    """Equal nested states: tensors bitwise, everything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


def edited(path, edit):
    """Rewrite the optimizer state of the checkpoint at ``path`` with ``edit``.

    The file stays consistent (its hashes are recomputed), as a forger's would.
    """
    return rewrite(path, lambda fields: edit(fields["optimizer"]))


def refused_and_unchanged(path, model, optimizer, message):
    """load_checkpoint refuses; the model and the optimizer are as they were."""
    model_before = snapshot(model)
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    with pytest.raises(CheckpointError, match=message) as refusal:
        load_checkpoint(path, model, optimizer)
    assert "Nothing was loaded" in str(refusal.value)
    assert same(snapshot(model), model_before)
    assert same(optimizer.state_dict(), optimizer_before)
    train(model, optimizer, steps=1)  # and it still steps
    return refusal.value


# --- D2: the findings, through the public API -----------------------------------------


def test_renamed_adam_state_is_refused_before_anything_is_loaded(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", *trained("Adam"), step=2)

    def rename(optimizer):
        for entry in optimizer["state"].values():
            entry["exp_avg_sqq"] = entry.pop("exp_avg_sq")

    edited(path, rename)
    error = refused_and_unchanged(
        path,
        *fresh("Adam"),
        r"parameter 0: state \['exp_avg', 'exp_avg_sqq', 'step'\] in the file, "
        r"\['exp_avg', 'exp_avg_sq', 'step'\] expected",
    )
    assert "Build the optimizer as when saving" in str(error)


def test_a_0_dim_exp_avg_is_refused_before_anything_is_loaded(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", *trained("Adam"), step=2)
    edited(path, lambda o: o["state"][1].update(exp_avg=torch.tensor(0.5)))
    refused_and_unchanged(
        path, *fresh("Adam"), r"parameter 1 exp_avg: \(\) in the file, \(3, 4\)"
    )


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("lr", "fast", r"group 0 lr: 'fast' in the file, a number or a one-element"),
        ("momentum", [1, 2, 3], r"group 0 momentum: \[1, 2, 3\] in the file, a number"),
    ],
)
def test_dcp_restore_refuses_a_setting_of_another_type(
    tmp_path, setting, value, message
):
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, optimizer)
    optimizer.param_groups[0][setting] = value  # saved as it is
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, model, optimizer)

    target = Net()
    target_optimizer = torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
    before = snapshot(target)
    with (
        pytest.warns(RuntimeWarning, match="skipping checkpoint step-000000001"),
        pytest.raises(CheckpointError, match=message),
    ):
        manager.restore(target, target_optimizer)
    assert same(snapshot(target), before)
    assert not target_optimizer.state  # emptied again, as it was
    train(target, target_optimizer, steps=1)


def test_dcp_restore_names_a_state_tensor_of_another_shape(tmp_path):
    model, optimizer = trained("Adam")
    optimizer.state[model.lin.weight]["exp_avg"] = torch.tensor(0.5)
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, model, optimizer)
    with (
        pytest.warns(RuntimeWarning, match="skipping"),
        pytest.raises(
            CheckpointError,
            match=r"parameter lin\.weight exp_avg: \(\) in the file, \(3, 4\) expected",
        ),
    ):
        manager.restore(*fresh("Adam"))


def test_dcp_restore_refuses_complex_state_for_a_real_parameter(tmp_path):
    model, optimizer = trained("Adam")
    entry = optimizer.state[model.lin.weight]
    entry["exp_avg"] = entry["exp_avg"].to(torch.complex64)  # DCP cast it back
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(1, model, optimizer)
    with (
        pytest.warns(RuntimeWarning, match="skipping"),
        pytest.raises(CheckpointError, match=r"exp_avg: torch.complex64 in the file"),
    ):
        manager.restore(*fresh("Adam"))


# --- every optimizer of torch.optim: its own state passes and round-trips -------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_optimizers_own_state_passes_the_check(name):
    model, optimizer = trained(name)
    saved = optimizer.state_dict()
    check(optimizer, saved, "memory")
    other = OPTIMIZERS[name][1](model)  # the same optimizer, built afresh
    check(other, saved, "memory")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_round_trips_through_a_checkpoint_file(tmp_path, name):
    model, optimizer = trained(name)
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer, step=2)
    target, target_optimizer = fresh(name)
    load_checkpoint(path, target, target_optimizer)
    assert same(target_optimizer.state_dict(), optimizer.state_dict())
    assert same(snapshot(target), snapshot(model))
    train(target, target_optimizer, steps=1)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                reason=DCP_CANNOT[name], raises=RuntimeWarning, strict=True
            ),
        )
        if name in DCP_CANNOT
        else name
        for name in OPTIMIZERS
    ],
)
def test_every_optimizer_round_trips_through_dcp_restore(tmp_path, name):
    model, optimizer = trained(name)
    manager = DistributedCheckpointManager(tmp_path)
    manager.save(2, model, optimizer)
    target, target_optimizer = fresh(name)
    assert manager.restore(target, target_optimizer).step == 2
    assert same(target_optimizer.state_dict(), optimizer.state_dict())
    train(target, target_optimizer, steps=1)


# --- settings that change the state ---------------------------------------------------


def sgd(momentum):
    return lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=momentum)


def adam(amsgrad):
    return lambda m: torch.optim.Adam(m.parameters(), amsgrad=amsgrad)


def rmsprop(centered):
    return lambda m: torch.optim.RMSprop(m.parameters(), centered=centered)


MISMATCHES = {
    "SGD momentum=0.9 into momentum=0": (
        sgd(0.9),
        sgd(0),
        r"with the file's settings \(momentum=0.9\) the state of a parameter of "
        r"shape \(\) is \[momentum_buffer\], with this optimizer's "
        r"\(momentum=0\) \[\]",
    ),
    "SGD momentum=0 into momentum=0.9": (
        sgd(0),
        sgd(0.9),
        r"with the file's settings \(momentum=0\) .* is \[\], with this "
        r"optimizer's \(momentum=0.9\) \[momentum_buffer\]",
    ),
    "Adam amsgrad into plain": (adam(True), adam(False), r"\(amsgrad=True\)"),
    "Adam plain into amsgrad": (adam(False), adam(True), r"\(amsgrad=False\)"),
    "RMSprop centered into plain": (
        rmsprop(True),
        rmsprop(False),
        r"\[grad_avg, square_avg, step\], with this optimizer's \(centered=False\)",
    ),
    "RMSprop plain into centered": (rmsprop(False), rmsprop(True), r"centered=False"),
}


@pytest.mark.parametrize(
    ("saved_with", "loaded_with", "message"),
    MISMATCHES.values(),
    ids=MISMATCHES.keys(),
)
def test_settings_that_change_the_state_are_refused(
    tmp_path, saved_with, loaded_with, message
):
    model = Net()
    path = save_checkpoint(tmp_path / "c.pt", *train(model, saved_with(model)), step=2)
    target = Net()
    refused_and_unchanged(path, target, loaded_with(target), message)


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop", "Adafactor", "Rprop"])
def test_a_state_saved_before_any_step_loads_into_a_fresh_optimizer(tmp_path, name):
    model, optimizer = fresh(name)
    assert not optimizer.state
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer, step=0)
    target, target_optimizer = fresh(name)
    load_checkpoint(path, target, target_optimizer)
    assert same(target_optimizer.state_dict(), optimizer.state_dict())
    train(target, target_optimizer, steps=1)


def test_adagrad_state_is_kept_from_the_start_so_a_missing_entry_is_refused():
    model, optimizer = trained("Adagrad")
    saved = optimizer.state_dict()
    del saved["state"][1]
    with pytest.raises(
        CheckpointError,
        match=r"parameter 1: no state in the file, and this optimizer keeps "
        r"\['step', 'sum'\]",
    ):
        check(OPTIMIZERS["Adagrad"][1](model), saved, "c.pt")


# --- settings: types ------------------------------------------------------------------


def adam_state():
    model, optimizer = trained("Adam")
    return model, optimizer.state_dict()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("amsgrad", 1, r"group 0 amsgrad: 1 in the file, a bool here"),
        ("betas", (0.9,), r"betas: \(0.9,\) in the file, a 2-tuple of"),
        ("betas", (0.9, "x"), r"betas: \(0.9, 'x'\) in the file"),
        ("eps", None, r"group 0 eps: None in the file, a number here"),
        ("lr", torch.ones(3), r"lr: a tensor of shape \(3,\)"),
        ("initial_lr", object(), r"initial_lr: a object in the file, not a number"),
    ],
)
def test_a_setting_of_another_type_is_refused(setting, value, message):
    model, saved = adam_state()
    saved["param_groups"][0][setting] = value
    with pytest.raises(CheckpointError, match=message):
        check(torch.optim.Adam(model.parameters()), saved, "c.pt")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("lr", torch.tensor(0.01)),  # torch takes a tensor lr
        ("lr", 1),  # an int for a float
        ("foreach", True),  # bool | None
        ("fused", False),
        ("betas", [0.8, 0.9]),  # a list for a tuple
        ("initial_lr", 0.1),  # added by an LR scheduler
    ],
)
def test_settings_of_the_types_torch_takes_pass(setting, value):
    model, saved = adam_state()
    saved["param_groups"][0][setting] = value
    check(torch.optim.Adam(model.parameters()), saved, "c.pt")


def test_a_setting_the_class_fills_in_may_be_missing_one_it_needs_may_not():
    model, saved = adam_state()
    del saved["param_groups"][0]["decoupled_weight_decay"]  # Adam.__setstate__
    check(torch.optim.Adam(model.parameters()), saved, "c.pt")

    model, optimizer = trained("SGD")
    saved = optimizer.state_dict()
    del saved["param_groups"][0]["dampening"]  # SGD.step reads it
    with pytest.raises(CheckpointError, match="the file lacks the settings dampening"):
        check(OPTIMIZERS["SGD"][1](model), saved, "c.pt")


# --- per-parameter state --------------------------------------------------------------


def test_a_number_step_from_older_torch_passes_and_loads(tmp_path):
    model, optimizer = trained("Adam")
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer, step=2)
    edited(path, lambda o: [e.update(step=2.0) for e in o["state"].values()])
    target, target_optimizer = fresh("Adam")
    load_checkpoint(path, target, target_optimizer)
    assert isinstance(target_optimizer.state[target.lin.weight]["step"], torch.Tensor)
    train(target, target_optimizer, steps=1)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "Adafactor",  # factored second moments: (rows, 1) and (1, cols)
            lambda s: s[1].update(row_var=torch.zeros(3, 4)),
            r"parameter 1 row_var: \(3, 4\) in the file, \(3, 1\) expected",
        ),
        (
            "Adafactor",
            lambda s: s[2].update(variance=torch.zeros(3, 1)),
            r"parameter 2 variance: \(3, 1\) in the file, \(3,\) expected",
        ),
        (
            "ASGD",
            lambda s: s[3].update(ax=torch.zeros(2)),
            r"parameter 3 ax: \(2,\) in the file, \(2, 1, 2\) expected",
        ),
        (
            "Rprop",  # 0-dim parameter: probed on CPU stand-ins
            lambda s: s[0].update(prev=torch.zeros(1)),
            r"parameter 0 prev: \(1,\) in the file, \(\) expected",
        ),
        (
            "SparseAdam",  # step is a Python int
            lambda s: s[0].update(step=torch.tensor(2.0)),
            r"parameter 0 step: a Tensor in the file, an int expected",
        ),
        (
            "Adam",
            lambda s: s[1].update(exp_avg=torch.zeros(3, 4, dtype=torch.int64)),
            r"exp_avg: torch.int64 in the file, a real floating tensor expected",
        ),
        (
            "Adam",
            lambda s: s[1].update(exp_avg=torch.zeros(3, 4, device="meta")),
            r"exp_avg: on the meta device in the file",
        ),
        (
            "SGD",
            lambda s: s[0].update(momentum_buffer="x"),
            r"parameter 0 momentum_buffer: a str in the file, a tensor expected",
        ),
        (
            "Muon",
            lambda s: s[0].update(momentum_buffer=torch.zeros(4, 3)),
            r"momentum_buffer: \(4, 3\) in the file, \(3, 4\) expected",
        ),
    ],
    ids=[
        "Adafactor row_var",
        "Adafactor variance",
        "ASGD ax",
        "Rprop 0-dim",
        "SparseAdam step",
        "Adam int",
        "Adam meta",
        "SGD str",
        "Muon transposed",
    ],
)
def test_a_state_value_unlike_the_classs_own_is_refused(name, edit, message):
    model, optimizer = trained(name)
    saved = optimizer.state_dict()
    edit(saved["state"])
    with pytest.raises(CheckpointError, match=message):
        check(OPTIMIZERS[name][1](model), saved, "c.pt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s[0].update(d=torch.zeros(5)),
            r"parameter 0 d: a tensor of shape \(5,\) .* a 1-D real tensor of 22",
        ),
        (lambda s: s.update({1: {"n_iter": 1}}), "first parameter only"),
        (
            lambda s: s[0]["old_dirs"].append(s[0]["d"].clone()),
            r"old_dirs: .* as many as old_dirs|ro: .* as long as old_dirs",
        ),
        (lambda s: s[0].update(n_iter=1.5), r"n_iter: 1\.5 in the file, an int"),
        (
            lambda s: s[0].update(old_dirs=torch.zeros(3)),
            r"old_dirs: a tensor of shape \(3,\) .* a list of 1-D real tensors",
        ),
        (lambda s: s[0].update(extra=1), r"state \['extra'\] in the file"),
    ],
    ids=[
        "d of 5",
        "state on parameter 1",
        "old_dirs longer",
        "float n_iter",
        "old_dirs a tensor",
        "unknown name",
    ],
)
def test_lbfgs_state_is_checked_by_its_rule(edit, message):
    model, optimizer = trained("LBFGS")
    saved = optimizer.state_dict()
    edit(saved["state"])
    with pytest.raises(CheckpointError, match=message):
        check(OPTIMIZERS["LBFGS"][1](model), saved, "c.pt")


def test_lbfgs_settings_are_stepped_in_a_probe():
    model, optimizer = trained("LBFGS")
    saved = optimizer.state_dict()
    saved["param_groups"][0]["line_search_fn"] = "fast"
    with pytest.raises(CheckpointError, match="only 'strong_wolfe' is supported"):
        check(OPTIMIZERS["LBFGS"][1](model), saved, "c.pt")


# --- structure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: o.update(state=[]), "param_groups should list parameter numbers"),
        (
            lambda o: o["param_groups"][0].update(params=["0"]),
            "param_groups should list parameter numbers",
        ),
        (lambda o: o["state"].update({9: {}}), "state for parameter 9, which no group"),
        (lambda o: o["state"].update({0: 1}), "state of parameter 0 is a int"),
        (
            lambda o: o["param_groups"][0].update(params=[0, 0, 1, 2, 3]),
            r"groups of sizes \[5\] in the file, \[5\] here|listed twice",
        ),
        (
            lambda o: o["param_groups"].append({"params": []}),
            r"groups of sizes \[5, 0\] in the file, \[5\] here",
        ),
    ],
    ids=[
        "state a list",
        "names for numbers",
        "unlisted id",
        "entry an int",
        "listed twice",
        "extra group",
    ],
)
def test_a_damaged_state_is_refused(edit, message):
    model, optimizer = trained("Adam")
    saved = optimizer.state_dict()
    edit(saved)
    with pytest.raises(CheckpointError, match=message):
        check(torch.optim.Adam(model.parameters()), saved, "c.pt")


def test_names_of_a_dcp_state_dict_are_checked_by_name():
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optimizer = trained("Adam")
    _, saved = get_state_dict(model, optimizer)
    names = [n for n, _ in model.named_parameters()]
    check(optimizer, saved, "dcp", keys=names)
    with pytest.raises(
        CheckpointError, match=r"parameter group 0 holds scale, lin\.weight"
    ):
        check(optimizer, saved, "dcp", keys=list(reversed(names)))
    saved["state"]["lin.weight"]["exp_avg"] = torch.zeros(4, 3)
    with pytest.raises(CheckpointError, match=r"parameter lin\.weight exp_avg"):
        check(optimizer, saved, "dcp", keys=names)


# --- classes outside torch.optim ------------------------------------------------------


class Momentum(torch.optim.Optimizer):
    """A class outside torch.optim whose constructor the probes cannot call."""

    def __init__(self, params, lr, *, secret):
        super().__init__(params, {"lr": lr})
        self.secret = secret

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                buf = state.setdefault("buf", torch.zeros_like(p))
                state["count"] = state.get("count", 0) + 1
                buf.mul_(0.9).add_(p.grad)
                p.add_(buf, alpha=-group["lr"])


class MySGD(torch.optim.SGD):
    """A class outside torch.optim that the probes can build."""


def test_a_class_the_probes_cannot_build_is_checked_for_consistency():
    model = Net()
    optimizer = train(model, Momentum(model.parameters(), lr=0.1, secret=1))[1]
    saved = optimizer.state_dict()
    check(Momentum(model.parameters(), lr=0.1, secret=2), saved, "c.pt")

    wrong_shape = copy.deepcopy(saved)
    wrong_shape["state"][1]["buf"] = torch.zeros(4, 3)
    with pytest.raises(CheckpointError, match=r"the parameter's \(3, 4\) \(or 0-dim\)"):
        check(Momentum(model.parameters(), lr=0.1, secret=2), wrong_shape, "c.pt")

    uneven = copy.deepcopy(saved)
    del uneven["state"][2]["count"]
    with pytest.raises(CheckpointError, match=r"parameter 2: state \['buf'\] in the"):
        check(Momentum(model.parameters(), lr=0.1, secret=2), uneven, "c.pt")

    # where this optimizer has state already, the file's must match it
    integers = copy.deepcopy(saved)
    for entry in integers["state"].values():
        entry["buf"] = entry["buf"].to(torch.int64)
    check(Momentum(model.parameters(), lr=0.1, secret=2), integers, "c.pt")
    with pytest.raises(CheckpointError, match=r"buf: torch.int64 in the file, tor"):
        check(optimizer, integers, "c.pt")


def test_a_class_outside_torch_optim_is_probed_where_possible():
    model = Net()
    optimizer = train(model, MySGD(model.parameters(), lr=0.1, momentum=0.9))[1]
    saved = optimizer.state_dict()
    check(MySGD(model.parameters(), lr=0.1, momentum=0.9), saved, "c.pt")
    with pytest.raises(CheckpointError, match=r"\(momentum=0.9\)"):
        check(MySGD(model.parameters(), lr=0.1), saved, "c.pt")


# --- cost -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "names", "expected"),
    [
        ("Adam", ["exp_avg", "exp_avg_sq"], r"\(100000, 100000\) expected"),
        ("Adafactor", ["row_var", "col_var"], r"\(100000, 1\) expected"),
    ],
)
def test_the_probes_take_no_memory_in_proportion_to_the_model(name, names, expected):
    # a 40 GB parameter (on meta): probed on meta, or on small CPU stand-ins
    huge = torch.empty(100_000, 100_000, device="meta", requires_grad=True)
    optimizer = getattr(torch.optim, name)([huge])
    entry = {"step": torch.tensor(1.0)} | {n: torch.zeros(1) for n in names}
    saved = {
        "state": {0: entry},
        "param_groups": [{**optimizer.param_groups[0], "params": [0]}],
    }
    with pytest.raises(CheckpointError, match=r"\(1,\) in the file, " + expected):
        check(optimizer, saved, "c.pt")
