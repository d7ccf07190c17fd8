"""writeup/build_report.py and the hand-in: a report built from a real run's logs, honest
labels, and a zip with the report but no data, logs or checkpoints."""
import contextlib
import io
import json
import os
import re
import shutil
import sys
import zipfile

import pytest
import torch

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
    assert f"`simplenet`: best val top-1 {best:.2f} %" in demo
    assert status["data"] == "demo set (synthetic, 4 classes, 64 train / 16 val images; not MiniPlaces)"
    assert status["data"] in demo and status["hardware"] in demo
    assert f"| simplenet | I.2 | 1 | {best:.2f} |" in demo, "the appendix table row"
    assert "- `cnn`: not run at this scale yet" in demo


def test_miniplaces_sections_say_how_to_measure_them(repo):
    _, text, _ = repo
    found = sections(text)
    assert len(found["MiniPlaces"]) == len(found["Demo set (synthetic, not MiniPlaces)"]) == 8
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
    def status(name, state, seconds):
        return {"name": name, "status": state, "seconds": seconds, "hardware": "2-core CPU", "demo_data": True,
                "recorded_at": f"2026-01-01T00:0{len(name)}:00"}
    demo = {"data": ["demo set"], "statuses": [status("a", "finished", 600.0), status("bb", "finished", 1200.0),
                                               status("ccc", "failed", 9000.0), status("d", "finished", None)]}
    ctx = build_report.Context(str(tmp_path), str(tmp_path), {"full": None, "demo": demo})
    line = build_report.gen_provenance(ctx).splitlines()[1]
    assert line.startswith(f"- **Demo set (synthetic, not MiniPlaces):** 3 of {len(runner.EXPERIMENTS)} "
                           "experiments finished (last recorded 2026-01-01T00:03:00; 30 min of recorded run time)")
