"""main.py's loaders deliver uint8 batches; the step normalizes them on the device; every epoch
reports the fraction of its time spent waiting for the loader."""
import glob
import os
import random

import numpy as np
import pytest
import torch

import custom_transforms as T
import main as driver
from student_code import get_train_transforms, get_val_transforms
from utils import load_image


def args_for(data, log_dir, *extra):
    return driver.get_args_parser().parse_args(
        [data, "--arch", "simplenet", "--epochs", "1", "--warmup", "0", "-b", "16", "-j", "0", "-p", "100",
         "--log-dir", str(log_dir), *extra])


def test_loaders_deliver_uint8_and_the_device_step_normalizes_them(demo_data, tmp_path):
    args = args_for(demo_data, tmp_path)
    args.rank, args.world_size = 0, 1
    train_loader, val_loader = driver.build_loaders(args, torch.device("cpu"))
    for loader in (train_loader, val_loader):
        images, target = next(iter(loader))
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 128, 128)
        x, _ = driver.to_device(images, target, torch.device("cpu"), channels_last=True)
        assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    img = load_image(os.path.join(demo_data, "images", "val", "00000001.jpg"))
    for build in (get_train_transforms, get_val_transforms):
        random.seed(3)
        u8 = build(normalize=False)(img)
        random.seed(3)
        reference = build()(img)  # normalized on the CPU, per image
        x, _ = driver.to_device(u8[None], torch.zeros(1, dtype=torch.long), torch.device("cpu"), False)
        torch.testing.assert_close(x[0], reference, rtol=0, atol=2e-6)
    normalized = reference[None].clone()
    assert torch.equal(driver.to_device(normalized, torch.zeros(1), torch.device("cpu"), False)[0], normalized), \
        "float batches are taken as normalized"


def test_uint8_batches_are_channels_last_and_equal_the_default_collate():
    from torch.utils.data import default_collate

    from custom_dataloader import collate_uint8

    rng = np.random.default_rng(0)
    items = [(T.ToUint8Tensor()(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)), k) for k in range(4)]
    images, labels = collate_uint8(items)
    ref_images, ref_labels = default_collate(items)
    assert images.shape == (4, 3, 6, 5) and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    floats = [(x.float(), k) for x, k in items]
    assert torch.equal(collate_uint8(floats)[0], default_collate(floats)[0]), "other items: the default collate"


@pytest.mark.parametrize("augment, expected", [("warp", "RandomWarpCrop"), ("chain", "Random Rotation")])
def test_augment_flag_picks_the_pipeline(demo_data, tmp_path, augment, expected):
    args = args_for(demo_data, tmp_path, "--augment", augment)
    args.rank, args.world_size = 0, 1
    train_loader, _ = driver.build_loaders(args, torch.device("cpu"))
    assert expected in repr(train_loader.dataset.dataset.transforms)


def test_epoch_reports_the_time_spent_waiting_for_data(demo_data, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    driver.main(args_for(demo_data, tmp_path))
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "waiting for data" in ln)
    percent = float(line.split("images/s, ")[1].split("%")[0])
    acc = EventAccumulator(glob.glob(os.path.join(str(tmp_path), "*"))[0])
    acc.Reload()
    (event,) = acc.Scalars("perf/data_wait_fraction")
    assert 0.0 < event.value < 1.0 and round(100 * event.value) == percent
    assert "loader is the bottleneck" in driver.data_wait_line(0, 100.0, 0.6, 2)
    assert "bottleneck" not in driver.data_wait_line(0, 100.0, 0.1, 2)
