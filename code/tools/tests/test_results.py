"""run_experiments.py and make_results.py: the runner's bookkeeping, the event-file reader on a
real run of main.py, and the tables and figures written from logs."""
import contextlib
import csv
import inspect
import io
import dataclasses
import json
import os
import re
import shlex
import subprocess

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

import main as driver
import student_code

from tools import make_results
from tools import run_experiments as runner
from tools.tests.fake_logs import DATA, fake_demo, fake_run, status, write_images, write_status
from tools.run_experiments import Experiment

TINY = ("--epochs", "1", "--warmup", "0", "-b", "16", "-j", "0", "--lr", "0.05", "-p", "2")
DEMO_LABEL = (True, "demo set (test)")


def train(data, log_dir, name, *flags):
    """main.py in-process the way the runner calls it; returns (run folder, printed text)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        driver.main(driver.get_args_parser().parse_args(
            [data, "--arch", "simplenet", *TINY, "--log-dir", str(log_dir), "--exp-name", name, *flags]))
    return runner.newest_run(str(log_dir), name), out.getvalue()


@pytest.fixture(scope="module")
def real_run(demo_data, tmp_path_factory):
    """One epoch of SimpleNet on the demo fixture: (run folder, main.py's printed output)."""
    return train(demo_data, tmp_path_factory.mktemp("run"), "simplenet")


def test_reader_matches_what_main_printed(real_run):
    run, printed = real_run
    scalars = make_results.read_scalars(run)
    acc = re.findall(r"\*{6}Acc@1 ([0-9.]+) Acc@5 ([0-9.]+)", printed)
    assert len(acc) == 1
    assert scalars["data/top1_accuracy"] == [(1, pytest.approx(float(acc[0][0]), abs=1e-3))]
    assert scalars["data/top5_accuracy"] == [(1, pytest.approx(float(acc[0][1]), abs=1e-3))]
    lrs = [float(v) for v in re.findall(r"LR ([0-9.]+)", printed)]
    assert [s for s, _ in scalars["data/learning_rate"]] == [2, 4], "64 images / batch 16, printed every 2"
    assert [v for _, v in scalars["data/learning_rate"]] == pytest.approx(lrs, abs=1e-5)
    for tag in ("data/training_loss", "data/train_loss", "data/val_loss", "perf/epoch_seconds",
                "perf/images_per_second", "perf/peak_memory_mb", "data/train_top1_accuracy"):
        assert tag in scalars, tag
    summary = make_results.summarize(scalars)
    ckpt = torch.load(os.path.join(run, "models", "checkpoint.pth.tar"), weights_only=True)
    assert summary["best_top1"] == pytest.approx(ckpt["best_acc1"], abs=1e-4)
    assert summary["epochs"] == ckpt["epoch"] == 1


def test_reader_keeps_the_last_write_of_a_step(tmp_path):
    first = SummaryWriter(str(tmp_path))
    for step in (1, 2, 3):
        first.add_scalar("data/top1_accuracy", 10.0 * step, step)
    first.close()
    resumed = SummaryWriter(str(tmp_path))
    for step in (3, 4):
        resumed.add_scalar("data/top1_accuracy", 100.0 + step, step)
    resumed.close()
    assert len(os.listdir(tmp_path)) == 2, "two event files, as after a resume"
    assert make_results.read_scalars(str(tmp_path))["data/top1_accuracy"] == [
        (1, 10.0), (2, 20.0), (3, 103.0), (4, 104.0)]


def test_summarize_takes_the_first_best_epoch_and_medians():
    scalars = {
        "data/top1_accuracy": [(1, 10.0), (2, 30.0), (3, 30.0), (4, 20.0)],
        "data/top5_accuracy": [(1, 50.0), (2, 70.0), (3, 80.0), (4, 75.0)],
        "data/train_loss": [(1, 2.0), (4, 0.5)],
        "perf/epoch_seconds": [(1, 10.0), (2, 12.0), (3, 11.0), (4, 30.0)],
        "perf/images_per_second": [(1, 100.0), (2, 300.0), (3, 200.0), (4, 250.0)],
        "perf/peak_memory_mb": [(1, 5.0), (2, 9.0), (3, 7.0), (4, 8.0)],
    }
    s = make_results.summarize(scalars)
    assert (s["best_epoch"], s["best_top1"], s["top5_at_best"]) == (2, 30.0, 70.0)
    assert (s["epochs"], s["train_seconds"], s["seconds_per_epoch"]) == (4, 63.0, 11.5)
    assert (s["images_per_second"], s["peak_memory_mb"], s["final_train_loss"]) == (225.0, 9.0, 0.5)
    assert s["final_val_loss"] is None
    with pytest.raises(ValueError, match="top1_accuracy"):
        make_results.summarize({"data/train_loss": [(1, 1.0)]})


def test_make_results_writes_tables_figures_and_pgd(tmp_path):
    logs = tmp_path / "logs" / "demo"
    fake_run(str(logs / "conv-native" / "run"), [10.0, 10.0, 12.0], [20.0, 40.0, 35.0], 500.0)
    fake_run(str(logs / "conv-custom" / "run"), [30.0, 30.0, 36.0], [20.0, 40.0, 45.0], 1500.0)
    write_status(logs, status("conv-native", run_dir="run"))
    write_status(logs, status("conv-custom", run_dir="run"))
    write_status(logs, status("cnn", status="skipped", reason="main.py does not accept these flags yet (x)"))
    write_images(str(logs / "pgd-simplenet" / "simplenet-attack_1"))
    attacks = [("pgd-simplenet", [], 0.1, 10, 12.5, "simplenet-attack_1"),
               ("pgd-simplenet-eps-low", ["--attack-eps", "0.02"], 0.02, 10, 30.0, None),
               ("pgd-simplenet-steps1", ["--attack-steps", "1"], 0.1, 1, 25.0, None)]
    for name, args, eps, steps, acc1, run_dir in attacks:
        write_status(logs, status(name, kind="attack", target="conv-native", args=args, epsilon=eps, num_steps=steps,
                                  acc1=acc1, acc5=acc1 + 20, run_dir=run_dir))
    out = tmp_path / "results"
    summary = make_results.make_results(str(tmp_path / "logs"), str(out))["demo"]

    def rows(name):
        with open(out / "demo" / name) as f:
            return list(csv.DictReader(f))

    table = {r["experiment"]: r for r in rows("summary.csv")}
    assert set(table) == {"conv-native", "conv-custom"}
    assert float(table["conv-native"]["best val top-1 (%)"]) == 40.0
    assert int(table["conv-native"]["best epoch"]) == 2 and float(table["conv-native"]["train+val time (s)"]) == 32.0
    assert float(table["conv-custom"]["val top-5 at best (%)"]) == 55.0
    assert (table["conv-custom"]["data"], table["conv-custom"]["hardware"]) == (DATA, "test machine")
    ratio = rows("compare_conv.csv")[-1]
    assert ratio["experiment"] == "custom / native"
    assert float(ratio["s/epoch"]) == pytest.approx(3.0) and float(ratio["peak memory (MiB)"]) == pytest.approx(3.0)
    pgd = {r["attack"]: r for r in rows("pgd.csv")}
    assert float(pgd["pgd-simplenet"]["clean top-1 (%)"]) == 40.0, "clean = the target's best epoch"
    assert float(pgd["pgd-simplenet"]["top-1 drop (points)"]) == pytest.approx(27.5)
    assert [float(pgd[n]["step size"]) for n in ("pgd-simplenet", "pgd-simplenet-eps-low")] == [0.01, 0.002], \
        "main.py's step: the default, or scaled with --attack-eps"
    assert [r["attack"] for r in rows("pgd_epsilon.csv")] == ["pgd-simplenet-eps-low", "pgd-simplenet"]
    assert [r["attack"] for r in rows("pgd_steps.csv")] == ["pgd-simplenet-steps1", "pgd-simplenet"]
    assert [r["attack"] for r in rows("pgd_models.csv")] == ["pgd-simplenet"]
    assert (float(pgd["pgd-simplenet"]["mean change (grey levels)"]), float(pgd["pgd-simplenet"]["max change (grey "
            "levels)"])) == (51.0, 51.0), "the logged images: 0.2 -> 0.4 of 255 grey levels"
    assert pgd["pgd-simplenet-eps-low"]["mean change (grey levels)"] == "", "no images logged, no change measured"
    for name in ("curves_conv-native.png", "compare_conv.png", "pgd_samples_pgd-simplenet.png", "pgd_sweeps.png",
                 "pgd_visible_conv-native.png"):
        assert plt.imread(str(out / "demo" / name)).shape[2] in (3, 4), name
    assert not (out / "demo" / "curves_cnn.png").exists()
    assert summary["not_run"] == ["- `cnn` skipped: main.py does not accept these flags yet (x)"]
    with open(out / "demo" / "summary.md") as f:
        assert f.readline().startswith(f"Data: {DATA}. Hardware: test machine.")
    with open(out / "demo" / "summary.json") as f:
        assert json.load(f)["files"] == summary["files"]
    write_status(logs, status("conv-custom", status="failed", reason="rerun broke"))
    make_results.make_results(str(tmp_path / "logs"), str(out))
    for stale in ("curves_conv-custom.png", "compare_conv.png", "compare_conv.md", "conv_comparison.md"):
        assert not (out / "demo" / stale).exists(), stale
    assert (out / "demo" / "curves_conv-native.png").exists()


def test_make_results_compares_adversarial_training_and_flip_averaging(tmp_path):
    fake_demo(str(tmp_path), better=1)
    summary = make_results.make_results(str(tmp_path / "logs"), str(tmp_path / "results"))["demo"]
    out = tmp_path / "results" / "demo"
    with open(out / "adv_robustness.csv") as f:
        adv = list(csv.DictReader(f))
    assert [(r["epsilon"], r["steps"]) for r in adv] == [("0.5", "10")], "the settings run on both"
    strong = adv[0]
    assert float(strong["standard: PGD top-1 (%)"]) == 40.0 and float(strong["adversarial: PGD top-1 (%)"]) == 50.0
    assert float(strong["adversarial - standard under PGD (points)"]) == pytest.approx(10.0)
    assert float(strong["standard: clean top-1 (%)"]) == 70.0 and float(strong["adversarial: clean top-1 (%)"]) == 68.0
    with open(out / "eval.csv") as f:
        evals = {r["model"]: r for r in csv.DictReader(f)}
    assert set(evals) == {"simplenet", "cnn", "vit"}
    assert float(evals["cnn"]["top-1 (%)"]) == 75.0 and float(evals["cnn"]["top-1, flip-averaged (%)"]) == 76.0
    assert summary["eval"][0]["val_images"] == 200
    assert "compare_cnn.png" in summary["captions"] and "ResNet18" not in summary["captions"]["compare_cnn.png"], \
        "no ResNet18 run, no ResNet18 in the caption"
    assert summary["captions"]["compare_vit.png"].startswith("SimpleViT, improved ViT and improved CNN")
    experiments = (out / "experiments.md").read_text()
    for exp in runner.EXPERIMENTS:
        listed = f"| {exp.name} ({exp.title}) | {exp.part} | `{shlex.join(exp.demo or ())}" in experiments
        assert listed == (exp.demo is not None), exp.name
    assert "| resnet18 (ResNet18, ImageNet fine-tuned) | I.2 | `" in experiments
    assert "| skipped: no ImageNet weights (offline) |" in experiments and "| not run |" in experiments


def test_make_results_refuses_miniplaces_runs_among_demo_logs(tmp_path):
    logs = tmp_path / "logs" / "demo"
    write_status(logs, status("cnn", status="skipped", reason="x", demo_data=False))
    with pytest.raises(ValueError, match=r"\['cnn'\] ran on other data"):
        make_results.make_results(str(tmp_path / "logs"), str(tmp_path / "results"))


def test_crop_grid_rows_keeps_whole_tiles():
    grid = np.arange((2 + 5 * 130) * (2 + 10 * 130)).reshape(2 + 5 * 130, 2 + 10 * 130)
    assert make_results.crop_grid_rows(grid, 3).shape == (2 + 3 * 130, 2 + 10 * 130)
    assert make_results.crop_grid_rows(grid, 5) is grid, "no more rows than asked"
    odd = np.zeros((300, 301))
    assert make_results.crop_grid_rows(odd, 1) is odd, "not a grid of 128-px tiles: unchanged"


FAKE_MAIN = """import os, shutil, sys
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.txt"), "a") as f:
    f.write(repr(args) + "\\n")
if "--adv-train" in args:
    print("usage: main.py [-h]\\nmain.py: error: unrecognized arguments: --adv-train", file=sys.stderr)
    sys.exit(2)
if "--warmup" in args:
    print("error: --warmup 5 must lie in [0, --epochs 1]", file=sys.stderr)
    sys.exit(2)
if "-a" in args:
    os.makedirs(os.path.join(args[args.index("--log-dir") + 1], "simplenet-attack_20260101-000000"))
    print("[DEMO DATA] these accuracies are on the generated demo set, not on MiniPlaces")
    print("******Acc@1 12.500 Acc@5 50.000")
elif "-e" in args:
    print("=> without flip averaging (the number training logged):")
    print("******Acc@1 40.000 Acc@5 80.000")
    print("=> with horizontal-flip averaging:")
    print("******Acc@1 " + ("42.500 Acc@5 81.000" if "--noop" not in args else "x"))
elif "--resume" in args:
    shutil.copy(os.path.join(here, "done.pth.tar"), args[args.index("--resume") + 1])
elif "--noop" not in args:
    run = os.path.join(args[args.index("--log-dir") + 1], args[args.index("--exp-name") + 1] + "_20260101-000000")
    os.makedirs(os.path.join(run, "models"))
    shutil.copy(os.path.join(here, "done.pth.tar"), os.path.join(run, "models", "checkpoint.pth.tar"))
"""


@pytest.fixture
def fake_main(tmp_path):
    """A stand-in for main.py (no torch import) that logs its calls; 'done.pth.tar' is the
    checkpoint a finished 2-epoch run leaves."""
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "main.py").write_text(FAKE_MAIN)
    torch.save({"epoch": 2}, str(folder / "done.pth.tar"))
    return folder


def calls(fake_main):
    return [eval(line) for line in (fake_main / "calls.txt").read_text().splitlines()]


def test_runner_isolates_failures_and_records_attacks(demo_data, tmp_path, fake_main):
    logs = tmp_path / "logs" / "demo"
    trained = logs / "base" / "base_20260101-000000" / "models"
    trained.mkdir(parents=True)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        torch.save({"epoch": 1}, str(trained / name))
    table = (
        Experiment("adv", "III", "new flag", ("--adv-train", "--epochs", "1"), ("--epochs", "1")),
        Experiment("bad", "I", "user error", ("--warmup", "5", "--epochs", "1"), ("--epochs", "1")),
        Experiment("pgd-adv", "III", "attack a skipped run", ("-a",), ("-a",), target="adv"),
        Experiment("r18", "I", "needs weights", ("--epochs", "1"), ("--epochs", "1"), needs_imagenet_weights=True),
        Experiment("base", "I", "finished elsewhere", ("--epochs", "1"), ("--epochs", "1")),
        Experiment("pgd-base", "III", "attack", ("-a", "-v", "--attack-eps", "0.03"), ("-a",), target="base"),
        Experiment("eval-base", "I", "evaluate", ("-e",), ("-e",), target="base"),
        Experiment("eval-cut", "I", "one accuracy line", ("-e", "--noop"), ("-e",), target="base"),
    )
    st = runner.run_all(table, "demo", demo_data, str(logs), main_py=str(fake_main / "main.py"))
    assert st["adv"]["status"] == "skipped" and "unrecognized arguments: --adv-train" in st["adv"]["reason"]
    assert st["bad"]["status"] == "failed"
    assert st["bad"]["reason"] == "main.py exited with status 2: error: --warmup 5 must lie in [0, --epochs 1]"
    assert st["pgd-adv"]["status"] == "skipped"
    assert st["pgd-adv"]["reason"].startswith("needs adv trained first (skipped")
    assert st["r18"]["status"] == "skipped" and "no ImageNet weights (offline)" in st["r18"]["reason"]
    assert st["base"]["status"] == "finished" and st["base"]["hardware"].startswith("not recorded")
    attack = st["pgd-base"]
    assert attack["status"] == "finished" and (attack["acc1"], attack["acc5"]) == (12.5, 50.0)
    assert attack["checkpoint"] == os.path.join("base", "base_20260101-000000", "models", "model_best.pth.tar")
    assert attack["run_dir"] == "simplenet-attack_20260101-000000"
    default_steps = inspect.signature(student_code.default_attack).parameters["num_steps"].default
    assert (attack["epsilon"], attack["num_steps"]) == (0.03, default_steps)
    assert st["eval-base"]["status"] == "finished" and st["eval-base"]["kind"] == "eval"
    assert (st["eval-base"]["plain_acc1"], st["eval-base"]["plain_acc5"]) == (40.0, 80.0), "the first line: no flip"
    assert (st["eval-base"]["acc1"], st["eval-base"]["acc5"]) == (42.5, 81.0), "the last line: flip-averaged"
    assert "epsilon" not in st["eval-base"]
    assert st["eval-cut"]["status"] == "failed" and "printed 1 '******Acc@1 X Acc@5 Y' line(s), not 2" in \
        st["eval-cut"]["reason"]
    made = calls(fake_main)[:3]
    assert len(calls(fake_main)) == 5, "adv, bad, the attack and the evaluations call main.py; the others do not"
    assert made[0][made[0].index("--exp-name") + 1] == "adv"
    assert made[2][made[2].index("--resume") + 1] == str(trained / "model_best.pth.tar")
    assert made[2][made[2].index("--log-dir") + 1] == str(logs / "pgd-base") and "--exp-name" not in made[2]
    for name in ("adv", "bad", "r18", "base", "pgd-base"):
        with open(logs / name / "status.json") as f:
            assert json.load(f)["status"] == st[name]["status"], name
    again = runner.run_all(table, "demo", demo_data, str(logs), only=("pgd-base",), main_py=str(fake_main / "main.py"))
    assert again["pgd-base"]["note"] == "finished earlier" and len(calls(fake_main)) == 5


def test_runner_trains_resumes_and_leaves_finished_runs(demo_data, tmp_path, fake_main):
    logs = str(tmp_path / "logs" / "demo")
    main_py = str(fake_main / "main.py")
    flags = ("--arch", "simplenet", "--epochs", "2")
    exp = Experiment("simplenet", "I.2", "SimpleNet", flags, flags)
    cut = os.path.join(logs, "simplenet", "simplenet_20250101-000000")
    os.makedirs(os.path.join(cut, "models"))
    torch.save({"epoch": 1}, os.path.join(cut, "models", "checkpoint.pth.tar"))
    st = runner.run_one(exp, "demo", demo_data, DEMO_LABEL, logs, (exp,), main_py=main_py)
    assert st["status"] == "finished" and st["run_dir"] == os.path.basename(cut) and runner.checkpoint_epoch(cut) == 2
    assert st["code"] == runner.code_version() and re.fullmatch(r"(uncommitted changes on )?commit [0-9a-f]{7,}|"
                                                                r"not a git checkout", st["code"])
    assert calls(fake_main)[-1][-2:] == ["--resume", os.path.join(cut, "models", "checkpoint.pth.tar")]
    recorded = shlex.split(st["command"])
    assert not [a for a in recorded if os.path.isabs(a)], "the record holds no absolute path"
    assert recorded[2] == os.path.relpath(demo_data, runner.CODE_DIR) and recorded[:2] == ["python", "main.py"]
    again = runner.run_one(exp, "demo", demo_data, DEMO_LABEL, logs, (exp,), main_py=main_py)
    assert again["note"] == "finished earlier" and len(calls(fake_main)) == 1
    changed = Experiment("simplenet", "I.2", "SimpleNet", (*flags, "--wd", "0"), flags)
    refused = runner.run_one(changed, "demo", demo_data, DEMO_LABEL, logs, (changed,), main_py=main_py)
    assert refused["status"] == "failed" and "other flags" in refused["reason"] and len(calls(fake_main)) == 1
    fresh = Experiment("cnn", "I.2", "new run", flags, flags)
    st = runner.run_one(fresh, "demo", demo_data, DEMO_LABEL, logs, (fresh,), main_py=main_py)
    assert st["status"] == "finished" and st["run_dir"] == "cnn_20260101-000000"
    assert "--resume" not in calls(fake_main)[-1]
    stuck = Experiment("vit", "II", "exits 0 without training", (*flags, "--noop"), flags)
    st = runner.run_one(stuck, "demo", demo_data, DEMO_LABEL, logs, (stuck,), main_py=main_py)
    assert st["status"] == "failed" and st["reason"].endswith("the newest checkpoint has epoch 0, not 2")


def test_a_row_can_be_another_rows_demo_run(demo_data, tmp_path, fake_main):
    logs = str(tmp_path / "logs" / "demo")
    flags = ("--arch", "simplenet", "--epochs", "2")
    table = (Experiment("base", "I.2", "SimpleNet", flags, flags),
             Experiment("same", "I.1", "SimpleNet, nn.Conv2d", flags, ("--epochs", "9"), demo_run_of="base"),
             Experiment("only-full", "I.2", "not at demo", None, flags))
    runner.check_table(table)
    with pytest.raises(runner.RunnerError, match="must be a training row above it with the same demo flags"):
        runner.check_table((table[0], dataclasses.replace(table[1], demo=("--epochs", "3"))))
    early = runner.run_one(table[1], "demo", demo_data, DEMO_LABEL, logs, table, main_py=str(fake_main / "main.py"))
    assert early["status"] == "skipped" and "base's" in early["reason"]
    st = runner.run_all(table, "demo", demo_data, logs, main_py=str(fake_main / "main.py"))
    assert list(st) == ["base", "same"], "rows without demo flags are not in the demo plan"
    assert len(calls(fake_main)) == 1, "the shared run is trained once"
    assert st["same"]["status"] == "finished" and st["same"]["run_of"] == "base"
    assert os.path.isdir(os.path.join(logs, "same", st["same"]["run_dir"], "models")), "its run folder, from its own"


def test_newest_run_orders_by_stamp_and_needs_a_checkpoint(tmp_path):
    for name in ("a_20260101-000000", "a_20260101-000000-2", "a_20260101-000000-10", "a_20270101-000000",
                 "ab_20280101-000000"):
        os.makedirs(tmp_path / name / "models")
        if name != "a_20270101-000000":
            (tmp_path / name / "models" / "checkpoint.pth.tar").write_bytes(b"x")
    assert runner.newest_run(str(tmp_path), "a") == str(tmp_path / "a_20260101-000000-10")
    assert runner.newest_run(str(tmp_path), "b") is None


def test_runner_checks_its_table_and_data(demo_data, tmp_path):
    ok = Experiment("a", "I", "a", ("--epochs", "1"), ("--epochs", "1"))
    with pytest.raises(runner.RunnerError, match="appears twice"):
        runner.check_table((ok, ok))
    with pytest.raises(runner.RunnerError, match="must set --epochs"):
        runner.check_table((Experiment("b", "I", "b", ("--lr", "1"), ("--epochs", "1")),))
    with pytest.raises(runner.RunnerError, match="not a training row above it"):
        runner.check_table((Experiment("p", "III", "p", ("-a",), ("-a",), target="a"), ok))
    with pytest.raises(runner.RunnerError, match="need -a .attack. or -e .evaluation. at each scale"):
        runner.check_table((ok, Experiment("p", "III", "p", ("-e",), ("-a",), target="a")))
    evals = [e for e in runner.EXPERIMENTS if e.target and "-e" in e.full]
    assert sorted(e.target for e in evals) == sorted(e.name for e in runner.EXPERIMENTS if not e.target), \
        "every trained row gets a -e evaluation"
    trained = {e.name for e in runner.at_scale(runner.EXPERIMENTS, "demo") if not e.target and not e.demo_run_of}
    assert {e.target for e in runner.at_scale(evals, "demo")} == trained, "at demo scale, each run once"
    with pytest.raises(runner.RunnerError, match="may hold only"):
        runner.check_table((Experiment("a_b", "I", "a", ("--epochs", "1"), ("--epochs", "1")),))
    runner.check_table(runner.EXPERIMENTS)
    with pytest.raises(runner.RunnerError, match="--full runs on MiniPlaces"):
        runner.prepare_data(demo_data, "full")
    with pytest.raises(runner.RunnerError, match="--full needs MiniPlaces"):
        runner.prepare_data(str(tmp_path / "empty"), "full")
    assert runner.prepare_data(demo_data, "demo") == (True, "demo set (synthetic, 4 classes, 64 train / 16 val "
                                                            "images; not MiniPlaces)")
    with pytest.raises(runner.RunnerError, match=r"\['nope'\] not in the demo plan"):
        runner.run_all((ok,), "demo", demo_data, str(tmp_path / "logs"), only=("nope",))


def test_runner_command_line_lists_the_plan(tmp_path, capsys):
    assert runner.main(["--demo", "--list", "--root", str(tmp_path)]) is None
    out = capsys.readouterr().out
    for exp in runner.EXPERIMENTS:
        listed = re.search(rf"^{re.escape(exp.name)} +not run$", out, re.M)
        assert bool(listed) == (exp.demo is not None), exp.name


def test_comparisons_follow_the_finished_runs(demo_data, real_run, tmp_path):
    run, _ = real_run
    logs, out = tmp_path / "logs" / "demo", tmp_path / "results" / "demo"
    for name, state in (("base", "finished"), ("same", "finished"), ("cut", "failed")):
        (logs / name).mkdir(parents=True)
        with open(logs / name / "status.json", "w") as f:
            json.dump({"name": name, "status": state, "run_dir": os.path.basename(run)}, f)
        (logs / name / os.path.basename(run)).symlink_to(run)
    out.mkdir(parents=True)
    (out / "ci_stale.md").write_text("an interval of runs that are gone")
    done = runner.write_comparisons(demo_data, str(logs), str(out), (
        ("ci_same.md", "base", "same"), ("ci_stale.md", "base", "cut"), ("ci_none.md", "base", "nothing")))
    assert done == {"ci_same.md": "written", "ci_stale.md": "removed", "ci_none.md": "not run"}
    text = (out / "ci_same.md").read_text()
    best = os.path.join(str(logs), "same", os.path.basename(run), "models", "model_best.pth.tar")
    assert f"B: `{os.path.relpath(best, runner.REPO_DIR)}`" in text and "16 images" in text, "no absolute paths"
    assert "difference +0.0 points, 95% paired-bootstrap interval [+0.0, +0.0]" in text, "one model against itself"
    assert sorted(os.listdir(out)) == ["ci_same.md"]


def test_code_version_names_the_commit_and_local_changes(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "code").mkdir(parents=True)
    (repo / "code" / "m.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    if subprocess.run(git[:3] + ["init", "-q"]).returncode != 0:
        pytest.skip("git is not installed")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(runner, "CODE_DIR", str(repo / "code"))
    assert runner.code_version() == f"commit {head}"
    (repo / "code" / "m.py").write_text("x = 2\n")
    assert runner.code_version() == f"uncommitted changes on commit {head}"
    with pytest.raises(runner.RunnerError, match=f"code/ has uncommitted changes on commit {head}: commit first"):
        runner.check_clean(allow_dirty=False)
    runner.check_clean(allow_dirty=True)
    monkeypatch.setattr(runner, "CODE_DIR", str(tmp_path))
    assert runner.code_version() == "not a git checkout"
