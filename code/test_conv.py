"""Check CustomConv2DFunction against torch's own convolution (the starter's test).

    python test_conv.py

Forward must match F.conv2d within 1e-5, backward must pass torch.autograd.gradcheck
(eps=1e-4, atol=1e-5), and the CustomConv2d module must match nn.Conv2d with the same
weights. Prints "All passed! End of testing." and exits 0 on success; exits 1 otherwise.
"""
import sys

import torch
from torch import nn
from torch.nn import functional as F

from student_code import CustomConv2d, custom_conv2d

N, IN_CHANNELS, OUT_CHANNELS, KERNEL_SIZE, STRIDE, PADDING, SIZE = 2, 3, 64, 7, 2, 3, 12


def check_forward(x, weight, bias):
    """True when custom_conv2d's output is within 1e-5 of F.conv2d's."""
    output = custom_conv2d(x, weight, bias, STRIDE, PADDING)
    reference = F.conv2d(x, weight, bias, stride=STRIDE, padding=PADDING)
    return output.shape == reference.shape and (output - reference).abs().max().item() < 1e-5


def check_backward(x, weight, bias):
    """True when the analytic gradients of input, weight and bias pass gradcheck."""
    return torch.autograd.gradcheck(custom_conv2d, (x, weight, bias, STRIDE, PADDING), eps=1e-4, atol=1e-5,
                                    raise_exception=False)


def check_module(x):
    """True when CustomConv2d, given nn.Conv2d's weights, matches it forward and backward."""
    native = nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, KERNEL_SIZE, stride=STRIDE, padding=PADDING).double()
    custom = CustomConv2d(IN_CHANNELS, OUT_CHANNELS, KERNEL_SIZE, stride=STRIDE, padding=PADDING).double()
    custom.load_state_dict(native.state_dict())
    outputs = [m(x).square().sum() for m in (native, custom)]
    grads = [torch.autograd.grad(out, [x, m.weight, m.bias]) for out, m in zip(outputs, (native, custom))]
    return torch.allclose(outputs[0], outputs[1], rtol=1e-10, atol=1e-8) and all(
        torch.allclose(a, b, rtol=1e-10, atol=1e-8) for a, b in zip(*grads))


def main():
    torch.set_num_threads(1)  # tiny tensors: more threads only add synchronisation (and stall on a busy machine)
    torch.manual_seed(0)
    x = torch.randn(N, IN_CHANNELS, SIZE, SIZE, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(OUT_CHANNELS, IN_CHANNELS, KERNEL_SIZE, KERNEL_SIZE, dtype=torch.float64,
                         requires_grad=True)
    bias = torch.randn(OUT_CHANNELS, dtype=torch.float64, requires_grad=True)
    checks = [("Fprop", lambda: check_forward(x, weight, bias)),
              ("Bprop", lambda: check_backward(x, weight, bias)),
              ("Module", lambda: check_module(x))]
    for name, check in checks:
        if not check():
            print(f"{name} testing failed")
            return 1
        print(f"{name} testing passed")
    print("All passed! End of testing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
