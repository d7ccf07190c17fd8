"""-e and -a repeat bit for bit on a GPU: main.py runs them with cuDNN's deterministic algorithms and
torch.use_deterministic_algorithms, and the backward of every CNN the attack differentiates is made of ops
that have deterministic CUDA kernels. The AdaptiveAvgPool2d((1, 1)) of SimpleNet, whose CUDA backward
(atomicAdd) torch lists as nondeterministic, is not one of them: torch computes a 1x1 adaptive average
pool as a mean over H and W, whose backward is an expand."""
import os

import pytest
import torch
from torch import nn

import main as driver
from student_code import CustomConv2d, IMAGENET_MEAN, IMAGENET_STD, PGDAttack, SimpleNet

# Backward ops of the attacked CNNs, none of them in torch.use_deterministic_algorithms' lists of ops that are
# nondeterministic on CUDA (convolutions are deterministic with cudnn.deterministic, which -a sets; the custom
# convolution's backward is matrix products and fold).
DETERMINISTIC_ON_CUDA = {
    "AccumulateGrad", "AddBackward0", "AddmmBackward0", "AsStridedBackward1", "AvgPool2DBackward0",
    "ConvolutionBackward0", "CustomConv2DFunctionBackward", "LogSoftmaxBackward0", "MaxPool2DWithIndicesBackward0",
    "MeanBackward1", "NativeBatchNormBackward0", "NllLossBackward0", "ReluBackward0", "TBackward0", "ViewBackward0",
}


def backward_ops(loss):
    """The class names of every node of ``loss``'s autograd graph."""
    seen, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(parent for parent, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


@pytest.mark.parametrize("flags", [["--arch", "simplenet"], ["--arch", "simplenet", "--use-custom-conv"],
                                   ["--arch", "cnn"], ["--arch", "cnn", "--use-custom-conv"], ["--arch", "resnet18"]])
def test_the_attacked_cnns_backward_has_only_ops_deterministic_on_cuda(flags):
    config = driver.model_config_from_args(driver.get_args_parser().parse_args(["unused", *flags]))
    model = driver.build_model(config).eval().requires_grad_(False)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)  # as PGD differentiates: the input only
    ops = backward_ops(nn.CrossEntropyLoss()(model(x), torch.tensor([0, 1])))
    assert ops <= DETERMINISTIC_ON_CUDA, sorted(ops - DETERMINISTIC_ON_CUDA)
    assert "MeanBackward1" in ops and "AdaptiveAvgPool2DBackward0" not in ops


@pytest.mark.parametrize("flags, deterministic", [([], False), (["-e", "--resume", "x"], True),
                                                  (["-a", "--resume", "x"], True)])
def test_eval_and_attack_run_deterministic_algorithms(demo_data, monkeypatch, flags, deterministic):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []

    def record(*a):
        seen.append((torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")))

    monkeypatch.setattr(driver, "train", record)
    monkeypatch.setattr(driver, "evaluate", record)
    driver.main(driver.get_args_parser().parse_args([demo_data, *flags]))
    assert seen == [(deterministic, ":4096:8" if deterministic else None)]
    assert not torch.are_deterministic_algorithms_enabled(), "main.py turns the mode off when it returns"


@pytest.mark.cuda
@pytest.mark.parametrize("conv_op", [nn.Conv2d, CustomConv2d])
def test_cuda_attack_repeats_bit_for_bit(demo_data, conv_op):
    """PGD on SimpleNet as main.py -a runs it (channels_last, the -a flags), twice on the same batch."""
    args = driver.get_args_parser().parse_args([demo_data, "-a", "--resume", "unused"])
    driver.set_cudnn_flags(args)
    try:
        torch.manual_seed(0)
        model = SimpleNet(conv_op=conv_op).cuda().to(memory_format=torch.channels_last).eval()
        mean = torch.tensor(IMAGENET_MEAN, device="cuda").view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device="cuda").view(1, 3, 1, 1)
        x = ((torch.rand(32, 3, 128, 128, device="cuda") - mean) / std).contiguous(memory_format=torch.channels_last)
        first, second = (PGDAttack(nn.CrossEntropyLoss()).perturb(model, x) for _ in range(2))
        assert torch.equal(first, second)
    finally:
        driver.set_cudnn_flags(driver.get_args_parser().parse_args([demo_data]))
        torch.use_deterministic_algorithms(False)
