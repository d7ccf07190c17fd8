"""Our test_conv: custom_conv2d and CustomConv2d against PyTorch at the course's test_conv.py
settings, and the course's test_conv.py itself (the autograder's check: forward against
F.conv2d, gradcheck, the module) run as a script, beside our helper files and beside the
course's original ones.

The course's test_conv.py prints "... testing failed" and still exits 0 on a failure, so the
script tests read its output.
"""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from student_code import CustomConv2d, custom_conv2d
from tools import CODE_DIR

COURSE_CODE = os.path.join(CODE_DIR, "tools", "tests", "course_release", "code")
N, IN_CHANNELS, OUT_CHANNELS, KERNEL_SIZE, STRIDE, PADDING, SIZE = 2, 3, 64, 7, 2, 3, 12  # the course's


@pytest.fixture
def tensors():
    """float64 input (N, Ci, 12, 12), weight (Co, Ci, 7, 7) and bias (Co,), all requiring grad."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, IN_CHANNELS, SIZE, SIZE, dtype=torch.float64, generator=g).requires_grad_()
    weight = torch.randn(OUT_CHANNELS, IN_CHANNELS, KERNEL_SIZE, KERNEL_SIZE, dtype=torch.float64,
                         generator=g).requires_grad_()
    bias = torch.randn(OUT_CHANNELS, dtype=torch.float64, generator=g).requires_grad_()
    return x, weight, bias


def test_forward_matches_conv2d(tensors):
    x, weight, bias = tensors
    output = custom_conv2d(x, weight, bias, STRIDE, PADDING)
    reference = F.conv2d(x, weight, bias, stride=STRIDE, padding=PADDING)
    assert output.shape == reference.shape
    assert (output - reference).abs().max().item() < 1e-5


def test_module_matches_nn_conv2d_forward_and_backward(tensors):
    x = tensors[0]
    native = nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, KERNEL_SIZE, stride=STRIDE, padding=PADDING).double()
    custom = CustomConv2d(IN_CHANNELS, OUT_CHANNELS, KERNEL_SIZE, stride=STRIDE, padding=PADDING).double()
    custom.load_state_dict(native.state_dict())
    outputs = [m(x).square().sum() for m in (native, custom)]
    grads = [torch.autograd.grad(out, [x, m.weight, m.bias]) for out, m in zip(outputs, (native, custom))]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-8)
    for custom_grad, native_grad in zip(grads[1], grads[0]):
        torch.testing.assert_close(custom_grad, native_grad, rtol=1e-10, atol=1e-8)


def run_test_conv(folder):
    """Run test_conv.py in ``folder`` on the CPU with one thread; returns its output (stdout and
    stderr). One thread: its gradcheck makes ~10,000 tiny convolutions, each op of which waits
    for its threads, minutes on a busy machine; the thread count only changes how a pass is
    chunked, and test_custom_conv.py checks that every chunking gives the same results."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "test_conv.py"], cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    return done.stdout


def assert_all_passed(output):
    assert "Fprop testing passed" in output and "Bprop testing passed" in output, output
    assert "failed" not in output and output.rstrip().endswith("All passed! End of testing."), output


def test_our_test_conv_is_the_courses():
    with open(os.path.join(CODE_DIR, "test_conv.py"), "rb") as ours, \
            open(os.path.join(COURSE_CODE, "test_conv.py"), "rb") as course:
        assert ours.read() == course.read()


def test_courses_test_conv_passes_with_our_helpers():
    assert_all_passed(run_test_conv(CODE_DIR))


def test_courses_test_conv_passes_beside_the_course_helpers(tmp_path):
    for name in os.listdir(COURSE_CODE):
        if name != "student_code.py":
            shutil.copy(os.path.join(COURSE_CODE, name), tmp_path / name)
    shutil.copy(os.path.join(CODE_DIR, "student_code.py"), tmp_path / "student_code.py")
    assert_all_passed(run_test_conv(tmp_path))
