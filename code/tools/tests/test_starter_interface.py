"""student_code.py beside the course's original helper files (../shared/starter-interface.md).

The course's release is in this repository as test data (tests/course_release/), so the tests
import student_code.py beside the course's own utils.py, custom_blocks.py, custom_transforms.py
and custom_dataloader.py, and run it as the course's main.py would. The AST tests check that
student_code.py reaches only the names those files define.
"""
import ast
import importlib
import importlib.util
import os
import random
import sys

import pytest
import torch
from torch import nn

import utils

from tools import CODE_DIR

COURSE_CODE = os.path.join(CODE_DIR, "tools", "tests", "course_release", "code")
HELPERS = ("utils", "custom_blocks", "custom_transforms", "custom_dataloader")  # in the order they import
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


def test_course_names_are_what_the_course_files_define():
    """COURSE_NAMES (from starter-interface.md) against the course's files themselves."""
    for module, names in COURSE_NAMES.items():
        with open(os.path.join(COURSE_CODE, module + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        assert names <= defined, f"{module}.py lacks {names - defined}"


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
def course_helpers(monkeypatch):
    """{name: module}: the course's helper files, imported under their own names, and a fresh
    student_code imported beside them (key "student_code"); ours are back after the test."""
    modules = {}
    for name in HELPERS:
        spec = importlib.util.spec_from_file_location(name, os.path.join(COURSE_CODE, name + ".py"))
        modules[name] = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, modules[name])
        spec.loader.exec_module(modules[name])
    monkeypatch.delitem(sys.modules, "student_code", raising=False)
    modules["student_code"] = importlib.import_module("student_code")
    monkeypatch.delitem(sys.modules, "student_code")
    return modules


def test_student_code_runs_beside_the_course_helpers(course_helpers, demo_data):
    sc, course_transforms = course_helpers["student_code"], course_helpers["custom_transforms"]
    assert sc.transforms is course_transforms, "student_code imported the course's custom_transforms"
    train, val = sc.get_train_transforms(), sc.get_val_transforms()
    assert [type(t).__name__ for t in train.transforms] == [
        "Scale", "RandomHorizontalFlip", "RandomColor", "RandomRotate", "RandomSizedCrop", "ToTensor", "Normalize"]
    loader = course_helpers["custom_dataloader"].MiniPlacesLoader
    random.seed(0)
    x, label = loader(demo_data, split="train", transforms=train)[0]  # as the course's main.py loads
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32 and isinstance(label, int)
    low = (0 - max(sc.IMAGENET_MEAN)) / min(sc.IMAGENET_STD)
    assert x.min() >= low - 1e-4 and x.max() <= (1 - min(sc.IMAGENET_MEAN)) / min(sc.IMAGENET_STD) + 1e-4
    val_set = loader(demo_data, split="val", transforms=val)
    outs = []
    for seed in range(6):
        random.seed(seed)
        outs.append(val_set[1][0])
    assert all(torch.equal(outs[0], o) for o in outs), "validation is deterministic beside the course's helpers"
    batch = torch.stack([outs[0], x])
    for model in (sc.default_cnn_model(num_classes=100), sc.default_cnn_model(conv_op=sc.CustomConv2d, num_classes=100),
                  sc.default_vit_model(num_classes=100), sc.SimpleViT(num_classes=100)):
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
