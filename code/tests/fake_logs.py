"""Run logs of known values in the runner's layout, shared by the results and report tests:
TensorBoard event files, status.json files, and the comparison files that run_experiments.py
and seed_study.py write into results/."""
import os

import numpy as np
from torch.utils.tensorboard import SummaryWriter

import run_experiments as runner
import seed_study

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


def fake_demo(root, better, scale="demo"):
    """Logs of the report's rows at ``scale`` under ``root/logs/<scale>``. ``better`` = +1 makes
    every improved or changed variant win (custom conv faster, improved CNN / ViT ahead,
    adversarial training more robust, flip averaging helping); -1 makes every one lose."""
    logs = os.path.join(root, "logs", scale)
    epochs = 3

    def train(row, seconds, top1, **extra):
        fake_run(os.path.join(logs, row, "run"), [seconds] * epochs, top1, 500.0, **extra)
        args = next(getattr(e, scale) for e in runner.EXPERIMENTS if e.name == row)
        write_status(logs, status(row, scale=scale, run_dir="run", args=list(args)))

    train("conv-native", 10.0, [40.0, 50.0, 55.0])
    train("conv-custom", 10.0 - better, [40.0, 49.0, 54.0])
    train("simplenet", 10.0, [50.0, 60.0, 70.0], val_loss=[10.8, 1.2, 1.0])
    train("cnn", 25.0, [55.0, 65.0, 70.0 + 5 * better])
    train("simplevit", 5.0, [60.0, 70.0, 80.0])
    train("vit", 50.0, [60.0, 70.0, 80.0 + 5 * better])
    train("adv-simplenet", 15.0, [50.0, 60.0, 68.0])
    write_status(logs, status("resnet18", scale=scale, status="skipped", reason="no ImageNet weights (offline)"))
    attacks = (("pgd-simplenet", "simplenet", ["-a", "-v"], 69.0), ("pgd-simplenet-eps0.5", "simplenet",
               ["-a", "--attack-eps", "0.5"], 40.0), ("pgd-simplenet-eps1", "simplenet", ["-a", "--attack-eps", "1.0"],
               20.0), ("pgd-simplenet-steps1", "simplenet", ["-a", "--attack-steps", "1", "--attack-eps", "0.5"], 60.0),
               ("pgd-simplenet-steps20", "simplenet", ["-a", "--attack-steps", "20", "--attack-eps", "0.5"], 35.0),
               ("pgd-adv-simplenet", "adv-simplenet", ["-a", "-v"], 68.5),
               ("pgd-adv-simplenet-eps0.5", "adv-simplenet", ["-a", "--attack-eps", "0.5"], 40.0 + 10 * better))
    for row, target, args, acc1 in attacks:
        eps, steps = runner.attack_settings(args)
        run_dir = f"{target}-attack_1" if "-v" in args else None
        if run_dir:
            write_images(os.path.join(logs, row, run_dir))
        write_status(logs, status(row, kind="attack", scale=scale, target=target, args=args, epsilon=eps,
                                  num_steps=steps, acc1=acc1, acc5=acc1 + 20, run_dir=run_dir))
    for target, top1 in (("simplenet", 70.0), ("cnn", 70.0 + 5 * better), ("vit", 80.0 + 5 * better)):
        write_status(logs, status(f"eval-{target}", kind="eval", scale=scale, target=target, args=["-e"],
                                  plain_acc1=top1, plain_acc5=top1 + 10, acc1=top1 + better, acc5=top1 + 10))
    return logs


def write_comparisons(root, better):
    """The bootstrap (compare_checkpoints.py) and seed-study (seed_study.py) files of both
    comparison pairs in ``root/results/demo``, with B ahead (``better`` = 1) or behind (-1);
    make_results.py leaves them alone, so they may come after it."""
    out = os.path.join(root, "results", "demo")
    for file, a, b in (("ci_cnn.md", "SimpleNet", "SceneResNet"), ("ci_vit.md", "SimpleViT", "ImprovedViT")):
        low, high = sorted((better * 2.0, better * 8.0))
        with open(os.path.join(out, file), "w") as f:
            f.write("A: `a.pth.tar`  \nB: `b.pth.tar`\n\n"
                    "Top-1 on the demo set (synthetic, not MiniPlaces), 200 images: "
                    f"{a} 70.0%, {b} {70 + 5 * better:.1f}%; difference {5.0 * better:+.1f} points, 95% "
                    f"paired-bootstrap interval [{low:+.1f}, {high:+.1f}] (10,000 resamples).\n")
    rows = {e.name: e for e in runner.EXPERIMENTS}
    for a, b in (("simplenet", "cnn"), ("simplevit", "vit")):
        pair = (rows[a], rows[b])
        acc = {a: [60.0, 62.0, 64.0], b: [60.0 + 5 * better, 62.0 + 6 * better, 64.0 + 4 * better]}
        seed_study.write_report(out, pair, [1, 2, 3], [3, 3], acc, DATA, "test machine", "demo")
    return out

