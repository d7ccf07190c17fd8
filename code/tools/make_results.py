"""Turn the runs under logs/ into results/: curves, tables and PGD samples, per scale.

    python -m tools.make_results                                  # ../logs/<scale> -> ../results/<scale>/
    python -m tools.make_results --logs ../logs --out ../results --scale demo

Reads each experiment's status.json (written by run_experiments.py) and its TensorBoard
event files directly (no TensorBoard server). Writes into ``<out>/<scale>/``:

    curves_<name>.png            loss, learning rate, train and val top-1 of one run
    compare_<group>.png / .md    overlaid curves and a table of a comparison group
    summary.csv / summary.md     best val top-1/top-5, epochs, time, images/s, peak memory
    conv_comparison.md           custom vs native conv runs, plus bench_conv.py's table
    pgd.csv / pgd.md             every attack; pgd_epsilon.md, pgd_steps.md, pgd_models.md
    pgd_sweeps.png               PGD top-1 against epsilon and against steps, clean top-1 as a baseline
    pgd_samples_<name>.png       original / adversarial / difference images of one attack
    pgd_visible.png              the first val images, then each attack's adversarial versions of them
    adv_robustness.csv / .md     standard vs adversarially trained model under the same attacks
    eval.csv / eval.md           main.py -e: top-1/top-5 without and with flip averaging
    experiments.md               every experiment's main.py flags at this scale and its state
    summary.json                 the same numbers as data (and each figure's caption), for
                                 tools/build_report.py

Figures are drawn at the width the report places them at (at most the page's text width,
FIGURE_WIDTH inches), with text of at least 8 pt, so their text stays legible in print.
"""
import argparse
import collections
import csv
import io
import json
import os
import re
import shlex
import statistics

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

from tools import REPO_DIR  # noqa: E402
from tools.run_experiments import EXPERIMENTS, SCALES, at_scale, status_line  # noqa: E402

# (group, title prefix, ((row, label), ...)): overlays and tables of rows trained alike. The
# figure's title and caption name only the rows that have results.
COMPARISONS = (
    ("conv", "SimpleNet with ", (("conv-native", "nn.Conv2d"), ("conv-custom", "CustomConv2d"))),
    ("cnn", "", (("simplenet", "SimpleNet"), ("cnn", "improved CNN"), ("resnet18", "ResNet18"))),
    ("vit", "", (("simplevit", "SimpleViT"), ("vit", "improved ViT"), ("cnn", "improved CNN"))),
    ("adv", "SimpleNet, ", (("simplenet", "standard training"), ("adv-simplenet", "adversarial training"))),
)
ADV_PAIR = ("simplenet", "adv-simplenet")  # (standard, adversarially trained): adv_robustness.md
IMAGE_TAGS = (("Image/Org_Image", "original"), ("Image/Adv_Image", "adversarial"),
              ("Image/Diff_Image", "difference (amplified to full contrast)"))
MEMORY_NOTE = ("Peak memory: CUDA memory allocated on a GPU, the process's peak resident set size on "
               "a CPU (which includes the Python runtime and libraries).")
FIGURE_WIDTH = 7.0  # inches; the report's text width is 180 mm = 7.09 in
DPI = 150
STYLE = {"font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "figure.titlesize": 9, "lines.markersize": 3.5, "lines.linewidth": 1.2}
SUMMARY_COLUMNS = (
    ("name", "experiment", "{}"), ("part", "part", "{}"), ("epochs", "epochs", "{}"),
    ("best_top1", "best val top-1 (%)", "{:.2f}"), ("top5_at_best", "val top-5 at best (%)", "{:.2f}"),
    ("best_epoch", "best epoch", "{}"), ("train_seconds", "train+val time (s)", "{:.0f}"),
    ("images_per_second", "train images/s", "{:.1f}"), ("peak_memory_mb", "peak memory (MiB)", "{:.0f}"),
)
COMPARE_COLUMNS = (
    ("name", "experiment", "{}"), ("epochs", "epochs", "{}"), ("best_top1", "best val top-1 (%)", "{:.2f}"),
    ("top5_at_best", "val top-5 (%)", "{:.2f}"), ("seconds_per_epoch", "s/epoch", "{:.1f}"),
    ("images_per_second", "train images/s", "{:.1f}"), ("peak_memory_mb", "peak memory (MiB)", "{:.0f}"),
    ("final_train_loss", "final train loss", "{:.3f}"),
)
PGD_COLUMNS = (
    ("name", "attack", "{}"), ("target", "attacked model", "{}"), ("epsilon", "epsilon", "{:g}"),
    ("num_steps", "steps", "{}"), ("step_size", "step size", "{:g}"), ("clean_top1", "clean top-1 (%)", "{:.2f}"),
    ("acc1", "PGD top-1 (%)", "{:.2f}"), ("acc5", "PGD top-5 (%)", "{:.2f}"),
    ("drop_top1", "top-1 drop (points)", "{:.2f}"), ("mean_change", "mean change (grey levels)", "{:.1f}"),
    ("max_change", "max change (grey levels)", "{:.0f}"),
)
ADV_COLUMNS = (
    ("epsilon", "epsilon", "{:g}"), ("num_steps", "steps", "{}"), ("step_size", "step size", "{:g}"),
    ("std_clean", "standard: clean top-1 (%)", "{:.2f}"), ("std_pgd", "standard: PGD top-1 (%)", "{:.2f}"),
    ("adv_clean", "adversarial: clean top-1 (%)", "{:.2f}"), ("adv_pgd", "adversarial: PGD top-1 (%)", "{:.2f}"),
    ("gain", "adversarial - standard under PGD (points)", "{:+.2f}"),
)
EVAL_COLUMNS = (
    ("target", "model", "{}"), ("plain_top1", "top-1 (%)", "{:.2f}"),
    ("flip_top1", "top-1, flip-averaged (%)", "{:.2f}"),
    ("gain_top1", "change (points)", "{:+.2f}"), ("plain_top5", "top-5 (%)", "{:.2f}"),
    ("flip_top5", "top-5, flip-averaged (%)", "{:.2f}"), ("gain_top5", "change (points)", "{:+.2f}"),
)


def read_scalars(run_dir):
    """Every scalar of a run folder's event files: {tag: [(step, value), ...]} sorted by step.

    A run resumed after an interruption logs some steps twice; the value written last wins.
    """
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["scalars"]:
        events = sorted(acc.Scalars(tag), key=lambda e: e.wall_time)
        scalars[tag] = sorted({e.step: e.value for e in events}.items())
    return scalars


def read_images(run_dir):
    """The last image of each image tag in a run folder: {tag: (H, W, 3) float array in [0, 1]}."""
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.IMAGES: 0})
    acc.Reload()
    images = {}
    for tag in acc.Tags()["images"]:
        last = max(acc.Images(tag), key=lambda e: e.wall_time)
        images[tag] = plt.imread(io.BytesIO(last.encoded_image_string), format="png")[..., :3]
    return images


def summarize(scalars):
    """Per-run numbers from read_scalars' output.

    best_top1 / best_epoch: the first epoch with the highest val top-1 (the one main.py keeps
    as model_best); top5_at_best: val top-5 of that epoch; final_top1 / final_train_top1: val and
    train top-1 of the last epoch; train_seconds: sum of the per-epoch
    wall times (training + validation); seconds_per_epoch, images_per_second: medians over
    epochs; peak_memory_mb: the maximum. Missing perf tags give None.
    """
    top1 = scalars.get("data/top1_accuracy")
    if not top1:
        raise ValueError("the run has no data/top1_accuracy scalars (no finished epoch)")
    best_epoch, best_top1 = max(top1, key=lambda sv: (sv[1], -sv[0]))

    def values(tag):
        return [v for _, v in scalars.get(tag, [])]

    def last(tag):
        return values(tag)[-1] if tag in scalars else None

    seconds, speed = values("perf/epoch_seconds"), values("perf/images_per_second")
    memory = values("perf/peak_memory_mb")
    return {
        "epochs": top1[-1][0], "best_top1": best_top1, "best_epoch": best_epoch,
        "top5_at_best": dict(scalars.get("data/top5_accuracy", [])).get(best_epoch),
        "final_top1": top1[-1][1], "final_train_top1": last("data/train_top1_accuracy"),
        "final_train_loss": last("data/train_loss"), "final_val_loss": last("data/val_loss"),
        "train_seconds": sum(seconds) if seconds else None,
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "images_per_second": statistics.median(speed) if speed else None,
        "peak_memory_mb": max(memory) if memory else None,
    }


def join_names(names):
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def iteration_epochs(scalars, tag):
    """(epochs, values) of a per-iteration tag (step = global iteration) in epoch units."""
    last_epoch = scalars["data/top1_accuracy"][-1][0]
    iters_per_epoch = scalars["data/training_loss"][-1][0] / last_epoch
    return [s / iters_per_epoch for s, _ in scalars[tag]], [v for _, v in scalars[tag]]


def plot_series(ax, scalars, tag, label, **style):
    """Plot one tag's (step, value) pairs on ``ax`` when the run has it."""
    if tag in scalars:
        ax.plot(*zip(*scalars[tag]), label=label, **style)


def style_epoch_axis(ax, ylabel):
    """Epochs on x with integer ticks, a grid, and ``ylabel``."""
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def style_loss_axis(ax):
    """Loss on a log scale (ticks 1, 2, 5 per decade), so an outlying first epoch does not
    flatten the rest of the curve."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    style_epoch_axis(ax, "loss (log scale)")


def save(fig, path):
    """Write ``fig`` at DPI and close it."""
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


@plt.rc_context(STYLE)
def plot_curves(scalars, title, path):
    """Three panels of one run against epochs: losses (train per print interval and per epoch,
    val), the learning rate, train and val top-1."""
    fig, (loss, lr, top1) = plt.subplots(1, 3, figsize=(FIGURE_WIDTH, 1.85), layout="constrained")
    if "data/training_loss" in scalars:
        loss.plot(*iteration_epochs(scalars, "data/training_loss"), color="0.7", lw=0.8, label="train (interval)")
    plot_series(loss, scalars, "data/train_loss", "train", marker="o")
    plot_series(loss, scalars, "data/val_loss", "val", marker="s")
    if "data/learning_rate" in scalars:
        lr.plot(*iteration_epochs(scalars, "data/learning_rate"))
    plot_series(top1, scalars, "data/train_top1_accuracy", "train", marker="o")
    plot_series(top1, scalars, "data/top1_accuracy", "val", marker="s")
    style_loss_axis(loss)
    style_epoch_axis(lr, "learning rate")
    style_epoch_axis(top1, "top-1 accuracy (%)")
    for ax in (loss, top1):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    save(fig, path)


@plt.rc_context(STYLE)
def plot_overlay(runs, title, path):
    """Overlaid curves of several runs ({label: scalars}): losses, val top-1, val top-5 (vs
    epoch), with one legend below the panels (colour: run; solid: train, dashed: val)."""
    fig, (loss, top1, top5) = plt.subplots(1, 3, figsize=(FIGURE_WIDTH, 2.7), layout="constrained")
    handles = []
    for i, (label, scalars) in enumerate(runs.items()):
        color = f"C{i}"
        plot_series(loss, scalars, "data/train_loss", None, color=color, marker="o")
        plot_series(loss, scalars, "data/val_loss", None, color=color, ls="--", marker="s")
        plot_series(top1, scalars, "data/top1_accuracy", None, color=color, ls="--", marker="s")
        plot_series(top5, scalars, "data/top5_accuracy", None, color=color, ls="--", marker="s")
        handles.append(Line2D([], [], color=color, lw=4, label=label))
    handles += [Line2D([], [], color="k", marker="o", label="train"),
                Line2D([], [], color="k", ls="--", marker="s", label="val")]
    style_loss_axis(loss)
    style_epoch_axis(top1, "val top-1 accuracy (%)")
    style_epoch_axis(top5, "val top-5 accuracy (%)")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    save(fig, path)


def crop_grid_rows(image, rows, cell=130, pad=2):
    """The first ``rows`` rows of a torchvision make_grid image of 128-pixel tiles (cell = tile +
    padding); the whole image when its size does not fit that layout."""
    height, width = image.shape[:2]
    if (width - pad) % cell or (height - pad) % cell or (height - pad) // cell <= rows:
        return image
    return image[:rows * cell + pad]


def describe_steps(rows):
    """The step sizes of attack ``rows`` in words: 'step size epsilon/10' when every row's step
    is the same fraction of its epsilon, else the distinct step sizes."""
    ratios = {round(r["epsilon"] / r["step_size"], 6) for r in rows if r["step_size"]}
    if len(ratios) == 1 and all(r["step_size"] for r in rows):
        return f"step size epsilon/{next(iter(ratios)):g}"
    return "step size " + ", ".join(f"{s:g}" for s in sorted({r["step_size"] for r in rows}))


def pgd_sweep_title(rows, key):
    """The title of a sweep over ``key``: what varies and what is held (steps or epsilon, step)."""
    if key == "epsilon":
        steps = "/".join(str(s) for s in sorted({r["num_steps"] for r in rows}))
        return f"PGD top-1 against epsilon\n({steps} steps, {describe_steps(rows)})"
    eps = "/".join(f"{e:g}" for e in sorted({r["epsilon"] for r in rows}))
    return f"PGD top-1 against steps\n(epsilon {eps}, {describe_steps(rows)})"


def sweep_panel(ax, rows, key, xlabel, title, colors):
    """PGD top-1 against ``key`` (epsilon or num_steps) on ``ax``, one line per attacked model (in
    its colour of ``colors``, {target: colour}) and its clean top-1 as a dashed line."""
    for target in [t for t in colors if t in {r["target"] for r in rows}]:
        mine = [r for r in rows if r["target"] == target and r[key] is not None]
        points = sorted((r[key], r["acc1"]) for r in mine)
        ax.plot([x for x, _ in points], [y for _, y in points], color=colors[target], marker="o",
                label=f"{target}: PGD")
        if mine[0]["clean_top1"] is not None:
            ax.axhline(mine[0]["clean_top1"], color=colors[target], ls="--", lw=1, label=f"{target}: clean")
    shown = [r["acc1"] for r in rows] + [r["clean_top1"] for r in rows if r["clean_top1"] is not None]
    pad = 0.08 * (max(shown) - min(shown) or 1)
    ax.set_ylim(min(shown) - pad, max(shown) + pad)  # axhline does not widen the limits by itself
    values = sorted({r[key] for r in rows if r[key] is not None})
    if key == "epsilon" and len(values) > 2 and values[0] > 0:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(values))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()


@plt.rc_context(STYLE)
def plot_pgd_sweeps(sweeps, path, colors):
    """One panel per sweep of ``sweeps`` [(rows, key, xlabel, title)] side by side (see sweep_panel)."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(FIGURE_WIDTH if len(sweeps) > 1 else 4.8, 2.6),
                             layout="constrained", squeeze=False)
    for ax, (rows, key, xlabel, title) in zip(axes[0], sweeps):
        sweep_panel(ax, rows, key, xlabel, title, colors)
    save(fig, path)


def tiles(image, cell=130, pad=2):
    """The 128-pixel tiles of a torchvision make_grid image, row by row (the whole image as one
    tile when its size does not fit that layout)."""
    height, width = image.shape[:2]
    if (width - pad) % cell or (height - pad) % cell:
        return [image]
    return [image[pad + r * cell:(r + 1) * cell, pad + c * cell:(c + 1) * cell]
            for r in range((height - pad) // cell) for c in range((width - pad) // cell)]


def pixel_change(images):
    """(mean, max) absolute change of the adversarial images against the originals, in grey
    levels of 255, over every channel of every tile that main.py -a -v logged."""
    missing = [tag for tag, _ in IMAGE_TAGS[:2] if tag not in images]
    if missing:
        raise ValueError(f"the attack run has no image(s) {missing}; run main.py with -a -v")
    org, adv = (np.concatenate([t.reshape(-1) for t in tiles(images[tag])]) for tag, _ in IMAGE_TAGS[:2])
    change = np.abs(np.round(adv * 255) - np.round(org * 255))
    return float(change.mean()), float(change.max())


@plt.rc_context(STYLE)
def plot_visible(original, rows, title, path, per_row=10):
    """The first ``per_row`` val images, then one row per attack of ``rows`` [(label, adversarial
    grid)]: the same images after each attack, at the same size, to see whether it shows."""
    def strip(grid):
        return np.concatenate(tiles(grid)[:per_row], axis=1)  # (128, per_row * 128, 3)

    fig, axes = plt.subplots(1 + len(rows), 1, figsize=(FIGURE_WIDTH, 0.3 + 0.9 * (1 + len(rows))),
                             layout="constrained")
    for ax, (label, grid) in zip(axes, [("original", original), *rows]):
        ax.imshow(strip(grid))
        ax.set_title(label, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    fig.suptitle(title)
    save(fig, path)


@plt.rc_context(STYLE)
def plot_adversarial(images, title, path, rows=2):
    """Original / adversarial / difference grids (from main.py's -a -v) stacked in one figure."""
    missing = [tag for tag, _ in IMAGE_TAGS if tag not in images]
    if missing:
        raise ValueError(f"the attack run has no image(s) {missing}; run main.py with -a -v")
    fig, axes = plt.subplots(3, 1, figsize=(5.6, 4.0), layout="constrained")
    for ax, (tag, name) in zip(axes, IMAGE_TAGS):
        ax.imshow(crop_grid_rows(images[tag], rows))
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    save(fig, path)


def data_short_label(label):
    """A data label of run_experiments.describe_data without its counts: 'demo set (synthetic, not
    MiniPlaces)' or 'MiniPlaces'."""
    return "demo set (synthetic, not MiniPlaces)" if label.startswith("demo set") else label.split(" (")[0]


def cell(value, fmt):
    """``value`` formatted for a Markdown table ('n/a' for None)."""
    return "n/a" if value is None else fmt.format(value)


def provenance(rows):
    """One line naming the data and the hardware of ``rows`` (per experiment when they differ)."""
    data = sorted({r["data"] for r in rows})
    hardware = sorted({r["hardware"] for r in rows})
    hw = hardware[0] if len(hardware) == 1 else "; ".join(f"{r['name']}: {r['hardware']}" for r in rows)
    return f"Data: {'; '.join(data)}. Hardware: {hw}."


def markdown_table(columns, rows):
    """A Markdown table of ``rows`` (dicts) with ``columns`` ((key, header, format), ...); a row
    with ``ratio`` true shows its numbers with two decimals."""
    lines = [f"| {' | '.join(h for _, h, _ in columns)} |", f"|{'|'.join('---' for _ in columns)}|"]
    for r in rows:
        cells = [cell(r.get(k), "{:.2f}" if r.get("ratio") and isinstance(r.get(k), float) else fmt)
                 for k, _, fmt in columns]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def write_table(out_dir, stem, columns, rows, caption):
    """``stem.csv`` (raw values, plus each row's data and hardware) and ``stem.md`` (caption line +
    formatted Markdown table)."""
    with open(os.path.join(out_dir, f"{stem}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([header for _, header, _ in columns] + ["data", "hardware"])
        writer.writerows([[r.get(key) for key, _, _ in columns] + [r.get("data"), r.get("hardware")] for r in rows])
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(f"{caption}\n\n{markdown_table(columns, rows)}\n")


def not_run_lines(statuses):
    """Markdown bullets for the experiments that did not finish, with the reason."""
    return [f"- `{s['name']}` {s['status']}: {s['reason']}" for s in statuses if s["status"] != "finished"]


def conv_ratio(rows):
    """The custom / native ratio row of the conv comparison (time, speed, memory, loss)."""
    native, custom = rows
    ratio = {"name": "custom / native", "epochs": None, "ratio": True}
    for key in ("best_top1", "top5_at_best", "seconds_per_epoch", "images_per_second", "peak_memory_mb",
                "final_train_loss"):
        ok = native.get(key) and custom.get(key) is not None
        ratio[key] = custom[key] / native[key] if ok else None
    return ratio


def val_images(data_label):
    """The number of val images that a data label of run_experiments.describe_data names."""
    m = re.search(r"(\d+) val images", data_label)
    if not m:
        raise ValueError(f"the data label {data_label!r} does not say how many val images it has")
    return int(m.group(1))


def attack_step_size(args):
    """The PGD step size that main.py uses for an attack row's flags (its build_attack)."""
    import main
    from torch import nn

    return main.build_attack(main.get_args_parser().parse_args(["DATA", *args]), nn.CrossEntropyLoss()).step_size


def pgd_rows(attacks, summaries):
    """One row per finished attack with its step size and the target's clean accuracy (its best
    epoch, the checkpoint attacked)."""
    rows = []
    for s in attacks:
        clean = summaries.get(s["target"], {})
        row = {k: s.get(k) for k in ("name", "target", "epsilon", "num_steps", "acc1", "acc5", "args")}
        row.update(step_size=attack_step_size(s["args"]), clean_top1=clean.get("best_top1"),
                   clean_top5=clean.get("top5_at_best"), val_images=val_images(s["data"]))
        row["drop_top1"] = row["clean_top1"] - row["acc1"] if row["clean_top1"] is not None else None
        row["data"], row["hardware"] = s["data"], s["hardware"]
        rows.append(row)
    return rows


def adv_rows(pgd, standard=ADV_PAIR[0], adversarial=ADV_PAIR[1]):
    """One row per attack setting (epsilon, steps, step size) run on both the standard and the
    adversarially trained model: both clean and attacked top-1, and the difference under attack."""
    def by_setting(target):
        return {(r["epsilon"], r["num_steps"], r["step_size"]): r for r in pgd if r["target"] == target}

    std, adv = by_setting(standard), by_setting(adversarial)
    rows = []
    for key in sorted(std.keys() & adv.keys()):
        a, b = std[key], adv[key]
        rows.append(dict(zip(("epsilon", "num_steps", "step_size"), key), std_clean=a["clean_top1"], std_pgd=a["acc1"],
                         adv_clean=b["clean_top1"], adv_pgd=b["acc1"], gain=b["acc1"] - a["acc1"],
                         std_drop=a["drop_top1"], adv_drop=b["drop_top1"], data=a["data"], hardware=a["hardware"]))
    return rows


def eval_rows(evals):
    """One row per finished ``-e`` evaluation: top-1/top-5 without and with flip averaging."""
    rows = []
    for s in evals:
        row = {"name": s["name"], "target": s["target"], "plain_top1": s["plain_acc1"], "flip_top1": s["acc1"],
               "plain_top5": s["plain_acc5"], "flip_top5": s["acc5"], "val_images": val_images(s["data"]),
               "data": s["data"], "hardware": s["hardware"]}
        row.update(gain_top1=row["flip_top1"] - row["plain_top1"], gain_top5=row["flip_top5"] - row["plain_top5"])
        rows.append(row)
    return rows


def write_experiments(out_dir, statuses, scale):
    """experiments.md: every row of run_experiments.py's table with its main.py flags at ``scale``
    and its recorded state."""
    known = {s["name"]: s for s in statuses}
    lines = [f"Every experiment of `code/tools/run_experiments.py` at the {scale} scale: the flags after "
             "`python main.py ../data`, and its state.", "", "| experiment | part | main.py flags | state |",
             "|---|---|---|---|"]
    for exp in at_scale(EXPERIMENTS, scale):
        flags = shlex.join(getattr(exp, scale)) + (f" --resume <best checkpoint of {exp.target}>" if exp.target else "")
        state = status_line(known[exp.name]) if exp.name in known else "not run"
        lines.append(f"| {exp.name} ({exp.title}) | {exp.part} | `{flags}` | {state} |")
    with open(os.path.join(out_dir, "experiments.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make_scale(log_root, out_dir, scale, bench_md=None):
    """Results of one scale (see the module docstring); returns the summary.json dict. The files
    that the previous summary.json lists are removed first, so nothing stale is left behind."""
    os.makedirs(out_dir, exist_ok=True)
    previous = os.path.join(out_dir, "summary.json")
    if os.path.isfile(previous):
        with open(previous) as f:
            for name in json.load(f)["files"]:
                if os.path.isfile(os.path.join(out_dir, name)):
                    os.remove(os.path.join(out_dir, name))
    statuses = []
    for exp in EXPERIMENTS:
        path = os.path.join(log_root, exp.name, "status.json")
        if os.path.isfile(path):
            with open(path) as f:
                statuses.append(json.load(f))
    if not statuses:
        raise ValueError(f"no status.json under {log_root}: run python -m tools.run_experiments --{scale} first")
    wrong = [s["name"] for s in statuses if s["demo_data"] != (scale == "demo")]
    if wrong:
        raise ValueError(f"{log_root} is the {scale} scale but {wrong} ran on other data; keep demo-set "
                         "runs under logs/demo and MiniPlaces runs under logs/full")
    write_experiments(out_dir, statuses, scale)
    train = [s for s in statuses if s["kind"] == "train"]
    scalars, summaries, files, captions = {}, {}, ["experiments.md"], {}
    for s in train:
        if s["status"] == "finished":
            scalars[s["name"]] = read_scalars(os.path.join(log_root, s["name"], s["run_dir"]))
            summaries[s["name"]] = dict(summarize(scalars[s["name"]]), name=s["name"], part=s["part"],
                                        data=s["data"], hardware=s["hardware"], title=s["title"], args=s["args"])
            name = f"curves_{s['name']}.png"
            captions[name] = f"{s['title']} ({s['name']}): loss, learning rate, train and val top-1 per epoch"
            plot_curves(scalars[s["name"]], f"{s['title']} ({s['name']}), {data_short_label(s['data'])}",
                        os.path.join(out_dir, name))
            files.append(name)
    rows = [summaries[s["name"]] for s in train if s["name"] in summaries]
    if rows:
        write_table(out_dir, "summary", SUMMARY_COLUMNS, rows, f"{provenance(rows)} {MEMORY_NOTE}")
        files += ["summary.csv", "summary.md"]
    for group, prefix, labelled in COMPARISONS:
        present = [(n, label) for n, label in labelled if n in summaries]
        if len(present) < 2:
            continue
        members = [summaries[n] for n, _ in present]
        table = members + ([conv_ratio(members)] if group == "conv" and len(members) == 2 else [])
        write_table(out_dir, f"compare_{group}", COMPARE_COLUMNS, table, f"{provenance(members)} {MEMORY_NOTE}")
        title = f"{prefix}{join_names(label for _, label in present)}"
        captions[f"compare_{group}.png"] = f"{title}: loss (log scale) and val top-1 / top-5 per epoch"
        plot_overlay({label: scalars[n] for n, label in present}, f"{title}\n{members[0]['data']}",
                     os.path.join(out_dir, f"compare_{group}.png"))
        files += [f"compare_{group}.csv", f"compare_{group}.md", f"compare_{group}.png"]
    if "compare_conv.md" in files or bench_md:
        parts = []
        if "compare_conv.md" in files:
            with open(os.path.join(out_dir, "compare_conv.md")) as f:
                parts.append("## Training runs (SimpleNet, same flags but the convolution)\n\n" + f.read())
        if bench_md:
            with open(bench_md) as f:
                parts.append("## Layer benchmark (results/conv_benchmark.md, written by bench_conv.py)\n\n" + f.read())
        with open(os.path.join(out_dir, "conv_comparison.md"), "w") as f:
            f.write("\n".join(parts))
        files.append("conv_comparison.md")
    attacks = [s for s in statuses if s["kind"] == "attack" and s["status"] == "finished"]
    pgd = pgd_rows(attacks, summaries)
    images = {s["name"]: read_images(os.path.join(log_root, s["name"], s["run_dir"])) for s in attacks
              if s.get("run_dir")}
    for r in pgd:  # how far the logged images moved, in grey levels
        r["mean_change"], r["max_change"] = pixel_change(images[r["name"]]) if r["name"] in images else (None, None)
    if pgd:
        caption = provenance(pgd) + (" Clean accuracy: the attacked checkpoint's best val epoch. Change: the "
                                     "adversarial images against the originals, over the first val images that "
                                     "main.py -a -v logged, in grey levels of 255.")
        write_table(out_dir, "pgd", PGD_COLUMNS, pgd, caption)
        files += ["pgd.csv", "pgd.md"]
        targets = [e.name for e in EXPERIMENTS if e.name in {r["target"] for r in pgd}]
        colors = {t: f"C{i}" for i, t in enumerate(targets)}
        steps_of = collections.defaultdict(set)  # (target, epsilon) -> its step counts
        for r in pgd:
            steps_of[r["target"], r["epsilon"]].add(r["num_steps"])
        subsets = (("pgd_epsilon", "epsilon", [r for r in pgd if "--attack-steps" not in r["args"]]),
                   ("pgd_steps", "num_steps", [r for r in pgd if len(steps_of[r["target"], r["epsilon"]]) > 1]),
                   ("pgd_models", "target", [r for r in pgd if not {"--attack-eps", "--attack-steps"} & set(r["args"])]))
        sweeps = []
        for stem, key, keep in subsets:
            chosen = sorted(keep, key=lambda r: (r["target"], r[key] is None, r[key] or 0))
            if chosen:
                write_table(out_dir, stem, PGD_COLUMNS, chosen, caption)
                files += [f"{stem}.csv", f"{stem}.md"]
            if chosen and key != "target":
                sweeps.append((chosen, key, "epsilon" if key == "epsilon" else "PGD steps", pgd_sweep_title(chosen, key)))
        if sweeps:
            captions["pgd_sweeps.png"] = "; ".join(title.replace("\n", " ") for *_, title in sweeps)
            plot_pgd_sweeps(sweeps, os.path.join(out_dir, "pgd_sweeps.png"), colors)
            files.append("pgd_sweeps.png")
    adv = adv_rows(pgd)
    if adv:
        write_table(out_dir, "adv_robustness", ADV_COLUMNS, adv,
                    f"{provenance(adv)} {ADV_PAIR[0]} (standard) and {ADV_PAIR[1]} (adversarially trained) under "
                    "the same attacks; clean top-1: each checkpoint's best val epoch.")
        files += ["adv_robustness.csv", "adv_robustness.md"]
    for s in attacks:
        if s["name"] in images:
            r = next(r for r in pgd if r["name"] == s["name"])
            title = (f"PGD on {s['target']} (epsilon {cell(s['epsilon'], '{:g}')}, {cell(s['num_steps'], '{}')} "
                     f"steps of {r['step_size']:g}), first val images")
            name = f"pgd_samples_{s['name']}.png"
            captions[name] = f"{title}: original, adversarial and amplified difference"
            plot_adversarial(images[s["name"]], f"{title}\n{s['data']}", os.path.join(out_dir, name))
            files.append(name)
    for target in targets if pgd else ():
        shown = sorted((r for r in pgd if r["target"] == target and r["name"] in images),
                       key=lambda r: (r["epsilon"], r["num_steps"]))
        if shown:
            name = f"pgd_visible_{target}.png"
            rows = [(f"epsilon {r['epsilon']:g}, {r['num_steps']} steps: changed by {r['mean_change']:.0f} grey levels "
                     f"on average, at most {r['max_change']:.0f}", images[r["name"]][IMAGE_TAGS[1][0]]) for r in shown]
            captions[name] = f"The first val images and their adversarial versions against {target}"
            plot_visible(images[shown[0]["name"]][IMAGE_TAGS[0][0]], rows,
                         f"{target}: the first val images, then after each attack ({data_short_label(shown[0]['data'])})",
                         os.path.join(out_dir, name))
            files.append(name)
    evals = eval_rows([s for s in statuses if s["kind"] == "eval" and s["status"] == "finished"])
    if evals:
        write_table(out_dir, "eval", EVAL_COLUMNS, evals,
                    f"{provenance(evals)} main.py -e on each run's best checkpoint: val accuracy without and with "
                    "averaging the softmax of each image and its mirror image.")
        files += ["eval.csv", "eval.md"]
    summary = {"scale": scale, "data": sorted({s["data"] for s in statuses}), "statuses": statuses,
               "summaries": summaries, "pgd": pgd, "adv_robustness": adv, "eval": evals,
               "not_run": not_run_lines(statuses), "captions": captions, "files": sorted(files)}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def make_results(log_dir, out_dir, scales=SCALES):
    """make_scale for every scale in ``scales`` that has logs; returns {scale: summary}."""
    bench = os.path.join(out_dir, "conv_benchmark.md")
    done = {}
    for scale in scales:
        log_root = os.path.join(log_dir, scale)
        if os.path.isdir(log_root):
            done[scale] = make_scale(log_root, os.path.join(out_dir, scale), scale,
                                     bench if os.path.isfile(bench) else None)
    if not done:
        raise ValueError(f"no logs for {list(scales)} under {log_dir}: run python -m tools.run_experiments --demo first")
    return done


def main(argv=None):
    """Command line (see the module docstring); exit status 1 with a message on bad logs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", default=os.path.join(REPO_DIR, "logs"), help="folder holding <scale>/ logs")
    parser.add_argument("--out", default=os.path.join(REPO_DIR, "results"), help="results folder")
    parser.add_argument("--scale", choices=SCALES, nargs="+", default=SCALES, help="scales to process")
    args = parser.parse_args(argv)
    try:
        done = make_results(args.logs, args.out, args.scale)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    for scale, summary in done.items():
        print(f"=> {os.path.join(args.out, scale)}: {len(summary['files'])} files; "
              f"{len(summary['not_run'])} experiment(s) not finished")


if __name__ == "__main__":
    main()
