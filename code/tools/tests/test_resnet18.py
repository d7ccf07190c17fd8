"""pretrained.py: ResNet18 building, local/cached/offline weights, fine-tuning groups."""
import os
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import pretrained
from pretrained import PretrainedWeightsError, build_resnet18, finetune_param_groups

CACHE_NAME = "resnet18-f37072fd.pth"


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path; returns the expected weights path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return str(tmp_path / "torch" / "hub" / "checkpoints" / CACHE_NAME)


@pytest.fixture
def no_download(monkeypatch):
    """Make any download attempt fail the test."""
    def download(*args, **kwargs):
        raise AssertionError(f"unexpected download {args}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)


def random_imagenet_resnet18(seed=0):
    """torchvision resnet18 (1000 classes) with random weights and non-default BN statistics."""
    torch.manual_seed(seed)
    model = resnet18()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    return model


def assert_backbone_equal(model, state_dict):
    got = model.state_dict()
    backbone_keys = [k for k in state_dict if not k.startswith("fc.")]
    assert len(backbone_keys) == len(got) - 2  # all but fc.weight / fc.bias
    for key in backbone_keys:
        torch.testing.assert_close(got[key], state_dict[key], rtol=0, atol=0, msg=key)


def test_builds_without_weights_and_never_downloads(hub_dir, no_download):
    model = build_resnet18(num_classes=7, pretrained=False)
    assert isinstance(model.fc, nn.Linear) and model.fc.weight.shape == (7, 512)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert not os.path.exists(hub_dir)


def test_loads_saved_state_dict(tmp_path, no_download):
    reference = random_imagenet_resnet18()
    path = tmp_path / "resnet18_random.pth"
    torch.save(reference.state_dict(), path)
    model = build_resnet18(num_classes=10, weights_path=str(path))
    assert_backbone_equal(model, reference.state_dict())
    assert model.fc.weight.shape == (10, 512) and torch.all(model.fc.bias == 0)
    reference.fc, model.fc = nn.Identity(), nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), reference.eval()(x))


def test_uses_the_hub_cache_without_download(hub_dir, no_download):
    reference = random_imagenet_resnet18(seed=1)
    os.makedirs(os.path.dirname(hub_dir))
    torch.save(reference.state_dict(), hub_dir)
    assert pretrained.resnet18_cache_path() == hub_dir
    assert_backbone_equal(build_resnet18(), reference.state_dict())


def test_downloads_into_the_hub_cache(hub_dir, monkeypatch):
    reference = random_imagenet_resnet18(seed=2)
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        torch.save(reference.state_dict(), dst)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model = build_resnet18(num_classes=100)
    assert calls == [("https://download.pytorch.org/models/" + CACHE_NAME, hub_dir, "f37072fd")]
    assert_backbone_equal(model, reference.state_dict())


@pytest.mark.parametrize("error", [URLError("[Errno -3] Temporary failure in name resolution"),
                                   OSError("Network is unreachable")])
def test_offline_gives_clear_message(hub_dir, monkeypatch, error):
    def download(*args, **kwargs):
        raise error
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(PretrainedWeightsError) as info:
        build_resnet18()
    message = str(info.value)
    assert hub_dir in message and "--resnet18-weights PATH" in message
    assert "https://download.pytorch.org/models/" + CACHE_NAME in message
    assert str(error.reason if isinstance(error, URLError) else error) in message
    assert not os.path.exists(hub_dir)


def _save_garbage(path):
    path.write_bytes(b"this is not a checkpoint")


def _save_empty(path):
    path.write_bytes(b"")


def _save_truncated(path):
    torch.save(random_imagenet_resnet18().state_dict(), path)
    path.write_bytes(path.read_bytes()[:10000])


def _save_wrong_shape(path):
    state_dict = random_imagenet_resnet18().state_dict()
    state_dict["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    torch.save(state_dict, path)


def _save_missing_key(path):
    state_dict = random_imagenet_resnet18().state_dict()
    del state_dict["layer4.1.bn2.running_var"]
    torch.save(state_dict, path)


def _save_prefixed_keys(path):
    state_dict = random_imagenet_resnet18().state_dict()
    torch.save({"module." + k: v for k, v in state_dict.items()}, path)


def _save_checkpoint_dict(path):
    torch.save({"epoch": 3, "state_dict": random_imagenet_resnet18().state_dict()}, path)


@pytest.mark.parametrize("write, detail", [
    (_save_garbage, "cannot read"),
    (_save_empty, "empty or truncated"),
    (_save_truncated, "cannot read"),
    (_save_wrong_shape, "layer2.0.conv1.weight (128, 64, 5, 5) (expected (128, 64, 3, 3))"),
    (_save_missing_key, "layer4.1.bn2.running_var"),
    (_save_prefixed_keys, "module.bn1.bias"),
    (_save_checkpoint_dict, "not a state dict"),
    (None, "does not exist"),
])
def test_bad_weights_file_names_the_file(tmp_path, no_download, write, detail):
    path = tmp_path / "weights.pth"
    if write is not None:
        write(path)
    with pytest.raises(PretrainedWeightsError) as info:
        build_resnet18(weights_path=str(path))
    assert str(path) in str(info.value) and detail in str(info.value)


@pytest.mark.parametrize("kwargs, error", [
    (dict(num_classes=0), "num_classes"),
    (dict(weights_path="w.pth", pretrained=False), "w.pth"),
])
def test_bad_build_arguments(kwargs, error, no_download):
    with pytest.raises(ValueError, match=error):
        build_resnet18(**kwargs)


def test_param_groups_split_head_backbone_and_decay():
    model = build_resnet18(num_classes=5, pretrained=False)
    model.layer1[0].conv1.weight.requires_grad_(False)
    groups = finetune_param_groups(model, lr=0.01, backbone_lr_scale=0.1)
    seen = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in seen, "a parameter is in two groups"
            seen[id(param)] = (group["lr"], group.get("weight_decay"))
    decayed = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in seen, name
            continue
        lr, weight_decay = seen[id(param)]
        assert lr == pytest.approx(0.01 if name.startswith("fc.") else 0.001), name
        assert weight_decay == (None if name in decayed else 0.0), name
    assert len(seen) == sum(p.requires_grad for p in model.parameters())


def test_param_groups_drive_sgd_updates():
    torch.manual_seed(0)
    model = build_resnet18(num_classes=5, pretrained=False)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(finetune_param_groups(model, lr=0.5, backbone_lr_scale=0.2),
                                lr=123.0, weight_decay=0.1)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    params = dict(model.named_parameters())
    expected_step = {
        "fc.weight": 0.5 * (1 + 0.1 * before["fc.weight"]),
        "fc.bias": 0.5 * torch.ones(5),
        "conv1.weight": 0.1 * (1 + 0.1 * before["conv1.weight"]),
        "bn1.weight": 0.1 * torch.ones(64),
        "layer3.0.downsample.1.bias": 0.1 * torch.ones(256),
    }
    for name, step in expected_step.items():
        torch.testing.assert_close(before[name] - params[name].detach(), step, msg=name)


@pytest.mark.parametrize("kwargs, error", [
    (dict(lr=0.0, backbone_lr_scale=0.1), "lr must be > 0, got 0.0"),
    (dict(lr=0.1, backbone_lr_scale=-0.5), "-0.5"),
    (dict(lr=0.1, backbone_lr_scale=2.0), "2.0"),
])
def test_param_groups_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        finetune_param_groups(build_resnet18(pretrained=False), **kwargs)


def test_param_groups_need_an_fc_head():
    with pytest.raises(ValueError, match="Sequential has no `fc`"):
        finetune_param_groups(nn.Sequential(nn.Linear(2, 2)), lr=0.1, backbone_lr_scale=0.1)
