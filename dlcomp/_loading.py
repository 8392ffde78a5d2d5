"""Loading checked states into a model and an optimizer, all or nothing (private).

:mod:`dlcomp.serialization`'s loads stand on these: the checks of a state
against the model (keys, shapes, what can be copied), the random number
generators' states, and the copy itself, which either puts everything in
place or leaves the model and the optimizer as they were
(:func:`copy_in`, :func:`all_or_nothing`, :func:`swap_in`).
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from dlcomp._checkpoint import CheckpointError, check_fits, names
from dlcomp._checks import check_module, check_optimizer
from dlcomp.devices import current_accelerator

__all__ = [
    "all_or_nothing",
    "check_copyable",
    "check_materialized",
    "check_rng_states",
    "check_source",
    "check_state_dict",
    "check_target",
    "class_name",
    "copy_in",
    "is_lazy",
    "optimizer_entries",
    "overlaps",
    "rng_states",
    "set_rng_states",
    "swap_in",
    "swappable",
]


def check_materialized(model: nn.Module, what: str) -> None:
    lazy = [
        name
        for name, value in itertools.chain(
            model.named_parameters(remove_duplicate=False),
            model.named_buffers(remove_duplicate=False),
        )
        if isinstance(value, UninitializedParameter | UninitializedBuffer)
    ]
    if lazy:
        raise ValueError(
            f"cannot {what} a model with uninitialized (lazy) parameters or "
            f"buffers ({names(lazy)}): they have no values yet. Run the model "
            "once on a sample batch (or dlcomp.materialize(model, sample)) first"
        )


def check_source(model: object, optimizer: object, *, who: str) -> None:
    """The model and optimizer a save reads: a TypeError for another type."""
    check_module(model, "model", who=who)
    check_optimizer(optimizer, who=who)


def class_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def rng_states() -> dict[str, Any]:
    """The states of torch's random number generators: the CPU's, each accelerator's."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    accelerator = current_accelerator()
    if accelerator is not None:
        module = torch.get_device_module(accelerator)
        states[accelerator.type] = [
            module.get_rng_state(i) for i in range(module.device_count())
        ]
    return states


def check_rng_states(states: object, where: str) -> None:
    """Refuse RNG states that torch would not take, before anything is loaded."""
    cpu = states.get("cpu") if isinstance(states, dict) else None
    own = torch.get_rng_state()
    if not (
        isinstance(cpu, Tensor) and cpu.dtype == own.dtype and cpu.shape == own.shape
    ):
        raise CheckpointError(
            f"{where} is damaged: its random number generator state is not the "
            f"{own.dtype} tensor of shape {tuple(own.shape)} torch uses. Nothing "
            "was loaded"
        )
    assert isinstance(states, dict)
    for device, saved in states.items():
        if device != "cpu" and not (
            isinstance(saved, list)
            and all(isinstance(t, Tensor) and t.dtype == torch.uint8 for t in saved)
        ):
            raise CheckpointError(
                f"{where} is damaged: its {device!s:.20} generator states are not "
                "byte tensors. Nothing was loaded"
            )


def set_rng_states(states: dict[str, Any], where: Path) -> None:
    """Restore the generators ``states`` holds; warn for devices this machine lacks.

    All of them or none: if torch refuses one (a state no generator could
    have), those already set are put back and the error is raised.
    """
    before = rng_states()
    try:
        _set_each_rng_state(states, where)
    except BaseException:
        _set_each_rng_state(before, where, quiet=True)
        raise


def _set_each_rng_state(
    states: dict[str, Any], where: Path, *, quiet: bool = False
) -> None:
    torch.set_rng_state(states["cpu"].cpu())
    accelerator = current_accelerator()
    for device, saved in states.items():
        if device == "cpu":
            continue
        module = None
        if accelerator is not None and accelerator.type == device:
            module = torch.get_device_module(accelerator)
        here = 0 if module is None else module.device_count()
        if module is None or here != len(saved):
            if quiet:
                continue
            warnings.warn(
                f"{where.name} holds the random number generator states of "
                f"{len(saved)} {device!s:.20} devices and this machine has {here}: "
                "those were not restored (the CPU's was), so random draws on the "
                "devices will differ from the saved run's",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        for index, state in enumerate(saved):
            module.set_rng_state(state.cpu(), index)


def _shape(value: object) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, Tensor) else None


def check_state_dict(
    model: nn.Module, state: Mapping[str, Any], what: str = "checkpoint"
) -> None:
    """Raise CheckpointError unless ``state`` fits ``model`` and can be copied in."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"the {what}'s model state is not a state_dict")
    own = model.state_dict()
    expected = {
        k: None
        if isinstance(v, UninitializedParameter | UninitializedBuffer)
        else (_shape(v))
        for k, v in own.items()
    }
    check_fits(expected, {k: _shape(v) for k, v in state.items()}, what=what,
               model=type(model).__name__)  # fmt: skip
    check_copyable(own, state, what)


def check_copyable(own: Mapping[str, Any], state: Mapping[str, Any], what: str) -> None:
    """Entries that have the right shape but could not be copied into the model."""
    bad = []
    for name, value in state.items():
        ours = own[name]
        if not isinstance(ours, Tensor):
            continue  # a module's extra state (get_extra_state): any value
        if not isinstance(value, Tensor):
            bad.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif value.device.type == "meta":
            bad.append(f"{name} is on the meta device (it has no values)")
        elif isinstance(ours, Tensor) and value.layout != ours.layout:
            bad.append(f"{name} is {value.layout}, the model's is {ours.layout}")
        elif value.is_complex() and not ours.is_complex():
            bad.append(
                f"{name} is complex ({value.dtype}), the model's is {ours.dtype}"
            )
    if bad:
        raise CheckpointError(
            f"the {what} has entries that cannot be loaded: {names(bad)}. "
            "Nothing was loaded"
        )


def optimizer_entries(state: object) -> list[tuple[object, dict[str, Any]]]:
    """The per-parameter entries of an optimizer state that are dicts."""
    if not isinstance(state, dict):
        return []
    return [(k, v) for k, v in state.items() if isinstance(v, dict)]


def overlaps(tensor: Tensor) -> bool:
    """Whether elements of ``tensor`` share memory (an expanded view)."""
    if tensor.numel() == 0:
        return False
    span = 1 + sum(
        (n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return span < tensor.numel()


@contextmanager
def all_or_nothing(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    copy_model: bool = True,
) -> Iterator[None]:
    """Undo every change to ``model`` and ``optimizer`` if the block fails.

    Even a KeyboardInterrupt between the two loads leaves both as they were.
    The optimizer's state is kept by reference (``load_state_dict`` replaces
    it, leaving the old tensors as they were); the model's is copied, unless
    ``copy_model`` is false because the block puts tensors in place itself
    and undoes that (:func:`swap_in`).
    """
    saved_model = (
        {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if isinstance(v, Tensor)
            and not isinstance(v, UninitializedParameter | UninitializedBuffer)
        }
        if copy_model
        else None
    )
    saved_optimizer = None
    if optimizer is not None:
        saved_optimizer = optimizer.state_dict()  # references: replaced, not changed
        saved_optimizer["state"] = {
            k: dict(v) for k, v in saved_optimizer["state"].items()
        }
    try:
        yield
    except BaseException:
        if saved_model is not None:
            model.load_state_dict(saved_model, strict=False)
        if optimizer is not None and saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
        raise


# Modules whose _load_from_state_dict only adds what an older file lacks (a
# BatchNorm's num_batches_tracked): a state with every key needs nothing of it.
_PLAIN_LOADERS = (nn.Module._load_from_state_dict,)


def swappable(model: nn.Module) -> bool:
    """Whether loading ``model`` is only putting tensors in place.

    True when no module has its own loading code, load hooks or extra state,
    and every parameter and buffer is a plain tensor: then
    :func:`swap_in` does what ``load_state_dict`` would, without a copy.
    """
    from torch.nn.modules.batchnorm import _NormBase

    for module in model.modules():
        kind = type(module)
        loader = kind._load_from_state_dict
        if (
            loader not in _PLAIN_LOADERS
            and loader is not _NormBase._load_from_state_dict
        ):
            return False
        if module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks:
            return False
        if kind.get_extra_state is not nn.Module.get_extra_state:
            return False
    return all(
        type(t) in (Tensor, nn.Parameter)
        for t in itertools.chain(model.parameters(), model.buffers())
    )


def swap_in(model: nn.Module, state: Mapping[str, Tensor]) -> Callable[[], None]:
    """Put the loaded tensors in place of the model's; return how to undo it.

    Each parameter and buffer keeps its identity (an optimizer still holds
    it) and gets the loaded tensor as its ``.data``, converted to its device,
    dtype and strides where they differ: the model's old values are not
    copied, they are kept until the load is over. Tied entries are swapped
    once.
    """
    targets = dict(
        itertools.chain(
            model.named_parameters(remove_duplicate=False),
            model.named_buffers(remove_duplicate=False),
        )
    )
    prepared: dict[int, tuple[Tensor, Tensor]] = {}
    taken: set[int] = set()
    for name, value in state.items():
        target = targets.get(name)
        if target is None or id(target) in prepared:
            continue  # not persistent, or tied: swapped once
        new = value.detach().to(device=target.device, dtype=target.dtype)
        if new.stride() != target.stride() or id(new) in taken:
            new = torch.empty_strided(
                target.shape, target.stride(), dtype=target.dtype, device=target.device
            ).copy_(new)
        taken.add(id(new))
        prepared[id(target)] = (target, new)
    swapped: list[tuple[Tensor, Tensor]] = []

    def undo() -> None:
        for target, old in reversed(swapped):
            target.data = old

    try:
        for target, new in prepared.values():
            swapped.append((target, target.data))
            target.data = new
    except BaseException:
        undo()
        raise
    return undo


def check_target(
    model: object, optimizer: object = None, *, who: str = "load_checkpoint"
) -> None:
    """The model and optimizer a load copies into: right types, real values."""
    module = check_module(model, "model", who=who)
    check_optimizer(optimizer, who=who)
    on_meta = [
        name
        for name, value in itertools.chain(
            module.named_parameters(), module.named_buffers()
        )
        if value.device.type == "meta"
    ]
    if on_meta:
        raise ValueError(
            f"the model has parameters on the meta device ({names(on_meta)}): they "
            "have no memory to load into. Give them memory first "
            "(model.to_empty(device='cpu')), then load"
        )
    if optimizer is not None and is_lazy(module):
        raise ValueError(
            "the model has uninitialized (lazy) parameters, and an optimizer "
            "built before they were initialized does not hold them. Run the "
            "model once on a sample batch, build the optimizer, then load"
        )


def is_lazy(model: nn.Module) -> bool:
    return any(
        isinstance(value, UninitializedParameter | UninitializedBuffer)
        for value in itertools.chain(model.parameters(), model.buffers())
    )


def copy_in(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    load: Callable[[nn.Module], None],
    where: str,
    *,
    copy_model: bool = True,
) -> None:
    """Run ``load`` on ``model`` (and load the optimizer): all of it, or none.

    A model with uninitialized (lazy) parameters is tried on a copy first:
    loading initializes them, which a rollback could not undo.
    """
    try:
        if is_lazy(model):
            load(copy.deepcopy(model))
        with all_or_nothing(model, optimizer, copy_model=copy_model):
            load(model)
    except Exception as error:
        raise CheckpointError(
            f"{where} could not be loaded ({error}); the model and the optimizer "
            "were left unchanged"
        ) from error
