"""SceneResNet (Part I.2, the improved CNN): shapes, conv_op wiring, init, budget, training."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import student_code
from custom_dataloader import MiniPlacesLoader
from pretrained import build_resnet18
from student_code import CustomConv2d, ResidualBlock, SceneResNet, SimpleNet


def flop_counter():
    """torch.utils.flop_counter.FlopCounterMode (torch >= 2.1); the budget tests skip without it."""
    return pytest.importorskip("torch.utils.flop_counter").FlopCounterMode(display=False)


TINY = dict(widths=(8, 16), depths=(1, 2), stem_width=8)


class RecordingConv(nn.Conv2d):
    """nn.Conv2d that records the keyword arguments it was built with."""

    calls = []

    def __init__(self, in_channels, out_channels, **kwargs):
        RecordingConv.calls.append(kwargs)
        super().__init__(in_channels, out_channels, **kwargs)


class ReferenceCustomConv(CustomConv2d):
    """CustomConv2d's constructor and parameters, computed with F.conv2d."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def expected_params_and_flops(widths, depths, stem_width, num_classes, size):
    """Independent count: parameters, and forward FLOPs (2 per multiply-add) of
    the convs and the classifier at a size x size input, batch 1."""
    params, flops, side = 0, 0, size

    def conv_bn(cin, cout, k, stride):
        nonlocal params, flops, side
        side = math.ceil(side / stride)
        params += cin * cout * k * k + 2 * cout
        flops += 2 * cin * cout * k * k * side * side

    conv_bn(3, stem_width, 3, 2)
    conv_bn(stem_width, stem_width, 3, 1)
    conv_bn(stem_width, widths[0], 3, 2)
    cin = widths[0]
    for i, (width, depth) in enumerate(zip(widths, depths)):
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            conv_bn(cin, width, 3, stride)
            conv_bn(width, width, 3, 1)
            if stride > 1 or cin != width:
                conv_bn(cin, width, 1, 1)
            cin = width
    params += cin * num_classes + num_classes
    flops += 2 * cin * num_classes
    return params, flops


def test_default_cnn_model_is_scene_resnet_and_simplenet_stays():
    assert student_code.default_cnn_model is SceneResNet
    for cls in (SceneResNet, SimpleNet):
        model = cls(conv_op=nn.Conv2d, num_classes=7)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("conv_op", [nn.Conv2d, CustomConv2d])
def test_simplenet_keeps_pytorch_default_init(conv_op):
    """The course's SimpleNet never calls its reset_parameters: every conv and linear layer keeps
    PyTorch's default init, weights and biases uniform within 1 / sqrt(fan_in)."""
    torch.manual_seed(0)
    layers = [m for m in SimpleNet(conv_op=conv_op, num_classes=100).modules() if isinstance(m, (conv_op, nn.Linear))]
    assert len(layers) == 8
    for m in layers:
        bound = 1 / math.sqrt(m.weight[0].numel())
        for p in (m.weight, m.bias):
            assert p.abs().max() <= bound, f"{m}: beyond the default-init bound"
            assert p.abs().max() > 0.8 * bound and torch.count_nonzero(p) == p.numel(), f"{m}: not the default init"


@pytest.mark.parametrize("size, grid", [(128, 4), (64, 2), (100, 4)])
def test_stage_grids_of_default_model(size, grid):
    with torch.device("meta"):
        model = SceneResNet(num_classes=100)
        x = torch.empty(2, 3, size, size)
    assert model.stem(x).shape == (2, 64, math.ceil(size / 4), math.ceil(size / 4))
    assert model.forward_features(x).shape == (2, 512, grid, grid)
    assert model(x).shape == (2, 100)


def test_logits_are_linear_in_pooled_features():
    torch.manual_seed(0)
    model = SceneResNet(num_classes=100, **TINY).eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, 16, 5, 5)  # total stride 4 * 2 = 8
    torch.testing.assert_close(logits, model.fc(features.mean(dim=(2, 3))))


def test_budget_matches_independent_count_and_docstring():
    with torch.device("meta"):
        model = SceneResNet()
        x = torch.empty(1, 3, 128, 128)
    params = sum(p.numel() for p in model.parameters())
    with flop_counter() as counter:
        model.eval()(x)
    flops = counter.get_total_flops()
    assert (params, flops) == expected_params_and_flops((64, 128, 256, 512), (2, 3, 4, 2), 32, 100, 128)
    assert 1e9 <= flops <= 2.5e9
    assert f"{params / 1e6:.2f}M parameters, {flops / 1e9:.2f} GFLOPs at the" in SceneResNet.__doc__


@pytest.mark.parametrize("name, build", [
    ("SimpleNet", lambda: SimpleNet(num_classes=100)),
    ("ResNet18", lambda: build_resnet18(num_classes=100, pretrained=False)),
])
def test_docstring_budget_of_reference_models(name, build):
    with torch.device("meta"):
        model = build()
        x = torch.empty(1, 3, 128, 128)
    params = sum(p.numel() for p in model.parameters())
    with flop_counter() as counter:
        model.eval()(x)
    assert f"{name} {params / 1e6:.2f}M, {counter.get_total_flops() / 1e9:.2f} GFLOPs" in SceneResNet.__doc__


def test_every_conv_goes_through_conv_op_with_int_arguments():
    RecordingConv.calls.clear()
    model = SceneResNet(conv_op=RecordingConv)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(RecordingConv.calls) == 3 + 2 * 11 + 3
    assert all(isinstance(m, RecordingConv) for m in convs)
    for kwargs in RecordingConv.calls:
        assert set(kwargs) == {"kernel_size", "stride", "padding", "bias"}
        assert all(type(kwargs[k]) is int for k in ("kernel_size", "stride", "padding"))
        assert kwargs["bias"] is False and kwargs["kernel_size"] in (1, 3)


def test_custom_conv_model_matches_conv2d_model():
    torch.manual_seed(0)
    reference = SceneResNet(conv_op=nn.Conv2d, num_classes=5, **TINY)
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    custom = SceneResNet(conv_op=ReferenceCustomConv, num_classes=5, **TINY)
    assert sum(isinstance(m, CustomConv2d) for m in custom.modules()) == 3 + 2 * 3 + 1
    custom.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(custom(x), reference(x))


@pytest.mark.parametrize("in_channels, out_channels, stride", [(8, 8, 1), (8, 16, 2), (8, 16, 1)])
def test_residual_block_starts_as_its_shortcut(in_channels, out_channels, stride):
    block = ResidualBlock(nn.Conv2d, in_channels, out_channels, stride)
    block.zero_init_last()
    x = torch.randn(2, in_channels, 9, 9)
    for mode in (True, False):
        block.train(mode)
        torch.testing.assert_close(block(x), F.relu(block.shortcut(x)))
    assert block(x).shape == (2, out_channels, math.ceil(9 / stride), math.ceil(9 / stride))
    if (in_channels, stride) == (out_channels, 1):
        assert isinstance(block.shortcut, nn.Identity)
        torch.testing.assert_close(block(x), F.relu(x))


def test_strided_shortcut_sees_every_input_pixel():
    block = ResidualBlock(nn.Conv2d, 8, 16, stride=2)
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    block.shortcut(x).square().sum().backward()
    assert torch.all(x.grad.abs().sum(dim=1) > 0)  # a strided 1x1 conv would skip 3 pixels in 4


def test_init_kaiming_convs_zero_last_bn_small_head():
    torch.manual_seed(0)
    model = SceneResNet()
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 11
    assert all(torch.all(b.conv2[1].weight == 0) for b in blocks)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 20000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(model.fc.bias == 0)


def test_dropout_only_when_asked():
    assert isinstance(SceneResNet(**TINY).drop, nn.Identity)
    model = SceneResNet(drop_rate=0.5, **TINY)
    assert isinstance(model.drop, nn.Dropout) and model.drop.p == 0.5
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    features = model.forward_features(x)
    model.train()
    assert not torch.allclose(model.forward_head(features), model.fc(features.mean(dim=(2, 3))))


def test_channels_last_gives_same_logits():
    torch.manual_seed(0)
    model = SceneResNet(**TINY).eval()
    x = torch.randn(2, 3, 48, 48)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, bad", [
    (dict(num_classes=0), "0"),
    (dict(num_classes=2.5), "2.5"),
    (dict(widths=(64, 128), depths=(2,)), r"\(2,\)"),
    (dict(widths=(), depths=()), r"\(\)"),
    (dict(widths=(64, -1), depths=(1, 1)), "-1"),
    (dict(widths=(64, 128), depths=(1, 0)), r"\(1, 0\)"),
    (dict(stem_width=0), "stem_width 0"),
    (dict(drop_rate=1.0), "1.0"),
])
def test_bad_arguments_fail_fast(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        SceneResNet(**kwargs)


def test_trains_on_demo_set(demo_data):
    torch.manual_seed(0)
    dataset = MiniPlacesLoader(demo_data, num_classes=100, split="train",
                               transforms=student_code.get_val_transforms())
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    images = F.interpolate(images, size=32, mode="bilinear", antialias=True)  # (64, 3, 32, 32)
    model = SceneResNet(num_classes=100, **TINY)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with torch.no_grad():
        start = F.cross_entropy(model.eval()(images), labels).item()
    model.train()
    for _ in range(4):
        for idx in torch.randperm(len(labels)).split(16):
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = model.eval()(images)
    assert F.cross_entropy(logits, labels).item() < 0.5 * start
    assert (logits.argmax(1) == labels).float().mean().item() > 0.5
