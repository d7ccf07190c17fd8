"""Build writeup/writeup.pdf from writeup/writeup.md and results/, in one command.

    python writeup/build_report.py                        # from the repository root
    python writeup/build_report.py --results results --md writeup/writeup.md --pdf writeup/writeup.pdf

Rewrites every ``<!-- BEGIN generated: NAME -->`` ... ``<!-- END generated: NAME -->`` block
of the Markdown file from the files that code/make_results.py wrote (results/full for
MiniPlaces, results/demo for the demo set) and from the code itself (docstrings, model sizes,
the experiment table), then renders the Markdown with its figures to PDF (Markdown -> HTML ->
fpdf2, fonts from matplotlib; no LaTeX). A scale without results gets a placeholder that
says which command measures it; demo-set numbers only ever appear under the demo headings.
"""
import argparse
import html
import inspect
import json
import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass

import markdown
import matplotlib
from fpdf import FPDF
from fpdf.fonts import FontFace, TextStyle

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_DIR = os.path.join(REPO_DIR, "code")
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)

import student_code  # noqa: E402
from run_experiments import EXPERIMENTS  # noqa: E402

BLOCK = re.compile(r"(<!-- BEGIN generated: ([a-z0-9-]+) -->\n).*?(<!-- END generated: \2 -->)", re.S)
SCALE_HEADINGS = (("full", "MiniPlaces"), ("demo", "Demo set (synthetic, not MiniPlaces)"))
PLACEHOLDERS = {
    "full": ("*Not yet measured on MiniPlaces.* To fill this in, run `python run_experiments.py --full` in "
             "`code/` (MiniPlaces in `data/`, a GPU); it rewrites this report."),
    "demo": "*Not run on the demo set yet:* `python run_experiments.py --demo` in `code/`.",
}
FONT_DIR = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


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


def status_of(ctx, scale, name):
    """The status dict of experiment ``name`` at ``scale``, or None when it never ran."""
    return next((s for s in ctx.scales[scale]["statuses"] if s["name"] == name), None)


def missing(ctx, scale, names):
    """Bullets for the experiments of ``names`` that have no result at ``scale``, with the reason."""
    lines = []
    for name in names:
        s = status_of(ctx, scale, name)
        if s is None:
            lines.append(f"- `{name}`: not run at this scale yet")
        elif s["status"] != "finished":
            lines.append(f"- `{name}`: {s['status']}: {html.escape(s['reason'], quote=False)}")
    return "Not measured here:\n\n" + "\n".join(lines) if lines else ""


def figure(ctx, scale, name, caption):
    """Markdown for results/<scale>/<name> with a caption line, or '' when make_results.py did
    not write it (summary.json lists what it wrote)."""
    path = os.path.join(ctx.results, scale, name)
    if name not in ctx.scales[scale]["files"]:
        return ""
    return f"![{caption}]({os.path.relpath(path, ctx.md_dir)})\n\n*{caption}*"


def include(ctx, scale, name):
    """The text of results/<scale>/<name>, or '' when make_results.py did not write it."""
    path = os.path.join(ctx.results, scale, name)
    if name not in ctx.scales[scale]["files"]:
        return ""
    with open(path) as f:
        return f.read().strip()


def comparison(ctx, scale, name, title):
    """A file of results/<scale>/ that make_results.py does not write (run_experiments.py's
    compare_checkpoints.py intervals, seed_study.py's tables) under ``title``, or '' when absent."""
    path = os.path.join(ctx.results, scale, name)
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        return f"{title}\n\n{f.read().strip()}"


def seed_studies(ctx, scale, a, b, title):
    """Every seed_study.py table of rows ``a`` and ``b`` at ``scale`` (results/<scale>/
    seeds_<a>_vs_<b>_e<EA>-<EB>.md) in order of (EA, EB), each under ``title``."""
    pattern = re.compile(rf"^seeds_{re.escape(a)}_vs_{re.escape(b)}_e(\d+)-(\d+)\.md$")
    folder = os.path.join(ctx.results, scale)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    studies = sorted((int(m.group(1)), int(m.group(2)), n) for n in names if (m := pattern.match(n)))
    return [comparison(ctx, scale, name, title) for _, _, name in studies]


def per_scale(ctx, render):
    """A MiniPlaces and a demo-set section: ``render(scale)`` parts, or the scale's placeholder."""
    out = []
    for scale, heading in SCALE_HEADINGS:
        body = "\n\n".join(p for p in render(scale) if p) if ctx.scales[scale] else ""
        out.append(f"#### {heading}\n\n{body or PLACEHOLDERS[scale]}")
    return "\n\n".join(out)


def best_sentence(ctx, scale, name):
    """'name: best val top-1 X % (top-5 Y %) at epoch E of N.' from the scale's summary."""
    r = ctx.scales[scale]["summaries"].get(name)
    if r is None:
        return ""
    return (f"`{name}`: best val top-1 {r['best_top1']:.2f} % (top-5 {r['top5_at_best']:.2f} %) at epoch "
            f"{r['best_epoch']} of {r['epochs']}; {r['data']}; {r['hardware']}.")


def docs(*objects):
    """Each object's name and docstring as a code block."""
    parts = []
    for obj in objects:
        doc = inspect.getdoc(obj) or "(no docstring)"
        parts.append(f"`{obj.__name__}`:\n\n```\n{doc}\n```")
    return "\n\n".join(parts)


def parameter_count(build):
    """'N parameters' of the model ``build()`` makes, or why it could not be built."""
    try:
        model = build()
    except NotImplementedError as e:
        return f"not implemented yet ({e})"
    return f"{sum(p.numel() for p in model.parameters()):,} parameters"


def commands(names):
    """A table of the main.py flags of each named experiment at both scales."""
    rows = ["| experiment | MiniPlaces | demo set |", "|---|---|---|"]
    for exp in EXPERIMENTS:
        if exp.name in names:
            target = f" --resume &lt;best checkpoint of {exp.target}&gt;" if exp.target else ""
            rows.append(f"| {exp.name} ({exp.title}) | {shlex.join(exp.full)}{target} | "
                        f"{shlex.join(exp.demo)}{target} |")
    intro = "Flags after `python main.py ../data` (from `EXPERIMENTS` in `code/run_experiments.py`):"
    return intro + "\n\n" + "\n".join(rows)


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
        lines.append(f"- **{heading}:** {len(finished)} of {len(EXPERIMENTS)} experiments finished (last recorded "
                     f"{latest}; {minutes:.0f} min of recorded run time). Data: {'; '.join(summary['data'])}. "
                     f"Hardware: {'; '.join(hardware) or 'none'}.")
    bench = os.path.join(ctx.results, "conv_benchmark.md")
    if os.path.isfile(bench):
        lines.append("- **Convolution layer benchmark:** `results/conv_benchmark.md` (`code/bench_conv.py`) "
                     "states its own data and hardware.")
    return "\n".join(lines)


def gen_conv_design(ctx):
    """Block 'conv-design': the custom convolution's docstrings."""
    return docs(student_code.CustomConv2DFunction, student_code.CustomConv2d)


def gen_conv_results(ctx):
    """Block 'conv-results': bench_conv.py's table and the custom-vs-native runs per scale."""
    path = os.path.join(ctx.results, "conv_benchmark.md")
    if os.path.isfile(path):
        with open(path) as f:
            bench = "Layer by layer (`code/bench_conv.py`, `results/conv_benchmark.md`):\n\n" + f.read().strip()
    else:
        bench = "*The layer benchmark is not in `results/` yet:* run `python bench_conv.py` in `code/`."
    runs = per_scale(ctx, lambda scale: [
        "Training runs (the ratio row divides CustomConv2d by nn.Conv2d):" if include(ctx, scale, "compare_conv.md")
        else "", include(ctx, scale, "compare_conv.md"),
        figure(ctx, scale, "compare_conv.png", "SimpleNet with nn.Conv2d vs CustomConv2d: losses and val accuracy"),
        missing(ctx, scale, ("conv-native", "conv-custom"))])
    return f"{bench}\n\n{runs}"


def gen_simplenet_results(ctx):
    """Block 'simplenet-results': SimpleNet's best accuracy and curves per scale."""
    return per_scale(ctx, lambda scale: [
        best_sentence(ctx, scale, "simplenet"),
        figure(ctx, scale, "curves_simplenet.png", "SimpleNet: loss, learning rate, top-1 and top-5 per epoch"),
        missing(ctx, scale, ("simplenet",))])


def gen_cnn_design(ctx):
    """Block 'cnn-design': default_cnn_model's docstring and size next to SimpleNet's."""
    cnn = student_code.default_cnn_model
    sizes = (f"Size: `{cnn.__name__}` {parameter_count(lambda: cnn(num_classes=100))}; `SimpleNet` "
             f"{parameter_count(lambda: student_code.SimpleNet(num_classes=100))} (100 classes).")
    return f"{docs(cnn)}\n\n{sizes}"


def gen_cnn_scheme(ctx):
    """Block 'cnn-scheme': the CNN experiments' flags."""
    return commands(("simplenet", "cnn", "resnet18"))


def gen_cnn_results(ctx):
    """Block 'cnn-results': SimpleNet vs improved CNN vs ResNet18 per scale."""
    return per_scale(ctx, lambda scale: [
        include(ctx, scale, "compare_cnn.md"),
        figure(ctx, scale, "compare_cnn.png", "SimpleNet, improved CNN and ResNet18: losses and val accuracy"),
        figure(ctx, scale, "curves_cnn.png", "Improved CNN: loss, learning rate, top-1 and top-5 per epoch"),
        comparison(ctx, scale, "ci_cnn.md", "Paired bootstrap, SimpleNet (A) against the improved CNN (B):"),
        *seed_studies(ctx, scale, "simplenet", "cnn", "Several seeds, SimpleNet against the improved CNN:"),
        missing(ctx, scale, ("simplenet", "cnn", "resnet18"))])


def gen_vit_design(ctx):
    """Block 'vit-design': the attention and ViT docstrings and model sizes."""
    vit = student_code.default_vit_model
    classes = [student_code.Attention, student_code.TransformerBlock, student_code.SimpleViT]
    classes += [vit] if vit is not student_code.SimpleViT else []
    sizes = (f"Size: `SimpleViT` {parameter_count(lambda: student_code.SimpleViT(num_classes=100))}; "
             f"`{vit.__name__}` (default_vit_model) {parameter_count(lambda: vit(num_classes=100))} (100 classes).")
    return f"{docs(*classes)}\n\n{sizes}"


def gen_vit_scheme(ctx):
    """Block 'vit-scheme': the ViT experiments' flags."""
    return commands(("simplevit", "vit"))


def gen_vit_results(ctx):
    """Block 'vit-results': SimpleViT vs improved ViT vs improved CNN per scale."""
    return per_scale(ctx, lambda scale: [
        include(ctx, scale, "compare_vit.md"),
        figure(ctx, scale, "compare_vit.png", "SimpleViT, improved ViT and improved CNN: losses and val accuracy"),
        figure(ctx, scale, "curves_vit.png", "Improved ViT: loss, learning rate, top-1 and top-5 per epoch"),
        comparison(ctx, scale, "ci_vit.md", "Paired bootstrap, SimpleViT (A) against the improved ViT (B):"),
        *seed_studies(ctx, scale, "simplevit", "vit", "Several seeds, SimpleViT against the improved ViT:"),
        missing(ctx, scale, ("simplevit", "vit"))])


def gen_pgd_design(ctx):
    """Block 'pgd-design': the attack's docstrings and default settings."""
    attack = student_code.default_attack
    defaults = ", ".join(f"{k}={p.default}" for k, p in inspect.signature(attack).parameters.items()
                         if p.default is not inspect.Parameter.empty)
    return f"{docs(attack, attack.perturb)}\n\nDefault settings of `{attack.__name__}`: {defaults}."


def gen_pgd_results(ctx):
    """Block 'pgd-results': clean vs attacked accuracy and the sample images per scale."""
    return per_scale(ctx, lambda scale: [
        include(ctx, scale, "pgd_models.md"),
        figure(ctx, scale, "pgd_samples_pgd-simplenet.png",
               "PGD on SimpleNet: original, adversarial and (amplified) difference images"),
        missing(ctx, scale, ("simplenet", "pgd-simplenet"))])


def gen_pgd_sweeps(ctx):
    """Block 'pgd-sweeps': accuracy against epsilon and against the number of steps per scale."""
    sweeps = [e.name for e in EXPERIMENTS if e.target == "simplenet"]
    return per_scale(ctx, lambda scale: [
        "Epsilon (default number of steps):" if include(ctx, scale, "pgd_epsilon.md") else "",
        include(ctx, scale, "pgd_epsilon.md"),
        "Number of steps (the epsilon of each row is in the table):" if include(ctx, scale, "pgd_steps.md") else "",
        include(ctx, scale, "pgd_steps.md"),
        figure(ctx, scale, "pgd_epsilon.png", "Accuracy under PGD against epsilon"),
        figure(ctx, scale, "pgd_steps.png", "Accuracy under PGD against the number of steps"),
        missing(ctx, scale, sweeps)])


def gen_adv_design(ctx):
    """Block 'adv-design': main.py's --adv-train help and the adversarial-training flags."""
    text = flag_help("--adv-train")
    flag = (f"`--adv-train`: {text}" if text is not None
            else "*main.py has no `--adv-train` flag yet*, so adversarial training has not run.")
    return f"{flag}\n\n{commands(('adv-simplenet', 'pgd-adv-simplenet'))}"


def gen_adv_results(ctx):
    """Block 'adv-results': standard vs adversarial training, clean and attacked, per scale."""
    return per_scale(ctx, lambda scale: [
        include(ctx, scale, "compare_adv.md"),
        figure(ctx, scale, "compare_adv.png", "SimpleNet, standard vs adversarial training"),
        "Under attack (same PGD settings for both models):" if include(ctx, scale, "pgd_models.md") else "",
        include(ctx, scale, "pgd_models.md"),
        figure(ctx, scale, "pgd_samples_pgd-adv-simplenet.png", "PGD on the adversarially trained SimpleNet"),
        missing(ctx, scale, ("adv-simplenet", "pgd-adv-simplenet"))])


def gen_summary(ctx):
    """Block 'summary': every experiment's numbers and state per scale, and every flag set."""
    runs = per_scale(ctx, lambda scale: [
        include(ctx, scale, "summary.md"), missing(ctx, scale, [e.name for e in EXPERIMENTS])])
    return f"{runs}\n\n#### Every experiment\n\n{commands([e.name for e in EXPERIMENTS])}"


GENERATORS = {
    "provenance": gen_provenance, "conv-design": gen_conv_design, "conv-results": gen_conv_results,
    "simplenet-results": gen_simplenet_results, "cnn-design": gen_cnn_design, "cnn-scheme": gen_cnn_scheme,
    "cnn-results": gen_cnn_results, "vit-design": gen_vit_design, "vit-scheme": gen_vit_scheme,
    "vit-results": gen_vit_results, "pgd-design": gen_pgd_design, "pgd-results": gen_pgd_results,
    "pgd-sweeps": gen_pgd_sweeps, "adv-design": gen_adv_design, "adv-results": gen_adv_results,
    "summary": gen_summary,
}


def fill(template, ctx):
    """The Markdown with every generated block rewritten; ValueError on an unknown block name."""
    unknown = sorted(set(m.group(2) for m in BLOCK.finditer(template)) - set(GENERATORS))
    if unknown:
        raise ValueError(f"unknown generated block(s) {unknown}; known: {sorted(GENERATORS)}")
    return BLOCK.sub(lambda m: f"{m.group(1)}{GENERATORS[m.group(2)](ctx).strip()}\n{m.group(3)}", template)


def layout_table(table_html):
    """An HTML table with left-aligned rows and each <th> given width="N%" by the longest
    header word / cell of its column."""
    rows = re.findall(r"<tr>(.*?)</tr>", table_html, re.S)
    cells = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)] for r in rows]
    width = [0] * len(cells[0])
    for r, row in enumerate(cells):
        for i, text in enumerate(row[:len(width)]):
            words = text.split() if r == 0 else [text]
            width[i] = max(width[i], min(40, max((len(w) for w in words), default=1)) + 2)
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


def render_pdf(text, md_dir, pdf_path):
    """Markdown -> HTML -> PDF with the figures embedded at the page's text width.

    Emphasis (*text*) renders grey, not italic: fpdf2 2.8.9 carries an italic style into the
    cells of every later table."""
    page = markdown.markdown(text, extensions=["tables", "fenced_code"])
    page = re.sub(r"<table>.*?</table>", lambda m: layout_table(m.group(0)), page, flags=re.S)
    pdf = ReportPDF(format="A4")
    pdf.set_title("MiniPlaces scene recognition: report")
    for style, suffix in (("", ""), ("B", "-Bold"), ("I", "-Oblique"), ("BI", "-BoldOblique")):
        pdf.add_font("dejavu", style, os.path.join(FONT_DIR, f"DejaVuSans{suffix}.ttf"))
        pdf.add_font("dejavumono", style, os.path.join(FONT_DIR, f"DejaVuSansMono{suffix}.ttf"))
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("dejavu", size=9.5)
    width = f"{pdf.epw * pdf.k:.0f}"  # fpdf2 reads <img width> in points
    page = re.sub(r'<img alt="[^"]*" src="([^"]+)" />', lambda m: f'<img src="{m.group(1)}" width="{width}">', page)
    heading = {f"h{i}": TextStyle(font_family="dejavu", font_style="B", font_size_pt=size, color="#1f3b63",
                                  t_margin=top, b_margin=1)
               for i, size, top in ((1, 17, 2), (2, 14, 6), (3, 11.5, 4), (4, 10, 3))}
    styles = dict(heading, code=FontFace(family="dejavumono", size_pt=8.5), em=FontFace(color="#555555"),
                  pre=TextStyle(font_family="dejavumono", font_size_pt=7.5, t_margin=2, b_margin=2))
    logger, handler = logging.getLogger("fpdf"), RaiseOnWarning(logging.WARNING)
    logger.addHandler(handler)
    try:
        pdf.write_html(page, tag_styles=styles, image_map=lambda src: os.path.join(md_dir, src),
                       table_line_separators=True)
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
