"""student_code.py beside the course's original helper files (../shared/starter-interface.md).

The course's helpers are not in this repository, so two checks stand in for them: the AST of
student_code.py imports and uses only the names the course's files define, and student_code.py
is imported and run against stand-in modules that expose exactly those names (our own
implementations, called with the course's conventions).
"""
import ast
import importlib
import os
import random
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import custom_blocks
import custom_dataloader
import custom_transforms
import utils

from tools import CODE_DIR

COURSE_NAMES = {
    "custom_blocks": {"PatchEmbed", "window_partition", "window_unpartition", "MLP", "drop_path", "DropPath",
                      "trunc_normal_"},
    "custom_transforms": {"Compose", "RandomHorizontalFlip", "Scale", "CenterCrop", "RandomSizedCrop",
                          "RandomColor", "RandomRotate", "ToTensor", "Normalize", "Denormalize"},
    "utils": {"load_image", "save_image", "resize_image", "AverageMeter", "LinearWarmupCosineAnnealingLR"},
    "custom_dataloader": {"MiniPlacesLoader"},
}


def student_code_tree():
    with open(os.path.join(CODE_DIR, "student_code.py"), encoding="utf-8") as f:
        return ast.parse(f.read())


def test_student_code_imports_only_the_course_helper_names():
    tree = student_code_tree()
    module_aliases, imported = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in COURSE_NAMES:
            imported += [(node.module, a.name) for a in node.names]
        if isinstance(node, ast.Import):
            module_aliases.update({a.asname or a.name: a.name for a in node.names if a.name in COURSE_NAMES})
    bad = [f"{m}.{n}" for m, n in imported if n not in COURSE_NAMES[m]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_aliases:
            module = module_aliases[node.value.id]
            if node.attr not in COURSE_NAMES[module]:
                bad.append(f"{module}.{node.attr} (line {node.lineno})")
    assert not bad, f"student_code.py uses names the course's helpers lack: {bad}"
    assert module_aliases == {"transforms": "custom_transforms"}


def test_optional_helper_names_are_looked_up_with_a_fallback():
    """getattr(transforms, NAME, None) is the one way student_code.py may reach beyond the course."""
    for node in ast.walk(student_code_tree()):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and isinstance(node.args[0], ast.Name) and node.args[0].id == "transforms":
            assert len(node.args) == 3 and isinstance(node.args[2], ast.Constant) and node.args[2].value is None


def test_interpolations_are_passed_as_opencv_flags_or_none():
    for node in ast.walk(student_code_tree()):
        if isinstance(node, ast.keyword) and node.arg == "interpolations":
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            assert not any(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values), \
                f"line {node.value.lineno}: interpolation names; the course takes cv2.INTER_* flags or None"


@pytest.fixture
def course_student_code(monkeypatch):
    """student_code imported beside stand-ins that expose only the course's helper names."""
    ours = {"custom_blocks": custom_blocks, "custom_transforms": custom_transforms, "utils": utils,
            "custom_dataloader": custom_dataloader}
    for name, names in COURSE_NAMES.items():
        stand_in = types.ModuleType(name)
        for attr in names:
            setattr(stand_in, attr, getattr(ours[name], attr))
        monkeypatch.setitem(sys.modules, name, stand_in)
    monkeypatch.delitem(sys.modules, "student_code", raising=False)
    module = importlib.import_module("student_code")
    monkeypatch.delitem(sys.modules, "student_code")
    return module


def test_student_code_runs_beside_the_course_helpers(course_student_code, demo_data):
    sc = course_student_code
    img = utils.load_image(os.path.join(demo_data, "images", "val", "00000001.jpg"))
    train, val = sc.get_train_transforms(), sc.get_val_transforms()
    assert "RandomWarpCrop" not in repr(train), "the course's helpers have no RandomWarpCrop"
    random.seed(0)
    x = train(img)
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    low = (0 - max(sc.IMAGENET_MEAN)) / min(sc.IMAGENET_STD)
    assert x.min() >= low - 1e-4 and x.max() <= (1 - min(sc.IMAGENET_MEAN)) / min(sc.IMAGENET_STD) + 1e-4
    outs = []
    for seed in range(6):
        random.seed(seed)
        outs.append(val(img))
    assert all(torch.equal(outs[0], o) for o in outs), "validation is deterministic beside the course's helpers"
    batch = torch.stack([val(img), x])
    for model in (sc.default_cnn_model(num_classes=100), sc.default_cnn_model(conv_op=sc.CustomConv2d, num_classes=100),
                  sc.default_vit_model(num_classes=100)):
        assert model.eval()(batch).shape == (2, 100)
    adv = sc.default_attack(nn.CrossEntropyLoss()).perturb(sc.SimpleNet(num_classes=100), batch)
    assert adv.shape == batch.shape and sc.default_visfunction(adv).shape[0] == 3


def test_val_transform_is_deterministic_with_our_helpers(demo_data):
    import student_code as sc

    img = utils.load_image(os.path.join(demo_data, "images", "val", "00000002.jpg"))
    val = sc.get_val_transforms()
    random.seed(1)
    a = val(img)
    random.seed(2)
    assert torch.equal(a, val(img))
    assert torch.equal(sc.get_val_transforms(normalize=False)(img), sc.get_val_transforms(False)(img))


def test_course_transform_conventions():
    T = custom_transforms
    img = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    flags = [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC]
    assert T.Scale(50, interpolations=flags)(img).shape == (50, 75, 3)
    assert T.Scale((60, 40), interpolations=None)(img).shape == (40, 60, 3)
    assert np.array_equal(T.Scale(50, interpolations=None)(img), cv2.resize(img, (75, 50), interpolation=cv2.INTER_LINEAR))
    assert T.Scale(50).interpolations == flags, "the course's default list"
    crop = T.RandomSizedCrop(32, interpolations=flags, area_range=(0.25, 1.0), ratio_range=(0.8, 1.2), num_trials=10)
    assert crop(img).shape == (32, 32, 3) and crop.ratio_range == (0.8, 1.2)
    assert T.RandomSizedCrop(32, num_trials=0)(img).shape == (32, 32, 3), "fallback: Scale + centre crop"
    rotate = T.RandomRotate(10, interpolations=flags)
    random.seed(3)
    assert rotate(img).dtype == np.uint8
    assert T.RandomHorizontalFlip()(img).shape == img.shape
    assert T.CenterCrop((30, 20))(img).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="unknown interpolation"):
        T.Scale(10, interpolations=[12345])
    with pytest.raises(ValueError, match="unknown interpolation"):
        T.RandomRotate(10, interpolations=[cv2.INTER_AREA])


def test_rotations_of_at_most_one_degree_are_skipped():
    img = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert custom_transforms.RandomRotate(1.0)(img) is img
    random.seed(0)
    assert custom_transforms.RandomRotate(30)(img).shape[0] < 40


def test_normalize_in_place_with_scale():
    T = custom_transforms
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)  # (B, C, H, W)
    mean, std, scale = (1.0, 2.0, 3.0), (0.5, 2.0, 4.0), 0.5
    expected = (x * scale - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    y = x.clone()
    out = T.Normalize(mean, std, scale=scale)(y)
    assert out is y, "in place, as the course's"
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(T.Denormalize(mean, std, scale=scale)(out.clone()), x)
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    u8 = T.ToUint8Tensor()(hwc)
    assert u8.shape == (3, 4, 5) and u8.dtype == torch.uint8 and u8.stride() == (1, 15, 3), "a view of the HWC pixels"
    assert torch.equal(u8, torch.from_numpy(hwc.transpose(2, 0, 1).copy()))


def test_course_utils_and_blocks_conventions(tmp_path):
    img = np.full((6, 8, 3), (10, 200, 30), dtype=np.uint8)
    utils.save_image(str(tmp_path / "a.png"), img)
    assert np.array_equal(utils.load_image(str(tmp_path / "a.png")), img)
    assert utils.resize_image(img, (4, 3), cv2.INTER_NEAREST).shape == (3, 4, 3)
    meter = utils.AverageMeter()
    meter.update(2.0, n=3)
    meter.update(4.0)
    assert (meter.val, meter.avg, meter.sum, meter.count) == (4.0, 2.5, 10.0, 4)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = utils.LinearWarmupCosineAnnealingLR(opt, warmup_epochs=2, max_epochs=4, warmup_start_lr=0.0,
                                                eta_min=1e-8, last_epoch=-1)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-8)
    assert utils.LinearWarmupCosineAnnealingLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 0, 1).eta_min == 1e-8
    embed = custom_blocks.PatchEmbed(kernel_size=(4, 4), stride=(4, 4), padding=(0, 0), in_chans=3, embed_dim=8)
    assert embed(torch.randn(2, 3, 16, 12)).shape == (2, 4, 3, 8) and isinstance(embed.proj, nn.Conv2d)
    mlp = custom_blocks.MLP(8, hidden_features=16, out_features=4, act_layer=nn.GELU, drop=0.0)
    assert [type(m) for m in (mlp.fc1, mlp.act, mlp.fc2)] == [nn.Linear, nn.GELU, nn.Linear]
    assert custom_blocks.DropPath(drop_prob=None).drop_prob == 0.0
    x = torch.randn(3, 4)
    assert torch.equal(custom_blocks.drop_path(x, drop_prob=0.5, training=False), x)
    assert custom_blocks.trunc_normal_(torch.empty(1000), mean=0.0, std=1.0, a=-2.0, b=2.0).abs().max() <= 2.0


def test_index_mapping_names_the_category_folders(demo_data, tmp_path):
    ds = custom_dataloader.MiniPlacesLoader(demo_data, label_file=None, num_classes=100, split="train", transforms=None)
    mapping = ds.get_index_mapping()
    from_paths = {label: "/".join(rel.split("/")[2:-1]) for rel, label in ds.file_label_list}
    assert len(mapping) == 100 and {k: mapping[k] for k in from_paths} == from_paths, "categories.txt"
    assert any("/" in name for name in from_paths.values()), "two-level classes such as church/outdoor"
    os.symlink(os.path.join(demo_data, "images"), tmp_path / "images")
    with open(os.path.join(demo_data, "train.txt")) as src:
        (tmp_path / "train.txt").write_text(src.read())
    assert custom_dataloader.MiniPlacesLoader(str(tmp_path), split="train").get_index_mapping() == from_paths, \
        "without categories.txt the folders of the image paths name the classes"
