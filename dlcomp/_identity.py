"""When are two tensors the same values? (private).

:func:`~dlcomp.parameter_table` counts tied parameters once, and
:func:`~dlcomp.save_safetensors` stores them once; both ask these keys.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn.parameter import UninitializedParameter

__all__ = ["storage_key", "view_key"]


def storage_key(param: Tensor) -> tuple[object, ...]:
    """Tensors with equal keys share their memory (tied)."""
    if isinstance(param, UninitializedParameter) or param.device.type == "meta":
        return ("object", id(param))  # no real memory to compare
    return (param.device, param.untyped_storage().data_ptr())


def view_key(param: Tensor) -> tuple[object, ...]:
    """Tensors with equal keys are the very same values (counted once).

    The same memory seen with another dtype (``x.view(torch.int32)``) is
    another tensor; tensors without elements share no values.
    """
    if (
        isinstance(param, UninitializedParameter)
        or param.device.type == "meta"
        or param.numel() == 0
    ):
        return ("object", id(param))
    return (
        param.device,
        param.data_ptr(),
        param.dtype,
        tuple(param.shape),
        param.stride(),
    )
