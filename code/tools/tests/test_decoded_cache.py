"""The decoded cache: exact pixels, reuse and rebuild, disk and folder failures without
leftovers, unreadable and odd-size images, shared workers, and training through main.py."""
import errno
import glob
import os
import pickle
import random
import shutil
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import custom_transforms as T
import decoded_cache as dc
import main as driver
from custom_dataloader import MiniPlacesLoader
from student_code import get_train_transforms
from utils import ImageReadError, load_image, save_image


def copy_data(demo_data, tmp_path):
    """A private copy of the demo set (without any cache) that a test may modify."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data, ignore=shutil.ignore_patterns("cache"))
    return str(data)


def files_in(folder):
    """Every entry of ``folder``, hidden ones included (none when it does not exist)."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def relpaths(data, split):
    return [line.split()[0] for line in open(os.path.join(data, f"{split}.txt")) if line.strip()]


@pytest.mark.parametrize("split", ["train", "val"])
def test_cache_returns_exactly_the_decoded_pixels(demo_data, tmp_path, split):
    ds = MiniPlacesLoader(demo_data, split=split)
    cached = dc.with_decoded_cache(ds, str(tmp_path))
    assert isinstance(cached, dc.DecodedCacheDataset) and len(cached) == len(ds)
    for i, (rel, label) in enumerate(ds.file_label_list):
        img, lab = cached[i]
        assert img.dtype == np.uint8 and img.shape == (128, 128, 3)
        assert np.array_equal(img, load_image(os.path.join(demo_data, "images", rel))), rel
        assert lab == label
    assert files_in(str(tmp_path)) == [f"decoded_{split}.cache"]


def test_transformed_items_equal_the_jpeg_loaders(demo_data, tmp_path):
    ds = MiniPlacesLoader(demo_data, split="train", transforms=get_train_transforms())
    cached = dc.with_decoded_cache(ds, str(tmp_path))
    for i in (0, 17, len(ds) - 1):
        random.seed(i)
        x, y = ds[i]
        random.seed(i)
        xc, yc = cached[i]
        assert torch.equal(x, xc) and y == yc


def test_transforms_read_the_map_and_plain_items_are_copies(demo_data, tmp_path):
    seen = []
    cached = dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="val", transforms=seen.append), str(tmp_path))
    cached[3]
    assert seen[0].base is not None and not seen[0].flags.writeable, "a read-only view, no copy per item"
    with pytest.raises(ValueError, match="read-only"):
        seen[0][0, 0] = 0  # a transform that writes into its input is stopped, the cache file untouched
    cached.transforms = None
    img, _ = cached[3]
    assert img.flags.writeable and img.base is None, "without transforms an item is the caller's own copy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on read-only numpy memory
        u8 = T.ToUint8Tensor()(seen[0])
    assert torch.equal(u8.permute(1, 2, 0), torch.from_numpy(img)), "ToUint8Tensor copies a read-only image"


def test_a_current_cache_is_reused(demo_data, tmp_path, capsys, monkeypatch):
    ds = MiniPlacesLoader(demo_data, split="val")
    dc.with_decoded_cache(ds, str(tmp_path))
    assert "decoding the 16 val images" in capsys.readouterr().out

    def no_build(*a, **k):
        raise AssertionError("rebuilt a current cache")

    monkeypatch.setattr(dc, "build_cache", no_build)
    dc.with_decoded_cache(ds, str(tmp_path))
    assert f"reusing {dc.cache_path(str(tmp_path), 'val')}" in capsys.readouterr().out


def test_a_stale_cache_is_rebuilt(demo_data, tmp_path, capsys):
    data = copy_data(demo_data, tmp_path)
    cache_dir = str(tmp_path / "cache")
    dc.with_decoded_cache(MiniPlacesLoader(data, split="train"), cache_dir)
    lines = open(os.path.join(data, "train.txt")).read().split("\n")
    lines = [ln for ln in lines if ln][::-1][1:]  # reversed, one image fewer
    open(os.path.join(data, "train.txt"), "w").write("\n".join(lines) + "\n")
    capsys.readouterr()
    ds = MiniPlacesLoader(data, split="train")
    cached = dc.with_decoded_cache(ds, cache_dir)
    assert "is out of date" in capsys.readouterr().out
    assert len(cached) == len(lines)
    for i in (0, len(lines) - 1):
        assert np.array_equal(cached[i][0], ds[i][0])

    changed = os.path.join(data, "images", ds.file_label_list[3][0])
    save_image(changed, np.full((128, 128, 3), 77, np.uint8))
    cached = dc.with_decoded_cache(ds, cache_dir)
    assert "is out of date" in capsys.readouterr().out, "a changed image rebuilds the cache"
    assert np.array_equal(cached[3][0], load_image(changed))
    assert files_in(cache_dir) == ["decoded_train.cache"]

    # two files of equal size and mtime (uncompressed BMPs, as after a tar extraction) swapped in the list
    for name, colour in (("a.bmp", 10), ("b.bmp", 200)):
        save_image(os.path.join(data, "images", name), np.full((128, 128, 3), colour, np.uint8))
        os.utime(os.path.join(data, "images", name), ns=(10 ** 18, 10 ** 18))
    for order in (("a.bmp", "b.bmp"), ("b.bmp", "a.bmp")):
        open(os.path.join(data, "train.txt"), "w").write("".join(f"{n} 0\n" for n in order))
        cached = dc.with_decoded_cache(MiniPlacesLoader(data, split="train"), cache_dir)
        assert np.array_equal(cached[0][0], load_image(os.path.join(data, "images", order[0])))


def test_a_full_disk_gives_one_clear_line_and_writes_nothing(demo_data, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    monkeypatch.setattr(dc.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 5000, 5000))
    with pytest.raises(dc.CacheError) as info:
        dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="train"), cache_dir)
    msg = str(info.value)
    needed = dc.HEADER_BYTES + 64 * 128 * 128 * 3
    assert "\n" not in msg and cache_dir in msg and f"{needed:,} bytes" in msg and "5,000 are free" in msg
    assert "--cache-dir" in msg and "--no-cache" in msg
    assert files_in(cache_dir) == []


def test_disk_full_while_writing_leaves_nothing_half_written(demo_data, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    real_write, calls = dc._write_all, []

    def write_then_fill(fd, data):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(dc, "_write_all", write_then_fill)
    with pytest.raises(dc.CacheError, match="the disk is full") as info:
        dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="train"), cache_dir)
    assert "\n" not in str(info.value) and "decoded_train.cache" in str(info.value)
    assert files_in(cache_dir) == []


def test_a_read_only_folder_gives_one_clear_line(demo_data, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes through chmod: raise what the kernel gives everyone else
        def denied(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

        monkeypatch.setattr(dc, "_open_new", denied)
    try:
        with pytest.raises(dc.CacheError) as info:
            dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="val"), str(ro))
        msg = str(info.value)
        assert "\n" not in msg and str(ro) in msg and "Permission denied" in msg and "--cache-dir" in msg
        assert files_in(str(ro)) == []
        with pytest.raises(SystemExit) as exit_info:
            driver.cli([demo_data, "--arch", "simplenet", "-j", "0", "--cache-dir", str(ro),
                        "--log-dir", str(tmp_path / "logs")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: cannot write the decoded cache in") and "\n" not in err
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_is_named_and_nothing_is_left(demo_data, tmp_path, workers):
    data = copy_data(demo_data, tmp_path)
    bad = relpaths(data, "train")[40]
    with open(os.path.join(data, "images", bad), "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(ImageReadError) as info:
        dc.with_decoded_cache(MiniPlacesLoader(data, split="train"), cache_dir, workers=workers)
    assert bad in str(info.value) and "\n" not in str(info.value)
    assert files_in(cache_dir) == []


def test_other_size_images_fall_back_to_decoding(demo_data, tmp_path, capsys, monkeypatch):
    data = copy_data(demo_data, tmp_path)
    odd = relpaths(data, "train")[9]
    save_image(os.path.join(data, "images", odd), np.zeros((100, 150, 3), np.uint8))
    cache_dir = str(tmp_path / "cache")
    ds = MiniPlacesLoader(data, split="train")
    decoding = dc.with_decoded_cache(ds, cache_dir)
    assert isinstance(decoding, dc.CheckedImages) and len(decoding) == len(ds)
    assert np.array_equal(decoding[9][0], ds[9][0]) and decoding[9][0].shape == (100, 150, 3)
    out = capsys.readouterr().out
    assert "images differ in size" in out and f"{odd} is 100x150" in out and "decoding the JPEGs" in out
    assert os.path.getsize(dc.cache_path(cache_dir, "train")) == dc.HEADER_BYTES, "only the note"
    assert files_in(cache_dir) == ["decoded_train.cache"]

    monkeypatch.setattr(dc, "build_cache", lambda *a, **k: pytest.fail("decoded the odd split again"))
    assert isinstance(dc.with_decoded_cache(ds, cache_dir), dc.CheckedImages)
    assert "images differ in size" in capsys.readouterr().out
    monkeypatch.undo()
    val = MiniPlacesLoader(data, split="val")
    assert isinstance(dc.with_decoded_cache(val, cache_dir), dc.DecodedCacheDataset), "val is uniform"


def test_workers_share_the_map_instead_of_copies(demo_data, tmp_path):
    cached = dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="train"), str(tmp_path))
    cached[0]  # maps the file in this process
    assert isinstance(cached.images.base, np.memmap) and not cached.images.flags.writeable, "a view of the map"
    assert len(pickle.dumps(cached)) < 20_000, "workers get the path, not the 3 MiB of pixels"

    def batches(workers):
        loader = DataLoader(cached, batch_size=16, num_workers=workers)
        return [(torch.as_tensor(x), y) for x, y in loader]

    for (a, la), (b, lb) in zip(batches(0), batches(2)):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_a_file_of_the_user_is_never_overwritten(demo_data, tmp_path):
    path = dc.cache_path(str(tmp_path), "val")
    with open(path, "wb") as f:
        f.write(b"my own notes")
    with pytest.raises(dc.CacheError, match="not a decoded cache written by"):
        dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="val"), str(tmp_path))
    assert open(path, "rb").read() == b"my own notes"


def test_a_killed_builds_temporary_file_is_removed(demo_data, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".decoded_val.cache.{socket.gethostname()}.{dead.pid}.tmp"
    leftover.write_bytes(b"half")
    other = tmp_path / ".decoded_val.cache.otherhost.1.tmp"
    other.write_bytes(b"another machine's build")
    dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="val"), str(tmp_path))
    assert f"removed {leftover}" in capsys.readouterr().out
    assert files_in(str(tmp_path)) == sorted([other.name, "decoded_val.cache"])


def test_training_from_the_cache_equals_decoding(demo_data, tmp_path, capsys):
    def run(name, *extra):
        log_dir = tmp_path / name
        driver.main(driver.get_args_parser().parse_args(
            [demo_data, "--arch", "simplenet", "--epochs", "1", "--warmup", "0", "-b", "16", "-j", "0",
             "--log-dir", str(log_dir), *extra]))
        (run_dir,) = glob.glob(str(log_dir / "*"))
        return torch.load(os.path.join(run_dir, "models", "checkpoint.pth.tar"), weights_only=True)

    cache_dir = str(tmp_path / "cache")
    plain = run("plain", "--no-cache")
    assert "decoded cache" not in capsys.readouterr().out
    cached = run("cached", "--cache-dir", cache_dir)
    out = capsys.readouterr().out
    assert out.count("=> decoded cache: wrote") == 2, "train and val"
    again = run("again", "--cache-dir", cache_dir)
    out = capsys.readouterr().out
    assert f"reusing {dc.cache_path(cache_dir, 'train')}" in out
    assert f"reusing {dc.cache_path(cache_dir, 'val')}" in out
    for ckpt in (cached, again):
        assert ckpt["best_acc1"] == plain["best_acc1"]
        for k, v in plain["state_dict"].items():
            assert torch.equal(v, ckpt["state_dict"][k]), k


def test_cache_flags_conflict():
    args = driver.get_args_parser().parse_args(["data", "--no-cache", "--cache-dir", "x"])
    with pytest.raises(driver.UserError, match="pick one"):
        driver.check_args(args)
