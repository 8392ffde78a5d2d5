"""One rule for every integer argument of the library (dlcomp._checks.check_int).

The same mistake gets the same error everywhere: a bool, a float or a string
is a TypeError, an int out of range a ValueError, and the message names the
argument, what came (type and value) and what is allowed. NumPy integers are
accepted. The same for models and optimizers (dlcomp._checks.check_module and
check_optimizer): a TypeError naming the function and the argument, never an
AttributeError from deep inside.
"""

import contextlib
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from dlcomp import (
    CheckpointManager,
    DistributedCheckpointManager,
    LazyMyLinear,
    MeasurementSkipped,
    MyLinear,
    TensorReduction,
    alternate,
    benchmark,
    copy_bandwidth,
    gpu,
    interleaved,
    logging_cost,
    matmul_throughput,
    resumable_training,
    save_checkpoint,
    stack_blocks,
    sync_cost,
    track_norms,
    two_devices,
)
from dlcomp._checks import check_float, check_int


def _calls(tmp_path):
    """Every integer argument of the public API: (label, call, allowed, bad value)."""
    return {
        "MyLinear in_units": (lambda v: MyLinear(v, 3), "MyLinear: in_units", 1),
        "MyLinear units": (lambda v: MyLinear(3, v), "MyLinear: units", 1),
        "TensorReduction in_features": (
            lambda v: TensorReduction(v, 2),
            "TensorReduction: in_features",
            1,
        ),
        "TensorReduction out_features": (
            lambda v: TensorReduction(2, v),
            "TensorReduction: out_features",
            1,
        ),
        "LazyMyLinear units": (lambda v: LazyMyLinear(v), "LazyMyLinear: units", 1),
        "stack_blocks n": (
            lambda v: stack_blocks(lambda: nn.Linear(2, 2), v),
            "stack_blocks: n",
            1,
        ),
        "save_checkpoint step": (
            lambda v: save_checkpoint(tmp_path / "c.pt", nn.Linear(2, 1), step=v),
            "step",
            0,
        ),
        "CheckpointManager.save step": (
            lambda v: CheckpointManager(tmp_path / "m").save(v, nn.Linear(2, 1)),
            "step",
            0,
        ),
        "CheckpointManager keep": (
            lambda v: CheckpointManager(tmp_path / "k", keep=v),
            "CheckpointManager: keep",
            1,
        ),
        "DistributedCheckpointManager keep": (
            lambda v: DistributedCheckpointManager(tmp_path / "d", keep=v),
            "DistributedCheckpointManager: keep",
            1,
        ),
        "resumable_training steps": (
            lambda v: resumable_training(tmp_path / "r1", steps=v),
            "resumable_training: steps",
            0,
        ),
        "resumable_training save_every": (
            lambda v: resumable_training(tmp_path / "r2", steps=2, save_every=v),
            "resumable_training: save_every",
            1,
        ),
        "resumable_training seed": (
            lambda v: resumable_training(tmp_path / "r3", steps=2, seed=v),
            "resumable_training: seed",
            0,
        ),
        "resumable_training keep": (
            lambda v: resumable_training(tmp_path / "r4", steps=2, keep=v),
            "resumable_training: keep",
            1,
        ),
        "track_norms steps": (
            lambda v: track_norms(nn.Linear(2, 1), X, y, steps=v),
            "track_norms: steps",
            1,
        ),
        **{
            f"{who} {count}": (
                # max_runs alone must not fall below the default min_runs
                lambda v, call=call, count=count: call(
                    **{count: v}, **({"min_runs": 1} if count == "max_runs" else {})
                ),
                f"{who}: {count}",
                0 if count == "warmup" else 1,
            )
            for who, call in (
                ("benchmark", lambda **k: benchmark(lambda: None, min_time=0, **k)),
                ("interleaved", lambda **k: interleaved({"a": int}, min_time=0, **k)),
                ("sync_cost", lambda **k: sync_cost([2], min_time=0, **k)),
            )
            for count in ("warmup", "min_runs", "max_runs")
        },
        "alternate rounds": (
            lambda v: alternate({"a": lambda: 1.0}, rounds=v),
            "alternate: rounds",
            1,
        ),
        **{
            f"logging_cost {name}": (
                lambda v, name=name: logging_cost(
                    **{"steps": 2, "n": 2, "repeats": 1, name: v}
                ),
                f"logging_cost: {name}",
                1,
            )
            for name in ("steps", "n", "repeats")
        },
        **{
            f"two_devices {name}": (
                lambda v, name=name: _two_devices_or_skip(**{name: v}),
                f"two_devices: {name}",
                1,
            )
            for name in ("n", "steps", "repeats")
        },
    }


X, y = torch.rand(3, 2), torch.rand(3, 1)
SMALL_LOG = {"steps": 2, "n": 2, "repeats": 1}


def _two_devices_or_skip(**arguments):
    """two_devices checks its arguments first; with one device it then skips."""
    with contextlib.suppress(MeasurementSkipped):
        two_devices(**{"n": 2, "steps": 1, "repeats": 1, **arguments})


LABELS = list(_calls(None))


BELOW = object()  # stands for "one less than the argument's minimum"


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (True, TypeError, "bool True"),
        (2.5, TypeError, "float 2.5"),
        ("3", TypeError, "str '3'"),
        (BELOW, ValueError, None),
    ],
    ids=["bool", "float", "str", "below-minimum"],
)
def test_one_mistake_one_error_naming_argument_value_and_range(
    tmp_path, label, value, error, shown
):
    call, name, minimum = _calls(tmp_path)[label]
    if value is BELOW:
        value = shown = minimum - 1
    expected = f"{name} must be an int >= {minimum}, got {shown}"
    with pytest.raises(error, match=f"^{re.escape(expected)}$"):
        call(value)


@pytest.mark.parametrize("label", LABELS)
def test_numpy_integers_are_accepted_as_python_ints(tmp_path, label):
    call, _, _ = _calls(tmp_path)[label]
    call(np.int64(3))


def test_numpy_sizes_become_python_ints():
    layer = MyLinear(np.int64(4), np.int32(2))
    assert type(layer.in_units) is int
    assert type(layer.units) is int
    assert repr(layer) == "MyLinear(in_units=4, units=2)"
    assert type(LazyMyLinear(np.int64(3)).units) is int
    reduction = TensorReduction(np.int64(3), np.int16(2))
    assert type(reduction.in_features) is int
    assert type(reduction.out_features) is int


def test_check_int_itself():
    assert check_int(np.int64(7), "n") == 7
    assert type(check_int(np.int64(7), "n")) is int
    assert check_int(-3, "n") == -3  # no minimum: any int
    with pytest.raises(TypeError, match=r"^n must be an int, got NoneType None$"):
        check_int(None, "n")
    with pytest.raises(TypeError, match=r"^f: n must be an int >= 1, got bool False$"):
        check_int(False, "n", minimum=1, who="f")
    with pytest.raises(ValueError, match=r"^f: n must be an int >= 1, got 0$"):
        check_int(0, "n", minimum=1, who="f")


# -- real numbers, sizes and the timing comparisons' mappings ------------------


def test_check_float_itself():
    assert check_float(np.float32(0.5), "t") == 0.5
    assert type(check_float(2, "t")) is float
    for bad in (True, "0.1", None, torch.tensor(0.5)):
        with pytest.raises(TypeError, match="t must be a finite number"):
            check_float(bad, "t")
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            check_float(bad, "t", minimum=0)
    with pytest.raises(
        ValueError, match=r"^s: t must be a finite number > 0, got 0.0$"
    ):
        check_float(0, "t", above=0, who="s")


def test_check_int_refuses_tensors_with_dimensions():
    assert check_int(torch.tensor(3), "n") == 3  # a 0-d tensor is a number
    with pytest.raises(TypeError, match="n must be an int"):
        check_int(torch.tensor([[2]]), "n")


TIMERS = {
    "benchmark": lambda **k: benchmark(lambda: None, **k),
    "interleaved": lambda **k: interleaved({"a": int}, **k),
    "sync_cost": lambda **k: sync_cost([2], **k),
}


@pytest.mark.parametrize("who", TIMERS)
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        (-1, ValueError),
        (None, TypeError),
        ("0.1", TypeError),
        (True, TypeError),
    ],
)
def test_min_time_is_a_finite_number_of_seconds(who, value, error):
    with pytest.raises(error, match=f"^{who}: min_time must be a finite number >= 0"):
        TIMERS[who](min_time=value)


@pytest.mark.parametrize("who", TIMERS)
def test_max_runs_below_min_runs_is_refused(who):
    message = f"^{who}: max_runs must be >= min_runs \\(5\\), got 2$"
    with pytest.raises(ValueError, match=message):
        TIMERS[who](min_time=0, min_runs=5, max_runs=2)


def test_min_block_must_be_finite():
    with pytest.raises(ValueError, match="benchmark: min_block must be a finite"):
        benchmark(lambda: None, min_block=float("inf"))
    with pytest.raises(TypeError, match="benchmark: fn must be callable, got int"):
        benchmark(3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: interleaved({}), ValueError, "interleaved: fns is empty"),
        (lambda: interleaved([int]), TypeError, "fns must be a mapping .* got list"),
        (lambda: interleaved({"a": 3}), TypeError, r"fns\['a'\] must be callable"),
        (lambda: alternate({}), ValueError, "alternate: measures is empty"),
        (lambda: alternate([]), TypeError, "measures must be a mapping .* got list"),
    ],
)
def test_comparisons_take_a_non_empty_mapping_of_callables(call, error, message):
    with pytest.raises(error, match=message):
        call()


MIB_MESSAGE = r"sizes_mib\[0\] must be a finite"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: matmul_throughput([0]), ValueError, r"sizes\[0\] must be an int >= 1"),
        (lambda: matmul_throughput([True]), TypeError, r"sizes\[0\] must be an int"),
        (lambda: matmul_throughput([]), ValueError, "sizes is empty"),
        (lambda: matmul_throughput("8"), TypeError, "sequence of sizes, got str"),
        (lambda: sync_cost([2.5]), TypeError, r"sync_cost: sizes\[0\] must be an int"),
        (
            lambda: copy_bandwidth([float("nan")], "cpu"),
            ValueError,
            r"copy_bandwidth: sizes_mib\[0\] must be a finite number > 0",
        ),
        (
            lambda: copy_bandwidth([0], "cpu"),
            ValueError,
            r"sizes_mib\[0\] must be a finite",
        ),
        (
            lambda: copy_bandwidth(["1"], "cpu"),
            TypeError,
            r"sizes_mib\[0\] must be a finite",
        ),
    ],
)
def test_measurement_sizes_are_checked(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_numpy_sizes_are_recorded_as_plain_numbers():
    (row,) = matmul_throughput([np.int64(8)], min_time=0)
    assert json.loads(json.dumps(row.as_dict()))["size"] == 8


def test_a_digit_string_index_is_pointed_to_the_int():
    with pytest.raises(TypeError, match=r"for device 0 use gpu\(0\)$"):
        gpu("0")


# -- what stack_blocks and track_norms are given --------------------------------


def test_stack_blocks_wants_a_factory_not_a_block():
    message = (
        r"^stack_blocks: factory must be a callable that returns a new block, got "
        r"a Linear instance; pass a factory such as lambda: nn\.Linear\(\.\.\.\)$"
    )
    with pytest.raises(TypeError, match=message):
        stack_blocks(nn.Linear(4, 4), 2)
    with pytest.raises(TypeError, match="got NoneType"):
        stack_blocks(None, 2)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"net": None}, "track_norms: net must be an nn.Module, got NoneType"),
        ({"X": [[1.0, 2.0]]}, "track_norms: X must be a torch.Tensor, got list"),
        ({"y": 1.0}, "track_norms: y must be a torch.Tensor, got float"),
        ({"lr": "0.1"}, "track_norms: lr must be a finite number > 0, got str"),
        ({"lr": float("nan")}, "track_norms: lr must be a finite number > 0, got nan"),
        (
            {"loss_fn": lambda out, y: 0.5},
            "track_norms: loss_fn must return a tensor, got float",
        ),
    ],
)
def test_track_norms_checks_what_it_trains(arguments, message):
    given = {"net": nn.Linear(2, 1), "X": X, "y": y, "steps": 1, **arguments}
    error = ValueError if "nan" in message else TypeError
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        track_norms(**given)


def _model_calls(tmp_path):
    """Every public call that takes a model (and an optimizer): label -> call."""
    return {
        "save_checkpoint": lambda m, o: save_checkpoint(
            tmp_path / "c.pt", m, o, step=1
        ),
        "CheckpointManager.save": lambda m, o: CheckpointManager(tmp_path).save(
            1, m, o
        ),
        "DistributedCheckpointManager.save": lambda m, o: DistributedCheckpointManager(
            tmp_path / "dcp"
        ).save(1, m, o),
        "DistributedCheckpointManager.restore": lambda m, o: (
            DistributedCheckpointManager(tmp_path / "dcp").restore(m, o)
        ),
    }


@pytest.mark.parametrize(
    "who",
    [
        "save_checkpoint",
        "CheckpointManager.save",
        "DistributedCheckpointManager.save",
        "DistributedCheckpointManager.restore",
    ],
)
@pytest.mark.parametrize("model", [None, "net.pt", nn.Linear(2, 2).state_dict()])
def test_a_model_of_another_type_is_a_type_error_naming_it(tmp_path, who, model):
    call = _model_calls(tmp_path)[who]
    message = f"{who}: model must be an nn.Module, got {type(model).__name__}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        call(model, None)
    assert not list(tmp_path.glob("**/step-*"))


@pytest.mark.parametrize(
    "who",
    [
        "save_checkpoint",
        "CheckpointManager.save",
        "DistributedCheckpointManager.save",
        "DistributedCheckpointManager.restore",
    ],
)
@pytest.mark.parametrize("optimizer", ["sgd", nn.Linear(2, 2)])
def test_an_optimizer_of_another_type_is_a_type_error_naming_it(
    tmp_path, who, optimizer
):
    call = _model_calls(tmp_path)[who]
    message = (
        f"{who}: optimizer must be a torch.optim.Optimizer or None, got "
        f"{type(optimizer).__name__}"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        call(nn.Linear(2, 2), optimizer)
    assert not list(tmp_path.glob("**/step-*"))


@pytest.mark.parametrize("net", [None, [nn.Linear(2, 2)]])
def test_functions_of_one_model_name_it_when_it_is_not_one(tmp_path, net):
    from dlcomp import materialize, save_safetensors, uninitialized_parameters

    got = type(net).__name__
    with pytest.raises(
        TypeError, match=f"^save_safetensors: model must be an nn.Module, got {got}$"
    ):
        save_safetensors(tmp_path / "w.safetensors", net)
    with pytest.raises(
        TypeError,
        match=f"^uninitialized_parameters: net must be an nn.Module, got {got}$",
    ):
        uninitialized_parameters(net)
    with pytest.raises(
        TypeError, match=f"^materialize: net must be an nn.Module, got {got}$"
    ):
        materialize(net, torch.rand(1, 2))
    assert not list(tmp_path.iterdir())
