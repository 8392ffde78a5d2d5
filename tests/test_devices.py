"""Tests of dlcomp.devices, on this machine and on a simulated two-GPU machine."""

import pytest
import torch
from torch import nn

import dlcomp
from dlcomp import (
    common_device,
    cpu,
    current_accelerator,
    describe_devices,
    gpu,
    num_gpus,
    try_all_gpus,
    try_gpu,
)

needs_gpu = pytest.mark.skipif(
    num_gpus() == 0,
    reason="no accelerator here; the CPU twins of this test ran instead",
)


# --- on this machine ----------------------------------------------------------


@pytest.mark.skipif(num_gpus() > 0, reason="checks the CPU-only behaviour")
def test_cpu_only_machine():
    assert current_accelerator() is None
    assert num_gpus() == 0
    assert try_gpu() == cpu()
    assert try_gpu(10) == cpu()
    assert try_all_gpus() == [cpu()]  # what the book's docstring promises
    with pytest.raises(
        RuntimeError, match=r"no accelerator PyTorch can use.*try_gpu\(0\)"
    ):
        gpu()


def test_cpu_is_the_cpu():
    assert cpu() == torch.device("cpu")


def test_describe_devices_text_and_html():
    report = describe_devices()
    text = str(report)
    assert text.splitlines()[0].split() == ["device", "name", "memory", "capability"]
    assert f"torch {torch.__version__}" in text
    assert report.cuda == torch.version.cuda
    html = report._repr_html_()
    assert html.count("<tr>") == 1 + len(report.devices)
    assert report.as_dict()["torch"] == torch.__version__


# --- arguments of the wrong type or value -------------------------------------


@pytest.mark.parametrize("helper", [gpu, try_gpu])
@pytest.mark.parametrize(
    ("index", "got", "by_name"),
    [
        ("cuda", "str 'cuda'", "torch.device('cuda')"),
        ("cuda:0", "str 'cuda:0'", "torch.device('cuda:0')"),
        (True, "bool True", "torch.device('cuda')"),
        (1.0, "float 1.0", "torch.device('cuda')"),
    ],
)
def test_an_index_must_be_an_int(helper, index, got, by_name):
    with pytest.raises(TypeError) as info:
        helper(index)
    assert str(info.value) == (
        f"{helper.__name__}: i must be an int >= 0, got {got}; "
        f"for a device by name use {by_name}"
    )


@pytest.mark.parametrize("helper", [gpu, try_gpu])
def test_a_negative_index_is_a_wrong_value(helper):
    """Not "no such device, use the CPU": PyTorch has no negative device index."""
    message = r"i must be an int >= 0, got -1: devices are numbered .*num_gpus\(\) - 1"
    with pytest.raises(ValueError, match=message):
        helper(-1)


# --- a simulated machine with two CUDA devices --------------------------------


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(
        dlcomp.devices, "current_accelerator", lambda: torch.device("cuda")
    )
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)


def test_helpers_with_two_devices(two_gpus):
    assert num_gpus() == 2
    assert gpu(1) == torch.device("cuda", 1)
    assert try_gpu(1) == torch.device("cuda", 1)
    assert try_gpu(2) == cpu()
    with pytest.raises(ValueError, match="got -1"):
        try_gpu(-1)
    assert try_all_gpus() == [torch.device("cuda", 0), torch.device("cuda", 1)]
    with pytest.raises(
        RuntimeError, match=r"there are 2 cuda device\(s\), numbered 0 to 1"
    ):
        gpu(2)


def test_numpy_integers_are_indices(two_gpus):
    np = pytest.importorskip("numpy")
    assert gpu(np.int64(1)) == torch.device("cuda", 1)
    assert try_gpu(np.int64(1)) == torch.device("cuda", 1)


def test_helpers_follow_the_available_accelerator(monkeypatch):
    monkeypatch.setattr(
        dlcomp.devices, "current_accelerator", lambda: torch.device("mps")
    )
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 1)
    assert try_all_gpus() == [torch.device("mps", 0)]


def test_compiled_in_but_unavailable_is_not_an_accelerator(monkeypatch):
    """A CUDA build of torch on a machine without a GPU: nothing is available."""
    calls = []

    def current(check_available=False):
        calls.append(check_available)
        return None if check_available else torch.device("cuda")

    monkeypatch.setattr(torch.accelerator, "current_accelerator", current)
    assert current_accelerator() is None
    assert calls == [True]


# --- mixing devices -----------------------------------------------------------


def test_common_device_of_matching_items():
    assert common_device(torch.ones(2), nn.Linear(2, 2), nn.ReLU()) == cpu()
    assert common_device() == cpu()


def test_mixing_devices_names_both_and_the_fix():
    with pytest.raises(
        RuntimeError, match=r"X is on cpu but net is on meta\. Move one"
    ):
        common_device(X=torch.ones(2), net=nn.Linear(2, 2, device="meta"))
    with pytest.raises(
        RuntimeError, match=r"argument 0 is on meta but argument 1 is on cpu"
    ):
        common_device(torch.ones(1, device="meta"), torch.ones(1))


def test_common_device_refuses_other_things():
    with pytest.raises(TypeError, match="takes tensors and modules, got a list"):
        common_device([1, 2])


# --- on a real accelerator ----------------------------------------------------


@pytest.mark.gpu
@needs_gpu
def test_on_a_real_accelerator():
    device = try_gpu()
    assert device.type == current_accelerator().type
    X = torch.ones(2, 3, device=device)
    assert X.device == device
    assert X.to(device) is X  # already there: no copy
    net = nn.Linear(3, 1).to(device)
    assert common_device(X, net) == device
    with pytest.raises(RuntimeError, match="Move one of them first"):
        common_device(X.cpu(), net)
