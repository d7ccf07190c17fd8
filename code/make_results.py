"""Turn the runs under logs/ into results/: curves, tables and PGD samples, per scale.

    python make_results.py                                  # ../logs/<scale> -> ../results/<scale>/
    python make_results.py --logs ../logs --out ../results --scale demo

Reads each experiment's status.json (written by run_experiments.py) and its TensorBoard
event files directly (no TensorBoard server). Writes into ``<out>/<scale>/``:

    curves_<name>.png            loss, learning rate, train/val top-1 and top-5 of one run
    compare_<group>.png / .md    overlaid curves and a table of a comparison group
    summary.csv / summary.md     best val top-1/top-5, epochs, time, images/s, peak memory
    conv_comparison.md           custom vs native conv runs, plus bench_conv.py's table
    pgd.csv / pgd.md             every attack; pgd_epsilon.md, pgd_steps.md, pgd_models.md
    pgd_samples_<name>.png       original / adversarial / difference images
    summary.json                 the same numbers as data, for writeup/build_report.py
"""
import argparse
import csv
import io
import json
import os
import statistics
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

from run_experiments import EXPERIMENTS, SCALES  # noqa: E402

COMPARISONS = (
    ("conv", "SimpleNet with nn.Conv2d vs CustomConv2d", ("conv-native", "conv-custom")),
    ("cnn", "SimpleNet, improved CNN and ResNet18", ("simplenet", "cnn", "resnet18")),
    ("vit", "SimpleViT, improved ViT and improved CNN", ("simplevit", "vit", "cnn")),
    ("adv", "SimpleNet: standard vs adversarial training", ("simplenet", "adv-simplenet")),
)
IMAGE_TAGS = (("Image/Org_Image", "original"), ("Image/Adv_Image", "adversarial"),
              ("Image/Diff_Image", "difference (amplified to full contrast)"))
MEMORY_NOTE = ("Peak memory: CUDA memory allocated on a GPU, the process's peak resident set size on "
               "a CPU (which includes the Python runtime and libraries).")
SUMMARY_COLUMNS = (
    ("name", "experiment", "{}"), ("part", "part", "{}"), ("epochs", "epochs", "{}"),
    ("best_top1", "best val top-1 (%)", "{:.2f}"), ("top5_at_best", "val top-5 at that epoch (%)", "{:.2f}"),
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
    ("num_steps", "steps", "{}"), ("clean_top1", "clean top-1 (%)", "{:.2f}"),
    ("clean_top5", "clean top-5 (%)", "{:.2f}"), ("acc1", "PGD top-1 (%)", "{:.2f}"),
    ("acc5", "PGD top-5 (%)", "{:.2f}"), ("drop_top1", "top-1 drop (points)", "{:.2f}"),
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
    as model_best); top5_at_best: val top-5 of that epoch; train_seconds: sum of the per-epoch
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
        "final_train_loss": last("data/train_loss"), "final_val_loss": last("data/val_loss"),
        "train_seconds": sum(seconds) if seconds else None,
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "images_per_second": statistics.median(speed) if speed else None,
        "peak_memory_mb": max(memory) if memory else None,
    }


def iteration_epochs(scalars, tag):
    """(epochs, values) of a per-iteration tag (step = global iteration) in epoch units."""
    last_epoch = scalars["data/top1_accuracy"][-1][0]
    iters_per_epoch = scalars["data/training_loss"][-1][0] / last_epoch
    return [s / iters_per_epoch for s, _ in scalars[tag]], [v for _, v in scalars[tag]]


def plot_series(ax, scalars, tag, label, **style):
    """Plot one tag's (step, value) pairs on ``ax`` when the run has it."""
    if tag in scalars:
        ax.plot(*zip(*scalars[tag]), label=label, **style)


def plot_curves(scalars, title, path):
    """Four panels of one run: losses, learning rate, train/val top-1, train/val top-5 (vs epoch)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    loss, lr, top1, top5 = axes.flat
    if "data/training_loss" in scalars:
        loss.plot(*iteration_epochs(scalars, "data/training_loss"), color="0.7", lw=0.8,
                  label="train (per print interval)")
    plot_series(loss, scalars, "data/train_loss", "train (epoch mean)", marker="o")
    plot_series(loss, scalars, "data/val_loss", "val", marker="s")
    if "data/learning_rate" in scalars:
        lr.plot(*iteration_epochs(scalars, "data/learning_rate"))
    for ax, k in ((top1, 1), (top5, 5)):
        plot_series(ax, scalars, f"data/train_top{k}_accuracy", "train", marker="o")
        plot_series(ax, scalars, f"data/top{k}_accuracy", "val", marker="s")
    for ax, name in zip(axes.flat, ("loss", "learning rate", "top-1 accuracy (%)", "top-5 accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overlay(runs, title, path):
    """Overlaid curves of several runs ({label: scalars}): losses, val top-1, val top-5 (vs epoch)."""
    fig, (loss, top1, top5) = plt.subplots(1, 3, figsize=(13, 4))
    for i, (label, scalars) in enumerate(runs.items()):
        color = f"C{i}"
        plot_series(loss, scalars, "data/train_loss", f"{label} train", color=color, marker="o")
        plot_series(loss, scalars, "data/val_loss", f"{label} val", color=color, ls="--", marker="s")
        plot_series(top1, scalars, "data/top1_accuracy", label, color=color, marker="s")
        plot_series(top5, scalars, "data/top5_accuracy", label, color=color, marker="s")
    for ax, name in ((loss, "loss"), (top1, "val top-1 accuracy (%)"), (top5, "val top-5 accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def crop_grid_rows(image, rows, cell=130, pad=2):
    """The first ``rows`` rows of a torchvision make_grid image of 128-pixel tiles (cell = tile +
    padding); the whole image when its size does not fit that layout."""
    height, width = image.shape[:2]
    if (width - pad) % cell or (height - pad) % cell or (height - pad) // cell <= rows:
        return image
    return image[:rows * cell + pad]


def plot_pgd_sweep(rows, key, xlabel, title, path):
    """PGD top-1 against ``key`` (epsilon or num_steps), one line per attacked model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for target in sorted({r["target"] for r in rows}):
        points = sorted((r[key], r["acc1"]) for r in rows if r["target"] == target and r[key] is not None)
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=target)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 under PGD (%)")
    ax.set_title(textwrap.fill(title, 80), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_adversarial(images, title, path, rows=3):
    """Original / adversarial / difference grids (from main.py's -a -v) stacked in one figure."""
    missing = [tag for tag, _ in IMAGE_TAGS if tag not in images]
    if missing:
        raise ValueError(f"the attack run has no image(s) {missing}; run main.py with -a -v")
    fig, axes = plt.subplots(3, 1, figsize=(10, 10))
    for ax, (tag, name) in zip(axes, IMAGE_TAGS):
        ax.imshow(crop_grid_rows(images[tag], rows))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cell(value, fmt):
    """``value`` formatted for a Markdown table ('n/a' for None)."""
    return "n/a" if value is None else fmt.format(value)


def provenance(rows):
    """One line naming the data and the hardware of ``rows`` (per experiment when they differ)."""
    data = sorted({r["data"] for r in rows})
    hardware = sorted({r["hardware"] for r in rows})
    hw = hardware[0] if len(hardware) == 1 else "; ".join(f"{r['name']}: {r['hardware']}" for r in rows)
    return f"Data: {'; '.join(data)}. Hardware: {hw}."


def write_table(out_dir, stem, columns, rows, caption):
    """``stem.csv`` (raw values, plus each row's data and hardware) and ``stem.md`` (caption line +
    formatted Markdown table)."""
    with open(os.path.join(out_dir, f"{stem}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([header for _, header, _ in columns] + ["data", "hardware"])
        writer.writerows([[r.get(key) for key, _, _ in columns] + [r.get("data"), r.get("hardware")] for r in rows])
    lines = [f"| {' | '.join(h for _, h, _ in columns)} |", f"|{'|'.join('---' for _ in columns)}|"]
    lines += [f"| {' | '.join(cell(r.get(k), fmt) for k, _, fmt in columns)} |" for r in rows]
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(f"{caption}\n\n" + "\n".join(lines) + "\n")


def not_run_lines(statuses):
    """Markdown bullets for the experiments that did not finish, with the reason."""
    return [f"- `{s['name']}` {s['status']}: {s['reason']}" for s in statuses if s["status"] != "finished"]


def conv_ratio(rows):
    """The custom / native ratio row of the conv comparison (time, speed, memory, loss)."""
    native, custom = rows
    ratio = {"name": "custom / native", "epochs": None}
    for key in ("best_top1", "top5_at_best", "seconds_per_epoch", "images_per_second", "peak_memory_mb",
                "final_train_loss"):
        ok = native.get(key) and custom.get(key) is not None
        ratio[key] = custom[key] / native[key] if ok else None
    return ratio


def pgd_rows(attacks, summaries):
    """One row per finished attack with the target's clean accuracy (its best epoch)."""
    rows = []
    for s in attacks:
        clean = summaries.get(s["target"], {})
        row = {k: s.get(k) for k in ("name", "target", "epsilon", "num_steps", "acc1", "acc5", "args")}
        row.update(clean_top1=clean.get("best_top1"), clean_top5=clean.get("top5_at_best"))
        row["drop_top1"] = row["clean_top1"] - row["acc1"] if row["clean_top1"] is not None else None
        row["data"], row["hardware"] = s["data"], s["hardware"]
        rows.append(row)
    return rows


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
        raise ValueError(f"no status.json under {log_root}: run python run_experiments.py --{scale} first")
    wrong = [s["name"] for s in statuses if s["demo_data"] != (scale == "demo")]
    if wrong:
        raise ValueError(f"{log_root} is the {scale} scale but {wrong} ran on other data; keep demo-set "
                         "runs under logs/demo and MiniPlaces runs under logs/full")
    train = [s for s in statuses if s["kind"] == "train"]
    scalars, summaries, files = {}, {}, []
    for s in train:
        if s["status"] == "finished":
            scalars[s["name"]] = read_scalars(os.path.join(log_root, s["name"], s["run_dir"]))
            summaries[s["name"]] = dict(summarize(scalars[s["name"]]), name=s["name"], part=s["part"],
                                        data=s["data"], hardware=s["hardware"], title=s["title"])
            plot_curves(scalars[s["name"]], f"{s['name']} ({s['title']})\n{s['data']}\n{s['hardware']}",
                        os.path.join(out_dir, f"curves_{s['name']}.png"))
            files.append(f"curves_{s['name']}.png")
    rows = [summaries[s["name"]] for s in train if s["name"] in summaries]
    if rows:
        write_table(out_dir, "summary", SUMMARY_COLUMNS, rows, f"{provenance(rows)} {MEMORY_NOTE}")
        files += ["summary.csv", "summary.md"]
    for group, title, names in COMPARISONS:
        members = [summaries[n] for n in names if n in summaries]
        if len(members) < 2:
            continue
        table = members + ([conv_ratio(members)] if group == "conv" and len(members) == 2 else [])
        write_table(out_dir, f"compare_{group}", COMPARE_COLUMNS, table, f"{provenance(members)} {MEMORY_NOTE}")
        plot_overlay({n: scalars[n] for n in names if n in scalars},
                     f"{title}\n{members[0]['data']}", os.path.join(out_dir, f"compare_{group}.png"))
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
    if pgd:
        caption = provenance(pgd) + " Clean accuracy: the attacked checkpoint's best val epoch."
        write_table(out_dir, "pgd", PGD_COLUMNS, pgd, caption)
        subsets = (("pgd_epsilon", "--attack-eps", "epsilon"), ("pgd_steps", "--attack-steps", "num_steps"),
                   ("pgd_models", None, "target"))
        step_sweeps = {(r["target"], r["epsilon"]) for r in pgd if "--attack-steps" in r["args"]}
        for stem, varied, key in subsets:
            others = {"--attack-eps", "--attack-steps"} - {varied}
            if stem == "pgd_steps":  # step rows, and the default-step rows at their epsilon
                keep = [r for r in pgd if "--attack-steps" in r["args"] or (r["target"], r["epsilon"]) in step_sweeps]
            else:
                keep = [r for r in pgd if not others & set(r["args"])]
            chosen = sorted(keep, key=lambda r: (r["target"], r[key] is None, r[key] or 0))
            if chosen:
                write_table(out_dir, stem, PGD_COLUMNS, chosen, caption)
                files += [f"{stem}.csv", f"{stem}.md"]
            if chosen and stem != "pgd_models":
                plot_pgd_sweep(chosen, key, key.replace("num_", "PGD ").replace("_", " "),
                               provenance(chosen), os.path.join(out_dir, f"{stem}.png"))
                files.append(f"{stem}.png")
        files += ["pgd.csv", "pgd.md"]
    for s in attacks:
        if s.get("run_dir"):
            images = read_images(os.path.join(log_root, s["name"], s["run_dir"]))
            title = (f"{s['name']}: PGD on {s['target']} (epsilon {cell(s['epsilon'], '{:g}')}, "
                     f"{cell(s['num_steps'], '{}')} steps), first val images\n{s['data']}")
            plot_adversarial(images, title, os.path.join(out_dir, f"pgd_samples_{s['name']}.png"))
            files.append(f"pgd_samples_{s['name']}.png")
    summary = {"scale": scale, "data": sorted({s["data"] for s in statuses}), "statuses": statuses,
               "summaries": summaries, "pgd": pgd, "not_run": not_run_lines(statuses), "files": sorted(files)}
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
        raise ValueError(f"no logs for {list(scales)} under {log_dir}: run python run_experiments.py --demo first")
    return done


def main(argv=None):
    """Command line (see the module docstring); exit status 1 with a message on bad logs."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", default=os.path.join(here, "logs"), help="folder holding <scale>/ logs")
    parser.add_argument("--out", default=os.path.join(here, "results"), help="results folder")
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
