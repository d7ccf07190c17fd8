"""tools/build_report.py and the hand-in: a report built from a real run's logs, honest
labels, and a zip with the report but no data, logs or checkpoints."""
import contextlib
import csv
import html
import io
import json
import os
import re
import shlex
import shutil
import zipfile

import matplotlib.text
from matplotlib.backends.backend_agg import FigureCanvasAgg
import pytest
import torch

import main as driver

from tools.tests import fake_logs
from tools import seed_study
from tools import make_results
from tools import run_experiments as runner
from tools import REPO_DIR as REPO
from tools import build_report
from tools.run_experiments import Experiment

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
    shutil.copy(os.path.join(REPO, "writeup", "contributions.md"), root / "writeup")
    (root / "code").mkdir()
    (root / "code" / "student_code.py").write_text("x = 1\n")
    shutil.copytree(demo_data, root / "data")
    text = build_report.build(str(root / "results"), str(root / "writeup" / "writeup.md"),
                              str(root / "writeup" / "writeup.pdf"))
    return root, text, status


def generated(text, block):
    """The text of one generated block."""
    return re.search(rf"<!-- BEGIN generated: {block} -->\n(.*?)<!-- END", text, re.S).group(1)


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
    assert f"| SimpleNet | 1 | {best:.1f} |" in demo, "the run's row of the CNN table"
    assert status["data"] == "demo set (synthetic, 4 classes, 64 train / 16 val images; not MiniPlaces)"
    setting = generated(text, "setting")
    assert "4 classes, 16 train and 4 val images per class" in setting and "abbey, candy store" in setting
    assert "the improved CNN was not run at this scale yet" in demo


def test_a_scale_without_results_is_said_once_at_the_end(repo):
    _, text, _ = repo
    found = sections(text)
    assert "MiniPlaces" not in found and len(found["Demo set (synthetic, not MiniPlaces)"]) == 6
    assert text.count(build_report.PLACEHOLDERS["full"]) == 1
    assert text.index(build_report.PLACEHOLDERS["full"]) > text.index("## Where the numbers come from")
    assert "python -m tools.run_experiments --full" in build_report.PLACEHOLDERS["full"]


def test_pdf_embeds_every_figure(tmp_path):
    text = build_fake(tmp_path, 1, pdf=True)
    figures = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    assert figures == {f"../results/demo/{name}.png" for name in (
        "curves_conv-native", "curves_conv-custom", "curves_simplenet", "curves_cnn", "curves_simplevit", "curves_vit",
        "curves_adv-simplenet", "pgd_sweeps", "pgd_visible_simplenet")}, "every trained model's curves"

    for rel in figures:
        assert os.path.isfile(os.path.join(tmp_path, "writeup", rel))
    pdf = (tmp_path / "writeup" / "writeup.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf.count(b"/Subtype /Image") == len(figures)
    assert 4 <= len(re.findall(rb"/Type /Page\b", pdf)) <= 8


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


def test_hand_in_zip_holds_the_report_and_no_logs_or_data(repo, tmp_path, zip_submission):
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


def test_provenance_names_the_commit_or_says_the_runs_differ(tmp_path):
    def status(name, state, seconds, **code):
        return {"name": name, "status": state, "seconds": seconds, "hardware": "2-core CPU", "demo_data": True, **code}
    runs = [status("simplenet", "finished", 600.0, code="commit abc1234"),
            status("cnn", "finished", 1200.0, code="commit abc1234"),
            status("vit", "failed", 9000.0, code="commit fff0000"),
            status("simplenet-chain", "finished", 60.0, code="commit fff0000")]  # not in the demo plan
    demo = {"data": ["demo set"], "statuses": runs}
    ctx = build_report.Context(str(tmp_path), str(tmp_path), {"full": None, "demo": demo})
    full, paragraph, commands = build_report.gen_provenance(ctx).split("\n\n")
    assert commands.startswith("Commands, from `code/`: `bash tools/regenerate_demo.sh`")
    assert full == f"**MiniPlaces.** {build_report.PLACEHOLDERS['full']}"
    plan = len(runner.at_scale(runner.EXPERIMENTS, "demo"))
    assert paragraph.startswith("**Demo set (synthetic, not MiniPlaces).** Data: demo set. Hardware: 2-core CPU. "
                                f"Code: every run used commit abc1234. 2 of {plan} experiments finished")
    assert "(30 min of recorded run time" in paragraph, "the finished runs' time"
    (tmp_path / "demo").mkdir()
    rows = {e.name: e for e in runner.EXPERIMENTS}
    seed_study.write_report(str(tmp_path / "demo"), (rows["simplenet"], rows["adv-simplenet"]), [1, 2], [5, 5],
                            {"simplenet": [1.0, 2.0], "adv-simplenet": [1.0, 2.0]}, "demo set", "CPU", "demo",
                            code="uncommitted changes on commit abc1234 (4 runs)")
    said = build_report.gen_provenance(ctx)
    assert ("the runs used different code (regenerate them from one commit): commit abc1234 (2 runs); "
            "uncommitted changes on commit abc1234 (4 runs).") in said, "the seed studies' runs count too"


FACTOR_PARTS = {"fwd_unfold": 10.0, "fwd_gemm": 30.0, "bwd_unfold": 10.0, "bwd_gemm": 40.0, "bwd_col2im": 5.0,
                "fwd_pad": 2.0, "bwd_pad": 2.0, "fwd_other": 3.0, "bwd_other": 4.0}  # 106 ms in all


def write_fake_conv_benchmark(results):
    """bench_conv.py --factors' files with fixed numbers: SimpleNet's convolutions take 106 ms custom
    against 100 native at 1 thread (1.06), 1.20 at 2 threads."""
    from tools import bench_conv

    rows = []
    for threads, native in ((1, 100.0), (2, 88.0)):
        row = dict.fromkeys(bench_conv.FACTOR_COLUMNS, 0.0)
        row.update(threads=threads, load=0.5, name="simplenet (all convolutions)", detail="7 convolutions", count=7,
                   native_fwd_ms=native * 0.4, native_bwd_ms=native * 0.6, native_saved_mb=47.0, custom_saved_mb=47.0,
                   native_fwd_peak_mb=64.0, custom_fwd_peak_mb=57.0, native_bwd_peak_mb=48.0, custom_bwd_peak_mb=44.0,
                   chunk_samples=8, chunk_mb=18.0, gpu_chunk_samples=256, gpu_chunk_mb=588.0,
                   **{f"custom_{k}_ms": v for k, v in FACTOR_PARTS.items()})
        rows.append(row)
    with open(results / "conv_factors.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=bench_conv.FACTOR_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (results / "conv_factors.md").write_text("# Where the time goes\n\n- hardware: CPU Test, 2 logical cores\n"
                                             "- batch 32, images 128x128; 1 warmup + 9 timed rounds, ...\n")


def build_fake(root, better, monkeypatch=None, scale="demo", attacks=None, pdf=False):
    """fake_logs.fake_demo's results (with the repository's conv benchmark) turned into the
    report's Markdown, and into root/writeup/writeup.pdf when ``pdf``; with ``monkeypatch`` the
    figures are drawn but not written."""
    if monkeypatch is not None:
        monkeypatch.setattr(make_results, "save", lambda fig, path: make_results.plt.close(fig))
    fake_logs.fake_demo(str(root), better, scale=scale, attacks=attacks)
    make_results.make_results(str(root / "logs"), str(root / "results"))
    fake_logs.write_comparisons(str(root), better, scale)
    write_fake_conv_benchmark(root / "results")
    (root / "writeup").mkdir(exist_ok=True)
    shutil.copy(TEMPLATE, root / "writeup" / "writeup.md")
    if pdf:
        return build_report.build(str(root / "results"), str(root / "writeup" / "writeup.md"),
                                  str(root / "writeup" / "writeup.pdf"))
    results = str(root / "results")
    ctx = build_report.Context(results, str(root / "writeup"), build_report.load_results(results))
    with open(TEMPLATE) as f:
        return build_report.fill(f.read(), ctx)


def discussions(text):
    """{block: the demo set's discussion paragraph} of every block that has one."""
    found = {}
    for block, body in re.findall(r"<!-- BEGIN generated: ([a-z-]+) -->\n(.*?)<!-- END", text, re.S):
        m = re.search(r"^\*\*Discussion\.\*\* (.*)$", body.split("#### Demo set (synthetic, not MiniPlaces)")[-1], re.M)
        if m:
            found[block] = m.group(1)
    return found


def test_outcome_sentences_follow_the_numbers(tmp_path, monkeypatch):
    win = build_fake(tmp_path / "win", 1, monkeypatch)
    lose = build_fake(tmp_path / "lose", -1, monkeypatch)
    flips = (
        ("An epoch with CustomConv2d took 0.90 times as long", "An epoch with CustomConv2d took 1.10 times as long"),
        ("the improved CNN reaches 80.0% best val top-1 against 70.0%: ahead of SimpleNet",
         "the improved CNN reaches 60.0% best val top-1 against 70.0%: behind SimpleNet"),
        ("the improved CNN is ahead by 5.0 points (95% interval [+2.0, +8.0], above zero)",
         "the improved CNN is behind by 5.0 points (95% interval [-8.0, -2.0], below zero)"),
        ("the improved CNN's run lies above that range", "the improved CNN's run lies below that range"),
        ("the improved ViT reaches 90.0% best val top-1 against 80.0%: ahead of SimpleViT",
         "the improved ViT reaches 70.0% best val top-1 against 80.0%: behind SimpleViT"),
        ("the improved ViT is ahead by 5.0 points", "the improved ViT is behind by 5.0 points"),
        ("keeps 50.3% on average against 40.3%: more robust by 10.0 points (95% t-interval over the seeds "
         "[+7.5, +12.5], above zero)", "keeps 30.3% on average against 40.3%: less robust by 10.0 points (95% "
                                       "t-interval over the seeds [-12.5, -7.5], below zero)"),
    )
    for said_win, said_lose in flips:
        assert said_win in win and said_win not in lose, said_win
        assert said_lose in lose and said_lose not in win, said_lose
    for text in (win, lose):
        paragraphs = discussions(text)
        assert sorted(paragraphs) == ["adv-results", "cnn-results", "conv-results", "pgd-results", "vit-results"]
        for block, paragraph in paragraphs.items():
            sentences = re.split(r"(?<=[.)])\s+(?=[A-Z])", paragraph)
            assert 3 <= len(sentences) <= 7, (block, sentences)


def test_two_measurements_of_one_thing_say_which_to_trust(tmp_path, monkeypatch):
    win = discussions(build_fake(tmp_path / "win", 1, monkeypatch))
    lose = discussions(build_fake(tmp_path / "lose", -1, monkeypatch))
    bench = "The benchmark above measured 1.06 for the convolutions alone"  # results/conv_factors.csv
    assert f"{bench}: they disagree; we trust the benchmark" in win["conv-results"], "0.90 per epoch, 1.06 there"
    assert f"{bench}: both say slower; we trust the benchmark" in lose["conv-results"], "1.10 and 1.06"
    assert "after 3 epochs (the assignment asks for 10; the demo's CPU budget fits 3)." in win["conv-results"]
    seeds = "SimpleNet's 3 seeds at these epochs reach 68.0 to 72.0% (mean 70.0%)"
    assert f"{seeds}; the improved CNN's run lies above that range." in win["cnn-results"]
    assert f"{seeds}; the attacked checkpoint (70.0% clean) lies within that range, so it is a typical SimpleNet" \
        in win["pgd-results"]
    assert "seeds spread over 5.0 points, less than the 10.0-point difference, so a single seed would have shown " \
           "the same sign" in win["adv-results"]


def test_a_comparison_at_different_epochs_says_so(tmp_path, monkeypatch):
    build_fake(tmp_path, 1, monkeypatch)
    results = str(tmp_path / "results")
    ctx = build_report.Context(results, str(tmp_path / "writeup"), build_report.load_results(results))

    def findings():
        return " ".join(build_report.comparison_findings(ctx, "demo", "simplenet", "cnn", "ci_cnn.md"))

    assert "After the same 3 epochs, the improved CNN reaches" in findings() and "budget" not in findings()
    cnn, simplenet = (ctx.scales["demo"]["summaries"][row] for row in ("cnn", "simplenet"))
    cnn["epochs"], cnn["seconds_per_epoch"] = simplenet["epochs"] + 7, 30.0
    assert f"After {cnn['epochs']} epochs against SimpleNet's {simplenet['epochs']}, the improved CNN reaches" \
        in findings()
    assert (f"({cnn['epochs'] * 0.5:.1f} against {simplenet['epochs'] * simplenet['seconds_per_epoch'] / 60:.1f} "
            "minutes in all). These runs had different budgets, so they are results of one budget, not a "
            "comparison.") in findings()


def test_trend_rule_names_each_shape():
    noise = 3.0
    for values, shape in (([69.0, 60.0, 44.5, 30.0], "falls"), ([69.0, 60.0, 44.5, 45.0], "falls, then levels off"),
                          ([30.0, 40.0, 50.0], "rises"), ([30.0, 45.0, 46.0, 44.0], "rises, then levels off"),
                          ([70.0, 71.5, 69.0], "flat"), ([70.0, 50.0, 69.0], "mixed"),
                          ([70.0, 50.0, 60.0, 40.0], "mixed"), ([70.0, 68.5, 67.0, 65.5, 64.0], "falls")):
        assert build_report.trend(values, noise) == shape, (values, shape)


@pytest.mark.parametrize("attacks, said", [
    ({"pgd-simplenet-eps-low": 69.0, "pgd-simplenet": 40.0, "pgd-simplenet-eps-high": 20.0},
     "Top-1 falls as epsilon grows: 69.0% at 0.1, 40.0% at 0.5, 20.0% at 1."),
    ({"pgd-simplenet-steps1": 60.0, "pgd-simplenet-steps3": 45.0, "pgd-simplenet": 44.0},
     "At epsilon 0.5, top-1 falls, then levels off with more steps: 60.0% after 1, 45.0% after 3, 44.0% after 10;"),
    ({"pgd-simplenet-eps-low": 68.0, "pgd-simplenet": 69.5, "pgd-simplenet-eps-high": 67.5},
     "Top-1 stays flat within noise as epsilon grows"),
    ({"pgd-simplenet-eps-low": 50.0, "pgd-simplenet": 30.0, "pgd-simplenet-eps-high": 52.0},
     "Top-1 goes up and down by more than noise, with no single trend as epsilon grows"),
    ({"pgd-simplenet-steps1": 40.0, "pgd-simplenet-steps3": 50.0, "pgd-simplenet": 60.0},
     "At epsilon 0.5, top-1 rises with more steps"),
])
def test_the_report_words_each_kind_of_trend_by_its_numbers(tmp_path, monkeypatch, attacks, said):
    paragraph = discussions(build_fake(tmp_path, 1, monkeypatch, attacks=attacks))["pgd-results"]
    assert said in paragraph


def test_the_attack_shows_or_the_report_says_why(tmp_path, monkeypatch):
    shown = discussions(build_fake(tmp_path / "a", 1, monkeypatch))["pgd-results"]
    assert "At epsilon 0.5 with 10 steps top-1 is 40.0% against 70.0% clean: the attack visibly lowers accuracy " \
           "(60 of 200 images)." in shown
    assert "At the course's epsilon 0.1 the drop (+1.0 points) is within noise: the demo images' pixel noise" in shown
    assert "; each step moves a pixel by at most 0.05, so 1 step reaches only 0.05 of the 0.5 allowed." in shown
    weak = discussions(build_fake(tmp_path / "b", 1, monkeypatch, attacks={"pgd-simplenet": 68.0,
                                                                          "pgd-simplenet-eps-low": 62.0}))
    assert "top-1 is 68.0% against 70.0% clean, within twice the noise: the attack barely works here." \
        in weak["pgd-results"]
    assert "At the course's epsilon" not in weak["pgd-results"], "a visible drop at 0.1 needs no excuse"


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
    text = build_fake(tmp_path, 1, monkeypatch, scale="full")
    found = sections(text)
    assert "Demo set (synthetic, not MiniPlaces)" not in found and len(found["MiniPlaces"]) == 6
    assert "demo set" not in "\n".join(found["MiniPlaces"]).lower()
    assert "This report holds results of MiniPlaces only. Hardware of the MiniPlaces runs: test machine" in text
    assert text.count(build_report.PLACEHOLDERS["demo"]) == 1
    said = discussions(text.replace("#### MiniPlaces", "#### Demo set (synthetic, not MiniPlaces)"))
    assert "After the same 3 epochs, the improved CNN reaches 80.0% best val top-1 against 70.0%" in said["cnn-results"]
    assert "(3000 of 10000 images)" in said["pgd-results"] and "course's epsilon" not in said["pgd-results"]
    assert "How much of each single-run difference the seed makes is not measured." in said["vit-results"]


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
    assert kinds == {"curves", "compare", "pgd", "pgd_samples", "pgd_visible"}, kinds
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
            if file.startswith("pgd_sweeps"):
                assert "epsilon" in ax.get_title() and "steps" in ax.get_title(), ax.get_title()
                clean = [line for line in ax.get_lines() if line.get_label().endswith(": clean")]
                low, high = ax.get_ylim()
                assert clean and all(low < line.get_ydata()[0] < high for line in clean), file
    assert "10 steps" in saved["pgd_sweeps.png"].axes[0].get_title()
    assert "epsilon 0.5" in saved["pgd_sweeps.png"].axes[1].get_title()
    assert "epsilon 0.5, 10 steps" in saved["pgd_samples_pgd-simplenet.png"].get_suptitle()
    rows = [ax.get_title(loc="left") for ax in saved["pgd_visible_simplenet.png"].axes]
    assert rows[0] == "original" and [r.split(":")[0] for r in rows[1:]] == [
        "epsilon 0.1, 10 steps", "epsilon 0.25, 40 steps", "epsilon 0.5, 10 steps"], "every attack that logged images"


def test_the_demo_report_fits_eight_pages_and_miniplaces_ten(tmp_path, monkeypatch):
    def pages(pdf):
        return len(re.findall(rb"/Type /Page\b", pdf.read_bytes()))

    md = tmp_path / "writeup" / "writeup.md"
    md.parent.mkdir()
    shutil.copy(TEMPLATE, md)
    build_report.build(os.path.join(REPO, "results"), str(md), str(tmp_path / "writeup.pdf"))
    assert 3 <= pages(tmp_path / "writeup.pdf") <= 8, "the repository's demo results"
    build_fake(tmp_path / "both", 1)
    build_fake(tmp_path / "both", 1, scale="full", pdf=True)
    assert {"demo", "full"} <= set(os.listdir(tmp_path / "both" / "results"))
    assert pages(tmp_path / "both" / "writeup" / "writeup.pdf") <= 10, "MiniPlaces and demo results together"


def test_readme_recipes_match_the_runner():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for exp in runner.EXPERIMENTS:
        if not exp.target:
            assert f"`python main.py ../data {shlex.join(exp.full)}`" in readme, exp.name
    used = {a for exp in runner.EXPERIMENTS for a in (*(exp.demo or ()), *exp.full) if a.startswith("-")}
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


# The course's main.py flags (2024 release), as data: every other flag of ours must be declared
# in the report's "Changes to the provided code".
COURSE_FLAGS = {"-j", "--workers", "--epochs", "--warmup", "--clip-grad", "--start-epoch", "-b", "--batch-size",
                "--lr", "--learning-rate", "--momentum", "--wd", "--weight-decay", "-p", "--print-freq", "--resume",
                "-e", "--evaluate", "-a", "--attack", "-v", "--vis", "--use-custom-conv", "--use-vit",
                "--use-resnet18", "--gpu", "-h", "--help"}
HELPER_FILES = ("custom_blocks.py", "custom_transforms.py", "custom_dataloader.py", "utils.py", "test_conv.py")


def changes_section():
    """The text of the template's 'Changes to the provided code' section."""
    with open(TEMPLATE) as f:
        text = f.read()
    return text.split("## Changes to the provided code", 1)[1].split("\n## ", 1)[0]


def test_every_flag_the_course_lacks_is_declared_with_its_reason():
    section = changes_section()
    ours = {opt for action in driver.get_args_parser()._actions for opt in action.option_strings}
    assert COURSE_FLAGS - {"-h", "--help"} <= ours, "main.py keeps the course's flags"
    items = [line[2:].split(": ", 1) for line in section.splitlines() if line.startswith("- ")]  # "- name: reason"
    declared = set(re.findall(r"`(--?[a-z][a-z0-9-]*)`", section))
    undeclared = sorted(ours - COURSE_FLAGS - declared)
    assert not undeclared, f"main.py flags missing from 'Changes to the provided code': {undeclared}"
    assert items and all(len(item) == 2 and item[1].strip() for item in items), "each change has a reason"


def test_the_course_bugs_and_every_helper_file_are_declared():
    section = changes_section()
    assert "torch.cuda.synchronize()" in section and "on a CPU" in section
    assert "--use-custom-conv" in section and "UnboundLocalError: model_arch" in section
    for file in HELPER_FILES:
        assert f"`code/{file}`" in section or f"- `{file[:-3]}." in section, \
            f"{file} is not named in 'Changes to the provided code'"


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    """The report of fake_logs' demo results (improved models ahead), built to Markdown and PDF
    once for the tests below: (root, Markdown text)."""
    root = tmp_path_factory.mktemp("fake_report")
    return root, build_fake(root, 1, pdf=True)


def body(text):
    """The report's prose up to the changes section: no HTML comments, no image links."""
    text = text.split("## Changes to the provided code")[0]
    return re.sub(r"!\[[^\]]*\]\([^)]*\)|<!--.*?-->", "", text, flags=re.S)


def test_figures_are_numbered_and_captioned_by_what_to_see(fake_report):
    _, text = fake_report
    figures = re.findall(r"!\[[^\]]*\]\([^)]+\)\n\n\*Figure (\d+)\. ([^*]+)\*", text)
    assert len(figures) == text.count("![") == 9, "every figure has a numbered caption"
    assert [int(n) for n, _ in figures] == list(range(1, len(figures) + 1))
    for _, caption in figures:
        assert not re.search(r"`|\.png|results/|\w/\w+\.", caption), f"a caption names a file: {caption}"
        assert caption.endswith(".") and not re.search(r"\.\s+[A-Z]", caption), f"one sentence: {caption}"
        assert re.search(r"\d", caption) or "look for" in caption, f"says what to see: {caption}"
    refs = [int(n) for n in re.findall(r"Figure (\d+)", body(text))]
    assert refs and max(refs) <= len(figures), "references point at figures the report holds"


def test_pdf_text_names_every_declared_file_and_class_unbroken(fake_report):
    from tools.tests import pdf_text

    root, text = fake_report
    lines = pdf_text.pdf_lines(str(root / "writeup" / "writeup.pdf"))
    changes = text.split("## Changes to the provided code", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"\b\w+\.py\b", changes)) | set(re.findall(r"\b[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+\b",
                                                                        changes))
    assert {*HELPER_FILES, "CustomConv2d", "SimpleNet"} <= names, "the section declares these at least"
    broken = sorted(n for n in names if not any(n in line for line in lines))
    assert not broken, f"names the PDF breaks over lines (or lacks): {broken}"
    import markdown

    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", markdown.markdown(text, extensions=["tables"]), re.S)
    words = {w for c in cells for w in html_words(c)}
    assert len(words) > 100
    split = sorted(w for w in words if not any(w in line for line in lines))
    assert not split, f"table words the PDF breaks: {split[:10]}"


def html_words(cell):
    """The words of a table cell's HTML as the PDF shows them."""
    return [html.unescape(w) for w in re.sub(r"<[^>]+>", "", cell).split()]


def test_prose_names_no_flags_or_paths_and_the_setting_once(fake_report):
    _, text = fake_report
    prose = body(text)
    assert not re.findall(r"(?<![\w-])--[a-z][\w-]*", prose), "flags belong in the appendix"
    assert not re.findall(r"\w+/\w+\.\w+|results/|\bcode/|\w+\.py\b", prose), "paths belong in the appendix"
    assert prose.count("test machine") == 1, "the hardware is said once, at the top"
    assert prose.index("test machine") < prose.index("## Part I.1")
    assert "of these runs" not in prose and "Highest best" not in prose
    assert "MiniPlaces is not measured yet" in generated(text, "setting"), "no promise of MiniPlaces numbers"


def test_demo_plan_compares_at_equal_budgets():
    rows = {e.name: e for e in runner.EXPERIMENTS}
    pairs = [(a, b) for _, a, b in runner.COMPARISONS] + [("simplenet", "adv-simplenet"),
                                                          ("conv-native", "conv-custom"), ("simplenet", "resnet18")]
    assert ("simplenet", "cnn") in pairs and ("simplevit", "vit") in pairs
    for a, b in pairs:
        for scale in runner.SCALES:
            epochs = [runner.flag_value(getattr(rows[r], scale), "--epochs") for r in (a, b)]
            assert epochs[0] == epochs[1], f"{a} and {b} train {epochs} epochs at {scale} scale"


def test_pgd_table_has_more_steps_and_a_smaller_epsilon(fake_report):
    _, text = fake_report
    table = generated(text, "pgd-results").split("| epsilon |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in table.splitlines()[2:]]
    settings = {(float(r[0]), int(r[1])) for r in rows}
    eps, steps = build_report.scale_epsilon("demo"), build_report.attack_default("num_steps")
    assert (eps, steps) in settings
    assert any(e < eps and k > steps for e, k in settings), "the handout's more iterations, smaller epsilon"
    full = [runner.attack_settings(e.full) for e in runner.EXPERIMENTS if e.target == "simplenet" and "-a" in e.full]
    assert any(e < build_report.attack_default("epsilon") and k > steps for e, k in full), "and on MiniPlaces"
    assert ("More steps and a smaller epsilon (40 steps at 0.25) give 50.0%, 10.0 points above 10 steps at 0.5: a "
            "weaker attack with a perturbation at most 0.5 times as large, which still costs 20.0 points of clean "
            "top-1.") in generated(text, "pgd-results")


def test_a_discussion_is_whole_sentences(fake_report):
    _, text = fake_report
    assert text.count("**Discussion.**") >= 5, "the fake runs reach every Part's discussion"
    with pytest.raises(ValueError, match="without a full stop: 'behind SimpleNet'"):
        build_report.discussion(["One.", "behind SimpleNet", ""])
    assert build_report.discussion(["One.", "", "Two."]) == "**Discussion.** One. Two."
