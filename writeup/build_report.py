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
from run_experiments import EXPERIMENTS  # noqa: E402

BLOCK = re.compile(r"(<!-- BEGIN generated: ([a-z0-9-]+) -->\n).*?(<!-- END generated: \2 -->)", re.S)
SCALE_HEADINGS = (("full", "MiniPlaces"), ("demo", "Demo set (synthetic, not MiniPlaces)"))
PLACEHOLDERS = {
    "full": "*Not measured on MiniPlaces yet:* `python run_experiments.py --full` in `code/` (a GPU) fills this in.",
    "demo": "*Not run on the demo set yet:* `python run_experiments.py --demo` in `code/`.",
}
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
SEED_PROVENANCE = re.compile(r"Data: (.*?)\. Hardware: (.*?)\. Top-1 is")


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


def cap(text):
    """``text`` with its first letter upper-case."""
    return text[:1].upper() + text[1:]


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
    """Markdown for results/<scale>/<file> and its caption (from summary.json, so it names what
    the figure shows), or '' when make_results.py did not write it."""
    if file not in ctx.scales[scale]["files"]:
        return ""
    caption = ctx.scales[scale]["captions"][file]
    path = os.path.join(ctx.results, scale, file)
    return f"![{caption}]({os.path.relpath(path, ctx.md_dir)})\n\n*Figure: {caption} (`{rel(ctx, path)}`).*"


def include(ctx, scale, file):
    """The text of results/<scale>/<file>, or '' when make_results.py did not write it."""
    path = os.path.join(ctx.results, scale, file)
    if file not in ctx.scales[scale]["files"]:
        return ""
    with open(path) as f:
        return f.read().strip().replace(f" {MEMORY_NOTE}", "")


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
    epochs, seed_study.summarize's numbers, the data and hardware the .md names and its path."""
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
            m = SEED_PROVENANCE.search(f.read())
        if not m:
            raise ValueError(f"{md} does not name its data and hardware")
        s = seed_study.summarize([float(r[f"{a}_top1"]) for r in rows], [float(r[f"{b}_top1"]) for r in rows])
        studies.append(dict(s, epochs=(ea, eb), data=m.group(1), hardware=m.group(2), path=md))
    return studies


def row_flags(row, scale):
    """The main.py flags of experiment ``row`` at ``scale`` as a tuple."""
    return tuple(getattr(next(e for e in EXPERIMENTS if e.name == row), scale))


def main_args(flags):
    """main.py's parsed arguments for ``flags`` (its defaults filled in)."""
    import main

    return main.get_args_parser().parse_args(["DATA", *flags])


def per_scale(ctx, render):
    """A MiniPlaces and a demo-set section: ``render(scale)`` parts, or the scale's placeholder."""
    out = []
    for scale, heading in SCALE_HEADINGS:
        body = "\n\n".join(p for p in render(scale) if p) if ctx.scales[scale] else ""
        out.append(f"#### {heading}\n\n{body or PLACEHOLDERS[scale]}")
    return "\n\n".join(out)


def flag_help(flag):
    """main.py's help text of ``flag`` ('' when it has none), or None when main.py has no such flag."""
    import main

    parser = main.get_args_parser()
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=10 ** 6, max_help_position=10 ** 6)
    for line in parser.format_help().splitlines():
        m = re.match(r"^  (-\S.*?)(?:  +(.*))?$", line)
        if m and flag in [option.split()[0] for option in m.group(1).split(", ")]:
            return (m.group(2) or "").strip()
    return None


def commands(rows):
    """A table of the main.py flags of each named experiment at both scales."""
    table = ["| experiment | MiniPlaces | demo set |", "|---|---|---|"]
    for exp in EXPERIMENTS:
        if exp.name in rows:
            target = f" --resume <best of {exp.target}>" if exp.target else ""
            table.append(f"| {exp.name} | `{shlex.join(exp.full)}{target}` | `{shlex.join(exp.demo)}{target}` |")
    return "Flags after `python main.py ../data` (`EXPERIMENTS` in `code/run_experiments.py`):\n\n" + "\n".join(table)


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
    return ("Size and cost per 128x128 image (100 classes; forward FLOPs counted by "
            f"`torch.utils.flop_counter`): {'; '.join(parts)}.")


# ---------------------------------------------------------------- blocks


def gen_provenance(ctx):
    """Block 'provenance': per scale, how many experiments finished, on which data and hardware."""
    lines = []
    for scale, heading in SCALE_HEADINGS:
        summary = ctx.scales[scale]
        if summary is None:
            lines.append(f"- **{heading}:** {PLACEHOLDERS[scale]}")
            continue
        finished = [s for s in summary["statuses"] if s["status"] == "finished"]
        hardware = sorted({s["hardware"] for s in finished})
        latest = max((s["recorded_at"] for s in summary["statuses"] if "recorded_at" in s), default="unknown")
        minutes = sum(s.get("seconds") or 0 for s in finished) / 60
        codes = collections.Counter(s.get("code", "not recorded") for s in finished)
        code = "; ".join(f"{version} ({count} run{'s' * (count != 1)})" for version, count in sorted(codes.items()))
        lines.append(f"- **{heading}:** {len(finished)} of {len(EXPERIMENTS)} experiments finished (last recorded "
                     f"{latest}; {minutes:.0f} min of recorded run time). Data: {'; '.join(summary['data'])}. "
                     f"Hardware: {'; '.join(hardware) or 'none'}. Code: {code or 'none'}. "
                     "Every experiment's flags and state: "
                     f"`{rel(ctx, os.path.join(ctx.results, scale, 'experiments.md'))}`.")
    lines.append(f"- **Tables:** {MEMORY_NOTE}")
    return "\n".join(lines)


def conv_bench(ctx):
    """bench_conv.py's whole-network rows as a table, and sentences that sum up all its rows
    (results/conv_benchmark.csv; its .md names the hardware)."""
    path = os.path.join(ctx.results, "conv_benchmark.csv")
    if not os.path.isfile(path):
        return "*The convolution benchmark is not in `results/` yet:* run `python bench_conv.py` in `code/`."
    with open(path) as f:
        rows = list(csv.DictReader(f))
    with open(path[:-4] + ".md") as f:
        header = f.read()
    hardware = re.search(r"^- hardware: (.*)$", header, re.M)
    nets = [r for r in rows if r["kind"] == "network"]
    layers = [r for r in rows if r["kind"] == "layer"]
    table = md_table((
        ("threads", lambda r: r["threads"]), ("network", lambda r: f"{r['name']} ({r['detail']})"),
        ("train step ms, native / custom", lambda r: f"{float(r['native_train_ms']):.0f} / "
                                                     f"{float(r['custom_train_ms']):.0f}"),
        ("train step ratio", lambda r: f"{float(r['train_ratio']):.2f}"),
        ("forward ratio", lambda r: f"{float(r['fwd_ratio']):.2f}"),
        ("peak memory ratio", lambda r: f"{float(r['peak_ratio']):.2f}")), nets)
    said = []
    for r in nets:
        ratio = float(r["train_ratio"])
        said.append(f"{r['name']} at {r['threads']} thread{'s' if r['threads'] != '1' else ''} {ratio:.2f} times "
                    f"({direction(ratio, 1, 'slower', 'faster', 'equal')})")
    text = [f"Whole networks (`code/bench_conv.py`, {hardware.group(1) if hardware else 'hardware in its file'}; "
            "ratios are CustomConv2d / F.conv2d, below 1 favours the custom convolution):", table,
            f"A training step (forward + backward) with CustomConv2d takes, relative to F.conv2d: {join_names(said)}."]
    if layers:
        kernel = re.compile(r"\bk(\d+)\b")
        one = [r for r in layers if kernel.search(r["detail"]).group(1) == "1"]
        big = [r for r in layers if kernel.search(r["detail"]).group(1) != "1"]
        held = sorted({f"{float(r['held_ratio']):.2f}" for r in rows})
        low = min(layers, key=lambda r: float(r["train_ratio"]))
        high = max(layers, key=lambda r: float(r["train_ratio"]))
        text.append(
            f"Over its {len(layers)} single-layer rows the training-step ratio runs from "
            f"{float(low['train_ratio']):.2f} "
            f"({low['name']}, {low['detail']}) to {float(high['train_ratio']):.2f} ({high['name']}, {high['detail']}); "
            f"the custom convolution is faster in {sum(float(r['train_ratio']) < 1 for r in one)} of {len(one)} rows "
            f"of 1x1 kernels and in {sum(float(r['train_ratio']) < 1 for r in big)} of {len(big)} rows of larger "
            f"kernels. The memory autograd holds after forward is "
            f"{held[0] if len(held) == 1 else held[0] + ' to ' + held[-1]} times F.conv2d's "
            f"{'in every row' if len(held) == 1 else 'over the rows'}. Every row: `{rel(ctx, path[:-4] + '.md')}`.")
    return "\n\n".join(text)


def gen_conv_results(ctx):
    """Block 'conv-results': the benchmark summed up, and the custom-vs-native runs per scale."""
    runs = per_scale(ctx, lambda scale: [
        "Training runs (the ratio row divides CustomConv2d by nn.Conv2d):" if include(ctx, scale, "compare_conv.md")
        else "", include(ctx, scale, "compare_conv.md"), figure(ctx, scale, "compare_conv.png"),
        missing(ctx, scale, ("conv-native", "conv-custom"))])
    return f"{conv_bench(ctx)}\n\n{runs}"


def data_short(label):
    """A data label of run_experiments.describe_data in short: 'the demo set (10 classes, 1000
    train / 200 val images)' or 'MiniPlaces (...)'."""
    m = re.search(r"(\d+ classes, \d+ train / \d+ val images)", label)
    if not m:
        return label
    return f"{'the demo set' if label.startswith('demo set') else 'MiniPlaces'} ({m.group(1)})"


def not_shown(scale):
    """What a result at ``scale`` cannot say, as the last sentence of a findings paragraph."""
    if scale == "demo":
        return "None of it measures MiniPlaces: the demo set is a small synthetic stand-in on a CPU budget."
    return "One run per configuration: how much of each difference the training seed makes is not measured."


def gen_findings_conv(ctx):
    """Block 'findings-conv': what the custom-vs-native runs show, per scale."""
    def render(scale):
        native, custom = summary_of(ctx, scale, "conv-native"), summary_of(ctx, scale, "conv-custom")
        if not (native and custom):
            return [missing(ctx, scale, ("conv-native", "conv-custom"))]
        speed = custom["seconds_per_epoch"] / native["seconds_per_epoch"]
        memory = custom["peak_memory_mb"] / native["peak_memory_mb"]
        return [
            f"We trained SimpleNet for {native['epochs']} epochs with nn.Conv2d and with CustomConv2d (same flags, "
            f"seed and data order) on {data_short(native['data'])}; {native['hardware']}. CustomConv2d was "
            f"{direction(speed, 1, 'slower', 'faster', 'as fast')} per epoch ({custom['seconds_per_epoch']:.1f} "
            f"against "
            f"{native['seconds_per_epoch']:.1f} s, ratio {speed:.2f}), with {memory:.2f} times the peak memory and "
            f"{custom['best_top1']:.1f}% against {native['best_top1']:.1f}% best val top-1. Both compute the same "
            "function up to rounding, which SGD amplifies, so one run of each cannot tell a systematic accuracy "
            "difference from seed noise, and one run's epoch times are less controlled than the benchmark above. "
            f"{not_shown(scale)}"]
    return per_scale(ctx, render)


def best_sentence(ctx, scale, row):
    """'SimpleNet: best val top-1 X% (top-5 Y%) at epoch E of N.' from the scale's summary."""
    r = summary_of(ctx, scale, row)
    if r is None:
        return ""
    return (f"{cap(name(row))}: best val top-1 {r['best_top1']:.2f}% (top-5 {r['top5_at_best']:.2f}%) at epoch "
            f"{r['best_epoch']} of {r['epochs']}; {r['data']}; {r['hardware']}.")


def gen_simplenet_results(ctx):
    """Block 'simplenet-results': SimpleNet's best accuracy and curves per scale."""
    return per_scale(ctx, lambda scale: [
        best_sentence(ctx, scale, "simplenet"), figure(ctx, scale, "curves_simplenet.png"),
        missing(ctx, scale, ("simplenet",))])


def gen_cnn_design(ctx):
    """Block 'cnn-design': default_cnn_model's, ResNet18's and SimpleNet's size and cost."""
    return model_sizes({"cnn": f"`{student_code.default_cnn_model.__name__}` (default_cnn_model)",
                        "resnet18": "ResNet18", "simplenet": "SimpleNet"})


def flag_difference(a, b, scale="full"):
    """A sentence on how row ``b``'s main.py flags at ``scale`` differ from row ``a``'s (besides
    the architecture), with main.py's defaults for the flags that only one of them sets."""
    fa, fb = vars(main_args(row_flags(a, scale))), vars(main_args(row_flags(b, scale)))
    defaults = vars(main_args(()))
    keys = [k for k in fa if fa[k] != fb[k] and k not in ("arch", "use_resnet18", "use_vit", "data_folder")]
    if not keys:
        return f"At the MiniPlaces scale {name(b)} uses the same flags as {name(a)} but the architecture."
    said = [f"`--{k.replace('_', '-')}` {fb[k]} (not {fa[k]})" for k in keys]
    text = f"At the MiniPlaces scale {name(b)} trains like {name(a)} except for {join_names(said)}."
    if b == "resnet18":
        text += (f" With `--arch resnet18`, main.py also gives the pretrained backbone `--backbone-lr-scale` "
                 f"{defaults['backbone_lr_scale']:g} times the learning rate and the new head the full rate.")
    return text


def gen_cnn_scheme(ctx):
    """Block 'cnn-scheme': the CNN experiments' flags and how ResNet18's differ."""
    return f"{commands(('simplenet', 'cnn', 'resnet18'))}\n\n{flag_difference('cnn', 'resnet18')}"


def seed_table(studies, a, b):
    """The seed studies of rows ``a`` and ``b`` as one table, one study per row."""
    return md_table((
        (f"epochs ({a} / {b})", lambda s: f"{s['epochs'][0]} / {s['epochs'][1]}"), ("seeds", lambda s: s["n"]),
        (f"mean top-1 (%, {a} / {b})", lambda s: f"{s['mean_a']:.1f} / {s['mean_b']:.1f}"),
        (f"{b} - {a} (points)", lambda s: f"{s['mean_diff']:+.1f}"),
        ("95% t-interval", lambda s: f"[{s['interval'][0]:+.1f}, {s['interval'][1]:+.1f}]" if s["interval"] else "n/a"),
        (f"{b} ahead in", lambda s: f"{s['wins_b']} of {s['n']} seeds")), studies)


def comparison_results(ctx, scale, a, b, group, ci_file, rows):
    """The results of a comparison group: table, overlay, bootstrap, seed studies, what is missing."""
    parts = [include(ctx, scale, f"compare_{group}.md"), figure(ctx, scale, f"compare_{group}.png")]
    ci = bootstrap(ctx, scale, ci_file)
    if ci:
        parts.append(f"Paired bootstrap over the same {ci['n']} val images (`{rel(ctx, ci['path'])}`, best "
                     f"checkpoints): {interval_words(name(b), ci['diff'], ci['low'], ci['high'])}: "
                     f"{ci['acc_b']:.1f}% against {ci['acc_a']:.1f}%.")
    studies = seed_studies(ctx, scale, a, b)
    if studies:
        places = sorted({(s["data"], s["hardware"]) for s in studies})
        where = "; ".join(f"{data}, {hardware}" for data, hardware in places)
        files = join_names(f"`{rel(ctx, s['path'])}`" for s in studies)
        parts += [f"Several seeds (`code/seed_study.py`; {where}; top-1 is each run's best epoch; per-seed tables "
                  f"in {files}):", seed_table(studies, a, b)]
    parts.append(missing(ctx, scale, rows))
    return parts


def gen_cnn_results(ctx):
    """Block 'cnn-results': SimpleNet vs improved CNN vs ResNet18 per scale."""
    return per_scale(ctx, lambda scale: comparison_results(ctx, scale, "simplenet", "cnn", "cnn", "ci_cnn.md",
                                                           ("simplenet", "cnn", "resnet18")))


def seed_sentence(studies, a, b):
    """One sentence over every seed study of ``a`` and ``b``: at which budgets B is ahead,
    behind, or not clearly different."""
    if not studies:
        return ""
    groups = {"ahead": [], "behind": [], "unclear": []}
    for s in studies:
        key = ("unclear" if s["interval"] is None or s["interval"][0] <= 0 <= s["interval"][1]
               else "ahead" if s["interval"][0] > 0 else "behind")
        groups[key].append(f"{s['epochs'][0]} / {s['epochs'][1]} epochs ({s['mean_diff']:+.1f} points, "
                           f"{s['wins_b']} of {s['n']} seeds)")
    said = [f"{words} at {join_names(budgets)}" for words, budgets in (
        ("ahead with an interval above zero", groups["ahead"]),
        ("behind with an interval below zero", groups["behind"]),
        ("not clearly ahead or behind (the interval holds zero)", groups["unclear"])) if budgets]
    return (f"Over {studies[0]['n']} seeds per budget (epochs of {name(a)} / {name(b)}), {name(b)} is "
            f"{join_names(said)}.")


def comparison_findings(ctx, scale, a, b, ci_file, extra=()):
    """Findings of row ``b`` against baseline ``a`` (and ``extra`` rows for reference)."""
    ra, rb = summary_of(ctx, scale, a), summary_of(ctx, scale, b)
    if not (ra and rb):
        return [missing(ctx, scale, (a, b))]
    runs = [r for r in (ra, rb, *(summary_of(ctx, scale, e) for e in extra)) if r]
    best = max(runs, key=lambda r: r["best_top1"])
    listed = join_names(f"{name(r['name'])} {r['best_top1']:.1f}% after {r['epochs']} epochs" for r in runs)
    cost = ra["images_per_second"] / rb["images_per_second"]
    text = [f"We trained {join_names(name(r['name']) for r in runs)} once each on {data_short(ra['data'])}; "
            f"{ra['hardware']}: best val top-1 {listed}, so {name(best['name'])} is highest in this run.",
            f"A training image cost {name(b)} {cost:.1f} times what it cost {name(a)} "
            f"({rb['images_per_second']:.1f} against {ra['images_per_second']:.1f} images/s)."]
    ci = bootstrap(ctx, scale, ci_file)
    if ci:
        text.append(f"On the same val images, {interval_words(name(b), ci['diff'], ci['low'], ci['high'])}; "
                    "that interval covers which images were drawn, not the training seed.")
    text.append(seed_sentence(seed_studies(ctx, scale, a, b), a, b))
    text.append(not_shown(scale))
    return [" ".join(t for t in text if t)]


def gen_findings_cnn(ctx):
    """Block 'findings-cnn': what the CNN comparison shows, per scale."""
    return per_scale(ctx, lambda scale: comparison_findings(ctx, scale, "simplenet", "cnn", "ci_cnn.md", ("resnet18",)))


def gen_vit_design(ctx):
    """Block 'vit-design': SimpleViT's and default_vit_model's size and cost."""
    return model_sizes({"simplevit": "`SimpleViT`",
                        "vit": f"`{student_code.default_vit_model.__name__}` (default_vit_model)"})


def gen_vit_scheme(ctx):
    """Block 'vit-scheme': the ViT experiments' flags."""
    return f"{commands(('simplevit', 'vit'))}\n\n{flag_difference('simplevit', 'vit')}"


def gen_vit_results(ctx):
    """Block 'vit-results': SimpleViT vs improved ViT vs improved CNN per scale."""
    return per_scale(ctx, lambda scale: comparison_results(ctx, scale, "simplevit", "vit", "vit", "ci_vit.md",
                                                           ("simplevit", "vit")))


def gen_findings_vit(ctx):
    """Block 'findings-vit': what the ViT comparison shows, per scale."""
    return per_scale(ctx, lambda scale: comparison_findings(ctx, scale, "simplevit", "vit", "ci_vit.md", ("cnn",)))


def gen_pgd_design(ctx):
    """Block 'pgd-design': the attack's default settings."""
    attack = student_code.default_attack
    defaults = ", ".join(f"{k}={p.default}" for k, p in inspect.signature(attack).parameters.items()
                         if p.default is not inspect.Parameter.empty)
    return f"Default settings of `{attack.__name__}` (`default_attack`): {defaults}."


def attacks_on(ctx, scale, target):
    """make_results.py's PGD rows of one attacked model, by steps then epsilon."""
    return sorted((r for r in ctx.scales[scale]["pgd"] if r["target"] == target),
                  key=lambda r: (r["num_steps"], r["epsilon"]))


def negative_drops(rows):
    """A sentence on the attacks that left top-1 above the clean top-1, or ''."""
    negative = [r for r in rows if r["drop_top1"] is not None and r["drop_top1"] < 0]
    if not negative:
        return ""
    n = negative[0]["val_images"]
    listed = join_names(f"{r['drop_top1']:+.1f} points by {r['name']} (epsilon {r['epsilon']:g}, {r['num_steps']} "
                        f"step{'s' if r['num_steps'] != 1 else ''}; {images_of(r['drop_top1'], n)})" for r in negative)
    return (f"Negative drops ({listed}) mean a few more images were right after the attack than before: the "
            "attack pushes each image towards the label the model finds least likely, not away from its true "
            "label, so a small perturbation can also move a wrongly classified image onto its true class. With "
            f"{n} val images one image is {100 / n:g} points.")


def pgd_table(rows):
    """The attacks of ``rows`` as one compact table."""
    return md_table((
        ("attack", lambda r: r["name"]), ("epsilon", lambda r: f"{r['epsilon']:g}"),
        ("steps", lambda r: r["num_steps"]),
        ("step size", lambda r: f"{r['step_size']:g}"), ("PGD top-1 (%)", lambda r: f"{r['acc1']:.1f}"),
        ("PGD top-5 (%)", lambda r: f"{r['acc5']:.1f}"), ("top-1 drop (points)", lambda r: f"{r['drop_top1']:+.1f}")),
        rows)


def gen_pgd_results(ctx):
    """Block 'pgd-results': SimpleNet under every attack, the sweeps and the sample images."""
    attacks = [e.name for e in EXPERIMENTS if e.target == "simplenet" and "-a" in e.demo]

    def render(scale):
        rows = attacks_on(ctx, scale, "simplenet")
        if not rows:
            return [missing(ctx, scale, ("simplenet", *attacks))]
        r = rows[0]
        return [f"SimpleNet's best checkpoint ({r['clean_top1']:.1f}% clean top-1; {data_short(r['data'])}; "
                f"{r['hardware']}) under each attack (`{rel(ctx, os.path.join(ctx.results, scale, 'pgd.md'))}` "
                "has every attack):", pgd_table(rows), figure(ctx, scale, "pgd_epsilon.png"),
                figure(ctx, scale, "pgd_steps.png"), negative_drops(rows),
                figure(ctx, scale, "pgd_samples_pgd-simplenet.png"), missing(ctx, scale, attacks)]
    return per_scale(ctx, render)


def monotone(values):
    """'falls' when ``values`` never rise, 'rises' when they never fall, else 'moves up and down'."""
    pairs = list(zip(values, values[1:]))
    if all(b <= a for a, b in pairs):
        return "falls"
    return "rises" if all(b >= a for a, b in pairs) else "moves up and down"


def gen_findings_pgd(ctx):
    """Block 'findings-pgd': what the attacks on SimpleNet show, per scale."""
    eps_default = inspect.signature(student_code.default_attack).parameters["epsilon"].default
    steps_default = inspect.signature(student_code.default_attack).parameters["num_steps"].default

    def render(scale):
        rows = attacks_on(ctx, scale, "simplenet")
        if not rows:
            return [missing(ctx, scale, ("pgd-simplenet",))]
        r0, n = rows[0], rows[0]["val_images"]
        text = [f"We attacked SimpleNet's best checkpoint ({r0['clean_top1']:.1f}% clean top-1) with PGD towards the "
                f"least likely label on {data_short(r0['data'])}."]
        sweep = sorted((r for r in rows if r["num_steps"] == steps_default), key=lambda r: r["epsilon"])
        if len(sweep) > 1:
            text.append(f"With {steps_default} steps, top-1 {monotone([r['acc1'] for r in sweep])} as epsilon grows: "
                        + ", ".join(f"{r['acc1']:.1f}% at {r['epsilon']:g}" for r in sweep) + ".")
        default = next((r for r in sweep if r["epsilon"] == eps_default), None)
        if default:
            text.append(f"At the default epsilon {eps_default:g} the drop is {default['drop_top1']:+.1f} points "
                        f"({images_of(default['drop_top1'], n)}).")
        by_eps = {}
        for r in rows:
            by_eps.setdefault(r["epsilon"], []).append(r)
        steps = max(by_eps.values(), key=len)
        if len(steps) > 2:
            steps = sorted(steps, key=lambda r: r["num_steps"])
            text.append(f"At epsilon {steps[0]['epsilon']:g}, top-1 {monotone([r['acc1'] for r in steps])} with more "
                        "steps: " + ", ".join(f"{r['acc1']:.1f}% after {r['num_steps']}" for r in steps) + ".")
        text.append("It does not show other attacks (untargeted PGD, random starts) or other networks than "
                    "SimpleNet and its adversarially trained version" + (", nor MiniPlaces photos, which lack the "
                    "demo set's pixel noise." if scale == "demo" else "."))
        return [" ".join(text)]
    return per_scale(ctx, render)


def gen_adv_design(ctx):
    """Block 'adv-design': main.py's adversarial-training flags and the commands."""
    lines = []
    for flag in ("--adv-train", "--adv-steps", "--adv-eps"):
        text = flag_help(flag)
        lines.append(f"- `{flag}`: {text}" if text is not None else f"- *main.py has no `{flag}` flag yet*")
    return "\n".join(lines) + f"\n\n{commands(('adv-simplenet', 'pgd-adv-simplenet-eps0.5'))}"


def adv_table(rows):
    """make_results.py's adv_robustness rows as a compact table."""
    return md_table((
        ("epsilon", lambda r: f"{r['epsilon']:g}"), ("steps", lambda r: r["num_steps"]),
        ("standard: clean / PGD top-1 (%)", lambda r: f"{r['std_clean']:.1f} / {r['std_pgd']:.1f}"),
        ("adversarial: clean / PGD top-1 (%)", lambda r: f"{r['adv_clean']:.1f} / {r['adv_pgd']:.1f}"),
        ("drop, standard / adversarial (points)", lambda r: f"{r['std_drop']:+.1f} / {r['adv_drop']:+.1f}"),
        ("adversarial - standard under PGD (points)", lambda r: f"{r['gain']:+.1f}")), rows)


def gen_adv_results(ctx):
    """Block 'adv-results': standard vs adversarial training, clean and under the same attacks."""
    def render(scale):
        adv = ctx.scales[scale]["adv_robustness"]
        pgd = [r for r in ctx.scales[scale]["pgd"] if r["target"] in ("simplenet", "adv-simplenet")]
        parts = []
        if adv:
            parts += [f"Both networks under the same attacks ({data_short(adv[0]['data'])}; {adv[0]['hardware']}; "
                      f"`{rel(ctx, os.path.join(ctx.results, scale, 'adv_robustness.md'))}`):", adv_table(adv),
                      negative_drops([r for r in pgd if (r["epsilon"], r["num_steps"]) in
                                      {(a["epsilon"], a["num_steps"]) for a in adv}])]
        parts += ["Their training runs:" if include(ctx, scale, "compare_adv.md") else "",
                  include(ctx, scale, "compare_adv.md"), figure(ctx, scale, "compare_adv.png")]
        samples = "pgd_samples_pgd-adv-simplenet.png"
        if samples in ctx.scales[scale]["files"]:
            parts.append(f"The sample grids of the attack on the adversarially trained network: "
                         f"`{rel(ctx, os.path.join(ctx.results, scale, samples))}`.")
        parts.append(missing(ctx, scale, ("adv-simplenet", "pgd-adv-simplenet", "pgd-adv-simplenet-eps0.5")))
        return parts
    return per_scale(ctx, render)


def gen_findings_adv(ctx):
    """Block 'findings-adv': what adversarial training bought and cost, per scale."""
    def render(scale):
        adv = ctx.scales[scale]["adv_robustness"]
        std, robust = summary_of(ctx, scale, "simplenet"), summary_of(ctx, scale, "adv-simplenet")
        if not (adv and std and robust):
            return [missing(ctx, scale, ("simplenet", "adv-simplenet", "pgd-adv-simplenet-eps0.5"))]
        flags = main_args(row_flags("adv-simplenet", scale))
        s = max(adv, key=lambda r: (r["epsilon"], r["num_steps"]))  # the strongest attack run on both
        clean_gain, drop_gain = s["adv_clean"] - s["std_clean"], s["std_drop"] - s["adv_drop"]
        split = (f"so of the {s['gain']:+.1f} points {clean_gain:+.1f} are clean accuracy and {drop_gain:+.1f} the "
                 "difference in drop")
        text = [f"We trained SimpleNet for {robust['epochs']} epochs with {flags.adv_train:.0%} of every batch "
                f"replaced by PGD samples ({flags.adv_steps} steps, epsilon {flags.adv_eps:g}) and attacked it and the "
                f"standard SimpleNet alike on {data_short(std['data'])}.",
                f"Clean top-1 is {s['adv_clean']:.1f}% with adversarial training against {s['std_clean']:.1f}% "
                f"without; under the strongest common attack (epsilon {s['epsilon']:g}, {s['num_steps']} steps) the "
                f"adversarially trained network keeps {s['adv_pgd']:.1f}% against {s['std_pgd']:.1f}%, so it is "
                f"{direction(s['gain'], 0, 'more', 'less', 'equally')} robust by {abs(s['gain']):.1f} points.",
                f"The attack costs it {s['adv_drop']:.1f} points against {s['std_drop']:.1f} for the standard "
                f"network, {split}."]
        weaker = [f"at epsilon {r['epsilon']:g} ({r['num_steps']} steps) the drops are {r['adv_drop']:+.1f} with and "
                  f"{r['std_drop']:+.1f} without adversarial training" for r in adv if r is not s]
        if weaker:
            text.append(cap("; ".join(weaker)) + ".")
        cost = robust["seconds_per_epoch"] / std["seconds_per_epoch"]
        text.append(f"An epoch of adversarial training took {cost:.1f} times as long; the comparison does not show "
                    "robustness against untargeted or stronger attacks, and one run each cannot separate the "
                    "clean-accuracy difference from seed noise"
                    + (" or say anything about MiniPlaces." if scale == "demo" else "."))
        return [" ".join(text)]
    return per_scale(ctx, render)


def eval_table(rows):
    """make_results.py's eval rows (main.py -e) as a compact table."""
    return md_table((
        ("model", lambda r: r["target"]), ("top-1 (%)", lambda r: f"{r['plain_top1']:.2f}"),
        ("top-1, flip-averaged (%)", lambda r: f"{r['flip_top1']:.2f}"),
        ("change (points)", lambda r: f"{r['gain_top1']:+.2f}"), ("top-5 (%)", lambda r: f"{r['plain_top5']:.2f}"),
        ("top-5, flip-averaged (%)", lambda r: f"{r['flip_top5']:.2f}")), rows)


def gen_eval_results(ctx):
    """Block 'eval-results': main.py -e on every trained row, and what flip averaging changed."""
    def render(scale):
        rows = ctx.scales[scale]["eval"]
        if not rows:
            return [missing(ctx, scale, [e.name for e in EXPERIMENTS if e.target and "-e" in e.demo])]
        gains = [r["gain_top1"] for r in rows]
        helped = sum(g > 0 for g in gains)
        hurt = sum(g < 0 for g in gains)
        return [f"`python main.py ../data -e --resume <best checkpoint>` on every trained row "
                f"({data_short(rows[0]['data'])}; {rows[0]['hardware']}; "
                f"`{rel(ctx, os.path.join(ctx.results, scale, 'eval.md'))}`):",
                eval_table(rows),
                f"Averaging the softmax of each image and its mirror image changed top-1 by {min(gains):+.2f} to "
                f"{max(gains):+.2f} points (mean {statistics.fmean(gains):+.2f}): it helped {helped} of {len(rows)} "
                f"models, hurt {hurt} and left {len(rows) - helped - hurt} unchanged; on {rows[0]['val_images']} "
                f"val images one image is {100 / rows[0]['val_images']:g} points.",
                missing(ctx, scale, [e.name for e in EXPERIMENTS if e.target and "-e" in e.demo])]
    return per_scale(ctx, render)


def gen_summary(ctx):
    """Block 'summary': every finished training run's numbers per scale (the parts name what
    did not run)."""
    return per_scale(ctx, lambda scale: [include(ctx, scale, "summary.md")])


GENERATORS = {
    "provenance": gen_provenance, "conv-results": gen_conv_results, "findings-conv": gen_findings_conv,
    "simplenet-results": gen_simplenet_results, "cnn-design": gen_cnn_design, "cnn-scheme": gen_cnn_scheme,
    "cnn-results": gen_cnn_results, "findings-cnn": gen_findings_cnn, "vit-design": gen_vit_design,
    "vit-scheme": gen_vit_scheme, "vit-results": gen_vit_results, "findings-vit": gen_findings_vit,
    "pgd-design": gen_pgd_design, "pgd-results": gen_pgd_results, "findings-pgd": gen_findings_pgd,
    "adv-design": gen_adv_design, "adv-results": gen_adv_results, "findings-adv": gen_findings_adv,
    "eval-results": gen_eval_results, "summary": gen_summary,
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
