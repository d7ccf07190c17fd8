"""Run logs of known values in the runner's layout, shared by the results and report tests:
TensorBoard event files, status.json files, and the comparison files that run_experiments.py
and seed_study.py write into results/."""
import os

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from tools import run_experiments as runner
from tools import seed_study

DATA = "demo set (test, 4 classes, 64 train / 200 val images; not MiniPlaces)"
MINIPLACES = "MiniPlaces (100 classes, 100000 train / 10000 val images)"


def fake_run(folder, seconds, top1, memory, val_loss=None):
    """A run folder with per-epoch scalars of known values (4 iterations per epoch);
    ``val_loss`` (per epoch) defaults to 3.5 / epoch."""
    writer = SummaryWriter(folder)
    val_loss = val_loss or [3.5 / e for e in range(1, len(top1) + 1)]
    for epoch, (sec, acc, loss) in enumerate(zip(seconds, top1, val_loss), 1):
        for tag, value in (("data/top1_accuracy", acc), ("data/top5_accuracy", acc + 10), ("perf/epoch_seconds", sec),
                           ("perf/images_per_second", 1000 / sec), ("perf/peak_memory_mb", memory),
                           ("data/train_loss", 3.0 / epoch), ("data/val_loss", loss),
                           ("data/train_top1_accuracy", acc - 5), ("data/train_top5_accuracy", acc + 5)):
            writer.add_scalar(tag, value, epoch)
        for i in range(1, 5):
            writer.add_scalar("data/training_loss", 3.0 / epoch, (epoch - 1) * 4 + i)
            writer.add_scalar("data/learning_rate", 0.1, (epoch - 1) * 4 + i)
    writer.close()


def status(name, kind="train", scale="demo", **fields):
    """A finished status.json of the runner for row ``name`` at ``scale``, with ``fields`` on top."""
    base = {"name": name, "part": "x", "title": name, "kind": kind, "scale": scale, "demo_data": scale == "demo",
            "data": DATA if scale == "demo" else MINIPLACES, "hardware": "test machine", "args": [],
            "status": "finished", "reason": ""}
    return dict(base, **fields)


def write_status(log_root, s):
    """Write status dict ``s`` where the runner keeps it."""
    os.makedirs(os.path.join(log_root, s["name"]), exist_ok=True)
    runner.write_status(os.path.join(log_root, s["name"]), s)


def write_images(folder):
    """The three image tags of main.py -a -v: a 4 x 10 make_grid of 128-pixel tiles each."""
    images = SummaryWriter(folder)
    grid = np.zeros((3, 2 + 4 * 130, 2 + 10 * 130), dtype=np.float32)
    for tag, value in (("Image/Org_Image", 0.2), ("Image/Adv_Image", 0.4), ("Image/Diff_Image", 0.6)):
        images.add_image(tag, grid + value, 0)
    images.close()


ATTACKS = {"pgd-simplenet": 40.0, "pgd-simplenet-eps-low": 69.0, "pgd-simplenet-eps-high": 20.0,
           "pgd-simplenet-steps1": 60.0, "pgd-simplenet-steps3": 45.0, "pgd-simplenet-fine": 50.0,
           "pgd-adv-simplenet": 40.0}


def fake_demo(root, better, scale="demo", attacks=None):
    """Logs of the report's rows at ``scale`` under ``root/logs/<scale>``. ``better`` = +1 makes
    every improved or changed variant win (custom conv faster, improved CNN / ViT ahead,
    adversarial training more robust; the improved models by 10 points); -1 makes every one lose. ``attacks`` overrides the PGD
    top-1 of attack rows ({row: top-1}; defaults ATTACKS, SimpleNet's clean top-1 being 70)."""
    logs = os.path.join(root, "logs", scale)
    epochs = 3

    def train(row, seconds, top1, **extra):
        fake_run(os.path.join(logs, row, "run"), [seconds] * epochs, top1, 500.0, **extra)
        args = next(getattr(e, scale) for e in runner.EXPERIMENTS if e.name == row)
        write_status(logs, status(row, scale=scale, run_dir="run", args=list(args), seconds=epochs * seconds,
                                  code="commit abc1234"))

    train("conv-native", 10.0, [40.0, 50.0, 55.0])
    train("conv-custom", 10.0 - better, [40.0, 49.0, 54.0])
    train("simplenet", 10.0, [50.0, 60.0, 70.0], val_loss=[10.8, 1.2, 1.0])
    train("cnn", 25.0, [50.0, 55.0, 70.0 + 10 * better])
    train("simplevit", 5.0, [60.0, 70.0, 80.0])
    train("vit", 50.0, [60.0, 70.0, 80.0 + 10 * better])
    train("adv-simplenet", 15.0, [50.0, 60.0, 68.0])
    write_status(logs, status("resnet18", scale=scale, status="skipped", reason="no ImageNet weights (offline)"))
    acc = dict(ATTACKS, **{"pgd-adv-simplenet": 40.0 + 10 * better}, **(attacks or {}))
    for exp in runner.EXPERIMENTS:
        args = getattr(exp, scale)
        if not (exp.target and args and "-a" in args):
            continue
        eps, steps = runner.attack_settings(args)
        run_dir = f"{exp.target}-attack_1" if "-v" in args else None
        if run_dir:
            write_images(os.path.join(logs, exp.name, run_dir))
        write_status(logs, status(exp.name, kind="attack", scale=scale, target=exp.target, args=list(args),
                                  epsilon=eps, num_steps=steps, acc1=acc[exp.name], acc5=acc[exp.name] + 20,
                                  run_dir=run_dir, code="commit abc1234"))
    for target, top1 in (("simplenet", 70.0), ("cnn", 70.0 + 5 * better), ("vit", 80.0 + 5 * better)):
        write_status(logs, status(f"eval-{target}", kind="eval", scale=scale, target=target, args=["-e"],
                                  plain_acc1=top1, plain_acc5=top1 + 10, acc1=top1 + better, acc5=top1 + 10))
    return logs


def fake_attacks(better):
    """Per-seed PGD top-1 of the standard and the adversarially trained SimpleNet (3 seeds) under
    every attack of run_experiments.ADV_ATTACKS: the trained one ahead by about 10 points
    (``better`` = 1) or behind (-1) at epsilon 0.5 and above, alike below."""
    pgd = {"simplenet": {}, "adv-simplenet": {}}
    for eps, steps in runner.ADV_ATTACKS:
        base = 70.0 - 60.0 * min(eps, 1.0) * min(steps, 10) / 10
        pgd["simplenet"][eps, steps] = [base - 2.0, base, base + 3.0]
        gain = 10.0 * better if eps >= 0.5 else 0.0
        pgd["adv-simplenet"][eps, steps] = [base + gain + d for d in (-1.0, 0.0, 2.0)]
    return pgd


def write_comparisons(root, better, scale="demo"):
    """The bootstrap (compare_checkpoints.py) and seed-study (seed_study.py) files in
    ``root/results/<scale>``, with B ahead (``better`` = 1) or behind (-1): both comparison
    pairs, and the standard / adversarially trained SimpleNet with PGD top-1 (3 seeds, 3 epochs
    like fake_demo's runs, attacked as fake_attacks says). make_results.py leaves them alone, so they
    may come after it."""
    out = os.path.join(root, "results", scale)
    for file, a, b in (("ci_cnn.md", "SimpleNet", "SceneResNet"), ("ci_vit.md", "SimpleViT", "ImprovedViT")):
        low, high = sorted((better * 2.0, better * 8.0))
        with open(os.path.join(out, file), "w") as f:
            f.write("A: `a.pth.tar`  \nB: `b.pth.tar`\n\n"
                    "Top-1 on the demo set (synthetic, not MiniPlaces), 200 images: "
                    f"{a} 70.0%, {b} {70 + 5 * better:.1f}%; difference {5.0 * better:+.1f} points, 95% "
                    f"paired-bootstrap interval [{low:+.1f}, {high:+.1f}] (10,000 resamples).\n")
    rows = {e.name: e for e in runner.EXPERIMENTS}
    label = DATA if scale == "demo" else MINIPLACES
    pair = (rows["simplenet"], rows["adv-simplenet"])
    acc = {"simplenet": [68.0, 70.0, 72.0], "adv-simplenet": [66.0, 67.0, 69.0]}
    seed_study.write_report(out, pair, [2024, 1, 2], [3, 3], acc, label, "test machine", scale, fake_attacks(better),
                            "commit abc1234 (6 runs)")
    return out
