"""writeup/build_report.py and the hand-in: a report built from a real run's logs, honest
labels, and a zip with the report but no data, logs or checkpoints."""
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import zipfile

import matplotlib.text
from matplotlib.backends.backend_agg import FigureCanvasAgg
import pytest
import torch

import fake_logs
import main as driver
import make_results
import run_experiments as runner
from run_experiments import Experiment

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "writeup"))
sys.path.insert(0, REPO)
import build_report  # noqa: E402
import zip_submission  # noqa: E402

TEMPLATE = os.path.join(REPO, "writeup", "writeup.md")
FLAGS = ("--arch", "simplenet", "--epochs", "1", "--warmup", "0", "-b", "16", "-j", "0", "--lr", "0.05", "-p", "2")


@pytest.fixture(scope="module")
def repo(demo_data, tmp_path_factory):
    """A hand-in tree: one SimpleNet epoch trained by main.py (in-process, with the runner's
    --log-dir / --exp-name), recorded by the runner, read by make_results.py and turned into
    the report by build_report.py. Returns (root, Markdown text, the run's status)."""
    root = tmp_path_factory.mktemp("repo")
    exp_dir = root / "logs" / "demo" / "simplenet"
    with contextlib.redirect_stdout(io.StringIO()):
        driver.main(driver.get_args_parser().parse_args(
            [demo_data, *FLAGS, "--log-dir", str(exp_dir), "--exp-name", "simplenet"]))
    exp = Experiment("simplenet", "I.2", "SimpleNet", FLAGS, FLAGS)
    status = runner.run_one(exp, "demo", demo_data, runner.prepare_data(demo_data, "demo"),
                            str(root / "logs" / "demo"), (exp,))
    assert status["status"] == "finished" and status["hardware"].startswith("not recorded"), status
    make_results.make_results(str(root / "logs"), str(root / "results"))
    (root / "writeup").mkdir()
    shutil.copy(TEMPLATE, root / "writeup" / "writeup.md")
    (root / "code").mkdir()
    (root / "code" / "student_code.py").write_text("x = 1\n")
    shutil.copytree(demo_data, root / "data")
    text = build_report.build(str(root / "results"), str(root / "writeup" / "writeup.md"),
                              str(root / "writeup" / "writeup.pdf"))
    return root, text, status


def sections(text):
    """{heading: [bodies]} of the '#### ' sections inside the generated blocks."""
    found = {}
    for block in re.findall(r"<!-- BEGIN generated: [a-z0-9-]+ -->\n(.*?)<!-- END", text, re.S):
        for part in block.split("#### ")[1:]:
            heading, _, body = part.partition("\n")
            found.setdefault(heading, []).append(body.strip())
    return found


def test_report_numbers_come_from_the_run(repo):
    root, text, status = repo
    run = os.path.join(root, "logs", "demo", "simplenet", status["run_dir"])
    best = torch.load(os.path.join(run, "models", "model_best.pth.tar"), weights_only=True)["best_acc1"]
    demo = "\n".join(sections(text)["Demo set (synthetic, not MiniPlaces)"])
    assert f"SimpleNet: best val top-1 {best:.2f}%" in demo
    assert status["data"] == "demo set (synthetic, 4 classes, 64 train / 16 val images; not MiniPlaces)"
    assert status["data"] in demo and status["hardware"] in demo
    assert f"| simplenet | I.2 | 1 | {best:.2f} |" in demo, "the appendix table row"
    assert "- `cnn`: not run at this scale yet" in demo


def test_miniplaces_sections_say_how_to_measure_them(repo):
    _, text, _ = repo
    found = sections(text)
    assert len(found["MiniPlaces"]) == len(found["Demo set (synthetic, not MiniPlaces)"]) == 13
    assert set(found["MiniPlaces"]) == {build_report.PLACEHOLDERS["full"]}
    assert "python run_experiments.py --full" in build_report.PLACEHOLDERS["full"]


def test_pdf_embeds_every_figure(repo):
    root, text, _ = repo
    figures = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    assert figures == {"../results/demo/curves_simplenet.png"}
    for rel in figures:
        assert os.path.isfile(os.path.join(root, "writeup", rel))
    pdf = (root / "writeup" / "writeup.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf.count(b"/Subtype /Image") == len(figures)
    assert len(re.findall(rb"/Type /Page\b", pdf)) >= 5


def test_rebuilding_changes_nothing_and_keeps_the_template(repo, tmp_path):
    root, text, _ = repo
    with open(TEMPLATE) as f:
        template = f.read()
    names = re.findall(r"<!-- BEGIN generated: ([a-z0-9-]+) -->", template)
    assert re.findall(r"<!-- BEGIN generated: ([a-z0-9-]+) -->", text) == names
    assert sorted(names) == sorted(build_report.GENERATORS), "every block has a generator and vice versa"
    outside = build_report.BLOCK.sub("", text)
    assert outside == build_report.BLOCK.sub("", template), "hand-written text is untouched"
    again = build_report.build(str(root / "results"), str(root / "writeup" / "writeup.md"), str(tmp_path / "again.pdf"))
    assert again == text, "no timestamps or other noise: a rebuild from the same results is identical"


def test_demo_runs_in_the_miniplaces_results_are_refused(tmp_path):
    (tmp_path / "results" / "full").mkdir(parents=True)
    summary = {"statuses": [{"name": "cnn", "demo_data": True}]}
    (tmp_path / "results" / "full" / "summary.json").write_text(json.dumps(summary))
    md = tmp_path / "writeup.md"
    shutil.copy(TEMPLATE, md)
    with pytest.raises(ValueError, match=r"\['cnn'\] ran on the demo set"):
        build_report.build(str(tmp_path / "results"), str(md), str(tmp_path / "writeup.pdf"))
    with open(TEMPLATE) as f:
        assert md.read_text() == f.read(), "nothing written on refusal"


def test_unknown_blocks_and_bad_html_are_errors(tmp_path):
    ctx = build_report.Context(results=str(tmp_path), md_dir=str(tmp_path), scales={"full": None, "demo": None})
    with pytest.raises(ValueError, match="unknown generated block"):
        build_report.fill("<!-- BEGIN generated: nope -->\n<!-- END generated: nope -->\n", ctx)
    with pytest.raises(ValueError, match="does not render cleanly"):
        build_report.render_pdf("text <best checkpoint> more\n", str(tmp_path), str(tmp_path / "x.pdf"))


def test_flag_help_reads_main_parser():
    helps = {opt: a.help for a in driver.get_args_parser()._actions for opt in a.option_strings}
    assert build_report.flag_help("--use-custom-conv") == helps["--use-custom-conv"]
    assert build_report.flag_help("--arch") == helps["--arch"], "a long help, with hyphens where argparse wraps"
    assert build_report.flag_help("--workers") == build_report.flag_help("-j") == helps["--workers"]
    assert build_report.flag_help("--use") is None, "a prefix of a flag is not the flag"
    assert build_report.flag_help("--no-such-flag") is None


def test_hand_in_zip_holds_the_report_and_no_logs_or_data(repo, tmp_path):
    root, _, _ = repo
    out = tmp_path / "hand_in.zip"
    names = zip_submission.build_zip(str(root), str(out))
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(names)
        assert zf.read("writeup/writeup.pdf") == (root / "writeup" / "writeup.pdf").read_bytes()
    assert {"writeup/writeup.md", "results/demo/curves_simplenet.png", "results/demo/summary.md",
            "code/student_code.py"} <= set(names)
    assert {n.split("/")[0] for n in names} == {"code", "writeup", "results"}
    assert not [n for n in names if n.endswith((".pth.tar", ".jpg")) or "tfevents" in n]
    assert (root / "logs").is_dir() and (root / "data").is_dir(), "they existed and were left out"


def test_provenance_sums_the_recorded_run_time(tmp_path):
    def status(name, state, seconds, **code):
        return {"name": name, "status": state, "seconds": seconds, "hardware": "2-core CPU", "demo_data": True,
                "recorded_at": f"2026-01-01T00:0{len(name)}:00", **code}
    demo = {"data": ["demo set"], "statuses": [status("a", "finished", 600.0, code="commit abc1234"),
                                               status("bb", "finished", 1200.0, code="commit abc1234"),
                                               status("ccc", "failed", 9000.0, code="commit fff0000"),
                                               status("d", "finished", None)]}
    ctx = build_report.Context(str(tmp_path), str(tmp_path), {"full": None, "demo": demo})
    line = build_report.gen_provenance(ctx).splitlines()[1]
    assert line.startswith(f"- **Demo set (synthetic, not MiniPlaces):** 3 of {len(runner.EXPERIMENTS)} "
                           "experiments finished (last recorded 2026-01-01T00:03:00; 30 min of recorded run time)")
    assert "Code: commit abc1234 (2 runs); not recorded (1 run)." in line, "the finished runs' code versions"


def build_fake(root, better, monkeypatch=None):
    """fake_logs.fake_demo's results turned into the report's Markdown (no PDF); with
    ``monkeypatch`` the figures are drawn but not written."""
    if monkeypatch is not None:
        monkeypatch.setattr(make_results, "save", lambda fig, path: make_results.plt.close(fig))
    fake_logs.fake_demo(str(root), better)
    make_results.make_results(str(root / "logs"), str(root / "results"))
    fake_logs.write_comparisons(str(root), better)
    results = str(root / "results")
    ctx = build_report.Context(results, str(root / "writeup"), build_report.load_results(results))
    with open(TEMPLATE) as f:
        return build_report.fill(f.read(), ctx)


def findings(text):
    """{block: demo-set paragraph} of every findings-* block."""
    found = {}
    for block, body in re.findall(r"<!-- BEGIN generated: (findings-[a-z]+) -->\n(.*?)<!-- END", text, re.S):
        found[block] = body.split("#### Demo set (synthetic, not MiniPlaces)")[1].strip()
    return found


def test_outcome_sentences_follow_the_numbers(tmp_path, monkeypatch):
    win = build_fake(tmp_path / "win", 1, monkeypatch)
    lose = build_fake(tmp_path / "lose", -1, monkeypatch)
    flips = (
        ("CustomConv2d was faster per epoch (9.0 against 10.0 s, ratio 0.90)",
         "CustomConv2d was slower per epoch (11.0 against 10.0 s, ratio 1.10)"),
        ("so the improved CNN is highest in this run", "so SimpleNet is highest in this run"),
        ("the improved CNN is ahead by 5.0 points (95% interval [+2.0, +8.0], above zero)",
         "the improved CNN is behind by 5.0 points (95% interval [-8.0, -2.0], below zero)"),
        ("the improved CNN is ahead with an interval above zero at 3 / 3 epochs",
         "the improved CNN is behind with an interval below zero at 3 / 3 epochs"),
        ("so the improved ViT is highest in this run", "so SimpleViT is highest in this run"),
        ("the improved ViT is ahead by 5.0 points", "the improved ViT is behind by 5.0 points"),
        ("keeps 50.0% against 40.0%, so it is more robust by 10.0 points",
         "keeps 30.0% against 40.0%, so it is less robust by 10.0 points"),
        ("so of the +10.0 points -2.0 are clean accuracy and +12.0 the difference in drop",
         "so of the -10.0 points -2.0 are clean accuracy and -8.0 the difference in drop"),
        ("it helped 3 of 3 models, hurt 0", "it helped 0 of 3 models, hurt 3"),
    )
    for said_win, said_lose in flips:
        assert said_win in win and said_win not in lose, said_win
        assert said_lose in lose and said_lose not in win, said_lose
    assert "Negative drops (-0.5 points by pgd-adv-simplenet (epsilon 0.1, 10 steps; 1 of 200 images))" in win
    assert build_report.PLACEHOLDERS["full"] in win, "no MiniPlaces results: every MiniPlaces section says so"
    for text in (win, lose):
        paragraphs = findings(text)
        assert sorted(paragraphs) == ["findings-adv", "findings-cnn", "findings-conv", "findings-pgd", "findings-vit"]
        for block, paragraph in paragraphs.items():
            sentences = re.split(r"(?<=[.)])\s+(?=[A-Z])", paragraph)
            assert 3 <= len(sentences) <= 5, (block, sentences)
            assert "\n" not in paragraph and "demo set (" in paragraph, block


def drawn_texts(fig):
    """The figure's visible, non-empty texts, less the labels of ticks outside the view limits
    (which matplotlib keeps but does not draw)."""
    undrawn = set()
    for ax in fig.axes:
        to_axes = ax.transData + ax.transAxes.inverted()  # data -> axes fraction
        x0, y0 = ax.get_xlim()[0], ax.get_ylim()[0]
        for axis, where in ((ax.xaxis, lambda loc: to_axes.transform((loc, y0))[0]),
                            (ax.yaxis, lambda loc: to_axes.transform((x0, loc))[1])):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not -1e-6 <= where(tick.get_loc()) <= 1 + 1e-6:
                    undrawn.update((id(tick.label1), id(tick.label2)))
    return [t for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]


def test_miniplaces_results_fill_the_miniplaces_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(make_results, "save", lambda fig, path: make_results.plt.close(fig))
    fake_logs.fake_demo(str(tmp_path), 1, scale="full")
    make_results.make_results(str(tmp_path / "logs"), str(tmp_path / "results"))
    results = str(tmp_path / "results")
    ctx = build_report.Context(results, str(tmp_path / "writeup"), build_report.load_results(results))
    with open(TEMPLATE) as f:
        text = build_report.fill(f.read(), ctx)
    for block, body in re.findall(r"<!-- BEGIN generated: (findings-[a-z]+) -->\n(.*?)<!-- END", text, re.S):
        full, demo = body.split("#### Demo set (synthetic, not MiniPlaces)")
        assert "MiniPlaces (100 classes, 100000 train / 10000 val images)" in full, block
        assert "demo set" not in full and build_report.PLACEHOLDERS["demo"] in demo, block
    assert "so the improved CNN is highest in this run" in text and "; 50 of 10000 images)" in text


def test_figures_are_legible_where_the_report_places_them(tmp_path, monkeypatch):
    saved, original = {}, make_results.save

    def record(fig, path):
        original(fig, path)
        FigureCanvasAgg(fig).draw()  # at the figure's own dpi, so that text extents and fig.bbox agree
        saved[os.path.basename(path)] = fig

    monkeypatch.setattr(make_results, "save", record)
    fake_logs.fake_demo(str(tmp_path), 1)
    make_results.make_results(str(tmp_path / "logs"), str(tmp_path / "results"))
    kinds = {re.sub(r"_[^_]*$", "", n) for n in saved}
    assert kinds == {"curves", "compare", "pgd", "pgd_samples"}, kinds
    for file, fig in saved.items():
        placed = build_report.placed_width_pt(str(tmp_path / "results" / "demo" / file))
        scale = placed / (fig.get_figwidth() * 72)  # the figure's points per placed point
        box = fig.bbox.padded(1)
        for t in drawn_texts(fig):
            assert t.get_fontsize() * scale >= 8, (file, t.get_text(), t.get_fontsize() * scale)
            extent = t.get_window_extent(fig.canvas.get_renderer())
            assert box.contains(extent.x0, extent.y0) and box.contains(extent.x1, extent.y1), (file, t.get_text())
        for ax in fig.axes:
            if ax.get_xlabel() == "epoch":
                low, high = ax.get_xlim()
                shown = [x for x in ax.get_xticks() if low <= x <= high]
                assert shown and all(float(x).is_integer() for x in shown), (file, shown)
            if ax.get_ylabel().startswith("loss"):
                assert ax.get_yscale() == "log", file
            if file.startswith("pgd_") and not file.startswith("pgd_samples"):
                assert "epsilon" in ax.get_title() and "steps" in ax.get_title(), ax.get_title()
                clean = [line for line in ax.get_lines() if line.get_label().endswith(": clean")]
                low, high = ax.get_ylim()
                assert clean and all(low < line.get_ydata()[0] < high for line in clean), file
    assert "epsilon 0.5" in saved["pgd_steps.png"].axes[0].get_title()
    assert "10 steps" in saved["pgd_epsilon.png"].axes[0].get_title()
    assert "epsilon 0.1, 10 steps" in saved["pgd_samples_pgd-simplenet.png"].get_suptitle()


def test_the_demo_report_fits_twelve_pages(tmp_path):
    md = tmp_path / "writeup" / "writeup.md"
    md.parent.mkdir()
    shutil.copy(TEMPLATE, md)
    build_report.build(os.path.join(REPO, "results"), str(md), str(tmp_path / "writeup.pdf"))
    pages = len(re.findall(rb"/Type /Page\b", (tmp_path / "writeup.pdf").read_bytes()))
    assert 5 <= pages <= 12, f"{pages} pages"


def test_readme_recipes_match_the_runner():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for exp in runner.EXPERIMENTS:
        if not exp.target:
            assert f"`python main.py ../data {shlex.join(exp.full)}`" in readme, exp.name
    used = {a for exp in runner.EXPERIMENTS for a in (*exp.demo, *exp.full) if a.startswith("-")}
    documented = {"--adv-train", "--adv-steps", "--adv-eps", "--attack-eps", "--attack-steps", "--attack-step-size",
                  "--resnet18-weights", "-e", "-a", "-v"}
    helps = {opt for a in driver.get_args_parser()._actions for opt in a.option_strings}
    assert documented <= helps, "README documents flags main.py has"
    for flag in sorted(used | documented):
        assert re.search(rf"`[^`]*{re.escape(flag)}\b[^`]*`", readme), flag
    from pretrained import RESNET18_WEIGHTS
    assert RESNET18_WEIGHTS.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert RESNET18_WEIGHTS.url in readme and "--resnet18-weights PATH" in readme


def test_headings_stay_with_their_text_and_short_sections_stay_whole():
    from fpdf import FPDF

    html = "<p>intro</p>\n<h2>Part</h2>\n<!-- c -->\n<h3>Sub</h3>\n<p>text</p>\n<h3>Next</h3>\n<p>more</p>\n"
    sections = build_report.heading_sections(html)
    assert "".join(sections) == html and len(sections) == 3, "a heading directly above another stays with it"
    assert sections[1].startswith("<h2>Part</h2>") and "<p>text</p>" in sections[1]

    def write(target, text):
        target.write_html(text)

    def placed(y, section):
        pdf = FPDF(format="A4")
        pdf.set_font("helvetica", size=9)
        pdf.add_page()
        pdf.set_y(y)
        build_report.keep_with_heading(pdf, section, write)
        return pdf.page

    short = "<h2>Team</h2>\n" + "<p>row</p>\n" * 6
    long_text = "<h2>Long</h2>\n" + "<p>" + "word " * 3000 + "</p>\n"
    bottom = 297 - 15 - 12  # mm: 12 mm above the page-break line
    assert placed(bottom, short) == 2, "a short section that would break moves whole"
    assert placed(bottom, long_text) == 2, "a heading with no room below it moves"
    assert placed(60, long_text) == 1, "a long section with room starts where it is"
    assert placed(60, short) == 1
