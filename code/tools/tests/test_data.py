"""The data pipeline: demo-set layout, MiniPlacesLoader, transforms, utils."""
import os
import random

import numpy as np
import pytest
import torch

import custom_transforms as T
from custom_dataloader import MiniPlacesLoader
from student_code import get_train_transforms, get_val_transforms
from utils import ImageReadError, LinearWarmupCosineAnnealingLR, load_image, save_image

from tools.make_demo_data import DEMO_MARKER, make_demo_dataset


def test_demo_set_has_the_miniplaces_layout(demo_data):
    lines = open(os.path.join(demo_data, "train.txt")).read().split("\n")
    rels = [ln.split()[0] for ln in lines if ln]
    assert all(r.startswith("train/") and r.endswith(".jpg") for r in rels)
    depths = {r.count("/") for r in rels}
    assert depths == {3, 4}, "one- and two-level class folders (train/c/church/outdoor/x.jpg)"
    val = [ln.split()[0] for ln in open(os.path.join(demo_data, "val.txt")) if ln.strip()]
    assert all(v.startswith("val/") and v.count("/") == 1 for v in val)
    img = load_image(os.path.join(demo_data, "images", rels[0]))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert os.path.isfile(os.path.join(demo_data, DEMO_MARKER))


def test_main_and_the_scripts_know_the_demo_marker_the_generator_writes(demo_data):
    """main.py does not import the tooling: it names the marker itself, as do run.sh and
    download_dataset.sh; all must be the generator's (else demo runs would pass as MiniPlaces)."""
    import main

    from tools import REPO_DIR

    assert main.DEMO_MARKER == DEMO_MARKER
    assert main.check_data_folder(demo_data) is True, "main.py recognizes the generated demo set"
    for script in ("run.sh", "download_dataset.sh"):
        with open(os.path.join(REPO_DIR, script)) as f:
            assert DEMO_MARKER in f.read(), script


def test_demo_generator_refuses_to_overwrite_a_real_dataset(tmp_path):
    (tmp_path / "train.txt").write_text("train/a/abbey/00000001.jpg 0\n")
    with pytest.raises(FileExistsError, match="not the demo set"):
        make_demo_dataset(str(tmp_path), num_classes=2, train_per_class=1, val_per_class=1)


def test_loader_items_and_two_level_folders(demo_data):
    ds = MiniPlacesLoader(demo_data, split="train", transforms=get_val_transforms())
    two_level = [i for i, (rel, _) in enumerate(ds.file_label_list) if rel.count("/") == 4]
    assert two_level
    x, y = ds[two_level[0]]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert isinstance(y, int) and 0 <= y < 100
    raw = MiniPlacesLoader(demo_data, split="val")[0][0]
    assert raw.shape == (128, 128, 3) and raw.dtype == np.uint8


@pytest.mark.parametrize("content, needle", [
    ("train/a/abbey/00000001.jpg 0\ntrain/a/abbey/00000002.jpg\n", ":2:"),
    ("train/a/abbey/00000001.jpg zero\n", ":1:"),
    ("train/a/abbey/00000001.jpg 100\n", "outside"),
])
def test_malformed_label_file_names_file_and_line(tmp_path, content, needle):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.txt").write_text(content)
    with pytest.raises(ValueError, match=needle) as info:
        MiniPlacesLoader(str(tmp_path), split="train")
    assert "train.txt" in str(info.value)


def test_missing_label_file_says_how_to_get_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_dataset.sh"):
        MiniPlacesLoader(str(tmp_path), split="val")


def test_unreadable_image_names_its_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(str(bad))


def test_val_transforms_are_deterministic(demo_data):
    img = load_image(os.path.join(demo_data, "images", "val", "00000001.jpg"))
    tf = get_val_transforms()
    outs = []
    for seed in range(5):
        random.seed(seed)
        outs.append(tf(img))
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_train_transforms_shapes_and_randomness(demo_data):
    img = load_image(os.path.join(demo_data, "images", "val", "00000001.jpg"))
    tf = get_train_transforms()
    random.seed(0)
    a = tf(img)
    random.seed(0)
    b = tf(img)
    c = tf(img)
    assert a.shape == (3, 128, 128) and a.dtype == torch.float32
    assert torch.equal(a, b), "same seed, same augmentation"
    assert not torch.equal(a, c), "augmentation is random"


def test_transform_pieces():
    """The course's transforms as student_code.py uses them."""
    img = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    assert T.Scale(50, interpolations=None)(img).shape == (50, 75, 3)
    assert T.CenterCrop(40)(img).shape == (40, 40, 3)
    assert T.RandomSizedCrop(32)(img).shape == (32, 32, 3)
    random.seed(1)
    rot = T.RandomRotate(15, interpolations=None)(img)
    assert rot.shape[0] <= 100 and rot.shape[1] <= 150 and rot.dtype == np.uint8
    x = T.ToTensor()(img)
    assert x.shape == (3, 100, 150) and float(x.max()) <= 1.0
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    assert torch.allclose(T.Denormalize(mean, std)(T.Normalize(mean, std)(x.clone())), x, atol=1e-6)


def test_save_and_load_image_round_trip(tmp_path):
    img = np.full((8, 12, 3), (200, 30, 90), dtype=np.uint8)
    save_image(str(tmp_path / "a.png"), img)
    assert np.array_equal(load_image(str(tmp_path / "a.png")), img)


def test_warmup_cosine_schedule_and_resume():
    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, LinearWarmupCosineAnnealingLR(opt, warmup_epochs=5, max_epochs=20)

    opt, sched = make()
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and abs(lrs[5] - 0.1) < 1e-12 and lrs[19] < 0.002
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6])), "linear warmup rises"
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:])), "cosine decays"
    opt2, sched2 = make()
    for _ in range(8):
        opt2.step()
        sched2.step()
    opt3, sched3 = make()
    sched3.load_state_dict(sched2.state_dict())
    opt3.param_groups[0]["lr"] = opt2.param_groups[0]["lr"]
    rest = []
    for _ in range(12):
        rest.append(opt3.param_groups[0]["lr"])
        opt3.step()
        sched3.step()
    assert rest == pytest.approx(lrs[8:])
