"""The training driver: a demo run end to end, exact resume, safe checkpoints, bad input."""
import errno
import glob
import math
import os
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main as driver


def run_args(data, log_dir, *extra):
    return driver.get_args_parser().parse_args(
        [data, "--arch", "simplenet", "--epochs", "2", "--warmup", "1", "-b", "16", "-j", "0",
         "--lr", "0.05", "-p", "2", "--log-dir", str(log_dir), *extra])


def only_run(log_dir):
    runs = sorted(glob.glob(os.path.join(str(log_dir), "*")))
    assert len(runs) == 1, runs
    return runs[0]


def scalars(run, tag):
    acc = EventAccumulator(run)
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def expect_user_error(argv, capsys, needle):
    with pytest.raises(SystemExit) as info:
        driver.cli(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def trained_run(demo_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("logs")
    driver.main(run_args(demo_data, log_dir))
    return only_run(log_dir)


def test_training_writes_logs_and_checkpoints(trained_run):
    name = os.path.basename(trained_run)
    assert " " not in name and ":" not in name
    for f in ("checkpoint.pth.tar", "model_best.pth.tar"):
        ckpt = torch.load(os.path.join(trained_run, "models", f), map_location="cpu", weights_only=True)
        assert set(driver.CHECKPOINT_KEYS) <= set(ckpt)
        assert ckpt["model_arch"] == "SimpleNet"
    assert not glob.glob(os.path.join(trained_run, "models", ".*.tmp"))
    for tag in ("data/training_loss", "data/learning_rate", "data/top1_accuracy", "data/top5_accuracy",
                "data/train_top1_accuracy", "data/train_top5_accuracy"):
        assert scalars(trained_run, tag), tag
    assert [s for s, _ in scalars(trained_run, "data/top1_accuracy")] == [1, 2]


def test_evaluate_reproduces_the_best_accuracy_and_logs_it(trained_run, demo_data, tmp_path, capsys):
    best = torch.load(os.path.join(trained_run, "models", "model_best.pth.tar"), weights_only=True)
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-e", "--resume", os.path.join(trained_run, "models", "model_best.pth.tar"), "-j", "0",
         "--log-dir", str(tmp_path)]))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("******Acc@1")]
    assert len(lines) == 2, "plain and flip-averaged accuracy"
    assert float(lines[0].split()[1]) == pytest.approx(best["best_acc1"], abs=1e-6)
    run = only_run(tmp_path)
    assert os.path.basename(run).startswith("simplenet-eval_")
    assert scalars(run, "eval/top1_accuracy") == [(best["epoch"], pytest.approx(best["best_acc1"], abs=1e-4))]
    for tag, line in (("eval/top1_accuracy", 0), ("eval/flip_top1_accuracy", 1), ("eval/flip_top5_accuracy", 1)):
        column = 1 if "top1" in tag else 3
        assert scalars(run, tag)[0][1] == pytest.approx(float(lines[line].split()[column]), abs=1e-3), tag


def test_resume_equals_an_uninterrupted_run(demo_data, tmp_path, monkeypatch):
    driver.main(run_args(demo_data, tmp_path / "full"))
    full = only_run(tmp_path / "full")

    real_save = driver.save_checkpoint

    def save_then_crash(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        driver.main(run_args(demo_data, tmp_path / "cut"))
    monkeypatch.setattr(driver, "save_checkpoint", real_save)
    cut = only_run(tmp_path / "cut")
    assert torch.load(os.path.join(cut, "models", "checkpoint.pth.tar"), weights_only=True)["epoch"] == 1
    # --resume alone: the run's flags (-b 16, --epochs 2, --lr 0.05, ...) come from the checkpoint
    driver.main(driver.get_args_parser().parse_args([demo_data, "--resume",
                                                     os.path.join(cut, "models", "checkpoint.pth.tar")]))
    assert only_run(tmp_path / "cut") == cut, "resume continues in the checkpoint's run folder"

    a = torch.load(os.path.join(full, "models", "checkpoint.pth.tar"), weights_only=True)
    b = torch.load(os.path.join(cut, "models", "checkpoint.pth.tar"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert (b["args"]["batch_size"], b["args"]["epochs"], b["args"]["workers"]) == (16, 2, 0)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["best_acc1"] == b["best_acc1"]
    assert scalars(full, "data/learning_rate") == scalars(cut, "data/learning_rate")


def test_scaler_state_loads_across_amp_modes():
    disabled_state = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    fp16_state = torch.amp.GradScaler("cpu", init_scale=1024.0).state_dict()
    assert disabled_state == {} and fp16_state["scale"] == 1024.0
    enabled = torch.amp.GradScaler("cpu")
    assert "no fp16 loss scale" in driver.load_scaler_state(enabled, disabled_state)
    assert enabled.is_enabled() and enabled.get_scale() == 65536.0
    assert driver.load_scaler_state(enabled, fp16_state) is None and enabled.get_scale() == 1024.0
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert "not needed" in driver.load_scaler_state(disabled, fp16_state) and not disabled.is_enabled()
    assert driver.load_scaler_state(disabled, disabled_state) is None


@pytest.mark.parametrize("saved, resumed", [("float32", "fp16"), ("fp16", "float32")])
def test_resume_across_amp_modes_and_devices(trained_run, tmp_path, demo_data, monkeypatch, capsys, saved, resumed):
    """A checkpoint of a CPU / bf16 / --no-amp run (empty scaler state) resumed by an fp16 run, whose
    GradScaler is enabled, and an fp16 CUDA checkpoint (loss scale, fused optimizer) resumed on the CPU."""
    ckpt = torch.load(os.path.join(trained_run, "models", "checkpoint.pth.tar"), weights_only=True)
    if saved == "fp16":
        ckpt["scaler"] = torch.amp.GradScaler("cpu", init_scale=2048.0).state_dict()
        for group in ckpt["optimizer"]["param_groups"]:
            group["fused"] = True
    assert (ckpt["scaler"] == {}) == (saved == "float32")
    torch.save(ckpt, tmp_path / "saved.pth.tar")
    if resumed == "fp16":  # an enabled scaler in a float32 CPU run: the loss scaling is real, only unneeded
        monkeypatch.setattr(driver, "make_grad_scaler", lambda device, amp_dtype: torch.amp.GradScaler("cpu"))
    capsys.readouterr()
    driver.main(run_args(demo_data, tmp_path / "logs", "--epochs", "3", "--resume", str(tmp_path / "saved.pth.tar")))
    out = capsys.readouterr().out
    assert ("no fp16 loss scale" in out) == (resumed == "fp16") and ("not needed" in out) == (saved == "fp16")
    new = torch.load(os.path.join(only_run(tmp_path / "logs"), "models", "checkpoint.pth.tar"), weights_only=True)
    assert new["epoch"] == 3
    assert (new["scaler"] == {}) == (resumed == "float32")
    assert not any(group["fused"] for group in new["optimizer"]["param_groups"]), "this run's kernels"


def test_a_new_run_never_reuses_a_folder(demo_data, tmp_path, monkeypatch):
    fixed = driver.datetime.datetime(2026, 1, 2, 3, 4, 5)

    class FixedClock:
        @staticmethod
        def now():
            return fixed

    monkeypatch.setattr(driver.datetime, "datetime", FixedClock)
    first = driver.make_run_folder(str(tmp_path), "simplenet")
    second = driver.make_run_folder(str(tmp_path), "simplenet")
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    assert os.path.basename(first) == "simplenet_20260102-030405"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    driver.save_checkpoint({"epoch": 1}, True, str(tmp_path))
    real_write = os.write

    def crash(fd, data):
        real_write(fd, b"half a checkpoi")
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(driver.os, "write", crash)
    with pytest.raises(driver.LogWriteError):
        driver.save_checkpoint({"epoch": 2}, True, str(tmp_path))
    monkeypatch.undo()
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert torch.load(os.path.join(tmp_path, "models", name), weights_only=True) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path / "models")) == ["checkpoint.pth.tar", "model_best.pth.tar"]


def test_resuming_from_best_starts_a_new_folder(trained_run):
    assert driver.resume_folder(os.path.join(trained_run, "models", "model_best.pth.tar")) is None
    assert driver.resume_folder(os.path.join(trained_run, "models", "checkpoint.pth.tar")) == trained_run


def test_bad_inputs_give_one_line_errors(demo_data, trained_run, tmp_path, capsys):
    expect_user_error([str(tmp_path / "nowhere")], capsys, "download_dataset.sh")
    (tmp_path / "empty").mkdir()
    expect_user_error([str(tmp_path / "empty")], capsys, "train.txt")
    expect_user_error([demo_data, "-e", "-a", "--resume", "x"], capsys, "-e and -a")
    expect_user_error([demo_data, "-e"], capsys, "--resume")
    expect_user_error([demo_data, "-e", "--resume", str(tmp_path / "none.pth")], capsys, "none.pth")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    expect_user_error([demo_data, "-e", "--resume", str(junk)], capsys, "junk.pth.tar")
    torch.save({"epoch": 1}, tmp_path / "partial.pth.tar")
    expect_user_error([demo_data, "-e", "--resume", str(tmp_path / "partial.pth.tar")], capsys, "missing")
    ckpt = os.path.join(trained_run, "models", "checkpoint.pth.tar")
    expect_user_error([demo_data, "--use-vit", "--resume", ckpt, "--log-dir", str(tmp_path)], capsys,
                      "flags ask for")
    err = expect_user_error([demo_data, "--resume", ckpt, "-b", "32", "--lr", "0.05"], capsys, "-b")
    assert "--batch-size 32 (the run's: 16)" in err and "--lr" not in err, "only what differs is named"
    expect_user_error([demo_data, "--resume", ckpt, "--epochs", "1"], capsys, "already trained 2 epochs")
    expect_user_error([demo_data, "--resume", ckpt, "--start-epoch", "1"], capsys, "--start-epoch")
    expect_user_error([demo_data, "--use-vit", "--use-resnet18"], capsys, "conflicting")
    for flags, needle in ((["--epochs", "0"], "--epochs must be >= 1, got 0"), (["--lr", "-1"], "--lr must be > 0"),
                          (["--lr", "0"], "--lr must be > 0"), (["--lr", "nan"], "--lr must be > 0, got nan"),
                          (["--wd", "-0.1"], "--wd must be >= 0"), (["-j", "-1"], "--workers must be >= 0"),
                          (["--momentum", "1"], "--momentum must be >= 0 and < 1"),
                          (["-p", "0"], "--print-freq"), (["--adv-eps", "0"], "--adv-eps must be > 0"),
                          (["--attack-steps", "0"], "--attack-steps"), (["--seed", "-3"], "--seed"),
                          (["--start-epoch", "5", "--epochs", "5"], "--start-epoch 5")):
        expect_user_error([demo_data, *flags], capsys, needle)


def test_one_epoch_quick_check_clamps_the_warmup(demo_data, tmp_path, capsys):
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "--arch", "simplenet", "--epochs", "1", "-b", "16", "-j", "0", "--lr", "0.05", "-p", "1",
         "--log-dir", str(tmp_path)]))
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if "--warmup" in ln] == [
        "=> --warmup 5 is longer than --epochs 1: warming up over all 1 epoch(s)"]
    assert [ln for ln in out if ln.startswith("=> precision:")] == ["=> precision: float32 (no AMP on the CPU)"]
    run = only_run(tmp_path)
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["args"]["warmup"] == 5, "the user's --warmup, as resume compares it"
    lrs = [lr for _, lr in scalars(run, "data/learning_rate")]
    assert len(lrs) == 4 and lrs == sorted(lrs) and lrs[-1] == pytest.approx(0.05), "one warmup epoch"
    expect_user_error([demo_data, "--warmup", "-1"], capsys, "--warmup")
    # the user's own --warmup is what the resume compares against (it was refused when the checkpoint
    # recorded the warmup shortened to the run), and a longer --epochs re-plans with it
    ckpt_path = os.path.join(run, "models", "checkpoint.pth.tar")
    driver.main(driver.get_args_parser().parse_args([demo_data, "--resume", ckpt_path, "--warmup", "5",
                                                     "--epochs", "2"]))
    out = capsys.readouterr().out
    assert "=> --warmup 5 is longer than --epochs 2: warming up over all 2 epoch(s)" in out
    assert torch.load(ckpt_path, weights_only=True)["epoch"] == 2


def test_incompatible_weights_are_named(demo_data, trained_run, tmp_path, capsys):
    ckpt = torch.load(os.path.join(trained_run, "models", "checkpoint.pth.tar"), weights_only=True)
    ckpt["state_dict"].pop("fc.weight")
    torch.save(ckpt, tmp_path / "cut.pth.tar")
    expect_user_error([demo_data, "-e", "--resume", str(tmp_path / "cut.pth.tar"), "-j", "0"], capsys,
                      "fc.weight")


def test_malformed_label_line_and_unreadable_image(demo_data, tmp_path, capsys):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    good = (data / "val.txt").read_text()
    (data / "val.txt").write_text(good + "val/oops.jpg\n")
    err = expect_user_error([str(data), "--arch", "simplenet", "-j", "0", "--log-dir", str(tmp_path)],
                            capsys, "val.txt:")
    assert f":{good.count(chr(10)) + 1}:" in err
    (data / "val.txt").write_text(good)
    first = good.split()[0]
    (data / "images" / first).write_bytes(b"garbage")
    expect_user_error([str(data), "--arch", "simplenet", "-j", "1", "-b", "16", "--epochs", "1", "--warmup", "0",
                       "--log-dir", str(tmp_path)], capsys, first.split("/")[-1])


def test_nan_loss_stops_with_a_clear_error(demo_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(driver.nn, "CrossEntropyLoss",
                        lambda **k: (lambda out, tgt: out.sum() * float("nan")))
    expect_user_error([demo_data, "--arch", "simplenet", "-j", "0", "-b", "16", "-p", "100", "--warmup", "0", "--epochs", "1",
                       "--log-dir", str(tmp_path)], capsys, "NaN")


def test_mixup_cutmix_and_label_smoothing_train(demo_data, tmp_path):
    driver.main(run_args(demo_data, tmp_path, "--epochs", "1", "--mixup", "0.2", "--cutmix", "1.0",
                         "--label-smoothing", "0.1"))
    ckpt = torch.load(os.path.join(only_run(tmp_path), "models", "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["args"]["mixup"] == 0.2


def test_seeded_sampler_shards_and_repeats():
    full = list(driver.SeededSampler(10, True, seed=1))
    assert sorted(i for i, _ in full) == list(range(10))
    assert full == list(driver.SeededSampler(10, True, seed=1)), "same (seed, epoch), same order"
    other = driver.SeededSampler(10, True, seed=1)
    other.set_epoch(1)
    assert list(other) != full
    shards = [list(driver.SeededSampler(10, True, 1, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert {i for s in shards for i, _ in s} == set(range(10))
    val = [list(driver.SeededSampler(10, False, 1, rank=r, world_size=3, pad=False)) for r in range(3)]
    assert sorted(i for s in val for i, _ in s) == list(range(10))


def torchrun(script, *args, env=None):
    """Run ``script`` (``[file]`` in code/, or ``["-m", module]``) under torchrun with 2 CPU (gloo)
    processes, in code/."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", *script,
         *args], cwd=driver.os.path.dirname(driver.__file__), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def rank_errors(res):
    """The error lines of a failed torchrun (the ranks' own messages, not only torchrun's summary)."""
    return "\n".join(ln for ln in res.stderr.splitlines() if "Error" in ln)[-3000:]


def test_torchrun_ddp_two_cpu_processes_with_adversarial_training(demo_data, tmp_path):
    """The same run as gpu_check.sh's torchrun step (there 2 GPUs with NCCL): 2 gloo processes,
    adversarial training (PGD inside forward, toggling requires_grad) on the tiny demo set."""
    res = torchrun(["main.py"], demo_data, "--arch", "simplenet", "--epochs", "1", "--warmup", "0", "-b", "16",
                   "-j", "0", "--adv-train", "0.5", "--adv-steps", "1", "--log-dir", str(tmp_path))
    assert res.returncode == 0, rank_errors(res)
    assert "weights and buffers identical on all 2 ranks (model)" in res.stdout
    run = only_run(tmp_path)
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["epoch"] == 1
    assert res.stdout.count("******Acc@1") == 1, "only rank 0 prints"


def test_ddp_with_ema_keeps_batchnorm_statistics_identical(demo_data, tmp_path):
    """BatchNorm running statistics: each rank updates its own from its batches; with --ema-decay
    validation runs the EMA copy, not the DDP forward that would broadcast rank 0's."""
    states = tmp_path / "states"
    states.mkdir()
    res = torchrun(["-m", "tools.tests.ddp_bn_run"], demo_data, "--arch", "cnn", "--ema-decay", "0.9", "--epochs", "2",
                   "--warmup", "0", "-b", "16", "-j", "0", "--lr", "0.05", "--log-dir", str(tmp_path / "logs"),
                   env={"DDP_STATE_DIR": str(states)})
    assert res.returncode == 0, rank_errors(res)
    assert "weights and buffers identical on all 2 ranks (model, EMA)" in res.stdout
    rank0, rank1 = (torch.load(states / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(rank0) == set(rank1) == {"model", "EMA"}
    for name in rank0:
        assert "features.1.running_mean" in rank0[name]
        for key, value in rank0[name].items():
            assert torch.equal(value, rank1[name][key]), (name, key)
    assert not torch.equal(rank0["model"]["features.1.running_mean"], rank0["EMA"]["features.1.running_mean"])
    ckpt = torch.load(os.path.join(only_run(tmp_path / "logs"), "models", "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["model_arch"] == "TinyBNNet" and ckpt["epoch"] == 2
    for key, value in rank0["EMA"].items():
        assert torch.equal(value, ckpt["state_dict"][key]), key


def test_ema_checkpoint_holds_the_evaluated_weights_and_resumes(demo_data, tmp_path, capsys):
    driver.main(run_args(demo_data, tmp_path, "--ema-decay", "0.9"))
    run = only_run(tmp_path)
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    raw, ema = ckpt["train_state_dict"], ckpt["state_dict"]
    assert not torch.equal(raw["fc.weight"], ema["fc.weight"]), "the average differs from the last step"
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-e", "--resume", os.path.join(run, "models", "checkpoint.pth.tar"), "-j", "0",
         "--log-dir", str(tmp_path / "eval")]))
    plain = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("******")][0]
    assert float(plain.split()[1]) == pytest.approx(
        scalars(run, "data/top1_accuracy")[-1][1], abs=1e-4), "-e evaluates the EMA weights"
    driver.main(run_args(demo_data, tmp_path, "--ema-decay", "0.9", "--epochs", "3",
                         "--resume", os.path.join(run, "models", "checkpoint.pth.tar")))
    assert torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)["epoch"] == 3


def test_resnet18_offline_message_and_local_weights(demo_data, tmp_path, capsys, monkeypatch):
    import urllib.error

    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(driver.torch.hub, "download_url_to_file", offline)
    expect_user_error([demo_data, "--use-resnet18", "-j", "0", "--log-dir", str(tmp_path)], capsys,
                      "--resnet18-weights")
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), weights)
    driver.main(run_args(demo_data, tmp_path / "logs", "--arch", "resnet18", "--resnet18-weights",
                         str(weights), "--epochs", "1", "--warmup", "0"))
    run = only_run(tmp_path / "logs")
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["model_config"]["family"] == "resnet18"
    lrs = sorted({g["initial_lr"] for g in ckpt["optimizer"]["param_groups"]})
    assert len(lrs) == 2 and lrs[0] == pytest.approx(0.1 * lrs[1]), "backbone learns 10x slower"
    head, backbone = scalars(run, "data/learning_rate"), scalars(run, "data/backbone_learning_rate")
    assert [s for s, _ in head] == [s for s, _ in backbone] and head[-1][1] > 0
    for (_, h), (_, b) in zip(head, backbone):
        assert b == pytest.approx(0.1 * h, abs=1e-8), "both learning rates logged, the head's as data/learning_rate"
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-e", "--resume", os.path.join(run, "models", "checkpoint.pth.tar"), "-j", "0",
         "--log-dir", str(tmp_path / "eval")]))
    assert "******Acc@1" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["simplevit", "vit"])
def test_vits_train_with_adamw_and_evaluate(demo_data, tmp_path, arch, capsys, monkeypatch):
    import student_code

    if arch == "vit":  # a two-block stand-in keeps the CPU test short; the class is the real one
        real = student_code.default_vit_model

        class TwoBlockViT(real):
            def __init__(self, num_classes=100):
                super().__init__(num_classes=num_classes, depth=2, window_block_indexes=(0,))

        monkeypatch.setattr(student_code, real.__name__, TwoBlockViT)
    driver.main(run_args(demo_data, tmp_path, "--arch", arch, "--epochs", "1", "--warmup", "0",
                         "--lr", "0.001", "--wd", "0.05"))
    run = only_run(tmp_path)
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    assert ckpt["model_config"]["family"] == "vit"
    decays = sorted(g["weight_decay"] for g in ckpt["optimizer"]["param_groups"])
    assert decays == [0.0, 0.05] and "exp_avg" in next(iter(ckpt["optimizer"]["state"].values()))
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-e", "--resume", os.path.join(run, "models", "checkpoint.pth.tar"), "-j", "0",
         "--log-dir", str(tmp_path / "eval")]))
    assert "******Acc@1" in capsys.readouterr().out


def test_adversarial_training_then_attack_with_images(demo_data, tmp_path, capsys):
    driver.main(run_args(demo_data, tmp_path / "train", "--epochs", "1", "--warmup", "0",
                         "--adv-train", "0.5", "--adv-steps", "1"))
    run = only_run(tmp_path / "train")
    ckpt_path = os.path.join(run, "models", "checkpoint.pth.tar")
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["model_config"]["adv_training"] == {"adv_ratio": 0.5, "num_steps": 1, "epsilon": 0.1}
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-a", "-v", "--resume", ckpt_path, "-j", "0", "--attack-steps", "2",
         "--attack-eps", "0.5", "--log-dir", str(tmp_path / "attack")]))
    out = capsys.readouterr().out
    assert "adversarially trained" in out and out.strip().splitlines()[-1].startswith("******Acc@1")
    assert "=> PGD attack: epsilon 0.5, 2 steps of size 0.05 (normalized units)" in out
    clean = [ln for ln in out.splitlines() if ln.startswith("=> clean:")]
    adv = [ln for ln in out.splitlines() if ln.startswith("=> adversarial:")]
    assert len(clean) == len(adv) == 1 and out.count("******Acc@1") == 1
    assert adv[0].split()[-4:] == out.strip().splitlines()[-1].replace("******", "").split()
    run = only_run(tmp_path / "attack")
    assert os.path.basename(run).startswith("simplenet-attack_")
    acc = EventAccumulator(run, size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"Image/Org_Image", "Image/Adv_Image", "Image/Diff_Image"}
    logged = {tag: acc.Scalars(tag)[0].value for tag in acc.Tags()["scalars"]}
    assert logged["attack/epsilon"] == pytest.approx(0.5) and logged["attack/num_steps"] == 2
    assert logged["attack/step_size"] == pytest.approx(0.05)
    assert logged["attack/clean_top1_accuracy"] == pytest.approx(float(clean[0].split()[3]), abs=1e-3)
    assert logged["attack/adversarial_top1_accuracy"] == pytest.approx(float(adv[0].split()[3]), abs=1e-3)
    assert logged["attack/clean_top5_accuracy"] == pytest.approx(float(clean[0].split()[5]), abs=1e-3)
    assert logged["attack/adversarial_top5_accuracy"] == pytest.approx(float(adv[0].split()[5]), abs=1e-3)
    assert logged["attack/adversarial_top1_accuracy"] <= logged["attack/clean_top1_accuracy"]


def test_attack_strength_flags_reach_the_attack():
    args = driver.get_args_parser().parse_args(["x", "-a", "--attack-eps", "0.3", "--attack-steps", "4"])
    attack = driver.build_attack(args, torch.nn.CrossEntropyLoss())
    assert (attack.epsilon, attack.num_steps) == (0.3, 4)
    assert attack.step_size == pytest.approx(0.03), "the step scales with epsilon (starter: 0.01 per 0.1)"
    args = driver.get_args_parser().parse_args(["x", "-a", "--attack-steps", "20", "--attack-step-size", "0.002"])
    attack = driver.build_attack(args, torch.nn.CrossEntropyLoss())
    assert (attack.epsilon, attack.num_steps, attack.step_size) == (0.1, 20, 0.002)


def test_adversarial_training_is_for_cnns(demo_data, tmp_path, capsys):
    expect_user_error([demo_data, "--use-vit", "--adv-train", "0.5", "--log-dir", str(tmp_path)], capsys,
                      "--adv-train")
    expect_user_error([demo_data, "--arch", "simplenet", "--adv-train", "1.5", "-j", "0",
                       "--log-dir", str(tmp_path)], capsys, "--adv-train must be >= 0 and <= 1, got 1.5")


def copy_run(run, tmp_path):
    """A copy of a run folder (resuming it writes into the copy, not the module's fixture)."""
    import shutil

    copy = tmp_path / os.path.basename(run)
    shutil.copytree(run, copy)
    return str(copy), os.path.join(str(copy), "models", "checkpoint.pth.tar")


def test_resume_with_more_epochs_replans_the_cosine(trained_run, demo_data, tmp_path, capsys):
    """The 2-epoch run (4 iterations an epoch, 1 warmup epoch, lr 0.05) resumed to 4 epochs: the
    cosine is re-planned over 4 epochs, not left at its end (eta_min), and the line says so."""
    run, ckpt = copy_run(trained_run, tmp_path)
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args([demo_data, "--resume", ckpt, "--epochs", "4", "-p", "1"]))
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if ln.startswith("=> resuming with flags")] == [
        "=> resuming with flags that differ from the checkpoint's: --epochs 4 (the run's: 2); "
        "--print-freq 1 (the run's: 2)"]

    def planned(step, warmup=4, total=16, peak=0.05, eta_min=1e-8):
        return eta_min + 0.5 * (peak - eta_min) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    line = [ln for ln in out if ln.startswith("=> resumed")]
    assert len(line) == 1 and line[0].endswith(
        f"epochs 3 to 4 start at lr {planned(8):.6g}, the warmup + cosine schedule re-planned from 2 to 4 epochs")
    lrs = dict(scalars(run, "data/learning_rate"))
    for step in range(9, 17):
        assert lrs[step] == pytest.approx(planned(step), rel=1e-6), step
    assert lrs[9] > 0.03 and torch.load(ckpt, weights_only=True)["epoch"] == 4
    # gpu_check.sh's resume check, on this run's output, and on a run resumed at eta_min (the old bug)
    from tools.tests.check_resume_log import check

    text = "\n".join(out)
    assert check(text, torch.load(ckpt, weights_only=True), 2, 4) == (
        f"continued after epoch 2 at epoch 3 (of 4) at lr {planned(8):.6g} as re-planned; checkpoint at epoch 4", True)
    stuck = re.sub(r"LR [0-9.]+", "LR 0.00000", text)
    assert check(stuck, torch.load(ckpt, weights_only=True), 2, 4)[1] is False


def test_resume_alone_of_a_finished_run_changes_nothing(trained_run, demo_data, tmp_path, capsys):
    run, ckpt = copy_run(trained_run, tmp_path)
    before = {f: open(os.path.join(run, "models", f), "rb").read() for f in os.listdir(os.path.join(run, "models"))}
    files = sorted(os.listdir(run))
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args([demo_data, "--resume", ckpt, "--log-dir", str(tmp_path)]))
    assert f"=> {ckpt} finished its 2 epochs: nothing to train" in capsys.readouterr().out
    after = {f: open(os.path.join(run, "models", f), "rb").read() for f in os.listdir(os.path.join(run, "models"))}
    assert after == before and sorted(os.listdir(run)) == files
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(run)], "no new run folder"


def test_ctrl_c_names_the_last_checkpoint_and_the_resume_command(demo_data, tmp_path, capsys, monkeypatch):
    real = driver.train_one_epoch
    calls = []

    def second_epoch_interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(driver, "train_one_epoch", second_epoch_interrupted)
    argv = [demo_data, "--arch", "simplenet", "--epochs", "2", "--warmup", "1", "-b", "16", "-j", "0",
            "--log-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        driver.cli(argv)
    assert info.value.code == 130
    err = capsys.readouterr().err.strip()
    ckpt = os.path.join(only_run(tmp_path), "models", "checkpoint.pth.tar")
    assert err == (f"=> interrupted; the last checkpoint saved is {ckpt}; resume with: "
                   f"python main.py {demo_data} --resume {ckpt}")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_help_shows_defaults_and_workers_follow_the_usable_cores(monkeypatch):
    text = driver.get_args_parser().format_help()
    assert "total epochs to run (default: 90)" in " ".join(text.split())
    monkeypatch.setattr(driver.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert driver.get_args_parser().parse_args(["x"]).workers == 2
    monkeypatch.setattr(driver.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert driver.get_args_parser().parse_args(["x"]).workers == 4


def test_model_names_say_which_student_code_model():
    config = {"model_arch": driver.default_cnn_model.__name__, "custom_conv": True}
    assert driver.run_name(config) == "cnn-customconv"
    assert driver.model_line(config) == (f"cnn-customconv (student_code.default_cnn_model, "
                                         f"{driver.default_cnn_model.__name__})")
    old = {"model_arch": "SceneResNet", "family": "cnn", "custom_conv": False, "num_classes": 4, "adv_training": None}
    assert driver.run_name(old) == "cnn" and isinstance(driver.build_model(old), driver.default_cnn_model)
    assert driver.run_name({"model_arch": "SimpleNet", "custom_conv": False}) == "simplenet"


def test_peak_memory_is_per_epoch():
    import subprocess
    import sys

    # A fresh process: in this one, earlier tests leave freed heap pages resident, which the
    # 64 MiB could reuse without raising the resident size.
    code = ("import torch, main as driver; cpu = torch.device('cpu'); driver.reset_peak_memory(cpu); "
            "big = torch.ones(64 * 2 ** 20, dtype=torch.uint8); with_big = driver.peak_memory_mb(cpu); "
            "del big; driver.reset_peak_memory(cpu); print(with_big, driver.peak_memory_mb(cpu))")
    res = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(driver.__file__), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with_big, after_reset = map(float, res.stdout.split()[-2:])
    assert after_reset < with_big - 32


def test_validation_loss_has_no_label_smoothing(demo_data, tmp_path):
    driver.main(run_args(demo_data, tmp_path, "--epochs", "1", "--warmup", "0", "--label-smoothing", "0.5"))
    run = only_run(tmp_path)
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    model = driver.build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    args = run_args(demo_data, tmp_path)
    args.rank, args.world_size = 0, 1
    _, val_loader = driver.build_loaders(args, torch.device("cpu"), need_train=False)
    plain = driver.validate(val_loader, model, torch.nn.CrossEntropyLoss(), torch.device("cpu"), args, False)
    assert scalars(run, "data/val_loss")[0][1] == pytest.approx(plain["loss"], rel=1e-4)


def test_an_old_torch_gets_one_line_and_exit_2():
    import subprocess
    import sys

    code = ("import runpy, sys, torch; torch.__version__ = '2.0.1'; sys.argv = ['main.py', '--help']; "
            "runpy.run_path('main.py', run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(driver.__file__), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "error: main.py needs torch >= 2.4 (this is torch 2.0.1); see requirements.txt"]


@pytest.mark.parametrize("arch, flags, clipped_at", [("simplenet", (), None), ("simplenet", ("--clip-grad", "0.5"), 0.5),
                                                     ("simplevit", (), 1.0)])
def test_gradient_clipping_is_the_courses_by_default_and_reaches_cnns_when_asked(demo_data, tmp_path, monkeypatch,
                                                                                  arch, flags, clipped_at):
    real, norms = torch.nn.utils.clip_grad_norm_, []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, **kw: (
        norms.append(max_norm), real(params, max_norm, **kw))[1])
    driver.main(run_args(demo_data, tmp_path, "--arch", arch, "--epochs", "1", "--warmup", "0", "-p", "100", *flags))
    assert set(norms) == ({clipped_at} if clipped_at else set()) and (len(norms) > 0) == bool(clipped_at)
