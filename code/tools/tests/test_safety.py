"""Nothing the user has is lost (issue 25): checkpoints through kills at every point of a save,
a full disk and unwritable log folders (a real tmpfs or read-only mount where this machine
allows it, injected errors always), the decoded cache deleted during a run, cut-short JPEGs,
Ctrl-C at every moment, and the flags of a resume."""
import contextlib
import errno
import glob
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import decoded_cache as dc
import main as driver
from custom_dataloader import MiniPlacesLoader
from utils import ImageReadError, load_image

from tools import CODE_DIR, REPO_DIR



def train_argv(data, log_dir, *extra):
    return [data, "--arch", "simplenet", "--epochs", "2", "--warmup", "1", "-b", "16", "-j", "0", "--lr", "0.05",
            "-p", "2", "--log-dir", str(log_dir), *extra]


def only_run(log_dir):
    runs = sorted(glob.glob(os.path.join(str(log_dir), "*")))
    assert len(runs) == 1, runs
    return runs[0]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.endswith(".tmp")]


def cli_error(argv, capsys, code=2):
    """main.cli's exit status must be ``code`` and its stderr one line; returns that line."""
    with pytest.raises(SystemExit) as info:
        driver.cli(argv)
    assert info.value.code == code
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(autouse=True)
def restore_thread_hook(monkeypatch):
    """main.cli installs a threading.excepthook; each test gets the previous one back."""
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)


@pytest.fixture(scope="module")
def one_epoch_run(demo_data, tmp_path_factory):
    """A finished 1-epoch SimpleNet run (its cache built in demo_data/cache); tests copy it."""
    log_dir = tmp_path_factory.mktemp("one_epoch")
    driver.main(driver.get_args_parser().parse_args(train_argv(demo_data, log_dir, "--epochs", "1")))
    return only_run(log_dir)


def copy_run(run, dest):
    copy = os.path.join(str(dest), os.path.basename(run))
    shutil.copytree(run, copy)
    return copy, os.path.join(copy, "models", "checkpoint.pth.tar")


# ------------------------------------------------------------------------------------------
# Mounts: a small tmpfs and a read-only view, where this machine lets the tests mount
# ------------------------------------------------------------------------------------------

def mount_or_skip(*args):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root (the injected-error tests cover this case)")
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount here ({res.stderr.strip() or res.returncode}); the injected-error tests cover it")


@contextlib.contextmanager
def small_tmpfs(path, megabytes):
    os.makedirs(path)
    mount_or_skip("-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path))
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_view(folder, view):
    """``view``: ``folder`` read-only (a read-only bind mount as root, file modes otherwise)."""
    if os.geteuid() != 0:
        for root, dirs, files in os.walk(folder):
            for name in files + dirs:
                os.chmod(os.path.join(root, name), 0o555 if name in dirs else 0o444)
        os.chmod(folder, 0o555)
        try:
            yield str(folder)
        finally:
            for root, dirs, _ in os.walk(folder):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
            os.chmod(folder, 0o755)
        return
    os.makedirs(view)
    mount_or_skip("--bind", str(folder), str(view))
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)]).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield str(view)
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def fill(folder):
    """Fill the file system of ``folder`` to the last byte (a file named filler)."""
    fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        for size in (2 ** 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    assert shutil.disk_usage(folder).free < 4096


# ------------------------------------------------------------------------------------------
# Checkpoints: a SIGKILL at every point of a save
# ------------------------------------------------------------------------------------------

def state(epoch, best_epoch):
    return {"epoch": epoch, "best_acc1": float(best_epoch), "best_epoch": best_epoch,
            "w": torch.full((50_000,), float(epoch))}


def kill_save_at(run, step, half):
    """In a forked child: save epoch 1 (best), then epoch 2 (best) with a SIGKILL before the
    ``step``-th file operation of that save (writes, fsyncs, renames; with ``half`` a write is
    killed after half its bytes). Returns True when the save ran past its last operation. (The
    states are made before the fork: a forked child must not start torch's OpenMP threads.)"""
    first, second = state(1, 1), state(2, 2)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            driver.save_checkpoint(first, True, run)
            ops = []

            def kill_before(name):
                real = getattr(os, name)

                def op(*args):
                    ops.append(name)
                    if len(ops) == step:
                        if name == "write" and half:
                            real(args[0], bytes(args[1])[:len(args[1]) // 2])
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args)

                setattr(os, name, op)

            for name in ("write", "fsync", "replace"):
                kill_before(name)
            driver.save_checkpoint(second, True, run)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return False
    assert os.WEXITSTATUS(status) == 0, "the child failed before its kill"
    return True


@pytest.mark.parametrize("half", [False, True])
def test_no_kill_during_a_save_leaves_model_best_older_than_the_recorded_best(tmp_path, half):
    finished = False
    for step in range(1, 30):
        run = str(tmp_path / f"kill{step}")
        finished = kill_save_at(run, step, half)
        models = os.path.join(run, "models")
        ckpt = load(os.path.join(models, "checkpoint.pth.tar"))
        best = load(os.path.join(models, "model_best.pth.tar"))
        assert best["epoch"] >= ckpt["best_epoch"], f"kill at step {step}: model_best older than the recorded best"
        assert torch.equal(best["w"], torch.full((50_000,), float(best["epoch"]))), "a whole file"
        # the resume of that checkpoint: leftovers of the killed save removed, model_best kept
        best_acc1, best_epoch = driver.reconcile_best(run, ckpt, os.path.join(models, "checkpoint.pth.tar"))
        assert (best_acc1, best_epoch) == (ckpt["best_acc1"], ckpt["best_epoch"])
        assert leftovers(models) == [] and load(os.path.join(models, "model_best.pth.tar"))["epoch"] == best["epoch"]
        if finished:
            assert ckpt["epoch"] == best["epoch"] == 2
            break
    assert finished and step >= 8, "every write, fsync and rename of both files was a kill point"


def test_a_resume_repairs_model_best_or_says_its_weights_are_gone(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    ckpt_path = str(models / "checkpoint.pth.tar")
    torch.save(state(1, 1), models / "model_best.pth.tar")
    torch.save(state(2, 2), ckpt_path)  # a save of the old order, killed between its renames
    (models / ".model_best.pth.tar.tmp").write_bytes(b"half a checkpoi")
    assert driver.reconcile_best(str(tmp_path), load(ckpt_path), ckpt_path) == (2.0, 2)
    out = capsys.readouterr().out
    assert "left by a save that was killed" in out and "restored from it" in out
    assert load(models / "model_best.pth.tar")["epoch"] == 2 and leftovers(str(models)) == []
    # the recorded best is an earlier epoch whose file is gone: the best goes on from what is there
    torch.save(state(1, 1), models / "model_best.pth.tar")
    torch.save(state(3, 2), ckpt_path)
    assert driver.reconcile_best(str(tmp_path), load(ckpt_path), ckpt_path) == (1.0, 1)
    assert "whose weights are gone" in capsys.readouterr().out
    os.remove(models / "model_best.pth.tar")
    assert driver.reconcile_best(str(tmp_path), load(ckpt_path), ckpt_path) == (-float("inf"), None)


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "models" / "checkpoint.pth.tar")
    driver.write_atomically(path, b"old")
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(driver.LogWriteError) as info:
        driver.write_atomically(path, b"new bytes")
    monkeypatch.undo()
    assert info.value.cause.errno == errno.ENOSPC and info.value.folder == os.path.dirname(path)
    assert open(path, "rb").read() == b"old" and leftovers(os.path.dirname(path)) == []
    free = shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 5, 5)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: free)
    with pytest.raises(driver.LogWriteError) as info:
        driver.write_atomically(path, b"new bytes")
    assert "checkpoint.pth.tar needs 9 bytes, 5 are free" in str(info.value)
    assert open(path, "rb").read() == b"old" and leftovers(os.path.dirname(path)) == []


# ------------------------------------------------------------------------------------------
# A full disk, unwritable log folders
# ------------------------------------------------------------------------------------------

def fail_from_epoch(monkeypatch, epoch, action):
    """Run ``action()`` just before training epoch ``epoch`` (counted from 1)."""
    real, calls = driver.train_one_epoch, []

    def train_one_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "train_one_epoch", train_one_epoch)


def check_kept(run, ckpt, err, data):
    """After a failed epoch 2: one line naming the run folder and the resume command; the epoch-1
    checkpoint whole, nothing half-written."""
    assert f"cannot write to {run}" in err and "the disk is full" in err and "another --log-dir" in err
    assert f"resume with python main.py {data} --resume {ckpt}" in err
    assert load(ckpt)["epoch"] == 1 and load(os.path.join(run, "models", "model_best.pth.tar"))["epoch"] == 1
    assert leftovers(os.path.join(run, "models")) == []


def test_a_full_disk_stops_training_with_one_line_and_the_resume_goes_on(demo_data, one_epoch_run, tmp_path,
                                                                         monkeypatch, capsys):
    with small_tmpfs(tmp_path / "disk", 24) as disk:
        run, ckpt = copy_run(one_epoch_run, disk)
        fail_from_epoch(monkeypatch, 1, lambda: fill(disk))  # the first epoch this resume trains: epoch 2
        err = cli_error([demo_data, "--resume", ckpt, "--epochs", "2"], capsys)
        check_kept(run, ckpt, err, demo_data)
        monkeypatch.undo()
        os.remove(os.path.join(disk, "filler"))
        driver.cli([demo_data, "--resume", ckpt, "--epochs", "2"])
        assert load(ckpt)["epoch"] == 2
        assert load(os.path.join(run, "models", "model_best.pth.tar"))["epoch"] >= load(ckpt)["best_epoch"]


def test_a_disk_full_error_while_saving_keeps_the_last_checkpoint(demo_data, one_epoch_run, tmp_path, monkeypatch,
                                                                  capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    run, ckpt = copy_run(one_epoch_run, tmp_path)
    fail_from_epoch(monkeypatch, 1, lambda: monkeypatch.setattr(os, "fsync", full))
    err = cli_error([demo_data, "--resume", ckpt, "--epochs", "2"], capsys)
    check_kept(run, ckpt, err, demo_data)


def test_a_save_that_fails_halfway_names_the_best_file_it_wrote(demo_data, tmp_path, monkeypatch, capsys):
    real, calls = os.fsync, []

    def full_at_the_second_file(fd):  # model_best: its file, its folder; then checkpoint.pth.tar's file
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", full_at_the_second_file)
    err = cli_error(train_argv(demo_data, tmp_path, "--epochs", "1", "--no-cache"), capsys)
    best = os.path.join(only_run(tmp_path), "models", "model_best.pth.tar")
    assert f"the last checkpoint, {best}, is kept: resume with python main.py {demo_data} --resume {best}" in err
    assert sorted(os.listdir(os.path.dirname(best))) == ["model_best.pth.tar"] and load(best)["epoch"] == 1


def test_a_writer_thread_that_dies_on_a_full_disk_gives_one_line(demo_data, one_epoch_run, tmp_path, monkeypatch,
                                                                 capsys):
    """TensorBoard writes in a thread (and flushes there every two minutes): a full disk kills
    that thread, which Python reports with a traceback; the run reports it in its one line."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    run, ckpt = copy_run(one_epoch_run, tmp_path)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)  # Python's, not pytest's
    fail_from_epoch(monkeypatch, 1, lambda: monkeypatch.setattr(RecordWriter, "write", full))
    err = cli_error([demo_data, "--resume", ckpt, "--epochs", "2", "-p", "1"], capsys)
    check_kept(run, ckpt, err, demo_data)


def test_a_log_dir_that_is_a_file_or_unwritable_gives_one_line(demo_data, one_epoch_run, tmp_path, monkeypatch,
                                                                 capsys):
    ckpt = os.path.join(one_epoch_run, "models", "checkpoint.pth.tar")
    modes = {"training": [], "-e": ["-e", "--resume", ckpt], "-a": ["-a", "--resume", ckpt]}
    a_file = tmp_path / "a_file"
    a_file.write_text("notes")
    for mode, flags in modes.items():
        err = cli_error([demo_data, "--arch", "simplenet", "-j", "0", "--log-dir", str(a_file), *flags], capsys)
        assert err == f"error: cannot write to {a_file} (it is a file, not a folder): pass a folder as --log-dir", mode
        assert a_file.read_text() == "notes"

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(driver.os, "makedirs", denied)
    for mode, flags in modes.items():
        err = cli_error([demo_data, "--arch", "simplenet", "-j", "0", "--log-dir", str(tmp_path / "logs"),
                         *flags], capsys)
        assert err == (f"error: cannot write to {tmp_path / 'logs'} (permission denied): make it writable or "
                       "pass another --log-dir"), mode


def test_a_read_only_log_dir_gives_one_line(demo_data, one_epoch_run, tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    ckpt = os.path.join(one_epoch_run, "models", "checkpoint.pth.tar")
    with read_only_view(tmp_path / "logs", tmp_path / "view") as logs:
        for flags in ([], ["-e", "--resume", ckpt], ["-a", "--resume", ckpt]):
            err = cli_error([demo_data, "--arch", "simplenet", "-j", "0", "--log-dir", logs, *flags], capsys)
            assert err.startswith(f"error: cannot write to {logs} (") and "make it writable" in err, err
            assert os.listdir(logs) == []


def test_eval_and_attack_on_a_full_disk_leave_no_folder(demo_data, one_epoch_run, tmp_path, capsys):
    ckpt = os.path.join(one_epoch_run, "models", "checkpoint.pth.tar")
    with small_tmpfs(tmp_path / "disk", 1) as disk:
        os.makedirs(os.path.join(disk, "logs"))
        fill(disk)
        for mode in ("-e", "-a"):
            err = cli_error([demo_data, mode, "--resume", ckpt, "-j", "0", "--log-dir", os.path.join(disk, "logs")],
                            capsys)
            assert "the disk is full" in err and os.listdir(os.path.join(disk, "logs")) == [], mode


def test_resuming_a_read_only_run_says_so_and_goes_on_under_another_log_dir(demo_data, one_epoch_run, tmp_path,
                                                                            capsys):
    run, _ = copy_run(one_epoch_run, tmp_path / "runs")
    with read_only_view(tmp_path / "runs", tmp_path / "view") as view:
        ckpt = os.path.join(view, os.path.basename(run), "models", "checkpoint.pth.tar")
        err = cli_error([demo_data, "--resume", ckpt, "--epochs", "2"], capsys)
        assert err.startswith(f"error: cannot write to {os.path.dirname(os.path.dirname(ckpt))} (")
        assert "make it writable or pass another --log-dir" in err and f"--resume {ckpt}" in err
        driver.cli([demo_data, "--resume", ckpt, "--epochs", "2", "--log-dir", str(tmp_path / "elsewhere")])
    out = capsys.readouterr().out
    assert "goes on in a new run folder" in out and "--log-dir" not in differ_line(out), "honoured, not listed"
    new = only_run(tmp_path / "elsewhere")
    assert load(os.path.join(new, "models", "checkpoint.pth.tar"))["epoch"] == 2
    assert load(os.path.join(new, "models", "model_best.pth.tar"))["epoch"] == 2, "its own best from its first epoch"
    assert load(os.path.join(run, "models", "checkpoint.pth.tar"))["epoch"] == 1, "the old run untouched"


# ------------------------------------------------------------------------------------------
# The decoded cache deleted during a run; JPEGs cut short
# ------------------------------------------------------------------------------------------

def test_deleting_the_cache_during_a_run_loses_nothing(demo_data, one_epoch_run, tmp_path, monkeypatch, capsys):
    cache_dir = str(tmp_path / "cache")
    # -j 1: the training worker maps the cache in epoch 1, the validation worker starts after the deletion
    real = driver.train_one_epoch

    def train_then_delete(*args, **kwargs):
        result = real(*args, **kwargs)
        shutil.rmtree(cache_dir)
        return result

    monkeypatch.setattr(driver, "train_one_epoch", train_then_delete)
    driver.cli(train_argv(demo_data, tmp_path, "--epochs", "1", "-j", "1", "--cache-dir", cache_dir))
    assert not os.path.exists(cache_dir)
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "logs and checkpoints in" in ln]
    assert run_sh_run_folder(line) == only_run(tmp_path), "run.sh reads the run folder from main.py's line"
    a = load(os.path.join(only_run(tmp_path), "models", "checkpoint.pth.tar"))
    b = load(os.path.join(one_epoch_run, "models", "checkpoint.pth.tar"))  # the same run, -j 0, cache kept
    assert a["epoch"] == 1 and a["best_acc1"] == b["best_acc1"], "the epoch validated on the same pixels"
    for k, v in b["state_dict"].items():
        assert torch.equal(v, a["state_dict"][k]), k


def test_a_cache_gone_before_a_process_opens_it_decodes_instead(demo_data, tmp_path, capsys):
    ds = MiniPlacesLoader(demo_data, split="val")
    cached = dc.with_decoded_cache(ds, str(tmp_path))
    later = pickle.loads(pickle.dumps(cached))  # what a DataLoader worker started later gets
    os.remove(dc.cache_path(str(tmp_path), "val"))
    for i in (0, len(ds) - 1):
        assert np.array_equal(later[i][0], ds[i][0]) and later[i][1] == ds[i][1]
    assert "is gone" in capsys.readouterr().out
    rebuilt = dc.with_decoded_cache(MiniPlacesLoader(demo_data, split="train"), str(tmp_path))  # another file
    os.replace(dc.cache_path(str(tmp_path), "train"), dc.cache_path(str(tmp_path), "val"))
    assert np.array_equal(pickle.loads(pickle.dumps(cached))[3][0], ds[3][0]), "a replaced file is not read"
    assert rebuilt.source is not None


def cut(path, keep):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep)])


def test_cut_short_images_are_found(demo_data, tmp_path):
    path = os.path.join(demo_data, "images", open(os.path.join(demo_data, "train.txt")).readline().split()[0])
    data = open(path, "rb").read()
    assert dc.image_file_problem(data) is None
    for keep in (0.99, 0.75, 0.5, 0.3):
        assert "cut short" in dc.image_file_problem(data[:int(len(data) * keep)]), keep
    assert "no start-of-scan" in dc.image_file_problem(data[:200])
    png = tmp_path / "x.png"
    import cv2
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    assert dc.image_file_problem(png.read_bytes()) is None
    assert "PNG cut short" in dc.image_file_problem(png.read_bytes()[:-12])
    bad = str(tmp_path / "cut.jpg")
    shutil.copy(path, bad)
    cut(bad, 0.5)
    assert load_image(bad).shape == (128, 128, 3), "libjpeg alone decodes it without an error"
    with pytest.raises(ImageReadError, match=f"image {bad} is a JPEG cut short"):
        dc.load_checked_image(bad)


def test_checked_decoding_gives_load_images_pixels(demo_data, tmp_path):
    from PIL import Image
    ds = MiniPlacesLoader(demo_data, split="val")
    for rel, _ in ds.file_label_list:
        path = os.path.join(demo_data, "images", rel)
        assert np.array_equal(dc.load_checked_image(path), load_image(path)), rel
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: both read the orientation
    Image.fromarray(img).save(tmp_path / "exif.jpg", exif=exif.tobytes())
    assert np.array_equal(dc.load_checked_image(str(tmp_path / "exif.jpg")), load_image(str(tmp_path / "exif.jpg")))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_cut_short_jpeg_never_goes_into_the_cache(demo_data, tmp_path, workers):
    data = str(tmp_path / "data")
    shutil.copytree(demo_data, data, ignore=shutil.ignore_patterns("cache"))
    rel = open(os.path.join(data, "train.txt")).readlines()[30].split()[0]
    cut(os.path.join(data, "images", rel), 0.5)
    with pytest.raises(ImageReadError) as info:
        dc.with_decoded_cache(MiniPlacesLoader(data, split="train"), str(tmp_path / "cache"), workers=workers)
    assert "\n" not in str(info.value) and f"{rel} is a JPEG cut short" in str(info.value)
    assert os.listdir(tmp_path / "cache") == []


def test_a_cut_short_jpeg_stops_training_with_or_without_the_cache(demo_data, tmp_path, capsys):
    data = str(tmp_path / "data")
    shutil.copytree(demo_data, data, ignore=shutil.ignore_patterns("cache"))
    rel = open(os.path.join(data, "train.txt")).readlines()[3].split()[0]
    cut(os.path.join(data, "images", rel), 0.6)
    for flags in (["--no-cache", "-j", "1"], ["-j", "0"]):
        err = cli_error(train_argv(data, tmp_path / "logs", "--epochs", "1", *flags), capsys)
        assert err.startswith(f"error: image {os.path.join(data, 'images', rel)} is a JPEG cut short (")
        assert "download_dataset.sh" in err, flags
    assert os.listdir(os.path.join(data, "cache")) == []


def test_a_cache_of_the_unchecked_format_is_rebuilt(demo_data, tmp_path, capsys):
    ds = MiniPlacesLoader(demo_data, split="val")
    dc.with_decoded_cache(ds, str(tmp_path))
    path = dc.cache_path(str(tmp_path), "val")
    header = dc.read_header(path)
    header["format"] = 1
    with open(path, "r+b") as f:
        f.write(dc._header_bytes(header))
    capsys.readouterr()
    dc.with_decoded_cache(ds, str(tmp_path))
    out = capsys.readouterr().out
    assert "is out of date" in out and dc.read_header(path)["format"] == dc.FORMAT == 2


def test_the_cache_prints_what_readme_says(demo_data, tmp_path, capsys):
    ds = MiniPlacesLoader(demo_data, split="val")
    dc.with_decoded_cache(ds, str(tmp_path))
    built = capsys.readouterr().out.splitlines()
    dc.with_decoded_cache(ds, str(tmp_path))
    reused = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[1].split()[0] for ln in built] == ["decoding", "wrote"] and len(reused) == 1
    readme = " ".join(open(os.path.join(REPO_DIR, "README.md")).read().split())
    assert ("It prints one line when it reuses a file, and two when it builds one (what it decodes, then the "
            "size and seconds)") in readme


# ------------------------------------------------------------------------------------------
# Ctrl-C at every moment
# ------------------------------------------------------------------------------------------

def test_ctrl_c_at_any_moment_prints_the_resume_line_and_exits_130(demo_data, one_epoch_run, tmp_path):
    """Each moment in its own process group, all at once (tools/tests/interrupt_run.py sends the
    SIGINT to its group at that moment, as a terminal's Ctrl-C does)."""
    moments = ("train-workers", "val-workers", "validation", "checkpoint", "cache-workers", "cache-build")
    procs = {}
    for moment in moments:
        run, ckpt = copy_run(one_epoch_run, tmp_path / moment)
        extra = ["--cache-dir", str(tmp_path / moment / "cache")] if moment.startswith("cache") else []
        procs[moment] = (ckpt, subprocess.Popen(
            [sys.executable, "-m", "tools.tests.interrupt_run", moment, demo_data, "--resume",
             ckpt, "--epochs", "2", "-j", "1", *extra], cwd=CODE_DIR, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for moment, (ckpt, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, (moment, proc.returncode, err[-2000:])
        assert err.strip() == (f"=> interrupted; the last checkpoint saved is {ckpt}; resume with: "
                               f"python main.py {demo_data} --resume {ckpt}"), (moment, err[-2000:])
        models = os.path.dirname(ckpt)
        assert leftovers(models) == []
        want = 2 if moment == "checkpoint" else 1  # a checkpoint being written is finished first
        assert load(ckpt)["epoch"] == want, moment
        assert load(os.path.join(models, "model_best.pth.tar"))["epoch"] >= load(ckpt)["best_epoch"]
    for moment in ("cache-workers", "cache-build"):
        cache = tmp_path / moment / "cache"
        assert not cache.exists() or os.listdir(cache) == [], "the interrupted build left nothing"


def test_ctrl_c_is_held_to_the_end_of_a_block_and_an_ignored_one_stays_ignored():
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        done = []
        with pytest.raises(KeyboardInterrupt):
            with dc.sigint_held():
                os.kill(os.getpid(), signal.SIGINT)
                done.append(1)  # the block runs to its end first
        assert done == [1]
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job of a script
        try:
            with dc.sigint_held():
                os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pytest.fail("a SIGINT that the process ignores was raised")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------------
# The flags of a run and of its resume
# ------------------------------------------------------------------------------------------

def test_numeric_flags_must_fit_a_float32(demo_data, tmp_path, capsys):
    quick = ["--arch", "simplenet", "--epochs", "1", "-b", "16", "-j", "0", "--log-dir", str(tmp_path)]  # if let run
    for flags, needle in ((["--lr", "1e308"], "--lr must be > 0 and finite as a float32"),
                          (["--lr", "1e-50"], "got 1e-50 (0 as a float32)"),
                          (["--wd", "1e39"], "--wd must be >= 0 and finite as a float32"),
                          (["--momentum", "0.99999999999"], "(1 as a float32)"),
                          (["--mixup", "1e300"], "--mixup"), (["--clip-grad", "4e38"], "--clip-grad"),
                          (["--adv-eps", "1e40"], "--adv-eps"), (["--label-smoothing", "1e-46"], None)):
        if needle is None:  # 1e-46 is 0 as a float32, which --label-smoothing allows
            assert driver.check_args(driver.get_args_parser().parse_args([demo_data, *flags])) is None
            continue
        assert needle in cli_error([demo_data, *flags, *quick], capsys), flags
    err = cli_error([demo_data, "--attack-eps", "0.3", *quick], capsys)
    assert "--attack-eps set the PGD attack of -a" in err


def test_a_run_resumed_from_model_best_writes_its_own_at_its_first_epoch(demo_data, one_epoch_run, tmp_path,
                                                                          monkeypatch, capsys):
    best = os.path.join(one_epoch_run, "models", "model_best.pth.tar")
    real = driver.validate

    def worse(*args, **kwargs):
        return dict(real(*args, **kwargs), top1=-1.0)  # below the resumed best Acc@1

    monkeypatch.setattr(driver, "validate", worse)
    driver.cli([demo_data, "--resume", best, "--epochs", "2", "--log-dir", str(tmp_path), "--exp-name", "again"])
    new = only_run(tmp_path)
    assert os.path.basename(new).startswith("again_"), "--exp-name honoured"
    assert load(os.path.join(new, "models", "model_best.pth.tar"))["epoch"] == 2
    assert differ_line(capsys.readouterr().out) == "=> resuming with flags that differ from the checkpoint's: " \
                                                   "--epochs 2 (the run's: 1)"


def differ_line(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("=> resuming with flags that differ")]
    assert len(lines) <= 1
    return lines[0] if lines else ""


def test_log_dir_or_exp_name_on_resume_go_on_in_a_new_folder(one_epoch_run, tmp_path, capsys):
    run, ckpt = copy_run(one_epoch_run, tmp_path / "runs")
    parser = driver.get_args_parser()
    config = load(ckpt)["model_config"]
    for flags, root, name in ((["--exp-name", "longer"], os.path.dirname(run), "longer_"),
                              (["--log-dir", str(tmp_path / "other")], str(tmp_path / "other"), "simplenet_"),
                              (["--log-dir", os.path.dirname(run) + "/."], None, None)):
        args = parser.parse_args(["data", "--resume", ckpt, *flags])
        args.rank = 0  # set by init_distributed
        folder, writer, continuing = driver.open_run(args, config, load(ckpt), False)
        writer.close()
        if root is None:
            assert continuing and folder == run, "the run's own place, named again"
            continue
        assert not continuing and os.path.dirname(folder) == root and os.path.basename(folder).startswith(name)
        assert f"goes on in a new folder under {root} ({run} stays as it is)" in capsys.readouterr().out
    assert driver.RUN_FOLDER_FLAGS == ("log_dir", "exp_name")
    args = parser.parse_args([load(ckpt)["args"]["data_folder"], "--resume", ckpt, "--log-dir", "elsewhere",
                              "--exp-name", "x", "-j", "3"])
    driver.restore_run_flags(args, load(ckpt)["args"])
    assert differ_line(capsys.readouterr().out) == ("=> resuming with flags that differ from the checkpoint's: "
                                                    "--workers 3 (the run's: 0)"), "honoured by open_run, not listed"


def test_resnet18_weights_cannot_change_on_resume():
    args = driver.get_args_parser().parse_args(["data", "--arch", "resnet18", "--resnet18-weights", "other.pth",
                                                "--resume", "x"])
    saved = vars(driver.get_args_parser().parse_args(["data", "--arch", "resnet18", "--resnet18-weights", "w.pth"]))
    with pytest.raises(driver.UserError, match=r"--resnet18-weights other.pth \(the run's: w.pth\)"):
        driver.restore_run_flags(args, saved)
    args.resnet18_weights = "w.pth"
    driver.restore_run_flags(args, saved)


def test_an_unreadable_checkpoint_gets_our_own_line(demo_data, one_epoch_run, tmp_path, capsys):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(os.urandom(1000))
    half = tmp_path / "half.pth.tar"
    data = open(os.path.join(one_epoch_run, "models", "checkpoint.pth.tar"), "rb").read()
    half.write_bytes(data[:len(data) // 2])
    evil = tmp_path / "evil.pth.tar"
    torch.save({"f": threading.Lock}, evil)
    for path, why in ((junk, "not a file written by torch.save, or one cut short"),
                      (half, "not a file written by torch.save, or one cut short"),
                      (evil, "it holds Python objects other than tensors and plain values")):
        err = cli_error([demo_data, "-e", "--resume", str(path)], capsys)
        assert err.startswith(f"error: --resume: {path} is not a readable checkpoint ({why}")
        assert "weights_only" not in err


RUN_SH_MAIN = """
import argparse, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("-e", action="store_true")
parser.add_argument("--resume")
parser.add_argument("--log-dir", default="../logs")
args, _ = parser.parse_known_args()
if args.e:
    open(os.path.join(os.path.dirname(__file__), "eval_args.txt"), "w").write(repr(sys.argv[1:]))
else:
    run = os.path.join(args.log_dir, "cnn_20260101-000000")
    os.makedirs(run)
    print("=> cnn (student_code.default_cnn_model, SceneResNet): 1.00M params; logs and checkpoints in " + run)
"""


def test_run_sh_finds_its_run_wherever_its_logs_go(tmp_path):
    """run.sh with a stand-in main.py that prints main.py's line naming its run folder (the real
    line is checked against run.sh's pattern in test_deleting_the_cache_during_a_run_loses_nothing)."""
    repo = tmp_path / "repo"
    (repo / "code").mkdir(parents=True)
    (repo / "code" / "main.py").write_text(RUN_SH_MAIN)
    shutil.copy(os.path.join(REPO_DIR, "run.sh"), repo)
    (repo / "setup.sh").write_text("true\n")
    (repo / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, repo / ".venv" / "bin" / "python")
    (repo / "data").mkdir()
    for name in ("train.txt", "DEMO_DATASET.txt"):
        (repo / "data" / name).write_text("")
    for flags, root in ((["--epochs", "1", "--log-dir", str(tmp_path / "my logs")], tmp_path / "my logs"),
                        (["--epochs", "1", "--log-d=" + str(tmp_path / "abbrev")], tmp_path / "abbrev"),
                        (["--epochs", "1"], repo / "logs")):
        res = subprocess.run(["bash", str(repo / "run.sh"), *flags], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        run = os.path.join(os.path.relpath(root, repo / "code") if root == repo / "logs" else str(root),
                           "cnn_20260101-000000")
        assert f"=> evaluating the best checkpoint of {run}" in res.stdout
        eval_args = eval(open(repo / "code" / "eval_args.txt").read())
        assert eval_args[eval_args.index("--resume") + 1] == os.path.join(run, "models", "model_best.pth.tar")
        assert eval_args[eval_args.index("--log-dir") + 1] == os.path.dirname(run), "-e logs beside the run"
        shutil.rmtree(root)


def run_sh_run_folder(line):
    """What run.sh's pattern takes from ``line`` (its sed command, run on it)."""
    script = open(os.path.join(REPO_DIR, "run.sh")).read()
    pattern = script.split("sed -n '")[1].split("'")[0]
    return subprocess.run(["sed", "-n", pattern], input=line + "\n", capture_output=True, text=True).stdout.strip()
