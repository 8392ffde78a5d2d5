"""Section 5.6, "GPUs": device helpers that work for any accelerator.

The book's helpers (:func:`~dlcomp.cpu`, :func:`~dlcomp.gpu`,
:func:`~dlcomp.num_gpus`, :func:`~dlcomp.try_gpu`,
:func:`~dlcomp.try_all_gpus`) speak CUDA only. These ask PyTorch for
whatever accelerator it can actually use (CUDA, Apple MPS, Intel XPU, ...)
through :mod:`torch.accelerator`, and count a device only when it is
*available*, not merely compiled in.

- :func:`~dlcomp.current_accelerator`: the available accelerator's device
  type, or ``None``.
- :func:`~dlcomp.describe_devices`: what you would look up with
  ``nvidia-smi``: names, memory, versions.
- :func:`~dlcomp.common_device`: the device shared by some tensors and
  modules, or an error that names the devices and the fix.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dlcomp._checks import check_int
from dlcomp._table import html_table, text_table

__all__ = [
    "DeviceInfo",
    "DeviceReport",
    "common_device",
    "cpu",
    "current_accelerator",
    "describe_devices",
    "gpu",
    "num_gpus",
    "try_all_gpus",
    "try_gpu",
]


def current_accelerator() -> torch.device | None:
    """The accelerator PyTorch can use right now (``cuda``, ``mps``, ``xpu``, ...), or ``None``.

    "Available" means a device is present and usable, not only that this
    build of torch was compiled with support for it: a CUDA build of torch on
    a machine without a GPU returns ``None``.

    Returns:
        torch.device | None: a device without an index, e.g. ``device(type='cuda')``.

    Examples:
        Put a network and its data on the accelerator, or on the CPU without one:

        >>> device = current_accelerator() or cpu()
        >>> net = nn.Linear(3, 1).to(device)
        >>> net(torch.ones(2, 3, device=device)).shape
        torch.Size([2, 1])
    """  # noqa: E501
    device = torch.accelerator.current_accelerator(check_available=True)
    return torch.device(device.type) if device is not None else None


def num_gpus() -> int:
    """How many accelerator devices are available (0 on a CPU-only machine).

    Examples:
        Split a batch into one shard per device, compute on each, gather:

        >>> X = torch.arange(8.0).reshape(4, 2)
        >>> shards = X.chunk(max(num_gpus(), 1))  # one shard on a CPU-only machine
        >>> outputs = [2 * shard.to(try_gpu(i)) for i, shard in enumerate(shards)]
        >>> torch.equal(torch.cat([Y.cpu() for Y in outputs]), 2 * X)
        True
    """
    if current_accelerator() is None:
        return 0
    return int(torch.accelerator.device_count())


def cpu() -> torch.device:
    """The CPU device.

    Examples:
        >>> cpu()
        device(type='cpu')
    """
    return torch.device("cpu")


def _index(helper: str, i: int) -> int:
    """``i`` as an ``int`` device index, or the error that says why it is not one.

    The library's rule for integers (``check_int``), with a hint for the two
    usual slips: a device name where an index goes, and a negative index.
    """
    try:
        return check_int(i, "i", minimum=0, who=helper)
    except TypeError as error:
        if isinstance(i, str) and i.isdigit():
            hint = f"for device {int(i)} use {helper}({int(i)})"
        else:
            name = i if isinstance(i, str) else "cuda"
            hint = f"for a device by name use torch.device({name!r})"
        raise TypeError(f"{error}; {hint}") from None
    except ValueError as error:
        raise ValueError(
            f"{error}: devices are numbered from 0 (for the last one use "
            f"{helper}(num_gpus() - 1))"
        ) from None


def gpu(i: int = 0) -> torch.device:
    """Accelerator device ``i``; an error if there is no such device.

    The book's ``gpu(i)`` returns ``torch.device(f"cuda:{i}")`` even when
    that device does not exist, and the mistake surfaces later, far away.
    This one checks at once. Use :func:`try_gpu` to fall back to the CPU.

    Args:
        i: the device index, an ``int`` from 0 (for a device by name, such as
            ``"cuda"``, use ``torch.device("cuda")``).

    Raises:
        TypeError: when ``i`` is not an ``int`` (a ``str``, a ``bool``, ...).
        ValueError: when ``i`` is negative.
        RuntimeError: when there is no accelerator, or fewer than ``i + 1``.

    Examples:
        Asking for a device past the last one fails at once, on any machine:

        >>> gpu(num_gpus())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        RuntimeError: gpu(...): ... use try_gpu(...) to fall back to the CPU
        >>> gpu("cuda")
        Traceback (most recent call last):
        ...
        TypeError: gpu: i must be an int >= 0, got str 'cuda'; for a device by name use torch.device('cuda')
    """  # noqa: E501
    i = _index("gpu", i)
    accelerator = current_accelerator()
    count = num_gpus()
    if accelerator is None:
        raise RuntimeError(
            f"gpu({i}): this machine has no accelerator PyTorch can use "
            f"(torch {torch.__version__}); use try_gpu({i}) to fall back to the CPU"
        )
    if i >= count:
        raise RuntimeError(
            f"gpu({i}): there are {count} {accelerator.type} device(s), "
            f"numbered 0 to {count - 1}; use try_gpu({i}) to fall back to the CPU"
        )
    return torch.device(accelerator.type, i)


def try_gpu(i: int = 0) -> torch.device:
    """Accelerator device ``i`` if it exists, else the CPU.

    Only a missing device falls back to the CPU; an index that is no index
    at all is an error, not a silent run on the CPU.

    Args:
        i: the device index, an ``int`` from 0 (for a device by name, such as
            ``"cuda"``, use ``torch.device("cuda")``).

    Raises:
        TypeError: when ``i`` is not an ``int`` (a ``str``, a ``bool``, ...).
        ValueError: when ``i`` is negative (no machine has such a device).

    Examples:
        >>> try_gpu(10_000)
        device(type='cpu')
        >>> try_gpu(-1)
        Traceback (most recent call last):
        ...
        ValueError: try_gpu: i must be an int >= 0, got -1: devices are numbered from 0 (for the last one use try_gpu(num_gpus() - 1))
    """  # noqa: E501
    i = _index("try_gpu", i)
    return gpu(i) if i < num_gpus() else cpu()


def try_all_gpus() -> list[torch.device]:
    """All accelerator devices, or ``[cpu()]`` if there is none.

    (The book's docstring promises ``[cpu()]``. The PyTorch code of d2l-en
    returns ``[]`` without a GPU; that of d2l-zh, which the study notes
    quote, returns ``[cpu()]``, as this one does.)

    Examples:
        One replica of a network per device (one, on the CPU, without an
        accelerator), each computing on its own copy of the batch:

        >>> X = torch.ones(2, 4)
        >>> replicas = [nn.Linear(4, 1).to(d) for d in try_all_gpus()]
        >>> {tuple(net(X.to(d)).shape) for net, d in zip(replicas, try_all_gpus())}
        {(2, 1)}
    """
    return [gpu(i) for i in range(num_gpus())] or [cpu()]


def _where(value: object) -> torch.device | None:
    if isinstance(value, Tensor):
        return value.device
    if isinstance(value, nn.Module):
        first = next(iter([*value.parameters(), *value.buffers()]), None)
        return None if first is None else first.device
    raise TypeError(
        f"common_device takes tensors and modules, got a {type(value).__name__}"
    )


def common_device(
    *items: Tensor | nn.Module, **named: Tensor | nn.Module
) -> torch.device:
    """The device all the given tensors and modules are on; an error if they differ.

    PyTorch refuses to compute with tensors on different devices, with a
    message that names the devices but not the variables. This check names
    both and says how to fix it. Pass items by keyword to name them.

    Args:
        *items: tensors and modules (a module's device is that of its first
            parameter or buffer; a module without any is skipped).
        **named: the same, with names for the error message.

    Returns:
        torch.device: the common device (the CPU if nothing has a device).

    Raises:
        RuntimeError: when two of them are on different devices.

    Examples:
        >>> common_device(torch.ones(2), net=nn.Linear(2, 2))
        device(type='cpu')
        >>> common_device(X=torch.ones(2), Y=torch.ones(2, device="meta"))
        Traceback (most recent call last):
        ...
        RuntimeError: X is on cpu but Y is on meta. Move one of them first, e.g. Y = Y.to(X.device) (for a module: net.to(X.device))
    """  # noqa: E501
    labelled = [(f"argument {i}", v) for i, v in enumerate(items)] + list(named.items())
    first_name, first_device = None, None
    for name, value in labelled:
        device = _where(value)
        if device is None:
            continue
        if first_device is None:
            first_name, first_device = name, device
        elif device != first_device:
            raise RuntimeError(
                f"{first_name} is on {first_device} but {name} is on {device}. "
                f"Move one of them first, e.g. {name} = {name}.to({first_name}.device) "
                f"(for a module: net.to({first_name}.device))"
            )
    return first_device or cpu()


@dataclass(frozen=True)
class DeviceInfo:
    """One device, as :func:`describe_devices` reports it (see its examples)."""

    device: str
    """The device, e.g. ``"cuda:0"``."""
    name: str
    """The model name, e.g. ``"NVIDIA H100 80GB HBM3"``."""
    memory_gib: float | None
    """Total memory in GiB, where PyTorch can tell."""
    capability: str | None
    """Compute capability (CUDA), e.g. ``"9.0"``."""


@dataclass(frozen=True)
class DeviceReport:
    """The devices and versions of this machine; prints as text, renders as HTML.

    Returned by :func:`describe_devices` (see its examples).
    """

    devices: tuple[DeviceInfo, ...]
    """The accelerators, or only the CPU when there are none."""
    torch: str
    """torch's version."""
    cuda: str | None
    """The CUDA version torch was built with (``None`` for a CPU build)."""
    cudnn: str | None
    """cuDNN's version, where present."""
    python: str
    """Python's version."""

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (
                d.device,
                d.name,
                "-" if d.memory_gib is None else f"{d.memory_gib:.1f} GiB",
                d.capability or "-",
            )
            for d in self.devices
        ]

    def _versions(self) -> str:
        cuda = self.cuda or "none (CPU build)"
        extra = f", cuDNN {self.cudnn}" if self.cudnn else ""
        return f"torch {self.torch}, CUDA {cuda}{extra}, Python {self.python}"

    _HEADER = ("device", "name", "memory", "capability")

    def __str__(self) -> str:
        return text_table(self._HEADER, self._rows(), self._versions())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_table(self._HEADER, self._rows(), self._versions())

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON files of benchmark results."""
        return {
            "devices": [d.__dict__ for d in self.devices],
            "torch": self.torch,
            "cuda": self.cuda,
            "cudnn": self.cudnn,
            "python": self.python,
        }


def _info(device: torch.device) -> DeviceInfo:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceInfo(
            str(device),
            props.name,
            props.total_memory / 2**30,
            f"{props.major}.{props.minor}",
        )
    name = device.type.upper()
    module = getattr(torch, device.type, None)
    if module is not None and hasattr(module, "get_device_name"):
        name = module.get_device_name(device)
    return DeviceInfo(str(device), name, None, None)


def describe_devices() -> DeviceReport:
    """Describe this machine's devices and the versions of torch, CUDA and Python.

    Returns:
        DeviceReport: prints as an aligned text table (``print(report)``) and
        renders as an HTML table in notebooks.

    Examples:
        >>> report = describe_devices()
        >>> print(report)  # doctest: +ELLIPSIS
        device  name...
        ...torch ...

        Label a measurement with where it was made, and store the report
        beside the results (:class:`DeviceInfo` fields per device):

        >>> print(f"on {report.devices[0].name}, torch {report.torch}")  # doctest: +ELLIPSIS
        on ..., torch ...
        >>> import json
        >>> record = json.loads(json.dumps(report.as_dict()))
        >>> sorted(record), sorted(record["devices"][0])
        (['cuda', 'cudnn', 'devices', 'python', 'torch'], ['capability', 'device', 'memory_gib', 'name'])
    """  # noqa: E501
    devices = try_all_gpus()
    if devices == [cpu()]:
        infos: tuple[DeviceInfo, ...] = (
            DeviceInfo("cpu", f"CPU ({platform.machine()})", None, None),
        )
    else:
        infos = tuple(_info(d) for d in devices)
    cudnn = (
        torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    )
    return DeviceReport(
        devices=infos,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=None if cudnn is None else str(cudnn),
        python=platform.python_version(),
    )
