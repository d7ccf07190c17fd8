"""Build writeup/writeup.pdf from writeup/writeup.md and results/, in one command.

    python -m tools.build_report                        # from code/
    python -m tools.build_report --results ../results --md ../writeup/writeup.md --pdf ../writeup/writeup.pdf

Rewrites every ``<!-- BEGIN generated: NAME -->`` ... ``<!-- END generated: NAME -->`` block
of the Markdown file from the files that code/tools/make_results.py wrote (results/full for
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
import hashlib
import html
import inspect
import json
import logging
import math
import os
import re
import statistics
from dataclasses import dataclass

import markdown
import matplotlib
from fpdf import FPDF
from fpdf.fonts import FontFace, TextStyle
from PIL import Image

import student_code

from tools import REPO_DIR
from tools.bench_conv import GPU_BATCH
from tools.run_experiments import EXPERIMENTS, at_scale, flag_value

BLOCK = re.compile(r"(<!-- BEGIN generated: ([a-z0-9-]+) -->\n).*?(<!-- END generated: \2 -->)", re.S)
SCALE_HEADINGS = (("full", "MiniPlaces"), ("demo", "Demo set (synthetic, not MiniPlaces)"))
PLACEHOLDERS = {
    "full": "*Not measured on MiniPlaces yet:* `python -m tools.run_experiments --full` in `code/` (a GPU) fills this in.",
    "demo": "*Not run on the demo set yet:* `python -m tools.run_experiments --demo` in `code/`.",
}
NO_RESULTS = "*No results yet:* see the end of the report."
CONTRIBUTIONS = "contributions.md"  # beside the Markdown file: the team's members and their parts
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
    exp = next((e for e in EXPERIMENTS if e.name == row), None)
    if row in NAMES or exp is None:
        return NAMES.get(row, row)
    return f"the evaluation of {name(exp.target)}" if row.startswith("eval-") else exp.title



def join_names(names):
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    return "" if not names else names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


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
    """One sentence on the experiments of ``rows`` that have no result at ``scale``, in plain
    words (their logs and experiments.md say more), or ''."""
    said = []
    for row in rows:
        s = status_of(ctx, scale, row)
        if s is None:
            said.append(f"{name(row)} was not run at this scale yet")
        elif s["status"] != "finished":
            why = ("its ImageNet weights cannot be downloaded on this offline machine" if "ImageNet" in s["reason"]
                   else f"it needs {name(s['reason'].split()[1])} first" if s["reason"].startswith("needs ")
                   else "its log says why")
            said.append(f"{name(row)} was {s['status']} ({why})")
    return f"*Not measured here:* {'; '.join(said)}." if said else ""


def placed_width_pt(path):
    """The width in points at which the report places the PNG at ``path``: its own size (pixels
    / dpi), at most the text width."""
    with Image.open(path) as image:
        dpi = round(image.info.get("dpi", (72, 72))[0])  # PNG stores pixels per metre: 150 dpi reads 150.01
        return min(TEXT_WIDTH_PT, image.width / dpi * 72)


FIGURE_REF = re.compile(r"\[\[fig:([^\]]+)\]\]")


def has_figure(ctx, scale, file):
    """Whether the report shows results/<scale>/<file>: make_results.py wrote it, and its scale
    shows figures (the demo set's only while MiniPlaces has no results: the page budget)."""
    shows = scale == "full" or not ctx.scales["full"]
    return shows and bool(ctx.scales[scale]) and file in ctx.scales[scale]["files"]


def fig_ref(scale, file):
    """A reference to the figure of results/<scale>/<file>, numbered by number_figures."""
    return f"Figure [[fig:{scale}/{file}]]"


def figure(ctx, scale, file, caption):
    """Markdown for results/<scale>/<file> (alt text: make_results.py's caption) and its numbered
    caption, one sentence that says what to see; '' when make_results.py did not write it."""
    if not has_figure(ctx, scale, file):
        return ""
    path = os.path.join(ctx.results, scale, file)
    alt = ctx.scales[scale]["captions"].get(file, file)
    return f"![{alt}]({os.path.relpath(path, ctx.md_dir)})\n\n*{fig_ref(scale, file)}. {caption}*"


def number_figures(text):
    """Number the figures of ``text`` in order of their captions and put the numbers into every
    reference; ValueError on a reference to a figure the text does not hold."""
    numbers = {}
    for key in re.findall(r"\*Figure \[\[fig:([^\]]+)\]\]\. ", text):
        numbers.setdefault(key, len(numbers) + 1)
    unknown = sorted(set(FIGURE_REF.findall(text)) - set(numbers))
    if unknown:
        raise ValueError(f"references to figures the report does not show: {unknown}")
    return FIGURE_REF.sub(lambda m: str(numbers[m.group(1)]), text)


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
    epochs, the seeds, each row's per-seed clean top-1 (``acc_a``, ``acc_b``), their
    seed_study.summarize numbers, the data and hardware the .md names and its path, and
    ``attacks``: per (epsilon, steps) in the order written a dict with ``a``, ``b`` (per-seed PGD
    top-1) and ``summary``."""
    from tools import seed_study

    pattern = re.compile(rf"^seeds_{re.escape(a)}_vs_{re.escape(b)}_e(\d+)-(\d+)\.csv$")
    folder = os.path.join(ctx.results, scale)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    studies = []
    for ea, eb, file in sorted((int(m.group(1)), int(m.group(2)), n) for n in names if (m := pattern.match(n))):
        md = os.path.join(folder, file[:-4] + ".md")
        with open(md) as f:
            m = SEED_PROVENANCE.search(f.read())
        if not m:
            raise ValueError(f"{md} does not name its data and hardware")
        _, seeds, measures = seed_study.read_report(os.path.join(folder, file), legacy_steps=attack_default("num_steps"))
        acc_a, acc_b = measures.pop(None)
        studies.append(dict(seed_study.summarize(acc_a, acc_b), epochs=(ea, eb), seeds=seeds, acc_a=acc_a,
                            acc_b=acc_b, data=m.group(1), hardware=m.group(2), path=md,
                            attacks={k: {"a": xs, "b": ys, "summary": seed_study.summarize(xs, ys)}
                                     for k, (xs, ys) in measures.items()}))
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
    from tools.bench_attention import forward_flops

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
    """The sentences that discuss a result as one paragraph; each must end with its full stop."""
    sentences = [t for t in sentences if t]
    unfinished = [t for t in sentences if not t.endswith(".")]
    if unfinished:
        raise ValueError(f"discussion sentence without a full stop: {unfinished[0]!r}")
    return "**Discussion.** " + " ".join(sentences)


def capital(text):
    """``text`` with its first letter in upper case ('the improved CNN' -> 'The improved CNN')."""
    return text[:1].upper() + text[1:]


def demo_classes(label):
    """The names of the demo set's classes for a data label that counts them (make_demo_data's
    choice of MiniPlaces categories), or None."""
    from tools.make_demo_data import CATEGORY_NAMES, pick_labels

    m = re.search(r"(\d+) classes", label)
    return [CATEGORY_NAMES[k].replace("_", " ") for k in pick_labels(int(m.group(1)))] if m else None


def hardware_of(ctx, scale):
    """The hardware lines of a scale's finished runs, sorted."""
    return sorted({s["hardware"] for s in ctx.scales[scale]["statuses"] if s["status"] == "finished"
                   and not s["hardware"].startswith("not recorded")})


def gen_setting(ctx):
    """Block 'setting': the data and the hardware, said once for the whole report."""
    demo = ctx.scales["demo"]
    label = next((d for d in demo["data"] if d.startswith("demo set")), None) if demo else None
    m = re.search(r"(\d+) classes, (\d+) train / (\d+) val images", label or "")
    counts = (f"{m.group(1)} classes, {int(m.group(2)) // int(m.group(1))} train and {int(m.group(3)) // int(m.group(1))} "
              "val images per class" if m else "10 classes, 100 train and 20 val images per class")
    classes = demo_classes(label or "10 classes")
    text = [("We measured at two scales and keep their numbers apart. **MiniPlaces** is the assignment's data (100 "
             "scene classes, 100,000 train and 10,000 val images of 128x128 pixels), trained for the assignment's "
             "epochs on a GPU. The **demo set** is a synthetic stand-in that our code generates in MiniPlaces' layout "
             f"so that every model can be trained on a 2-core CPU: {counts}. Its classes carry the names of "
             f"MiniPlaces scenes ({join_names(classes)}), but each is drawn from a recipe: a sky and a ground colour, "
             "a striped texture and one kind of simple object, with pixel noise, and pairs of classes share their "
             "sky and object. Demo numbers show how the methods behave on a tiny budget, never how they do on "
             "MiniPlaces.")]
    where = [f"the {'demo' if scale == 'demo' else 'MiniPlaces'} runs: "
             f"{'; '.join(hardware_of(ctx, scale)) or 'not recorded'}" for scale, _ in SCALE_HEADINGS if ctx.scales[scale]]
    factors = factor_rows(ctx)
    if factors:
        where.append(f"the convolution benchmark: {factors[1]}")
    text.append("This report holds results of " + ("the demo set only: MiniPlaces is not measured yet (the appendix "
                                                   "says how)" if ctx.scales["demo"] and not ctx.scales["full"] else
                                                   "MiniPlaces only" if ctx.scales["full"] and not ctx.scales["demo"]
                                                   else "both scales" if ctx.scales["full"] else "neither scale yet")
                + (f". Hardware of {'; of '.join(where)}." if where else "."))
    return " ".join(text)


def gen_provenance(ctx):
    """Block 'provenance': one paragraph per scale: data, hardware, the commit of the code, and the
    commands that make every number of the report."""
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
    out.append("Commands, from `code/`: `bash tools/regenerate_demo.sh` (every demo experiment, its seed study and "
               "this report), `python -m tools.run_experiments --full` (MiniPlaces, on a GPU), "
               "`python -m tools.bench_conv --factors` (the convolution's parts); `python -m tools.make_results` and "
               "`python -m tools.build_report` turn logs into `results/` and this report.")
    return "\n\n".join(out)


def gen_contributions(ctx):
    """The team's members and their parts: contributions.md beside the Markdown file, as the team
    wrote it (zip_submission.py packs no hand-in while it is missing or holds a placeholder)."""
    path = os.path.join(ctx.md_dir, CONTRIBUTIONS)
    if not os.path.isfile(path):
        return f"*No {CONTRIBUTIONS} beside the report yet: the team writes its members and their parts there.*"
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------- Part I.1: where the convolution's time goes

FACTOR_LABELS = (("fwd", "unfold", "unfold (im2col copy), forward"), ("fwd", "gemm", "matrix products, forward"),
                 ("bwd", "unfold", "unfold again, backward"), ("bwd", "gemm", "matrix products, backward"),
                 ("bwd", "col2im", "col2im (fold), backward"), ("fwd", "pad", "padding copies, forward"),
                 ("bwd", "pad", "padding copies, backward"), ("fwd", "other", "the rest, forward"),
                 ("bwd", "other", "the rest, backward"))


def factor_rows(ctx):
    """bench_conv.py --factors' rows of results/conv_factors.csv (numbers as floats) and its
    hardware line, or None when the file is absent."""
    path = os.path.join(ctx.results, "conv_factors.csv")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [{k: (float(v) if re.fullmatch(r"-?[0-9.]+(e-?\d+)?", v or "") else v) for k, v in r.items()}
                for r in csv.DictReader(f)]
    with open(path[:-4] + ".md") as f:
        text = f.read()
    hardware = re.search(r"^- hardware: (.*)$", text, re.M)
    rounds = re.search(r"(\d+) timed rounds", text)
    batch = re.search(r"^- batch (\d+), images (\d+)x", text, re.M)
    return rows, hardware.group(1) if hardware else "hardware not recorded", {
        "rounds": int(rounds.group(1)) if rounds else None, "batch": int(batch.group(1)) if batch else None,
        "size": int(batch.group(2)) if batch else None}


def factor_total(rows, threads=None):
    """The SimpleNet total row of the --factors table at ``threads`` (the fewest threads measured
    when None: a single thread is the least disturbed by other processes on a shared CPU), or None."""
    totals = [r for r in rows if r["name"].startswith("simplenet (all")]
    if not totals:
        return None
    return min(totals, key=lambda r: r["threads"]) if threads is None else next(
        (r for r in totals if r["threads"] == threads), None)


def custom_ms(r, parts=None):
    """The custom op's milliseconds in row ``r``: all of them, or those of ``parts`` [(pass, part)]."""
    keys = parts or [(p, part) for p, part, _ in FACTOR_LABELS]
    return sum(r[f"custom_{p}_{part}_ms"] for p, part in keys)


def conv_factors(ctx):
    """The --factors benchmark in the report: a table of where SimpleNet's convolutions spend a
    training step, and sentences on time, memory and what a GPU changes."""
    found = factor_rows(ctx)
    if not found:
        return ["*The convolution's parts are not measured yet:* see the appendix."]
    rows, hardware, setup = found
    r = factor_total(rows)
    if r is None:
        return ["*The convolution benchmark holds no SimpleNet rows.*"]
    total, native = custom_ms(r), r["native_fwd_ms"] + r["native_bwd_ms"]
    threads = int(r["threads"])
    table = md_table((("part of the custom op", lambda x: x[0]), ("ms", lambda x: f"{x[1]:.1f}"),
                      ("share", lambda x: x[2])),
                     [(label, r[f"custom_{p}_{part}_ms"], f"{r[f'custom_{p}_{part}_ms'] / total:.0%}")
                      for p, part, label in FACTOR_LABELS]
                     + [("custom op, forward and backward", total, "100%"),
                        ("nn.Conv2d, forward and backward", native, f"{native / total:.0%}")])
    gemm = custom_ms(r, [("fwd", "gemm"), ("bwd", "gemm")])
    unfold = custom_ms(r, [("fwd", "unfold"), ("bwd", "unfold")])
    cpu_max, gpu_max = student_code._COLS_CHUNK_BYTES["cpu"][1], student_code._COLS_CHUNK_BYTES_DEFAULT[1]
    moves = total - gemm
    others = [o for o in rows if o["name"] == r["name"] and o["threads"] != r["threads"]]
    intro = (f"Where a training step of SimpleNet's {int(r['count'])} convolutions spends its time on the CPU "
             f"({threads} thread{'s' * (threads != 1)}, batch {setup['batch']}, {setup['size']}x{setup['size']} images, "
             f"medians of {setup['rounds']} rounds, each part timed on its own, other work sharing the CPU):")
    text = [f"The custom op took {total / native:.2f} times nn.Conv2d's time here"
            + "".join(f" ({custom_ms(o) / (o['native_fwd_ms'] + o['native_bwd_ms']):.2f} at {int(o['threads'])} "
                      f"threads, where other processes on the shared cores stall every multi-threaded op more)"
                      for o in others) + ".",
            f"Its matrix products alone take {gemm:.0f} ms, {gemm / native:.2f} times nn.Conv2d's whole step, which does "
            "the same multiply-adds: " + ("the plain matrix products take longer than nn.Conv2d's whole convolution"
                                         if gemm >= native else "nn.Conv2d's kernels do them only a little faster"
                                         if gemm >= 0.7 * native else "nn.Conv2d's kernels do them much faster") + ".",
            f"On top of them the custom op moves data that nn.Conv2d does not, {moves:.0f} ms or {moves / total:.0%} of "
            f"its time: the unfold copies the input into a column matrix {unfold / total:.0%} of the time, twice "
            "(backward unfolds the input again, since only the input is saved), col2im adds the column gradients back "
            f"one kernel offset at a time ({r['custom_bwd_col2im_ms'] / total:.0%}), and padded copies, permutes and "
            "zero fills take the rest."]
    memory = (f"Memory, measured as the tensors of the convolutions themselves (the runs' peak below is the whole "
              "process, about 1 GB of it the Python runtime): "
              + (f"both keep the same {r['native_saved_mb']:.0f} MB for backward"
                 if math.isclose(r["native_saved_mb"], r["custom_saved_mb"], rel_tol=0.01) else
                 f"the custom op keeps {r['custom_saved_mb']:.0f} MB for backward, nn.Conv2d {r['native_saved_mb']:.0f}")
              + ", each convolution's input and weight"
              + (", with no copy" if r["custom_saved_new_mb"] == 0 else
                 f", the custom op {r['custom_saved_new_mb']:.0f} MB of copies") +
              f". Allocated during a pass, the largest convolution peaks at {r['custom_fwd_peak_mb']:.0f} MB in forward "
              f"and {r['custom_bwd_peak_mb']:.0f} MB in backward for the custom op against {r['native_fwd_peak_mb']:.0f} "
              f"and {r['native_bwd_peak_mb']:.0f} MB for nn.Conv2d (output and gradients included; scratch that oneDNN "
              "takes outside PyTorch's allocator is not counted). The custom op's scratch is one chunk of columns: "
              f"here {int(r['chunk_samples'])} sample{'s' * (r['chunk_samples'] != 1)} at a time "
              f"({r['chunk_mb']:.0f} MiB), as the CPU bound on a chunk (at most {cpu_max / 2 ** 20:.0f} MiB, in at "
              f"most {student_code._COLS_CHUNKS} chunks with several threads) keeps it in cache.")
    gpu = (f"On a GPU a chunk may hold {gpu_max / 2 ** 30:g} GiB of columns, so at the default batch of {GPU_BATCH} "
           "one chunk holds "
           f"{'all' if r['gpu_chunk_samples'] >= GPU_BATCH else int(r['gpu_chunk_samples'])} "
           f"{int(r['gpu_chunk_samples']) if r['gpu_chunk_samples'] >= GPU_BATCH else ''} samples of SimpleNet's "
           f"first convolution, {r['gpu_chunk_mb']:.0f} MiB of columns in float32 (half that under bf16 or fp16): "
           "there the custom op trades that memory for one large matrix product per pass; we have not measured "
           "time or memory on a GPU.").replace("  ", " ")
    return [intro, table, discussion(text), memory, gpu]


RUN_COLUMNS = (("model", lambda r: capital(name(r["name"]))), ("epochs", lambda r: r["epochs"]),
               ("best val top-1 (%)", lambda r: f"{r['best_top1']:.1f}"),
               ("last train loss", lambda r: "n/a" if r["final_train_loss"] is None else f"{r['final_train_loss']:.2f}"),
               ("s/epoch", lambda r: f"{r['seconds_per_epoch']:.0f}"))


def runs_table(ctx, scale, rows):
    """The finished training runs of ``rows`` as one compact table (one run each)."""
    runs = [r for r in (summary_of(ctx, scale, row) for row in rows) if r]
    if not runs:
        return ""
    return f"One run each:\n\n{md_table(RUN_COLUMNS, runs)}"


def lr_words(ctx, scale, row):
    """'warms up over 1 epoch, then falls along a cosine to zero' from the flags ``row`` ran with."""
    warmup = main_args(ran_flags(ctx, scale, row)).warmup
    return (f"warms up over {warmup} epoch{'s' * (warmup != 1)}, then falls along a cosine to zero" if warmup
            else "falls along a cosine to zero")


def ran_flags(ctx, scale, row):
    """The main.py flags ``row`` ran with at ``scale`` (its plan's when it has not run)."""
    ran = status_of(ctx, scale, row) if ctx.scales[scale] else None
    return tuple(ran["args"]) if ran and ran["status"] == "finished" and ran.get("args") else row_flags(row, scale)


def curves(ctx, scale, row):
    """The numbered figure of one run's curves (loss, learning rate, train and val top-1) with a
    caption that says what to see, or ''."""
    r = summary_of(ctx, scale, row)
    if not r:
        return ""
    train = r.get("final_train_top1")
    said = (f"{capital(name(row))} over {r['epochs']} epochs: val top-1 peaks at {r['best_top1']:.1f}% in epoch "
            f"{r['best_epoch']}" + (f" and ends at {r['final_top1']:.1f}%" if r.get("final_top1") is not None and
                                    r["best_epoch"] != r["epochs"] else ""))
    if train is not None:
        said += (f", train top-1 ends at {train:.1f}%" + (" (measured on augmented" + (" and half adversarial" if
                                                                                        row == "adv-simplenet" else "")
                                                           + " images)" if train < r["best_top1"] else ""))
    return figure(ctx, scale, f"curves_{row}.png", f"{said}; the learning rate {lr_words(ctx, scale, row)}.")


def gen_conv_results(ctx):
    """Block 'conv-results': the convolution's parts, then per scale the custom-vs-native runs."""
    runs = per_scale(ctx, lambda scale: [*conv_results(ctx, scale), *findings_conv(ctx, scale)])
    return "\n\n".join([*conv_factors(ctx), runs])


def conv_results(ctx, scale):
    """The custom-vs-native runs at ``scale``: table, both runs' curves, what is missing."""
    return [shared_note(ctx, scale, "conv-native"), runs_table(ctx, scale, ("conv-native", "conv-custom")),
            curves(ctx, scale, "simplenet" if shared_run_of(ctx, scale, "conv-native") else "conv-native"),
            curves(ctx, scale, "conv-custom"), missing(ctx, scale, ("conv-native", "conv-custom"))]


def shared_run_of(ctx, scale, row):
    """The row whose run ``row`` shares at ``scale`` (the demo's nn.Conv2d row is SimpleNet's), or None."""
    s = status_of(ctx, scale, row) if ctx.scales[scale] else None
    return s.get("run_of") if s else None


def shared_note(ctx, scale, row):
    """'SimpleNet with nn.Conv2d is the SimpleNet run of Part I.2.' when ``row``'s run is another row's."""
    other = shared_run_of(ctx, scale, row)
    return f"{capital(name(row))} is the {name(other)} run of Part I.2 (same settings and seed)." if other else ""


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
    folder = os.path.join(ctx.results, scale)
    for other in sorted({f.split("_vs_")[1].rsplit("_e", 1)[0] for f in os.listdir(folder)
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
    """Speed (which measurement to trust), the loss curves and accuracy, per scale."""
    native, custom = summary_of(ctx, scale, "conv-native"), summary_of(ctx, scale, "conv-custom")
    if not (native and custom):
        return []
    speed = custom["seconds_per_epoch"] / native["seconds_per_epoch"]
    text = [f"An epoch with CustomConv2d took {speed:.2f} times as long as with nn.Conv2d."]
    found = factor_rows(ctx)
    ref = factor_total(found[0]) if found else None
    if ref:
        ratio = custom_ms(ref) / (ref["native_fwd_ms"] + ref["native_bwd_ms"])
        run_way, bench_way = (direction(x, 1, "slower", "faster", "as fast") for x in (speed, ratio))
        agree = f"both say {bench_way}" if run_way == bench_way else "they disagree"
        text.append(f"The benchmark above measured {ratio:.2f} for the convolutions alone: {agree}; we trust the "
                    "benchmark, which alternates both on the same inputs, over two single runs at different times "
                    "on a shared machine, and an epoch also spends time outside the convolutions.")
    if native["final_train_loss"] and custom["final_train_loss"]:
        text.append(f"The loss curves follow each other: the last epoch's train loss is {custom['final_train_loss']:.2f} "
                    f"with CustomConv2d against {native['final_train_loss']:.2f}.")
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
        diff = custom["best_top1"] - native["best_top1"]
        noise = noise_points(native["best_top1"], val_count(native["data"]))
        acc += (f", and the {abs(diff):.1f}-point gap is {'within' if abs(diff) <= 2 * noise else 'beyond'} "
                f"twice the noise of one run ({noise:.1f} points).")
    text += [acc, not_shown(scale)]
    return [discussion(text)]


# ---------------------------------------------------------------- Part I.2 and II: schemes and comparisons

SCHEME_SETTINGS = (("batch_size", "batch {}"), ("lr", "learning rate {:g}"), ("warmup", "warm-up {} epochs"),
                   ("weight_decay", "weight decay {:g}"))
SCHEME_EXTRAS = (("label_smoothing", "label smoothing {:g}"), ("ema_decay", "an average of the weights (EMA decay {:g})"),
                 ("mixup", "MixUp (alpha {:g})"), ("cutmix", "CutMix (alpha {:g})"))


def scheme_line(ctx, scale, rows):
    """'epochs: SimpleNet 10 and the improved CNN 10; batch 32 (SimpleNet: 4), learning rate ...;
    the improved CNN also label smoothing 0.1.' from the main.py flags each row ran with at
    ``scale`` (its plan's flags when it has not run): each setting's most common value and the rows
    that differ from it, then the extras (label smoothing, EMA, MixUp, CutMix) each row adds."""
    parsed = {row: vars(main_args(flags)) for row in rows if (flags := ran_flags(ctx, scale, row)) is not None}
    epochs = {a["epochs"] for a in parsed.values()}
    said = [f"{epochs.pop()} epochs each" if len(epochs) == 1 else
            "epochs: " + join_names(f"{name(row)} {a['epochs']}" for row, a in parsed.items())]
    for key, words in SCHEME_SETTINGS:
        common = collections.Counter(a[key] for a in parsed.values()).most_common(1)[0][0]
        odd = [f"{name(row)}: {words.format(a[key]).split()[-2 if key == 'warmup' else -1]}"
               for row, a in parsed.items() if a[key] != common]
        said.append(words.format(common) + (f" ({'; '.join(odd)})" if odd else ""))
    extras = [f"{name(row)} also {join_names(words.format(a[key]) for key, words in SCHEME_EXTRAS if a[key])}"
              for row, a in parsed.items() if any(a[key] for key, _ in SCHEME_EXTRAS)]
    return f"{', '.join(said)}" + (f"; {'; '.join(extras)}" if extras else "") + "."


def scheme_block(ctx, rows):
    """The scheme line of ``rows`` at MiniPlaces (as run_experiments.py --full will run it, or
    as it ran) and at each other scale that has results."""
    lines = [f"- MiniPlaces{'' if ctx.scales['full'] else ' (as it will run)'}: {scheme_line(ctx, 'full', rows)}"]
    if ctx.scales["demo"]:
        lines.append(f"- Demo set: {scheme_line(ctx, 'demo', rows)}")
    return "\n".join(lines)


def gen_cnn_scheme(ctx):
    """Block 'cnn-scheme': epochs and the main hyper-parameters per scale."""
    return scheme_block(ctx, ("simplenet", "cnn", "resnet18"))


def gen_cnn_design(ctx):
    """Block 'cnn-design': default_cnn_model's, ResNet18's and SimpleNet's size and cost."""
    return model_sizes({"cnn": f"`{student_code.default_cnn_model.__name__}` (default_cnn_model)",
                        "resnet18": "ResNet18", "simplenet": "SimpleNet"})


def seed_table(studies, a, b):
    """The seed studies of rows ``a`` and ``b`` as one table, one study per row."""
    return md_table((
        (f"epochs ({name(a)} / {name(b)})", lambda s: f"{s['epochs'][0]} / {s['epochs'][1]}"),
        ("seeds", lambda s: s["n"]), ("mean top-1 (%)", lambda s: f"{s['mean_a']:.1f} / {s['mean_b']:.1f}"),
        ("difference (points)", lambda s: f"{s['mean_diff']:+.1f}"),
        ("95% t-interval", lambda s: t_interval(s).split("seeds ")[-1])), studies)


def comparison_results(ctx, scale, a, b, rows):
    """The results of a comparison: table, each run's curves, seed studies, what is missing."""
    parts = [runs_table(ctx, scale, rows)]
    shown = shared_run_of(ctx, scale, "conv-native") == "simplenet" and has_figure(ctx, scale, "curves_simplenet.png")
    if "simplenet" in rows and shown:
        parts.append(f"SimpleNet's curves are those of {fig_ref(scale, 'curves_simplenet.png')}.")
    parts += [curves(ctx, scale, row) for row in rows if not (row == "simplenet" and shown)]
    studies = seed_studies(ctx, scale, a, b)
    if studies:
        parts += ["Several seeds:", seed_table(studies, a, b)]
    parts.append(missing(ctx, scale, rows))
    return parts


def gen_cnn_results(ctx):
    """Block 'cnn-results': SimpleNet vs improved CNN (vs ResNet18) per scale, and what they show."""
    return per_scale(ctx, lambda scale: [
        *comparison_results(ctx, scale, "simplenet", "cnn", ("simplenet", "cnn", "resnet18")),
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


def why_behind(ctx, scale, a, b, ra, rb):
    """One sentence, chosen by rule from the runs' numbers, on why improved model ``b`` does not
    beat ``a`` at this budget: still rising when training stopped, fitting its training images
    far better than val, or no gain on data the small model already fits."""
    size = model_size(b), model_size(a)
    bigger = (f" with {size[0][0] / size[1][0]:.0f} times the parameters" if all(size) and size[0][0] > size[1][0]
              else "")
    noise = noise_points(rb["best_top1"], val_count(rb["data"]))
    train = rb.get("final_train_top1")
    if rb["best_epoch"] == rb["epochs"] and rb["best_top1"] - ra["best_top1"] < -noise:
        images = re.search(r"(\d+) train", rb["data"]).group(1)
        return (f"Its val top-1 was still at its best in the last epoch: {rb['epochs']} epochs of {images} images are "
                f"too few for a model{bigger} to catch up.")
    if train is not None and train - rb["best_top1"] > 2 * noise + 5:
        return (f"It fits its training images far better than the val images (train top-1 {train:.1f}% against "
                f"{rb['best_top1']:.1f}%): the few training images do not constrain a model{bigger}.")
    return (f"On these simple synthetic classes {name(a)} already reaches {ra['best_top1']:.1f}%, and a model{bigger} "
            "has little left to gain in the same epochs.")


def comparison_findings(ctx, scale, a, b, ci_file, extra=()):
    """Findings of row ``b`` against baseline ``a`` (and ``extra`` rows for reference)."""
    ra, rb = summary_of(ctx, scale, a), summary_of(ctx, scale, b)
    if not (ra and rb):
        return []
    noise = noise_points(ra["best_top1"], val_count(ra["data"]))
    diff = rb["best_top1"] - ra["best_top1"]
    same = ra["epochs"] == rb["epochs"]
    way = "ahead of" if diff > 2 * noise else "behind" if diff < -2 * noise else "level with"
    text = [(f"After the same {ra['epochs']} epochs" if same else
             f"After {rb['epochs']} epochs against {name(a)}'s {ra['epochs']}")
            + f", {name(b)} reaches {rb['best_top1']:.1f}% best val top-1 against {ra['best_top1']:.1f}%: "
            f"{way} {name(a)} by more than twice the noise of one run ({noise:.1f} points).".replace(
                "level with " + name(a) + " by more than", f"level with {name(a)}, within")]
    for row in extra:
        re_ = summary_of(ctx, scale, row)
        if re_:
            text.append(f"{capital(name(row))} reaches {re_['best_top1']:.1f}% in {re_['epochs']} epochs.")
    ci = bootstrap(ctx, scale, ci_file)
    if ci:
        text.append(f"Redrawing the val images with replacement and scoring both models on each draw, "
                    f"{interval_words(name(b), ci['diff'], ci['low'], ci['high'])}; that interval covers only which "
                    "images were drawn, not the training seed.")
    accs = simplenet_seeds(ctx, scale, ra["epochs"]) if a == "simplenet" else None
    if accs:
        where = against_range(rb["best_top1"], min(accs), max(accs))
        text.append(f"{seed_range_words(accs)}; {name(b)}'s run lies {where} that range.")
    minutes = [r["epochs"] * r["seconds_per_epoch"] / 60 for r in (rb, ra)]
    text.append(f"A training image cost {name(b)} {ra['images_per_second'] / rb['images_per_second']:.1f} times what "
                f"it cost {name(a)} ({minutes[0]:.1f} against {minutes[1]:.1f} minutes in all).")
    if not same:
        text.append("These runs had different budgets, so they are results of one budget, not a comparison.")
    elif way != "ahead of":
        text.append(why_behind(ctx, scale, a, b, ra, rb))
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
    """Block 'vit-results': SimpleViT vs improved ViT per scale, and what they show."""
    return per_scale(ctx, lambda scale: [
        *comparison_results(ctx, scale, "simplevit", "vit", ("simplevit", "vit")),
        *comparison_findings(ctx, scale, "simplevit", "vit", "ci_vit.md")])


def gen_eval_results(ctx):
    """Block 'eval-results': every model's best checkpoint evaluated alone and flip-averaged."""
    def render(scale):
        rows = ctx.scales[scale]["eval"]
        if not rows:
            return ["*Not measured here:* no checkpoint was evaluated at this scale yet."]
        table = md_table((("model", lambda r: capital(name(r["target"]))),
                          ("top-1 (%)", lambda r: f"{r['plain_top1']:.1f}"),
                          ("flip-averaged", lambda r: f"{r['flip_top1']:.1f}"),
                          ("top-5 (%)", lambda r: f"{r['plain_top5']:.1f}"),
                          ("flip-averaged ", lambda r: f"{r['flip_top5']:.1f}")), rows)
        gains = [r["gain_top1"] for r in rows]
        noise = noise_points(statistics.fmean(r["plain_top1"] for r in rows), rows[0]["val_images"])
        text = [f"Averaging each image with its mirror image changes top-1 by {min(gains):+.1f} to {max(gains):+.1f} "
                f"points, {'within' if max(map(abs, gains)) <= noise else 'in places beyond'} the noise of one run "
                f"({noise:.1f} points)."]
        return [table, discussion(text)[len("**Discussion.** "):]]
    return per_scale(ctx, render)


# ---------------------------------------------------------------- Part III

def attack_default(key):
    """A default of student_code.default_attack (epsilon, num_steps, ...)."""
    return inspect.signature(student_code.default_attack).parameters[key].default


def scale_epsilon(scale):
    """The epsilon of a scale's main attack (pgd-simplenet): the demo's own, else the default."""
    eps = flag_value(row_flags("pgd-simplenet", scale), "--attack-eps")
    return float(eps) if eps is not None else attack_default("epsilon")


def grey_levels(eps):
    """The most that ``eps`` (in normalized units) moves a pixel, in grey levels of 255: eps times
    the largest ImageNet std of the three channels."""
    return eps * max(student_code.IMAGENET_STD) * 255


def gen_pgd_design(ctx):
    """Block 'pgd-design': the attack's defaults and the demo's epsilon."""
    eps, steps, step = (attack_default(k) for k in ("epsilon", "num_steps", "step_size"))
    demo = scale_epsilon("demo")
    return (f"Our defaults: {steps} steps of {step:g}, epsilon {eps:g} (at most {grey_levels(eps):.0f} grey levels), "
            f"no random start. The demo attacks use epsilon {demo:g} (step size scaled alike): the demo images carry "
            f"pixel noise of 18 grey levels, three times the default epsilon, which then barely moves a prediction.")


def attacks_on(ctx, scale, target):
    """make_results.py's PGD rows of one attacked model, by steps then epsilon."""
    return sorted((r for r in ctx.scales[scale]["pgd"] if r["target"] == target),
                  key=lambda r: (r["num_steps"], r["epsilon"]))


def pgd_table(rows):
    """The attacks of ``rows`` as one compact table."""
    return md_table((
        ("epsilon", lambda r: f"{r['epsilon']:g}"), ("steps", lambda r: r["num_steps"]),
        ("step size", lambda r: f"{r['step_size']:g}"), ("PGD top-1 (%)", lambda r: f"{r['acc1']:.1f}"),
        ("drop (points)", lambda r: f"{r['drop_top1']:+.1f}"),
        ("pixel change (grey levels)", lambda r: "not logged" if r.get("mean_change") is None else
         f"{r['mean_change']:.0f} on average, at most {r['max_change']:.0f}")), rows)


def pgd_results(ctx, scale):
    """SimpleNet under every attack, the sweeps and the images."""
    attacks = [e.name for e in EXPERIMENTS if e.target == "simplenet" and getattr(e, scale) and "-a" in getattr(e, scale)]
    rows = attacks_on(ctx, scale, "simplenet")
    if not rows:
        return [missing(ctx, scale, ("simplenet", *attacks))]
    r = rows[0]
    return [f"SimpleNet's best checkpoint ({r['clean_top1']:.1f}% clean top-1) under each attack:", pgd_table(rows),
            figure(ctx, scale, "pgd_sweeps.png", sweep_caption(rows)),
            figure(ctx, scale, "pgd_visible_simplenet.png", visible_caption(ctx, scale)),
            missing(ctx, scale, attacks)]


def sweep_caption(rows):
    """The caption of the PGD sweeps: SimpleNet's top-1 against epsilon and against steps, each
    shape named by ``trend``."""
    clean, n = rows[0]["clean_top1"], rows[0]["val_images"]
    noise = noise_points(clean, n)
    eps, steps = rows_epsilon(rows), attack_default("num_steps")
    said = []
    for along, points in (("epsilon grows", [r["acc1"] for r in sorted(rows, key=lambda r: r["epsilon"])
                                             if r["num_steps"] == steps]),
                          ("steps are added", [r["acc1"] for r in rows if r["epsilon"] == eps])):
        if len(points) > 1:
            said.append(f"{TREND_WORDS.get(trend(points, noise), trend(points, noise))} as {along}")
    return (f"SimpleNet's top-1 under attack {join_names(said)}" if said else "PGD top-1") + \
        "; the dashed lines are each model's clean top-1."


def rows_epsilon(rows):
    """The epsilon at which ``rows`` sweep the steps: the one with the most step counts."""
    counts = collections.Counter(r["epsilon"] for r in rows)
    return max(counts, key=lambda e: (counts[e], e))


# The mean change (grey levels of 255) from which we saw the perturbation in the demo images, whose
# pixel noise is 18 levels: at 5 we could not tell the images apart, at 13 (40 steps at epsilon
# 0.25) colours shifted when set side by side, at 20 (epsilon 0.5) the change was plain.
VISIBLE_GREY_LEVELS = 10


def visible_caption(ctx, scale):
    """The caption of the image rows: what to look for."""
    shown = [r for r in attacks_on(ctx, scale, "simplenet") if r.get("mean_change") is not None]
    seen = sorted({r["epsilon"] for r in shown if r["mean_change"] >= VISIBLE_GREY_LEVELS})
    return ("The same val images before and after each attack" + (
        f": look for the colours and grain that epsilon {join_names(f'{e:g}' for e in seen)} "
        f"add{'s' * (len(seen) == 1)}" if seen
        else ": the attacks change too little to see") + ".")


def visibility_words(ctx, scale):
    """Sentences on whether the perturbation shows, at the default epsilon and at the scale's,
    from the measured pixel changes (our threshold: VISIBLE_GREY_LEVELS on average)."""
    shown = {(r["epsilon"], r["num_steps"]): r for r in attacks_on(ctx, scale, "simplenet")
             if r.get("mean_change") is not None}
    if not shown:
        return []
    images = (fig_ref(scale, "pgd_visible_simplenet.png") if has_figure(ctx, scale, "pgd_visible_simplenet.png")
              else "the results folder")
    text = [f"Can we see it? We look at the images of {images}; in our eyes a change shows from about "
            f"{VISIBLE_GREY_LEVELS} grey levels on average" + (", against the demo images' pixel noise of 18."
                                                               if scale == "demo" else ".")]
    for (eps, steps), r in sorted(shown.items()):
        where = ("the course's default" if eps == attack_default("epsilon") and steps == attack_default("num_steps")
                 else "the demo's" if eps == scale_epsilon(scale) and steps == attack_default("num_steps")
                 else f"{steps} steps at")
        seen = ("the adversarial images look plainly changed, with shifted colours and a grain"
                if r["mean_change"] >= 2 * VISIBLE_GREY_LEVELS else
                "set beside the originals, the adversarial images show shifted colours" if r["mean_change"] >=
                VISIBLE_GREY_LEVELS else "we cannot tell the adversarial images from the originals")
        text.append(f"At {where} epsilon {eps:g} a pixel moved by {r['mean_change']:.0f} grey levels on average (at "
                    f"most {r['max_change']:.0f}): {seen}.")
    return text


def findings_pgd(ctx, scale):
    """What the attacks on SimpleNet show, per scale, trends by rule."""
    rows = attacks_on(ctx, scale, "simplenet")
    if not rows:
        return []
    clean, n = rows[0]["clean_top1"], rows[0]["val_images"]
    noise = noise_points(clean, n)
    text = []
    simplenet = summary_of(ctx, scale, "simplenet")
    accs = simplenet_seeds(ctx, scale, simplenet["epochs"]) if simplenet else None
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
        said = trend_sentence(f"At epsilon {eps:g}, top-1", "with more steps",
                              [(f"after {r['num_steps']}", r["acc1"]) for r in along], noise)
        fewest, step = along[0]["num_steps"], along[0]["step_size"]
        if all(math.isclose(r["step_size"], step) for r in along):
            steps_reach = "1 step reaches" if fewest == 1 else f"{fewest} steps reach"
            said = (f"{said[:-1]}; each step moves a pixel by at most {step:g}, so {steps_reach} only "
                    f"{fewest * step:g} of the {eps:g} allowed.")
        text.append(said)
    fine = [r for r in rows if r["num_steps"] > steps and r["epsilon"] < eps]
    for r in fine:
        gap = r["acc1"] - main_row["acc1"] if main_row else None
        text.append(f"More steps and a smaller epsilon ({r['num_steps']} steps at {r['epsilon']:g}) give "
                    f"{r['acc1']:.1f}%" + ("" if gap is None else
                                           f", {abs(gap):.1f} points {'above' if gap > 0 else 'below'} {steps} steps "
                                           f"at {eps:g}: " + ("as strong within noise" if abs(gap) <= 2 * noise else
                                                              "a weaker attack" if gap > 0 else "a stronger attack")
                                           + f" with a perturbation at most {r['epsilon'] / eps:g} times as large, "
                                           + (f"which still costs {r['drop_top1']:.1f} points of clean top-1"
                                              if r["drop_top1"] > 2 * noise else "within noise of clean top-1")) + ".")
    course = next((r for r in sweep if r["epsilon"] == attack_default("epsilon")), None)
    if scale == "demo" and course and course is not main_row and course["drop_top1"] <= 2 * noise:
        text.append(f"At the course's epsilon {course['epsilon']:g} the drop ({course['drop_top1']:+.1f} points) is "
                    "within noise: the demo images' pixel noise is three times that epsilon.")
    return [discussion(text), " ".join(visibility_words(ctx, scale))]


def adv_settings(scale):
    """(ratio, steps, epsilon, step size) of adv-simplenet's training attack at ``scale``: its
    flags, and the step size SimpleNet.enable_adversarial_training picks for them."""
    a = main_args(row_flags("adv-simplenet", scale))
    model = student_code.SimpleNet(num_classes=10)
    model.enable_adversarial_training(adv_ratio=a.adv_train, num_steps=a.adv_steps, epsilon=a.adv_eps)
    return a.adv_train, a.adv_steps, a.adv_eps, model.adv_attack.step_size


def gen_adv_design(ctx):
    """Block 'adv-design': the training attack per scale, with its step size."""
    said = []
    for scale, heading in SCALE_HEADINGS:
        ratio, steps, eps, step = adv_settings(scale)
        reach = (" which the projection clips to the edge of the ball: every pixel moves by the whole epsilon, as in "
                 "the fast gradient sign method" if steps == 1 and step >= eps else "")
        said.append(f"{heading.split(' (')[0]}: {ratio:.0%} of every batch, {steps} PGD step{'s' * (steps != 1)} of "
                    f"{step:.3g} (2.5 times epsilon / steps) within epsilon {eps:g}{',' if reach else ''}{reach}")
    return "The training attack: " + "; ".join(said) + "."


def adv_study(ctx, scale):
    """The seed study of the standard and the adversarially trained SimpleNet with attacks (the one
    with the most seeds), or None."""
    studies = [s for s in seed_studies(ctx, scale, "simplenet", "adv-simplenet") if s["attacks"]]
    return max(studies, key=lambda s: s["n"]) if studies else None


def adv_results(ctx, scale):
    """Standard vs adversarial training over seeds, clean and under every attack; the curves."""
    study = adv_study(ctx, scale)
    parts = []
    if study:
        measures = [("clean", study)] + [(f"PGD, epsilon {e:g}, {k} steps", m["summary"])
                                         for (e, k), m in study["attacks"].items()]
        parts += [f"Mean top-1 over {study['n']} seeds (the same seeds for both), standard / adversarially trained "
                  "SimpleNet, each run's best checkpoint attacked:",
                  md_table((("attack", lambda m: m[0]),
                            ("standard (%)", lambda m: f"{m[1]['mean_a']:.1f}"),
                            ("adversarial (%)", lambda m: f"{m[1]['mean_b']:.1f}"),
                            ("difference (points)", lambda m: f"{m[1]['mean_diff']:+.1f}"),
                            ("95% t-interval", lambda m: t_interval(m[1]).split("seeds ")[-1])), measures)]
    elif ctx.scales[scale]["adv_robustness"]:
        adv = ctx.scales[scale]["adv_robustness"]
        parts += ["One run each, clean and under the same attacks (top-1, %, standard / adversarially trained):",
                  md_table((("epsilon", lambda r: f"{r['epsilon']:g}"), ("steps", lambda r: r["num_steps"]),
                            ("clean", lambda r: f"{r['std_clean']:.1f} / {r['adv_clean']:.1f}"),
                            ("PGD", lambda r: f"{r['std_pgd']:.1f} / {r['adv_pgd']:.1f}")), adv)]
    parts += [curves(ctx, scale, "adv-simplenet"), missing(ctx, scale, ("adv-simplenet", "pgd-adv-simplenet"))]
    return parts


def findings_adv(ctx, scale):
    """The robustness difference across attacks with its intervals over seeds, per scale."""
    std, robust = summary_of(ctx, scale, "simplenet"), summary_of(ctx, scale, "adv-simplenet")
    study = adv_study(ctx, scale)
    if not (std and robust and (study or ctx.scales[scale]["adv_robustness"])):
        return []
    cost = robust["seconds_per_epoch"] / std["seconds_per_epoch"]
    if study:
        attacks = study["attacks"]
        key = max(attacks, key=lambda k: (k[0] == scale_epsilon(scale), k[1] == attack_default("num_steps"), k))
        pgd = attacks[key]["summary"]
        groups = {"more": [], "less": [], "unclear": []}
        for (e, k), m in attacks.items():
            low, high = m["summary"]["interval"] or (-math.inf, math.inf)
            groups["more" if low > 0 else "less" if high < 0 else "unclear"].append(f"{e:g} with {k} steps")
        spread = max(attacks[key]["a"]) - min(attacks[key]["a"])
        wider = spread > abs(pgd["mean_diff"])
        text = [f"Over {study['n']} seeds, under PGD at epsilon {key[0]:g} with {key[1]} steps the adversarially "
                f"trained SimpleNet keeps {pgd['mean_b']:.1f}% on average against {pgd['mean_a']:.1f}%: "
                f"{robust_words(pgd)}.",
                "Across the attacks its interval lies " + "; ".join(
                    f"{words} at epsilon {join_names(groups[g])}" for g, words in
                    (("more", "above zero"), ("less", "below zero"), ("unclear", "around zero")) if groups[g]) + ".",
                f"Clean, it reaches {study['mean_b']:.1f}% against {study['mean_a']:.1f}% "
                f"({study['mean_diff']:+.1f} points, {t_interval(study)}).",
                f"Under that attack the standard network's seeds spread over {spread:.1f} points, "
                f"{'more' if wider else 'less'} than the {abs(pgd['mean_diff']):.1f}-point difference, so "
                + ("one seed each could have shown either sign; we trust the paired mean over the seeds." if wider
                   else "a single seed would have shown the same sign.")]
    else:
        s = max(ctx.scales[scale]["adv_robustness"], key=lambda r: (r["epsilon"], r["num_steps"]))
        text = [f"With one run each, under PGD at epsilon {s['epsilon']:g} the adversarially trained SimpleNet keeps "
                f"{s['adv_pgd']:.1f}% against {s['std_pgd']:.1f}% ({s['gain']:+.1f} points); without several seeds "
                "we cannot tell that difference from seed noise."]
    text.append(f"An epoch of adversarial training took {cost:.1f} times as long. It was trained and attacked with "
                "the same targeted PGD, so robustness against other attacks is not shown." + (
                    " " + not_shown(scale) if not_shown(scale) else ""))
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
    each provided file with its reason, and main.py's flags beyond the course's (explained by its --help); lists
    rather than tables, so that no name is broken across a cell's lines. Raises ValueError when a
    changed name or a file we added to has no reason, or a reason names nothing that changed."""
    import ast as ast_
    import main
    from tools.provided_changes import RELEASE_DIR, provided_changes, provided_files, read_reasons, reason_keys

    changes, reasons = list(provided_changes()), read_reasons()
    changed = set(reason_keys(changes))
    if changed != set(reasons):
        raise ValueError(f"writeup/provided_changes.md: no reason for {sorted(changed - set(reasons))}, "
                         f"a reason for what did not change: {sorted(set(reasons) - changed)}")
    text = ["What we changed or removed of the course's release, and why: `code/tools/provided_changes.py` lists it by "
            "comparing syntax trees with the release (kept in `code/tools/tests/course_release/`), so formatting and "
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
    text.append(f"Nothing changed, at most added to: {', '.join(unchanged)}. What we added to each provided file, and why:")
    text.append("\n".join(f"- `{f}`: {reasons[f]} Added: "
                          f"{', '.join(f'`{c.name}`' for c in changes if c.file == f and c.kind == 'added')}."
                          for f in files if any(c.file == f and c.kind == "added" for c in changes)))
    flags = [o for a in main.get_args_parser()._actions for o in a.option_strings if o not in course_flags
             and a.help != "show this help message and exit"]
    text.append(f"main.py's flags beyond the course's, each explained by `python main.py --help`: "
                f"{', '.join(f'`{o}`' for o in flags)}.")
    return "\n\n".join(text)


GENERATORS = {
    "setting": gen_setting, "conv-results": gen_conv_results, "cnn-design": gen_cnn_design,
    "cnn-scheme": gen_cnn_scheme, "cnn-results": gen_cnn_results, "eval-results": gen_eval_results,
    "vit-design": gen_vit_design, "vit-scheme": gen_vit_scheme, "vit-results": gen_vit_results,
    "pgd-design": gen_pgd_design, "pgd-results": gen_pgd_results, "adv-design": gen_adv_design,
    "adv-results": gen_adv_results, "provenance": gen_provenance, "contributions": gen_contributions, "provided-changes": gen_provided_changes,
}


def fill(template, ctx):
    """The Markdown with every generated block rewritten; ValueError on an unknown block name."""
    unknown = sorted(set(m.group(2) for m in BLOCK.finditer(template)) - set(GENERATORS))
    if unknown:
        raise ValueError(f"unknown generated block(s) {unknown}; known: {sorted(GENERATORS)}")
    return number_figures(BLOCK.sub(lambda m: f"{m.group(1)}{GENERATORS[m.group(2)](ctx).strip()}\n{m.group(3)}",
                                    template))


# ---------------------------------------------------------------- PDF


TABLE_FONT_SIZES = (9, 8, 7.5, 7)  # pt: a table whose words do not fit side by side gets a smaller font
CELL_SLACK_MM = 1.5  # beyond a cell's two margins, so that rounding never pushes a word onto two lines


def cell_words(cell_html):
    """The words of a table cell as lists of runs [(text, is_code)]: split at spaces only, so a
    word may span a <code> run and plain text ('x,')."""
    words, word = [], []
    bare = re.sub(r"<(?!/?code>)[^>]+>", "", cell_html)  # tags other than <code> carry no text
    for code, plain in re.findall(r"<code>(.*?)</code>|([^<]+)", bare, re.S):
        for piece in re.split(r"(\s+)", html.unescape(code or plain)):
            if piece.isspace() and word:
                words, word = words + [word], []
            elif piece and not piece.isspace():
                word.append((piece, bool(code)))
    return words + [word] if word else words


def layout_table(table_html, pdf):
    """An HTML table laid out so that no cell breaks a word: each column at least as wide as its
    longest word (in the fonts fpdf2 uses: bold headers, monospace code at 8/9 of the size), the
    rest of the text width shared in proportion to what each column would need on one line. When
    the words cannot fit side by side, a smaller font (TABLE_FONT_SIZES); ValueError when none fits."""
    rows = re.findall(r"<tr>(.*?)</tr>", table_html, re.S)
    cells = [re.findall(r"<t([hd])[^>]*>(.*?)</t[hd]>", r, re.S) for r in rows]
    columns = len(cells[0])
    pad = 2 * pdf.c_margin + CELL_SLACK_MM
    family, style, size_pt = pdf.font_family, pdf.font_style, pdf.font_size_pt
    try:
        for size in TABLE_FONT_SIZES:
            def width(runs, bold):
                total = 0.0
                for text, code in runs:
                    pdf.set_font("dejavumono" if code else "dejavu", "B" if bold and not code else "",
                                 size * 8 / 9 if code else size)
                    total += pdf.get_string_width(text)
                return total

            need, want = [0.0] * columns, [0.0] * columns
            space = {}
            for row in cells:
                for i, (kind, content) in enumerate(row[:columns]):
                    words = cell_words(content)
                    widths = [width(w, kind == "h") for w in words]
                    pdf.set_font("dejavu", "B" if kind == "h" else "", size)
                    space[i] = pdf.get_string_width(" ")
                    need[i] = max(need[i], max(widths, default=0) + pad)
                    want[i] = max(want[i], sum(widths) + space[i] * max(len(words) - 1, 0) + pad)
            if sum(need) <= pdf.epw:
                break
        else:
            raise ValueError(f"a table's words do not fit the page side by side even at {size} pt: "
                             f"{[re.sub(r'<[^>]+>', '', c) for _, c in cells[0]]}")
    finally:
        pdf.set_font(family, style, size_pt)
    if sum(want) <= pdf.epw:  # everything fits on one line: share the slack in proportion
        widths = [w * pdf.epw / sum(want) for w in want]
    else:  # the longest words, then the rest towards one line each
        extra = [w - n for w, n in zip(want, need)]
        widths = [n + (pdf.epw - sum(need)) * e / sum(extra) for n, e in zip(need, extra)]
    shares = iter(f"{100 * w / pdf.epw:.2f}" for w in widths)
    table_html = re.sub(r"<th(\s[^>]*)?>", lambda m: f'<th width="{next(shares)}%"{m.group(1) or ""}>', table_html,
                        count=columns)
    table_html = table_html.replace("<tr>", '<tr align="left">')
    return table_html if size == TABLE_FONT_SIZES[0] else f'<font size="{size}">{table_html}</font>'


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
    pdf = ReportPDF(format="A4")
    pdf.set_title("MiniPlaces scene recognition: report")
    # zip_submission.py packs the PDF only while this is the SHA-256 of writeup.md as it is
    pdf.set_subject(f"built from writeup.md sha256 {hashlib.sha256(text.encode('utf-8')).hexdigest()}")
    for style, suffix in (("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")):
        pdf.add_font("dejavu", style, os.path.join(FONT_DIR, f"DejaVuSans{suffix}.ttf"))
        pdf.add_font("dejavumono", style, os.path.join(FONT_DIR, f"DejaVuSansMono{suffix}.ttf"))
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("dejavu", size=9)
    if abs(pdf.epw * pdf.k - TEXT_WIDTH_PT) > 0.01:
        raise ValueError(f"the page's text width is {pdf.epw * pdf.k:.1f} pt, not TEXT_WIDTH_PT {TEXT_WIDTH_PT:.1f}")
    page = re.sub(r"<table>.*?</table>", lambda m: layout_table(m.group(0), pdf), page, flags=re.S)
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
    here = os.path.join(REPO_DIR, "writeup")
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
