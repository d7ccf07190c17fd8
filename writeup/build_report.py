"""Build writeup/writeup.pdf from writeup/writeup.md and results/, in one command.

    python writeup/build_report.py                        # from the repository root
    python writeup/build_report.py --results results --md writeup/writeup.md --pdf writeup/writeup.pdf

Rewrites every ``<!-- BEGIN generated: NAME -->`` ... ``<!-- END generated: NAME -->`` block
of the Markdown file from the files that code/make_results.py wrote (results/full for
MiniPlaces, results/demo for the demo set), from the files of run_experiments.py,
seed_study.py and bench_conv.py in results/, and from the code itself (model sizes, the
experiment table, main.py's flags), then renders the Markdown with its figures to PDF
(Markdown -> HTML -> fpdf2, fonts from matplotlib; no LaTeX). A scale without results gets a
placeholder that says which command measures it; demo-set numbers only ever appear under the
demo headings. Every sentence that states a measured outcome (faster or slower, ahead or
behind, more or less robust) is written here from the numbers it describes.
"""
import argparse
import collections
import csv
import functools
import html
import inspect
import json
import logging
import math
import os
import re
import shlex
import statistics
import sys
from dataclasses import dataclass

import markdown
import matplotlib
from fpdf import FPDF
from fpdf.fonts import FontFace, TextStyle
from PIL import Image

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_DIR = os.path.join(REPO_DIR, "code")
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)

import student_code  # noqa: E402
from make_results import MEMORY_NOTE  # noqa: E402
from run_experiments import EXPERIMENTS, at_scale, flag_value  # noqa: E402

BLOCK = re.compile(r"(<!-- BEGIN generated: ([a-z0-9-]+) -->\n).*?(<!-- END generated: \2 -->)", re.S)
SCALE_HEADINGS = (("full", "MiniPlaces"), ("demo", "Demo set (synthetic, not MiniPlaces)"))
PLACEHOLDERS = {
    "full": "*Not measured on MiniPlaces yet:* `python run_experiments.py --full` in `code/` (a GPU) fills this in.",
    "demo": "*Not run on the demo set yet:* `python run_experiments.py --demo` in `code/`.",
}
NO_RESULTS = "*No results yet:* see the end of the report."
FONT_DIR = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
PAGE_WIDTH_MM, MARGIN_MM = 210, 15  # A4
TEXT_WIDTH_PT = (PAGE_WIDTH_MM - 2 * MARGIN_MM) / 25.4 * 72
KEEP_TOGETHER_MM = 40  # a heading's section up to this tall moves whole to the next page
HEADING_ROOM_MM = 25  # a heading needs this much room below it on its page
NAMES = {"simplenet": "SimpleNet", "cnn": "the improved CNN", "resnet18": "ResNet18", "simplevit": "SimpleViT",
         "vit": "the improved ViT", "adv-simplenet": "the adversarially trained SimpleNet",
         "conv-native": "SimpleNet with nn.Conv2d", "conv-custom": "SimpleNet with CustomConv2d"}
BOOTSTRAP = re.compile(r"(\d+) images: (\S+) ([0-9.]+)%, (\S+) ([0-9.]+)%; difference ([+-][0-9.]+) points, "
                       r"95% paired-bootstrap interval \[([+-][0-9.]+), ([+-][0-9.]+)\]")
SEED_PROVENANCE = re.compile(r"Data: (.*?)\. Hardware: (.*?)\. (?:Code: .*?\. )?Top-1 is")
SEED_CODE = re.compile(r"Code: (.*?)\. Top-1 is")
SEED_CODE_PART = re.compile(r"([^;()]+?) \((\d+) runs?\)")
SEED_EPSILON = re.compile(r"PGD: epsilon ([0-9.]+)")


@dataclass
class Context:
    """What the generators read: ``results`` folder, the Markdown file's folder (figure links
    are relative to it) and each scale's summary.json ({scale: dict or None})."""
    results: str
    md_dir: str
    scales: dict


def load_results(results_dir):
    """{scale: summary.json dict or None}; raises ValueError when a scale holds the wrong data."""
    scales = {}
    for scale, _ in SCALE_HEADINGS:
        path = os.path.join(results_dir, scale, "summary.json")
        scales[scale] = None
        if os.path.isfile(path):
            with open(path) as f:
                scales[scale] = json.load(f)
            wrong = [s["name"] for s in scales[scale]["statuses"] if s["demo_data"] != (scale == "demo")]
            if wrong:
                raise ValueError(f"{path}: {wrong} ran on {'MiniPlaces' if scale == 'demo' else 'the demo set'}, "
                                 f"not on the data of the {scale} scale")
    return scales


# ---------------------------------------------------------------- small pieces of text


def name(row):
    """How the text names an experiment row ('the improved CNN'); the row name when unknown."""
    return NAMES.get(row, f"`{row}`")



def join_names(names):
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def direction(value, pivot, above, below, equal):
    """The word for ``value`` against ``pivot``: ``above``, ``below`` or ``equal``."""
    return above if value > pivot else below if value < pivot else equal


def images_of(points, n):
    """'3 of 200 images' for a difference of ``points`` percentage points on ``n`` images."""
    return f"{round(abs(points) * n / 100)} of {n} images"


def interval_words(b, mean, low, high):
    """Which way a 95% interval [low, high] of B - A points goes: B ahead, behind, or not
    clearly different (the interval holds zero)."""
    span = f"95% interval [{low:+.1f}, {high:+.1f}]"
    if low > 0:
        return f"{b} is ahead by {mean:.1f} points ({span}, above zero)"
    if high < 0:
        return f"{b} is behind by {-mean:.1f} points ({span}, below zero)"
    return f"{b} is not clearly different ({mean:+.1f} points, {span} holds zero)"


def md_table(columns, rows):
    """A Markdown table: ``columns`` are (header, function of the row -> text)."""
    lines = [f"| {' | '.join(h for h, _ in columns)} |", f"|{'|'.join('---' for _ in columns)}|"]
    lines += [f"| {' | '.join(str(get(r)) for _, get in columns)} |" for r in rows]
    return "\n".join(lines)


def rel(ctx, path):
    """``path`` (absolute) as the report names it: relative to the repository's results folder's
    parent, e.g. results/demo/eval.md."""
    return os.path.relpath(path, os.path.dirname(ctx.results))


# ---------------------------------------------------------------- reading results


def status_of(ctx, scale, row):
    """The status dict of experiment ``row`` at ``scale``, or None when it never ran."""
    return next((s for s in ctx.scales[scale]["statuses"] if s["name"] == row), None)


def summary_of(ctx, scale, row):
    """make_results.py's per-run numbers of a finished training row, or None."""
    return ctx.scales[scale]["summaries"].get(row)


def missing(ctx, scale, rows):
    """Bullets for the experiments of ``rows`` that have no result at ``scale``, with the reason."""
    lines = []
    for row in rows:
        s = status_of(ctx, scale, row)
        if s is None:
            lines.append(f"- `{row}`: not run at this scale yet")
        elif s["status"] != "finished":
            lines.append(f"- `{row}`: {s['status']}: {html.escape(s['reason'], quote=False)}")
    return "Not measured here:\n\n" + "\n".join(lines) if lines else ""


def placed_width_pt(path):
    """The width in points at which the report places the PNG at ``path``: its own size (pixels
    / dpi), at most the text width."""
    with Image.open(path) as image:
        dpi = round(image.info.get("dpi", (72, 72))[0])  # PNG stores pixels per metre: 150 dpi reads 150.01
        return min(TEXT_WIDTH_PT, image.width / dpi * 72)


def figure(ctx, scale, file):
    """Markdown for results/<scale>/<file> (alt text: its caption from summary.json) and a
    caption naming its file (the figure's title says what it shows), or '' when make_results.py
    did not write it."""
    if file not in ctx.scales[scale]["files"]:
        return ""
    caption = ctx.scales[scale]["captions"][file]
    path = os.path.join(ctx.results, scale, file)
    return f"![{caption}]({os.path.relpath(path, ctx.md_dir)})\n\n*Figure: `{rel(ctx, path)}`.*"


def bootstrap(ctx, scale, file):
    """compare_checkpoints.py's result in results/<scale>/<file> (written by run_experiments.py)
    as a dict, or None when the file is absent; ValueError when it does not read as one."""
    path = os.path.join(ctx.results, scale, file)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        m = BOOTSTRAP.search(f.read())
    if not m:
        raise ValueError(f"{path} does not hold a compare_checkpoints.py result")
    n, name_a, acc_a, name_b, acc_b, diff, low, high = m.groups()
    return {"path": path, "n": int(n), "a": name_a, "acc_a": float(acc_a), "b": name_b, "acc_b": float(acc_b),
            "diff": float(diff), "low": float(low), "high": float(high)}


def seed_studies(ctx, scale, a, b):
    """Every seed_study.py result of rows ``a`` and ``b`` at ``scale`` (results/<scale>/
    seeds_<a>_vs_<b>_e<EA>-<EB>.csv and .md) in order of (EA, EB): a list of dicts with the
    epochs, the seeds, each row's per-seed top-1 (``acc_a``, ``acc_b``), seed_study.summarize's
    numbers, the data and hardware the .md names and its path; with PGD columns also ``pgd``
    (their summary), ``pgd_a``, ``pgd_b`` and the attack's ``epsilon``."""
    import seed_study

    pattern = re.compile(rf"^seeds_{re.escape(a)}_vs_{re.escape(b)}_e(\d+)-(\d+)\.csv$")
    folder = os.path.join(ctx.results, scale)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    studies = []
    for ea, eb, file in sorted((int(m.group(1)), int(m.group(2)), n) for n in names if (m := pattern.match(n))):
        with open(os.path.join(folder, file)) as f:
            rows = list(csv.DictReader(f))
        md = os.path.join(folder, file[:-4] + ".md")
        with open(md) as f:
            text = f.read()
        m = SEED_PROVENANCE.search(text)
        if not m:
            raise ValueError(f"{md} does not name its data and hardware")
        acc_a, acc_b = ([float(r[f"{x}_top1"]) for r in rows] for x in (a, b))
        study = dict(seed_study.summarize(acc_a, acc_b), epochs=(ea, eb), seeds=[int(r["seed"]) for r in rows],
                     acc_a=acc_a, acc_b=acc_b, data=m.group(1), hardware=m.group(2), path=md)
        if rows and f"{a}_pgd_top1" in rows[0]:
            pgd_a, pgd_b = ([float(r[f"{x}_pgd_top1"]) for r in rows] for x in (a, b))
            study.update(pgd=seed_study.summarize(pgd_a, pgd_b), pgd_a=pgd_a, pgd_b=pgd_b,
                         epsilon=float(SEED_EPSILON.search(text).group(1)))
        studies.append(study)
    return studies


def row_flags(row, scale):
    """The main.py flags of experiment ``row`` at ``scale`` as a tuple (None when the row is not
    part of that scale's plan)."""
    flags = getattr(next(e for e in EXPERIMENTS if e.name == row), scale)
    return None if flags is None else tuple(flags)


def main_args(flags):
    """main.py's parsed arguments for ``flags`` (its defaults filled in)."""
    import main

    return main.get_args_parser().parse_args(["DATA", *flags])


def per_scale(ctx, render):
    """A section per scale that has results, headed by its name: ``render(scale)``'s parts (the
    provenance says once which scale has none); a placeholder when neither has any."""
    out = [f"#### {heading}\n\n" + "\n\n".join(p for p in render(scale) if p)
           for scale, heading in SCALE_HEADINGS if ctx.scales[scale]]
    return "\n\n".join(out) or NO_RESULTS



def build_model(kind):
    """A fresh 100-class model of ``kind``: 'cnn' (default_cnn_model), 'resnet18', 'simplenet',
    'simplevit' or 'vit' (default_vit_model)."""
    from torchvision.models import resnet18

    builders = {"cnn": student_code.default_cnn_model, "resnet18": resnet18, "simplenet": student_code.SimpleNet,
                "simplevit": student_code.SimpleViT, "vit": student_code.default_vit_model}
    return builders[kind](num_classes=100)


@functools.lru_cache(maxsize=None)
def model_size(kind):
    """(millions of parameters, forward GFLOPs of one 128x128 image) of build_model(kind),
    counted by torch's FlopCounterMode on the explicit attention path; None when student_code
    does not implement it yet. Cached: a build asks for each model's size once."""
    from bench_attention import forward_flops

    try:
        model = build_model(kind)
    except NotImplementedError:
        return None
    return sum(p.numel() for p in model.parameters()) / 1e6, forward_flops(model, 128) / 1e9


def model_sizes(kinds):
    """'SceneResNet 13.90M parameters, 1.68 GFLOPs; ...' for {kind: label}."""
    parts = []
    for kind, label in kinds.items():
        size = model_size(kind)
        parts.append(f"{label}: not implemented yet" if size is None else
                     f"{label} {size[0]:.2f}M parameters, {size[1]:.2f} GFLOPs")
    return f"Size, and forward cost per 128x128 image: {'; '.join(parts)}."


# ---------------------------------------------------------------- rules over numbers


def noise_points(acc, n):
    """The noise of an accuracy of ``acc`` % measured on ``n`` images, in points: one standard
    error of a proportion (100 * sqrt(p (1 - p) / n)), at least one image."""
    p = min(max(acc / 100, 0.0), 1.0)
    return max(100 * math.sqrt(p * (1 - p) / n), 100 / n)


def trend(values, noise):
    """The shape of a series of accuracies, by a rule over its own numbers: 'flat' when all lie
    within ``noise`` of each other; 'mixed' when it ends within noise of where it started, or
    goes back against its overall direction by more than noise; otherwise 'falls' or 'rises', and
    'falls, then levels off' / 'rises, then levels off' when its last two or more values lie
    within noise of each other and change per point less than a third as fast as before them."""
    if max(values) - min(values) <= noise:
        return "flat"
    change = values[-1] - values[0]
    if abs(change) <= noise:
        return "mixed"
    sign = 1 if change > 0 else -1
    best = values[0]
    for v in values[1:]:
        if sign * (best - v) > noise:  # went back against the overall direction by more than noise
            return "mixed"
        best = max(best, v) if sign > 0 else min(best, v)
    start = len(values) - 1  # the tail: the longest run of last values within noise of each other
    while start > 0 and max(values[start - 1:]) - min(values[start - 1:]) <= noise:
        start -= 1
    word = "rises" if sign > 0 else "falls"
    if start == len(values) - 1:
        return word
    before = abs(values[start] - values[0]) / start
    within = abs(values[-1] - values[start]) / (len(values) - 1 - start)
    return f"{word}, then levels off" if within < before / 3 else word


TREND_WORDS = {"flat": "stays flat within noise", "mixed": "goes up and down by more than noise, with no single trend"}


def trend_sentence(what, along, points, noise):
    """'Top-1 falls, then levels off as <along>: 69.0% at 1, ...' for ``points`` [(label,
    accuracy)], the shape picked by ``trend`` with ``noise``."""
    shape = trend([acc for _, acc in points], noise)
    return f"{what} {TREND_WORDS.get(shape, shape)} {along}: " + ", ".join(f"{a:.1f}% {x}" for x, a in points) + "."


def against_range(value, low, high, noise=0.0):
    """'above', 'below' or 'within' the range [low, high] widened by ``noise``."""
    return "above" if value > high + noise else "below" if value < low - noise else "within"


# ---------------------------------------------------------------- blocks


def study_code(ctx, scale):
    """The code versions that the seed studies of ``scale`` name ({version: runs})."""
    counts = collections.Counter()
    folder = os.path.join(ctx.results, scale)
    for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if file.startswith("seeds_") and file.endswith(".md"):
            with open(os.path.join(folder, file)) as f:
                m = SEED_CODE.search(f.read())
            for version, runs in (SEED_CODE_PART.findall(m.group(1)) if m else []):
                counts[version] += int(runs)
    return counts


def discussion(sentences):
    """The sentences that discuss a result as one paragraph."""
    return "**Discussion.** " + " ".join(t for t in sentences if t)


def gen_provenance(ctx):
    """Block 'provenance': one paragraph per scale: data, hardware, the commit of the code."""
    out = []
    for scale, heading in SCALE_HEADINGS:
        summary = ctx.scales[scale]
        if summary is None:
            out.append(f"**{heading}.** {PLACEHOLDERS[scale]}")
            continue
        plan = {e.name for e in at_scale(EXPERIMENTS, scale)}
        finished = [s for s in summary["statuses"] if s["status"] == "finished" and s["name"] in plan]
        hardware = sorted({s["hardware"] for s in finished})
        minutes = sum(s.get("seconds") or 0 for s in finished) / 60
        trained = [s for s in finished if not s.get("run_of")]
        codes = collections.Counter(s.get("code", "not recorded") for s in trained) + study_code(ctx, scale)
        if len(codes) == 1 and next(iter(codes)).startswith("commit "):
            code = f"every run used {next(iter(codes))}"
        else:
            code = ("the runs used different code (regenerate them from one commit): "
                    + "; ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in sorted(codes.items())))
        out.append(f"**{heading}.** Data: {'; '.join(summary['data'])}. Hardware: {'; '.join(hardware) or 'none'}. "
                   f"Code: {code}. {len(finished)} of {len(plan)} experiments finished ({minutes:.0f} min of "
                   "recorded run time, seed studies not counted); each one's flags and state: "
                   f"`{rel(ctx, os.path.join(ctx.results, scale, 'experiments.md'))}`.")
    return "\n\n".join(out)


def bench_rows(ctx):
    """bench_conv.py's whole-network rows (results/conv_benchmark.csv) and its hardware line."""
    path = os.path.join(ctx.results, "conv_benchmark.csv")
    if not os.path.isfile(path):
        return [], None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "network"]
    with open(path[:-4] + ".md") as f:
        hardware = re.search(r"^- hardware: (.*)$", f.read(), re.M)
    return rows, hardware.group(1) if hardware else "hardware in its file"


def conv_bench(ctx):
    """bench_conv.py's whole-network rows in one sentence: training-step and memory ratios."""
    rows, hardware = bench_rows(ctx)
    if not rows:
        return "*The convolution benchmark is not in `results/` yet:* run `python bench_conv.py` in `code/`."
    by_threads = collections.defaultdict(list)
    for r in rows:
        by_threads[r["threads"]].append(r)
    said = join_names(join_names(f"{float(r['train_ratio']):.2f} ({r['name']})" for r in group)
                      + f" at {t} thread{'s' * (t != '1')}" for t, group in by_threads.items())
    memory = sorted({f"{float(r['peak_ratio']):.2f}" for r in rows})
    return (f"The benchmark (`code/bench_conv.py`, {hardware}, batch 32) timed a training step of whole networks with "
            f"CustomConv2d at {said} times nn.Conv2d's time, with {' to '.join([memory[0], memory[-1]][:len(memory)])} "
            f"times its peak memory (every layer: `{rel(ctx, os.path.join(ctx.results, 'conv_benchmark.md'))}`).")


RUN_COLUMNS = (("experiment", lambda r: r["name"]), ("epochs", lambda r: r["epochs"]),
               ("best val top-1 (%)", lambda r: f"{r['best_top1']:.1f}"),
               ("s/epoch", lambda r: f"{r['seconds_per_epoch']:.0f}"),
               ("peak memory (MiB)", lambda r: f"{r['peak_memory_mb']:.0f}"))


def runs_table(ctx, scale, rows):
    """The finished training runs of ``rows`` as one compact table, with their data and hardware."""
    runs = [r for r in (summary_of(ctx, scale, row) for row in rows) if r]
    if not runs:
        return ""
    return f"One run each ({data_short(runs[0]['data'])}; {runs[0]['hardware']}):\n\n{md_table(RUN_COLUMNS, runs)}"


def gen_conv_results(ctx):
    """Block 'conv-results': the benchmark, then per scale the custom-vs-native runs and what they show."""
    runs = per_scale(ctx, lambda scale: [*conv_results(ctx, scale), *findings_conv(ctx, scale)])
    return f"{conv_bench(ctx)}\n\n{runs}"


def conv_results(ctx, scale):
    """The custom-vs-native runs at ``scale``: table, overlay, what is missing."""
    return [shared_note(ctx, scale, "conv-native"), runs_table(ctx, scale, ("conv-native", "conv-custom")),
            figure(ctx, scale, "compare_conv.png"), missing(ctx, scale, ("conv-native", "conv-custom"))]


def shared_note(ctx, scale, row):
    """'The nn.Conv2d run is the SimpleNet run of Part I.2.' when ``row``'s run is another row's."""
    s = status_of(ctx, scale, row)
    if not (s and s.get("run_of")):
        return ""
    return f"The {name(row)} run is the {name(s['run_of'])} run of Part I.2 (same flags and seed)."


def data_short(label):
    """A data label of run_experiments.describe_data in short: 'the demo set (10 classes, 1000
    train / 200 val images)' or 'MiniPlaces (...)'."""
    m = re.search(r"(\d+ classes, \d+ train / \d+ val images)", label)
    if not m:
        return label
    return f"{'the demo set' if label.startswith('demo set') else 'MiniPlaces'} ({m.group(1)})"


def not_shown(scale):
    """What a result at ``scale`` cannot say (the demo's limits are said once, at the top)."""
    return "" if scale == "demo" else "How much of each single-run difference the seed makes is not measured."


def simplenet_seeds(ctx, scale, epochs):
    """SimpleNet's per-seed best top-1 at ``epochs`` epochs from a seed study, or None."""
    for other in sorted({f.split("_vs_")[1].rsplit("_e", 1)[0] for f in os.listdir(os.path.join(ctx.results, scale))
                         if f.startswith("seeds_simplenet_vs_") and f.endswith(".csv")}):
        for study in seed_studies(ctx, scale, "simplenet", other):
            if study["epochs"][0] == epochs:
                return study["acc_a"]
    return None


def seed_range_words(accs):
    """'SimpleNet's 3 seeds at these epochs reach 80.5 to 84.0% (mean 82.3%)'."""
    return (f"SimpleNet's {len(accs)} seeds at these epochs reach {min(accs):.1f} to {max(accs):.1f}% "
            f"(mean {statistics.fmean(accs):.1f}%)")


def val_count(label):
    """The number of val images a data label names."""
    return int(re.search(r"(\d+) val images", label).group(1))


def findings_conv(ctx, scale):
    """Block 'findings-conv': speed (which measurement to trust), memory and accuracy, per scale."""
    native, custom = summary_of(ctx, scale, "conv-native"), summary_of(ctx, scale, "conv-custom")
    if not (native and custom):
        return [missing(ctx, scale, ("conv-native", "conv-custom"))]
    speed = custom["seconds_per_epoch"] / native["seconds_per_epoch"]
    text = [f"CustomConv2d took {speed:.2f} times nn.Conv2d's epoch time and "
            f"{custom['peak_memory_mb'] / native['peak_memory_mb']:.2f} times its peak memory."]
    bench, _ = bench_rows(ctx)
    ref = next((r for r in bench if r["name"] == "simplenet" and r["threads"] == "2"),
               next((r for r in bench if r["name"] == "simplenet"), None))
    if ref:
        ratio = float(ref["train_ratio"])
        run_way, bench_way = (direction(x, 1, "slower", "faster", "as fast") for x in (speed, ratio))
        agree = f"both say {bench_way}" if run_way == bench_way else "they disagree"
        text.append(f"The benchmark measured {ratio:.2f} for SimpleNet at {ref['threads']} "
                    f"thread{'s' * (ref['threads'] != '1')}: {agree}. We trust the benchmark, which alternates "
                    "both on the same inputs, over two single runs made at different times on a shared machine.")
    diff = custom["best_top1"] - native["best_top1"]
    accs = simplenet_seeds(ctx, scale, native["epochs"])
    asked = int(flag_value(row_flags("conv-custom", "full"), "--epochs"))
    budget = (f" (the assignment asks for {asked}; the demo's CPU budget fits {native['epochs']})"
              if native["epochs"] < asked else "")
    acc = (f"Best val top-1 is {custom['best_top1']:.1f}% with CustomConv2d and {native['best_top1']:.1f}% with "
           f"nn.Conv2d after {native['epochs']} epochs{budget}. Both compute the same function up to rounding, which "
           "training amplifies like a change of seed")
    if accs:
        where = against_range(custom["best_top1"], min(accs), max(accs))
        acc += (f"; {seed_range_words(accs)}, and the CustomConv2d run lies {where} that range"
                + (", as expected." if where == "within" else ", more than seeds alone explain."))
    else:
        noise = noise_points(native["best_top1"], val_count(native["data"]))
        acc += (f", and the {abs(diff):.1f}-point gap is {'within' if abs(diff) <= 2 * noise else 'beyond'} "
                f"twice the noise of one run ({noise:.1f} points).")
    text += [acc, not_shown(scale)]
    return [discussion(text)]


def scheme_line(ctx, scale, rows):
    """'epochs: SimpleNet 5, the improved CNN 2; batch 32, learning rate 0.05 (ResNet18: 0.01),
    warm-up epochs 1, weight decay 0.0001.' from the main.py flags each row ran with at ``scale``
    (its plan's flags when it has not run): each setting's most common value, and the rows that
    differ from it."""
    parsed = {}
    for row in rows:
        ran = status_of(ctx, scale, row) if ctx.scales[scale] else None
        flags = tuple(ran["args"]) if ran and ran["status"] == "finished" else row_flags(row, scale)
        if flags is not None:
            parsed[row] = vars(main_args(flags))
    epochs = join_names(f"{name(row)} {a['epochs']}" for row, a in parsed.items())
    settings = []
    for key, words in (("batch_size", "batch {}"), ("lr", "learning rate {:g}"), ("warmup", "warm-up epochs {}"),
                       ("weight_decay", "weight decay {:g}")):
        common = collections.Counter(a[key] for a in parsed.values()).most_common(1)[0][0]
        odd = [f"{name(row)}: {words.format(a[key]).split()[-1]}" for row, a in parsed.items() if a[key] != common]
        settings.append(words.format(common) + (f" ({'; '.join(odd)})" if odd else ""))
    return f"epochs: {epochs}; {', '.join(settings)}."


def gen_cnn_scheme(ctx):
    """Block 'cnn-scheme': epochs and the main hyper-parameters per scale."""
    return scheme_block(ctx, ("simplenet", "cnn", "resnet18"))


def scheme_block(ctx, rows):
    """The scheme line of ``rows`` for each scale that has results (both when neither has)."""
    scales = [(s, h) for s, h in SCALE_HEADINGS if ctx.scales[s]] or SCALE_HEADINGS
    return "\n".join(f"- {heading}: {scheme_line(ctx, scale, rows)}" for scale, heading in scales)


def gen_cnn_design(ctx):
    """Block 'cnn-design': default_cnn_model's, ResNet18's and SimpleNet's size and cost."""
    return model_sizes({"cnn": f"`{student_code.default_cnn_model.__name__}` (default_cnn_model)",
                        "resnet18": "ResNet18", "simplenet": "SimpleNet"})


def seed_table(studies, a, b):
    """The seed studies of rows ``a`` and ``b`` as one table, one study per row."""
    return md_table((
        (f"epochs ({a} / {b})", lambda s: f"{s['epochs'][0]} / {s['epochs'][1]}"), ("seeds", lambda s: s["n"]),
        (f"mean top-1 (%, {a} / {b})", lambda s: f"{s['mean_a']:.1f} / {s['mean_b']:.1f}"),
        (f"{b} - {a} (points)", lambda s: f"{s['mean_diff']:+.1f}"),
        ("95% t-interval", lambda s: t_interval(s).split("seeds ")[-1])),
        studies)


def comparison_results(ctx, scale, a, b, group, rows):
    """The results of a comparison group: table, overlay, seed studies, what is missing."""
    parts = [runs_table(ctx, scale, rows), figure(ctx, scale, f"compare_{group}.png")]
    studies = seed_studies(ctx, scale, a, b)
    if studies:
        parts += [f"Several seeds (`code/seed_study.py`):", seed_table(studies, a, b)]
    parts.append(missing(ctx, scale, rows))
    return parts


def gen_cnn_results(ctx):
    """Block 'cnn-results': SimpleNet vs improved CNN vs ResNet18 per scale, and what they show."""
    return per_scale(ctx, lambda scale: [
        *comparison_results(ctx, scale, "simplenet", "cnn", "cnn", ("simplenet", "cnn", "resnet18")),
        *comparison_findings(ctx, scale, "simplenet", "cnn", "ci_cnn.md", ("resnet18",))])


def seed_sentence(studies, a, b):
    """One sentence over every seed study of ``a`` and ``b``: at which budgets B is ahead,
    behind, or not clearly different."""
    if not studies:
        return ""
    groups = {"ahead": [], "behind": [], "unclear": []}
    for s in studies:
        key = ("unclear" if s["interval"] is None or s["interval"][0] <= 0 <= s["interval"][1]
               else "ahead" if s["interval"][0] > 0 else "behind")
        groups[key].append(f"{s['epochs'][0]} / {s['epochs'][1]} epochs ({s['mean_diff']:+.1f} points)")
    said = [f"{words} at {join_names(budgets)}" for words, budgets in (
        ("ahead with an interval above zero", groups["ahead"]),
        ("behind with an interval below zero", groups["behind"]),
        ("not clearly ahead or behind (the interval holds zero)", groups["unclear"])) if budgets]
    return (f"Over {studies[0]['n']} seeds per budget (epochs of {name(a)} / {name(b)}), {name(b)} is "
            f"{join_names(said)}; we trust these over the single runs.")


def comparison_findings(ctx, scale, a, b, ci_file, extra=()):
    """Findings of row ``b`` against baseline ``a`` (and ``extra`` rows for reference)."""
    ra, rb = summary_of(ctx, scale, a), summary_of(ctx, scale, b)
    if not (ra and rb):
        return [missing(ctx, scale, (a, b))]
    runs = [r for r in (ra, rb, *(summary_of(ctx, scale, e) for e in extra)) if r]
    best = max(runs, key=lambda r: r["best_top1"])
    text = [f"Highest best val top-1 of these runs: {name(best['name'])} ({best['best_top1']:.1f}%)."]
    ci = bootstrap(ctx, scale, ci_file)
    if ci:
        text.append(f"Redrawing the val images with replacement and scoring both models on each draw "
                    f"(`{rel(ctx, ci['path'])}`), {interval_words(name(b), ci['diff'], ci['low'], ci['high'])}; that "
                    "interval covers only which images were drawn, not the training seed.")
    accs = simplenet_seeds(ctx, scale, ra["epochs"]) if a == "simplenet" else None
    if accs:
        where = against_range(rb["best_top1"], min(accs), max(accs))
        text.append(f"{seed_range_words(accs)}; we trust that range over the single SimpleNet run, which is one of "
                    f"those seeds, and the improved CNN's run lies {where} it.")
    cost = ra["images_per_second"] / rb["images_per_second"]
    text.append(f"A training image cost {name(b)} {cost:.1f} times what it cost {name(a)}.")
    if ra["epochs"] != rb["epochs"]:
        minutes = [r["epochs"] * r["seconds_per_epoch"] / 60 for r in (rb, ra)]
        text.append(f"{name(b)[0].upper()}{name(b)[1:]} trained {rb['epochs']} epochs against {name(a)}'s "
                    f"{ra['epochs']} ({minutes[0]:.1f} against {minutes[1]:.1f} minutes), so these are results of "
                    "one budget, not of training to the end.")
    text.append(seed_sentence(seed_studies(ctx, scale, a, b), a, b))
    text.append(not_shown(scale))
    return [discussion(text)]


def gen_vit_design(ctx):
    """Block 'vit-design': SimpleViT's and default_vit_model's size and cost."""
    return model_sizes({"simplevit": "`SimpleViT`",
                        "vit": f"`{student_code.default_vit_model.__name__}` (default_vit_model)"})


def gen_vit_scheme(ctx):
    """Block 'vit-scheme': epochs and the main hyper-parameters per scale."""
    return scheme_block(ctx, ("simplevit", "vit"))


def gen_vit_results(ctx):
    """Block 'vit-results': SimpleViT vs improved ViT (vs the improved CNN) per scale, and what they show."""
    return per_scale(ctx, lambda scale: [
        *comparison_results(ctx, scale, "simplevit", "vit", "vit", ("simplevit", "vit", "cnn")),
        *comparison_findings(ctx, scale, "simplevit", "vit", "ci_vit.md", ("cnn",))])


def attack_default(key):
    """A default of student_code.default_attack (epsilon, num_steps, ...)."""
    return inspect.signature(student_code.default_attack).parameters[key].default


def scale_epsilon(scale):
    """The epsilon of a scale's main attack (pgd-simplenet): the demo's own, else the default."""
    eps = flag_value(row_flags("pgd-simplenet", scale), "--attack-eps")
    return float(eps) if eps is not None else attack_default("epsilon")


def gen_pgd_design(ctx):
    """Block 'pgd-design': the attack's defaults and the demo's epsilon."""
    eps, steps, step = (attack_default(k) for k in ("epsilon", "num_steps", "step_size"))
    demo = scale_epsilon("demo")
    return (f"`default_attack`: {steps} steps of {step:g}, epsilon {eps:g}, no random start. The demo attacks use "
            f"epsilon {demo:g} (step size scaled alike): the demo images carry pixel noise of 18/255, three times "
            f"the default epsilon, which then barely moves a prediction.")


def attacks_on(ctx, scale, target):
    """make_results.py's PGD rows of one attacked model, by steps then epsilon."""
    return sorted((r for r in ctx.scales[scale]["pgd"] if r["target"] == target),
                  key=lambda r: (r["num_steps"], r["epsilon"]))


def pgd_table(rows):
    """The attacks of ``rows`` as one compact table."""
    return md_table((
        ("epsilon", lambda r: f"{r['epsilon']:g}"), ("steps", lambda r: r["num_steps"]),
        ("step size", lambda r: f"{r['step_size']:g}"), ("PGD top-1 (%)", lambda r: f"{r['acc1']:.1f}"),
        ("drop (points)", lambda r: f"{r['drop_top1']:+.1f}")), rows)


def pgd_results(ctx, scale):
    """Block 'pgd-results': SimpleNet under every attack, the sweeps and the sample images."""
    attacks = [e.name for e in EXPERIMENTS if e.target == "simplenet" and e.demo and "-a" in e.demo]

    rows = attacks_on(ctx, scale, "simplenet")
    if not rows:
        return [missing(ctx, scale, ("simplenet", *attacks))]
    r = rows[0]
    return [f"SimpleNet's best checkpoint ({r['clean_top1']:.1f}% clean top-1; {data_short(r['data'])}; "
            f"{r['hardware']}) under each attack:", pgd_table(rows), figure(ctx, scale, "pgd_epsilon.png"),
            figure(ctx, scale, "pgd_steps.png"), figure(ctx, scale, "pgd_samples_pgd-simplenet.png"),
            missing(ctx, scale, attacks)]


def findings_pgd(ctx, scale):
    """Block 'findings-pgd': what the attacks on SimpleNet show, per scale, trends by rule."""
    rows = attacks_on(ctx, scale, "simplenet")
    if not rows:
        return [missing(ctx, scale, ("pgd-simplenet",))]
    clean, n = rows[0]["clean_top1"], rows[0]["val_images"]
    noise = noise_points(clean, n)
    text = []
    accs = simplenet_seeds(ctx, scale, summary_of(ctx, scale, "simplenet")["epochs"])
    if accs:
        where = against_range(clean, min(accs), max(accs))
        text.append(f"{seed_range_words(accs)}; the attacked checkpoint ({clean:.1f}% clean) lies {where} that "
                    f"range, so it is {'a' if where == 'within' else 'not a'} typical SimpleNet.")
    text.append(f"One standard error of top-1 on these {n} images, our noise level, is {noise:.1f} points.")
    eps, steps = scale_epsilon(scale), attack_default("num_steps")
    main_row = next((r for r in rows if r["epsilon"] == eps and r["num_steps"] == steps), None)
    if main_row:
        drop = main_row["drop_top1"]
        text.append(f"At epsilon {eps:g} with {steps} steps top-1 is {main_row['acc1']:.1f}% against {clean:.1f}% "
                    + (f"clean: the attack visibly lowers accuracy ({images_of(drop, n)})." if drop > 2 * noise else
                       "clean, within twice the noise: the attack barely works here."))
    sweep = sorted((r for r in rows if r["num_steps"] == steps), key=lambda r: r["epsilon"])
    if len(sweep) > 2:
        text.append(trend_sentence("Top-1", "as epsilon grows", [(f"at {r['epsilon']:g}", r["acc1"])
                                                                  for r in sweep], noise))
    along = sorted((r for r in rows if r["epsilon"] == eps), key=lambda r: r["num_steps"])
    if len(along) > 2:
        text.append(trend_sentence(f"At epsilon {eps:g}, top-1", "with more steps",
                                   [(f"after {r['num_steps']}", r["acc1"]) for r in along], noise))
        fewest, step = along[0]["num_steps"], along[0]["step_size"]
        if all(math.isclose(r["step_size"], step) for r in along):
            steps_reach = "1 step reaches" if fewest == 1 else f"{fewest} steps reach"
            text.append(f"Each step moves a pixel by at most {step:g}, so {steps_reach} only {fewest * step:g} "
                        f"of the {eps:g} allowed.")
    course = next((r for r in sweep if r["epsilon"] == attack_default("epsilon")), None)
    if scale == "demo" and course and course is not main_row and course["drop_top1"] <= 2 * noise:
        text.append(f"At the course's epsilon {course['epsilon']:g} the drop ({course['drop_top1']:+.1f} points) is "
                    "within noise: the demo images' pixel noise is three times that epsilon.")
    return [discussion(text)]


def adv_flags(scale):
    """'half of every batch, 1 PGD step, epsilon 0.5' from adv-simplenet's flags at ``scale``."""
    a = main_args(row_flags("adv-simplenet", scale))
    return f"{a.adv_train:.0%} of every batch, {a.adv_steps} PGD step{'s' * (a.adv_steps != 1)}, epsilon {a.adv_eps:g}"


def gen_adv_design(ctx):
    """Block 'adv-design': the adversarial-training settings per scale."""
    scales = [(s, h) for s, h in SCALE_HEADINGS if ctx.scales[s]] or SCALE_HEADINGS
    return "Adversarial samples (`--adv-train`, `--adv-steps`, `--adv-eps`): " + "; ".join(
        f"{heading}: {adv_flags(scale)}" for scale, heading in scales) + "."


def adv_study(ctx, scale):
    """The seed study of the standard and the adversarially trained SimpleNet with PGD columns
    (the one with the most seeds), or None."""
    studies = [s for s in seed_studies(ctx, scale, "simplenet", "adv-simplenet") if s.get("pgd")]
    return max(studies, key=lambda s: s["n"]) if studies else None


def adv_results(ctx, scale):
    """Block 'adv-results': standard vs adversarial training over seeds, clean and under PGD."""
    study = adv_study(ctx, scale)
    parts = []
    if study:
        eps = study["epsilon"]
        parts += [f"Per seed, best val top-1 clean and under PGD (epsilon {eps:g}, {attack_default('num_steps')} "
                  f"steps), standard / adversarially trained SimpleNet ({data_short(study['data'])}; "
                  f"{study['hardware']}; `{rel(ctx, study['path'])}`):",
                  md_table((("seed", lambda r: r[0]), ("clean top-1 (%)", lambda r: f"{r[1]:.1f} / {r[2]:.1f}"),
                            ("PGD top-1 (%)", lambda r: f"{r[3]:.1f} / {r[4]:.1f}")),
                           list(zip(study["seeds"], study["acc_a"], study["acc_b"], study["pgd_a"], study["pgd_b"])))]
    elif ctx.scales[scale]["adv_robustness"]:
        adv = ctx.scales[scale]["adv_robustness"]
        parts += ["One run each, clean and under the same attacks (top-1, %, standard / adversarially trained):",
                  md_table((("epsilon", lambda r: f"{r['epsilon']:g}"), ("steps", lambda r: r["num_steps"]),
                            ("clean", lambda r: f"{r['std_clean']:.1f} / {r['adv_clean']:.1f}"),
                            ("PGD", lambda r: f"{r['std_pgd']:.1f} / {r['adv_pgd']:.1f}")), adv)]
    parts += [figure(ctx, scale, "compare_adv.png"),
              missing(ctx, scale, ("adv-simplenet", "pgd-adv-simplenet"))]
    return parts


def findings_adv(ctx, scale):
    """Block 'findings-adv': the robustness difference with its interval over seeds, per scale."""
    std, robust = summary_of(ctx, scale, "simplenet"), summary_of(ctx, scale, "adv-simplenet")
    study = adv_study(ctx, scale)
    if not (std and robust and (study or ctx.scales[scale]["adv_robustness"])):
        return [missing(ctx, scale, ("simplenet", "adv-simplenet", "pgd-adv-simplenet"))]
    cost = robust["seconds_per_epoch"] / std["seconds_per_epoch"]
    if study:
        pgd, spread = study["pgd"], max(study["pgd_a"]) - min(study["pgd_a"])
        wider = spread > abs(pgd["mean_diff"])
        text = [f"Over {study['n']} seeds, under PGD at epsilon {study['epsilon']:g} the adversarially trained "
                f"SimpleNet keeps {pgd['mean_b']:.1f}% on average against {pgd['mean_a']:.1f}%: "
                f"{robust_words(pgd)}.",
                f"Clean, it reaches {study['mean_b']:.1f}% against {study['mean_a']:.1f}% "
                f"({study['mean_diff']:+.1f} points, {t_interval(study)}).",
                f"Under attack the standard network's seeds spread over {spread:.1f} points, "
                f"{'more' if wider else 'less'} than the {abs(pgd['mean_diff']):.1f}-point difference, so "
                + ("one seed each could have shown either sign; we trust the paired mean over the seeds." if wider
                   else "a single seed would have shown the same sign.")]
    else:
        s = max(ctx.scales[scale]["adv_robustness"], key=lambda r: (r["epsilon"], r["num_steps"]))
        text = [f"With one run each, under PGD at epsilon {s['epsilon']:g} the adversarially trained SimpleNet keeps "
                f"{s['adv_pgd']:.1f}% against {s['std_pgd']:.1f}% ({s['gain']:+.1f} points); without several seeds "
                "we cannot tell that difference from seed noise."]
    text.append(f"An epoch of adversarial training took {cost:.1f} times as long. It was trained and attacked with "
                "the same targeted PGD, so robustness against other attacks is not shown."
                + (" " + not_shown(scale) if scale == "demo" else ""))
    return [discussion(text)]


def t_interval(s):
    """'95% t-interval over the seeds [-1.0, +3.0]' of a seed_study.summarize dict."""
    return (f"95% t-interval over the seeds [{s['interval'][0]:+.1f}, {s['interval'][1]:+.1f}]" if s["interval"]
            else "no interval from one seed")


def robust_words(s):
    """Which way the paired PGD difference over seeds goes, with its t-interval."""
    low, high = s["interval"] if s["interval"] else (float("-inf"), float("inf"))
    span = t_interval(s)
    if low > 0:
        return f"more robust by {s['mean_diff']:.1f} points ({span}, above zero)"
    if high < 0:
        return f"less robust by {-s['mean_diff']:.1f} points ({span}, below zero)"
    return f"not clearly more or less robust ({s['mean_diff']:+.1f} points, {span} holds zero)"


def gen_pgd_results(ctx):
    """Block 'pgd-results': SimpleNet under every attack per scale, and what it shows."""
    return per_scale(ctx, lambda scale: [*pgd_results(ctx, scale), *findings_pgd(ctx, scale)])


def gen_adv_results(ctx):
    """Block 'adv-results': standard vs adversarial training per scale, and what it shows."""
    return per_scale(ctx, lambda scale: [*adv_results(ctx, scale), *findings_adv(ctx, scale)])


def gen_provided_changes(ctx):
    """Block 'provided-changes': each provided class, function, method or file we changed or removed
    (code/tools/provided_changes.py) with its reason (writeup/provided_changes.md), what we added to
    each provided file, and main.py's flags beyond the course's (explained by its --help); lists
    rather than tables, so that no name is broken across a cell's lines. Raises ValueError when a
    changed name has no reason or a reason names nothing that changed."""
    import ast as ast_
    import main
    from tools.provided_changes import RELEASE_DIR, provided_changes, provided_files, read_reasons

    changes, reasons = list(provided_changes()), read_reasons()
    changed = {c.key for c in changes if c.kind != "added"}
    if changed != set(reasons):
        raise ValueError(f"writeup/provided_changes.md: no reason for {sorted(changed - set(reasons))}, "
                         f"a reason for what did not change: {sorted(set(reasons) - changed)}")
    text = ["What we changed or removed of the course's release, and why: `code/tools/provided_changes.py` lists it by "
            "comparing syntax trees with the release (kept in `code/tests/course_release/`), so formatting and "
            "comments do not count; `module.C.m` is a method, `module.C` the rest of its class; the reasons are "
            "`writeup/provided_changes.md`. All else is as provided, `CustomConv2d` token for token. SimpleViT, the "
            "graded model, runs `Attention`'s formula; only the improved ViT opts in to PyTorch's fused "
            "`F.scaled_dot_product_attention`, and a test checks that both agree."]
    with open(os.path.join(RELEASE_DIR, "code", "main.py"), encoding="utf-8") as f:
        course_flags = {arg.value for node in ast_.walk(ast_.parse(f.read()))
                        if isinstance(node, ast_.Call) and getattr(node.func, "attr", "") == "add_argument"
                        for arg in node.args if isinstance(arg, ast_.Constant)}
    files = provided_files()
    unchanged = [f"`{f}`" for f in files if not any(c.file == f and c.kind != "added" for c in changes)]
    text.append("\n".join(f"- `{c.key}`: {reasons[c.key]}" for c in changes if c.kind != "added"))
    text.append(f"Nothing changed, at most added to: {', '.join(unchanged)}. Added to each provided file:")
    text.append("\n".join(f"- `{f}`: {', '.join(f'`{c.name}`' for c in changes if c.file == f and c.kind == 'added')}"
                          for f in files if any(c.file == f and c.kind == "added" for c in changes)))
    flags = [o for a in main.get_args_parser()._actions for o in a.option_strings if o not in course_flags
             and a.help != "show this help message and exit"]
    text.append(f"main.py's flags beyond the course's, each explained by `python main.py --help`: "
                f"{', '.join(f'`{o}`' for o in flags)}.")
    return "\n\n".join(text)


GENERATORS = {
    "conv-results": gen_conv_results, "cnn-design": gen_cnn_design, "cnn-scheme": gen_cnn_scheme,
    "cnn-results": gen_cnn_results, "vit-design": gen_vit_design, "vit-scheme": gen_vit_scheme,
    "vit-results": gen_vit_results, "pgd-design": gen_pgd_design, "pgd-results": gen_pgd_results,
    "adv-design": gen_adv_design, "adv-results": gen_adv_results, "provenance": gen_provenance,
    "provided-changes": gen_provided_changes,
}


def fill(template, ctx):
    """The Markdown with every generated block rewritten; ValueError on an unknown block name."""
    unknown = sorted(set(m.group(2) for m in BLOCK.finditer(template)) - set(GENERATORS))
    if unknown:
        raise ValueError(f"unknown generated block(s) {unknown}; known: {sorted(GENERATORS)}")
    return BLOCK.sub(lambda m: f"{m.group(1)}{GENERATORS[m.group(2)](ctx).strip()}\n{m.group(3)}", template)


# ---------------------------------------------------------------- PDF


def layout_table(table_html):
    """An HTML table with left-aligned rows and each <th> given width="N%" by the longest
    header word / cell of its column."""
    rows = re.findall(r"<tr>(.*?)</tr>", table_html, re.S)
    cells = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)] for r in rows]
    width = [0] * len(cells[0])
    for r, row in enumerate(cells):
        for i, text in enumerate(row[:len(width)]):
            words = text.split() if r == 0 else [text]
            longest = max((len(w) for w in words), default=1) * (1.2 if r == 0 else 1)  # headers are bold
            width[i] = max(width[i], min(40, longest) + 2)
    shares = iter(round(100 * w / sum(width), 1) for w in width)
    table_html = re.sub(r"<th(\s[^>]*)?>", lambda m: f'<th width="{next(shares)}%"{m.group(1) or ""}>', table_html,
                        count=len(width))
    return table_html.replace("<tr>", '<tr align="left">')


class RaiseOnWarning(logging.Handler):
    """Turns fpdf2's warnings about the HTML (unmatched tags, ignored attributes) into errors."""

    def emit(self, record):
        raise ValueError(f"the report's HTML does not render cleanly: {record.getMessage()}")


class ReportPDF(FPDF):
    """A4 pages with the page number at the bottom."""

    def footer(self):
        self.set_y(-12)
        self.set_font("dejavu", size=8)
        self.cell(0, 8, str(self.page_no()), align="C")


def heading_sections(html_text):
    """``html_text`` cut before each heading that follows text: every piece but the first starts
    with its headings (a heading directly above another stays with it) and holds their text."""
    sections = []
    for part in re.split(r"(?=<h[1-4][ >])", html_text):
        if sections and not re.sub(r"<h([1-4])[ >].*?</h\1>|<!--.*?-->|\s", "", sections[-1], flags=re.S):
            sections[-1] += part  # headings only so far: keep them with what follows
        else:
            sections.append(part)
    return sections


def keep_with_heading(pdf, section, write):
    """Start a new page before ``section`` (headings and their text up to the next heading) when
    writing it would break the page and it is short (at most KEEP_TOGETHER_MM), or when its
    heading would end the page with less than HEADING_ROOM_MM of room below it. ``write(target,
    html)`` renders onto ``pdf`` or onto the dummy of ``pdf.offset_rendering()``."""
    room = pdf.page_break_trigger - pdf.y
    if not section.startswith("<h") or pdf.y <= pdf.t_margin + 1 or room >= KEEP_TOGETHER_MM:
        return  # with this much room, a section that breaks is taller than KEEP_TOGETHER_MM
    start_page, start_y = pdf.page, pdf.y
    with pdf.offset_rendering() as dummy:
        write(dummy, section)
        height = dummy.y - start_y + (dummy.page - start_page) * pdf.eph  # mm, whole pages as text heights
    if dummy.page_break_triggered and (height <= KEEP_TOGETHER_MM or room < HEADING_ROOM_MM):
        pdf.add_page()


def render_pdf(text, md_dir, pdf_path):
    """Markdown -> HTML -> PDF with each figure centred at placed_width_pt.

    Emphasis (*text*) renders grey, not italic: fpdf2 2.8.9 carries an italic style into the
    cells of every later table."""
    page = markdown.markdown(text, extensions=["tables", "fenced_code"])
    page = re.sub(r"<table>.*?</table>", lambda m: layout_table(m.group(0)), page, flags=re.S)
    pdf = ReportPDF(format="A4")
    pdf.set_title("MiniPlaces scene recognition: report")
    for style, suffix in (("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")):
        pdf.add_font("dejavu", style, os.path.join(FONT_DIR, f"DejaVuSans{suffix}.ttf"))
        pdf.add_font("dejavumono", style, os.path.join(FONT_DIR, f"DejaVuSansMono{suffix}.ttf"))
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("dejavu", size=9)
    if abs(pdf.epw * pdf.k - TEXT_WIDTH_PT) > 0.01:
        raise ValueError(f"the page's text width is {pdf.epw * pdf.k:.1f} pt, not TEXT_WIDTH_PT {TEXT_WIDTH_PT:.1f}")
    page = re.sub(r'<p><img alt="[^"]*" src="([^"]+)" /></p>',  # fpdf2 reads <img width> in points
                  lambda m: f'<br><p align="center"><img src="{m.group(1)}" '
                            f'width="{placed_width_pt(os.path.join(md_dir, m.group(1))):.1f}"></p>', page)
    heading = {f"h{i}": TextStyle(font_family="dejavu", font_style="B", font_size_pt=size, color="#1f3b63",
                                  t_margin=top, b_margin=1)
               for i, size, top in ((1, 17, 2), (2, 14, 5), (3, 11.5, 3), (4, 10, 2))}
    styles = dict(heading, code=FontFace(family="dejavumono", size_pt=8), em=FontFace(color="#555555"),
                  pre=TextStyle(font_family="dejavumono", font_size_pt=7.5, t_margin=2, b_margin=2))
    logger, handler = logging.getLogger("fpdf"), RaiseOnWarning(logging.WARNING)
    logger.addHandler(handler)
    def write(target, html_text):
        target.write_html(html_text, tag_styles=styles, image_map=lambda src: os.path.join(md_dir, src),
                          table_line_separators=True)

    try:
        for section in heading_sections(page):
            keep_with_heading(pdf, section, write)
            write(pdf, section)
    finally:
        logger.removeHandler(handler)
    pdf.output(pdf_path)


def build(results_dir, md_path, pdf_path):
    """Rewrite the generated blocks of ``md_path`` from ``results_dir`` and render ``pdf_path``;
    returns the new Markdown text."""
    with open(md_path) as f:
        template = f.read()
    md_dir = os.path.dirname(os.path.abspath(md_path))
    ctx = Context(results=os.path.abspath(results_dir), md_dir=md_dir, scales=load_results(results_dir))
    text = fill(template, ctx)
    with open(md_path, "w") as f:
        f.write(text)
    render_pdf(text, md_dir, pdf_path)
    return text


def main(argv=None):
    """Command line: build the report (see the module docstring); exit status 1 on bad results."""
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(REPO_DIR, "results"), help="results folder")
    parser.add_argument("--md", default=os.path.join(here, "writeup.md"), help="Markdown file (rewritten in place)")
    parser.add_argument("--pdf", default=os.path.join(here, "writeup.pdf"), help="PDF to write")
    args = parser.parse_args(argv)
    try:
        build(args.results, args.md, args.pdf)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    print(f"=> wrote {args.md} and {args.pdf}")


if __name__ == "__main__":
    main()
