"""The training driver: a demo run end to end, exact resume, safe checkpoints, bad input."""
import glob
import os

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


def test_evaluate_reproduces_the_best_accuracy(trained_run, demo_data, capsys):
    best = torch.load(os.path.join(trained_run, "models", "model_best.pth.tar"), weights_only=True)
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-e", "--resume", os.path.join(trained_run, "models", "model_best.pth.tar"), "-j", "0"]))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("******Acc@1")]
    assert len(lines) == 2, "plain and flip-averaged accuracy"
    assert float(lines[0].split()[1]) == pytest.approx(best["best_acc1"], abs=1e-6)


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
    driver.main(run_args(demo_data, tmp_path / "cut", "--resume",
                         os.path.join(cut, "models", "checkpoint.pth.tar")))
    assert only_run(tmp_path / "cut") == cut, "resume continues in the checkpoint's run folder"

    a = torch.load(os.path.join(full, "models", "checkpoint.pth.tar"), weights_only=True)
    b = torch.load(os.path.join(cut, "models", "checkpoint.pth.tar"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
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

    def crash(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a checkpoi")
        raise OSError("disk full")

    monkeypatch.setattr(driver.torch, "save", crash)
    with pytest.raises(OSError):
        driver.save_checkpoint({"epoch": 2}, True, str(tmp_path))
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert torch.load(os.path.join(tmp_path, "models", name), weights_only=True) == {"epoch": 1}


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
    expect_user_error([demo_data, "--use-vit", "--use-resnet18"], capsys, "conflicting")
    expect_user_error([demo_data, "--epochs", "0"], capsys, "--epochs")


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
    assert ckpt["epoch"] == 1 and ckpt["args"]["warmup"] == 1
    lrs = [lr for _, lr in scalars(run, "data/learning_rate")]
    assert len(lrs) == 4 and lrs == sorted(lrs) and lrs[-1] == pytest.approx(0.05), "one warmup epoch"
    expect_user_error([demo_data, "--warmup", "-1"], capsys, "--warmup")


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
    """Run ``script`` (relative to code/) under torchrun with 2 CPU (gloo) processes."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", script,
         *args], cwd=driver.os.path.dirname(driver.__file__), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def rank_errors(res):
    """The error lines of a failed torchrun (the ranks' own messages, not only torchrun's summary)."""
    return "\n".join(ln for ln in res.stderr.splitlines() if "Error" in ln)[-3000:]


def test_torchrun_ddp_two_cpu_processes(demo_data, tmp_path):
    res = torchrun("main.py", demo_data, "--arch", "simplenet", "--epochs", "1", "--warmup", "0", "-b", "16",
                   "-j", "0", "--log-dir", str(tmp_path))
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
    res = torchrun("tests/ddp_bn_run.py", demo_data, "--arch", "cnn", "--ema-decay", "0.9", "--epochs", "2",
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
        [demo_data, "-e", "--resume", os.path.join(run, "models", "checkpoint.pth.tar"), "-j", "0"]))
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
    capsys.readouterr()
    driver.main(driver.get_args_parser().parse_args(
        [demo_data, "-e", "--resume", os.path.join(run, "models", "checkpoint.pth.tar"), "-j", "0"]))
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
        [demo_data, "-e", "--resume", os.path.join(run, "models", "checkpoint.pth.tar"), "-j", "0"]))
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
    acc = EventAccumulator(only_run(tmp_path / "attack"), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"Image/Org_Image", "Image/Adv_Image", "Image/Diff_Image"}


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
                       "--log-dir", str(tmp_path)], capsys, "adv_ratio")
