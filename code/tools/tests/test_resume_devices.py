"""Cross-device resume: a checkpoint's optimizer state takes each parameter's device, dtype and
memory format, and ``step`` goes where the fused kernels need it. On the CPU a channels_last
model (as main.py trains on CUDA) with the CPU's fused kernels where this torch has them: they
take the state's strides as they come and compute a wrong update when those differ from the
parameter's. The CUDA test (gpu_check.sh) resumes a CPU checkpoint on the GPU."""
import copy
import io

import pytest
import torch
from torch import nn

import main as driver

OPTIMIZERS = {"SGD": lambda params, fused: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4,
                                                            fused=fused),
              "AdamW": lambda params, fused: torch.optim.AdamW(params, lr=0.01, fused=fused)}


def fused_on(device, name):
    """Whether this torch has the fused kernel of optimizer ``name`` on ``device`` (CPU: torch >= 2.4)."""
    p = torch.zeros(1, device=device, requires_grad=True)
    p.grad = torch.zeros_like(p)
    try:
        OPTIMIZERS[name]([p], True).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def train_steps(model, optimizer, x, steps=1):
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()


def saved_state(name):
    """(model, optimizer state as a checkpoint holds it: saved and loaded onto the CPU) after 2
    steps of a plain NCHW float32 run with the default kernels."""
    model = small_cnn()
    optimizer = OPTIMIZERS[name](model.parameters(), False)
    train_steps(model, optimizer, torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)), 2)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    return model, torch.load(buffer, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_takes_the_parameters_strides_and_the_fused_step_is_right(name):
    trained, state = saved_state(name)
    fused = fused_on("cpu", name)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))

    resumed = copy.deepcopy(trained).to(memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[name](resumed.parameters(), fused)
    driver.load_optimizer_state(optimizer, copy.deepcopy(state))
    conv = resumed[0].weight
    assert conv.stride() != conv.contiguous().stride(), "the model is channels_last"
    for p in resumed.parameters():
        for key, value in optimizer.state[p].items():
            if key == "step":
                assert value.device == p.device and value.dtype == torch.float32
            else:
                assert value.stride() == p.stride() and value.dtype == p.dtype, key
        assert optimizer.param_groups[0]["fused"] == fused, "this run's kernels are kept"

    # the reference: the same channels_last model and batch, torch's own load and per-tensor kernels
    reference = copy.deepcopy(trained).to(memory_format=torch.channels_last)
    ref_optimizer = OPTIMIZERS[name](reference.parameters(), False)
    ref_optimizer.load_state_dict(copy.deepcopy(state))
    x = x.contiguous(memory_format=torch.channels_last)
    train_steps(resumed, optimizer, x)
    train_steps(reference, ref_optimizer, x)
    for (key, got), want in zip(resumed.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_takes_the_parameters_dtype(name):
    trained, state = saved_state(name)
    resumed = copy.deepcopy(trained).to(torch.bfloat16)
    optimizer = OPTIMIZERS[name](resumed.parameters(), False)
    driver.load_optimizer_state(optimizer, state)
    for p in resumed.parameters():
        for key, value in optimizer.state[p].items():
            if key != "step":
                assert value.dtype == torch.bfloat16, key


def test_step_follows_the_kernels_of_this_run():
    """A state saved by a fused run (``fused`` True in its groups, as on CUDA) resumed with the
    default kernels keeps ``step`` on the CPU, a float32 tensor."""
    trained, state = saved_state("AdamW")
    for group in state["param_groups"]:
        group["fused"] = True
    optimizer = OPTIMIZERS["AdamW"](trained.parameters(), False)
    driver.load_optimizer_state(optimizer, state)
    assert not optimizer.param_groups[0]["fused"]
    assert all(s["step"].device.type == "cpu" for s in optimizer.state.values())


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_cpu_checkpoint_resumes_on_cuda_with_fused_kernels(name):
    trained, state = saved_state(name)
    device = torch.device("cuda", torch.cuda.current_device())
    resumed = copy.deepcopy(trained).to(device, memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[name](resumed.parameters(), True)
    driver.load_optimizer_state(optimizer, copy.deepcopy(state))
    for p in resumed.parameters():
        for key, value in optimizer.state[p].items():
            assert value.device == p.device, key
            if key != "step":
                assert value.stride() == p.stride(), key
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    reference = copy.deepcopy(trained)
    ref_optimizer = OPTIMIZERS[name](reference.parameters(), False)
    ref_optimizer.load_state_dict(copy.deepcopy(state))
    with torch.backends.cudnn.flags(allow_tf32=False):
        train_steps(resumed, optimizer, x.to(device).contiguous(memory_format=torch.channels_last))
    train_steps(reference, ref_optimizer, x)
    for got, want in zip(resumed.parameters(), reference.parameters()):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
