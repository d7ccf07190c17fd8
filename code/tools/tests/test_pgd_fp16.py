"""PGD inside training under fp16 autocast (issue 18, item 2): as strong as in float32.

Under fp16 autocast a mean-reduced loss gives input gradients that underflow to exactly 0, and a
zero sign does not move the pixel. CPU fp16 autocast stands in for CUDA's (T4, V100); the tests
skip on a torch without it (torch 2.0's CPU autocast is bfloat16 only).
"""
import warnings

import pytest
import torch
from torch.nn import functional as F

from student_code import IMAGENET_MEAN, IMAGENET_STD, SceneResNet, SimpleNet

from tools.tests.stripes import stripe_images

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # (1, 3, 1, 1)


def cpu_fp16_autocast_works():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.0: "In CPU autocast, but the target dtype is not supported"
            with torch.autocast("cpu", dtype=torch.float16):
                return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    except RuntimeError:  # torch 2.0: "AutocastCPU only support Bfloat16"
        return False


pytestmark = pytest.mark.skipif(not cpu_fp16_autocast_works(), reason="this torch has no CPU fp16 autocast")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trained_on(model, first_layer, x, amp_dtype, **attack):
    """The batch that ``first_layer`` receives in one training forward of ``model`` with every
    sample adversarial, under autocast in ``amp_dtype`` (None: float32); leaves ``model`` in eval."""
    model.enable_adversarial_training(adv_ratio=1.0, **attack)
    seen = []
    hook = first_layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().float()))
    try:
        with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            model.train()(x)
    finally:
        hook.remove()
        model.eval()
    return seen[-1]  # after the attack's own forwards


@pytest.fixture(scope="module")
def simplenet():
    """SimpleNet (the course's init) after 60 Adam steps on 32x32 stripes, and 64 other images."""
    torch.manual_seed(0)
    pixels, labels = stripe_images(320, num_classes=4, size=32, seed=0)
    x = (pixels - MEAN) / STD
    model = SimpleNet(num_classes=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for i in range(60):
        batch = slice(i * 32 % 256, i * 32 % 256 + 32)
        loss = F.cross_entropy(model(x[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), x[256:]


def test_simplenet_attack_in_training_is_as_strong_under_fp16_autocast(simplenet):
    model, x = simplenet
    with torch.no_grad():
        target = model(x).argmin(dim=1)  # (64,) the attack's least-confident labels
    moved, success = {}, {}
    for amp_dtype in (None, torch.float16):
        adv = trained_on(model, model.features, x, amp_dtype, num_steps=3, epsilon=0.3)
        moved[amp_dtype] = (adv != x).float().mean().item()
        with torch.no_grad():
            success[amp_dtype] = (model(adv).argmax(dim=1) == target).float().mean().item()
    assert 0.1 < success[None] < 0.9, "a budget where the attack succeeds on part of the images"
    assert moved[torch.float16] >= moved[None] - 1e-3, f"pixels moved: {moved}"  # 96.6% against 100% when broken
    assert abs(success[torch.float16] - success[None]) <= 0.02, f"success: {success}"  # 1 image in 64: 1.6 points


def test_improved_cnn_first_step_moves_every_pixel_under_fp16_autocast():
    torch.manual_seed(0)
    model = SceneResNet(num_classes=10, widths=(8, 16), depths=(1, 1), stem_width=8).eval()
    x = (torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)) - MEAN) / STD
    moved = {amp_dtype: (trained_on(model, model.stem, x, amp_dtype, num_steps=1, step_size=0.01) != x).float().mean()
             for amp_dtype in (None, torch.float16)}
    assert moved[torch.float16] >= moved[None] - 1e-3, f"pixels moved: {moved}"  # 95% against 99% when broken
