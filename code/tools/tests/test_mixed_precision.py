"""The AMP dtype: bf16 only where the GPU has it natively (compute capability >= 8.0), fp16 with a
GradScaler below, float32 on the CPU; the same rule in main.py and bench_train.py. The GPU is faked
by monkeypatching torch.cuda.get_device_capability, so these run on the CPU."""
import argparse

import pytest
import torch

import main as driver
from mixed_precision import Float32Flags, cuda_amp_dtype, precision_name

from tools import bench_train

CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Set the faked compute capability: ``fake_gpu((7, 5))``. The emulated-bf16 answer of
    is_bf16_supported() is faked True too, as old GPUs give it."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    def set_capability(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return set_capability


@pytest.mark.parametrize("capability, dtype", [
    ((6, 0), torch.float16), ((7, 0), torch.float16), ((7, 5), torch.float16),
    ((8, 0), torch.bfloat16), ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16), ((10, 0), torch.bfloat16),
])
def test_bf16_only_from_compute_capability_8(fake_gpu, capability, dtype):
    fake_gpu(capability)
    assert cuda_amp_dtype(CUDA) == dtype
    args = argparse.Namespace(no_amp=False)
    assert driver.autocast_dtype(CUDA, args) == dtype
    assert bench_train.resolve_amp_dtype("auto", CUDA) == dtype, "bench_train follows main.py's rule"


def test_precision_line_names_the_dtype(fake_gpu, default_tf32_flags):
    on, off = argparse.Namespace(no_amp=False), argparse.Namespace(no_amp=True)
    fake_gpu((7, 5))
    assert driver.precision_line(CUDA, on) == (
        "=> precision: AMP float16 with GradScaler (compute capability 7.5 < 8.0: no native bf16)")
    fake_gpu((9, 0))
    assert driver.precision_line(CUDA, on) == "=> precision: AMP bfloat16 (compute capability 9.0: native bf16)"
    assert driver.precision_line(CUDA, off) == (
        "=> precision: float32 (--no-amp; arithmetic: tf32 conv, fp32 matmul)"), "PyTorch's default flags"
    assert driver.autocast_dtype(CUDA, off) is None
    cpu = torch.device("cpu")
    assert driver.precision_line(cpu, on) == "=> precision: float32 (no AMP on the CPU)"
    assert driver.autocast_dtype(cpu, on) is None
    assert bench_train.resolve_amp_dtype("auto", cpu) == torch.bfloat16
    assert bench_train.resolve_amp_dtype("fp16", cpu) == torch.float16


@pytest.mark.parametrize("capability, enabled", [((7, 5), True), ((8, 0), False)])
def test_fp16_runs_get_a_grad_scaler(fake_gpu, capability, enabled):
    """main.py's scaler is on exactly when the run autocasts to fp16."""
    fake_gpu(capability)
    scaler = driver.make_grad_scaler(torch.device("cpu"), driver.autocast_dtype(CUDA, argparse.Namespace(no_amp=False)))
    assert scaler.is_enabled() == enabled


@pytest.fixture
def default_tf32_flags():
    """PyTorch's defaults: cuDNN convolutions may use TF32, cuBLAS matrix products may not
    (set here, restored afterwards, so that a test can change them)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("conv, matmul, name", [(True, False, "tf32 conv, fp32 matmul"), (True, True, "tf32"),
                                                (False, False, "fp32"), (False, True, "fp32 conv, tf32 matmul")])
def test_precision_names_follow_the_backend_flags(default_tf32_flags, conv, matmul, name):
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
    assert precision_name(CUDA) == name
    assert precision_name(torch.device("cpu")) == "fp32", "no TF32 on the CPU"
    assert precision_name(CUDA, torch.bfloat16) == "bf16" and precision_name("cpu", torch.float16) == "fp16"


def test_float32_flags_set_and_restore(default_tf32_flags):
    with Float32Flags(False):
        assert precision_name(CUDA) == "fp32"
        with Float32Flags(True):
            assert precision_name(CUDA) == "tf32"
        assert precision_name(CUDA) == "fp32"
    assert precision_name(CUDA) == "tf32 conv, fp32 matmul"
