"""zip_submission.py and download_dataset.sh, on throwaway trees: what the zip holds, and what
it refuses (absolute paths; contributions still to fill in; a report older than its text)."""
import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

from tools import REPO_DIR as REPO
from tools import build_report

FILLED = "The team's members:\n\n- **The lead engineer**: the plan, reviews (of every branch).\n"
TEMPLATE = "*To be filled in by the team: one line per member.*\n\n- **(name)**: (parts, files and experiments)\n"


def report_md(contributions):
    """A writeup.md whose contributions block shows ``contributions``."""
    return (f"# Report\n\n## Team contributions\n\n<!-- BEGIN generated: contributions -->\n{contributions}"
            "<!-- END generated: contributions -->\n")


def stamped_pdf(markdown):
    """A stand-in PDF carrying build_report's stamp of ``markdown``."""
    return f"%PDF-1.4\n/Subject (built from writeup.md sha256 {hashlib.sha256(markdown.encode()).hexdigest()})\n"


def make_tree(root):
    for rel, content in {
        "code/student_code.py": "x = 1\n",
        "code/__pycache__/student_code.cpython-311.pyc": "bytecode",
        "code/models/checkpoint.pth.tar": "weights",
        "code/best.pth": "weights",
        "writeup/writeup.pdf": stamped_pdf(report_md(FILLED)),
        "writeup/writeup.md": report_md(FILLED),
        "writeup/contributions.md": FILLED,
        "results/table.md": "| a |",
        "results/events.out.tfevents.123.host": "events",
        "data/train.txt": "train/a/abbey/00000001.jpg 0",
        "logs/run/models/checkpoint.pth.tar": "weights",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_zip_holds_code_writeup_results_only(tmp_path):
    make_tree(tmp_path)
    out = tmp_path / "hand_in.zip"
    subprocess.run([sys.executable, os.path.join(REPO, "zip_submission.py"), "--root", str(tmp_path),
                    "-o", str(out)], check=True, capture_output=True)
    names = sorted(zipfile.ZipFile(out).namelist())
    assert names == ["code/student_code.py", "results/table.md", "writeup/contributions.md", "writeup/writeup.md",
                     "writeup/writeup.pdf"]


def test_zip_refuses_absolute_paths_missing_report_and_overwrite(zip_submission, tmp_path):
    make_tree(tmp_path)
    out = tmp_path / "a.zip"
    (tmp_path / "code" / "paths.py").write_text(f"DATA = '{HOME}/me/miniplaces'\n")
    with pytest.raises(ValueError, match=rf"^code/paths.py holds an absolute path: {HOME}/me/miniplaces "):
        zip_submission.build_zip(str(tmp_path), str(out))
    (tmp_path / "code" / "paths.py").unlink()
    (tmp_path / "writeup" / "writeup.pdf").unlink()
    with pytest.raises(ValueError, match="writeup.pdf"):
        zip_submission.build_zip(str(tmp_path), str(out))
    assert zip_submission.build_zip(str(tmp_path), str(out), require_report=False)
    res = subprocess.run([sys.executable, os.path.join(REPO, "zip_submission.py"), "--root", str(tmp_path),
                          "-o", str(out), "--no-report"], capture_output=True, text=True)
    assert res.returncode != 0 and "exists" in res.stderr


HOME = "/" + "home"  # spelled in two parts, so that this file holds no absolute path itself


@pytest.mark.parametrize("name, text, found", [
    ("results/demo/summary.json", '{"command": "python main.py /' + 'work/wt/data --epochs 2"}', "/" + "work/wt/data"),
    ("results/bench.md", "- command: `python bench.py --out-dir /" + "tmp/convq` (from code/)", "/" + "tmp/convq"),
    ("writeup/notes.md", "see " + HOME + "/me/report.pdf.", HOME + "/me/report.pdf."),
    ("code/tools/tests/test_x.py", "ROOT = '/" + "Users/me'\n", "/" + "Users/me"),
    ("code/run.sh", "cd C:" + "\\course\\hw\n", "C:" + "\\course\\hw"),
])
def test_zip_refuses_any_text_file_with_an_absolute_path(zip_submission, tmp_path, capsys, name, text, found):
    make_tree(tmp_path)
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
    out = tmp_path / "a.zip"
    with pytest.raises(SystemExit) as e:
        zip_submission.main(["--root", str(tmp_path), "-o", str(out)])
    assert e.value.code == 2 and not out.exists()
    assert capsys.readouterr().err == f"error: {name} holds an absolute path: {found} (make it relative to the " \
                                      "repository)\n", "one line naming the file and the path"


def test_relative_paths_urls_and_binary_files_pass(zip_submission, tmp_path):
    make_tree(tmp_path)
    (tmp_path / "results" / "ok.md").write_text("python main.py ../data --log-dir ../logs/demo/x; "
                                                "https://download.pytorch.org/models/x.pth; code/data/y; a/tmp/b\n")
    (tmp_path / "results" / "plot.png").write_bytes(b"\x89PNG" + (HOME + "/me/x").encode())  # not UTF-8
    (tmp_path / "results" / "data.bin").write_bytes(b"\x00\x01" + (HOME + "/me/x").encode())  # UTF-8, with NUL
    names = zip_submission.build_zip(str(tmp_path), str(tmp_path / "a.zip"))
    assert {"results/ok.md", "results/plot.png", "results/data.bin"} <= set(names)


def test_the_hand_in_holds_no_absolute_path(zip_submission):
    names = zip_submission.archived_files(REPO)
    assert [n for n in names if n.startswith("code/tools/tests/")], "the tests are handed in, and checked too"
    assert zip_submission.find_absolute_paths(REPO, names) == []


BUILD = "rebuild the report (cd code && python -m tools.build_report)"


@pytest.mark.parametrize("contributions, said", [
    (None, "writeup/contributions.md is missing: write the team's members and their parts there"),
    (TEMPLATE, "writeup/contributions.md still holds the placeholder 'To be filled in': fill in the team's members "
               "and their parts"),
    (FILLED + "- **(name)**: the report\n", "writeup/contributions.md still holds the placeholder '(name)': fill in "
                                            "the team's members and their parts"),
    (FILLED + "- **The report engineer**: (parts, files and experiments)\n", "writeup/contributions.md still holds "
     "the placeholder '(parts, files and experiments)': fill in the team's members and their parts"),
    (FILLED + "- **The GPU engineer**: TODO\n", "writeup/contributions.md still holds the placeholder 'TODO': fill in "
                                                "the team's members and their parts"),
])
@pytest.mark.parametrize("report", [True, False])
def test_zip_refuses_contributions_still_to_fill_in(zip_submission, tmp_path, capsys, contributions, said, report):
    make_tree(tmp_path)
    if contributions is None:
        (tmp_path / "writeup" / "contributions.md").unlink()
    else:  # the report built from it, so that the placeholder is the only problem
        (tmp_path / "writeup" / "contributions.md").write_text(contributions)
        (tmp_path / "writeup" / "writeup.md").write_text(report_md(contributions))
        (tmp_path / "writeup" / "writeup.pdf").write_text(stamped_pdf(report_md(contributions)))
    if not report:
        (tmp_path / "writeup" / "writeup.pdf").unlink()
    out = tmp_path / "a.zip"
    with pytest.raises(SystemExit) as e:
        zip_submission.main(["--root", str(tmp_path), "-o", str(out), *([] if report else ["--no-report"])])
    assert e.value.code == 2 and not out.exists()
    assert capsys.readouterr().err == f"error: {said}\n", "one line naming the file to fill in"


def test_zip_refuses_a_report_older_than_the_contributions_or_its_text(zip_submission, tmp_path, capsys):
    make_tree(tmp_path)
    assert zip_submission.hand_in_problem(str(tmp_path)) is None
    newer = FILLED + "- **The report engineer**: the report's text and figures.\n"
    (tmp_path / "writeup" / "contributions.md").write_text(newer)
    assert zip_submission.hand_in_problem(str(tmp_path)) == (
        f"writeup/writeup.md does not show writeup/contributions.md as it is now: {BUILD}")
    (tmp_path / "writeup" / "writeup.md").write_text(report_md(newer))
    assert zip_submission.hand_in_problem(str(tmp_path)) == (
        f"writeup/writeup.pdf was not built from writeup/writeup.md as it is now: {BUILD}")
    out = tmp_path / "a.zip"
    with pytest.raises(SystemExit) as e:
        zip_submission.main(["--root", str(tmp_path), "-o", str(out)])
    assert e.value.code == 2 and not out.exists()
    assert capsys.readouterr().err == f"error: writeup/writeup.pdf was not built from writeup/writeup.md as it is " \
                                      f"now: {BUILD}\n"
    (tmp_path / "writeup" / "writeup.pdf").write_text(stamped_pdf(report_md(newer)))
    assert zip_submission.hand_in_problem(str(tmp_path)) is None
    assert "writeup/contributions.md" in zip_submission.build_zip(str(tmp_path), str(out))


def test_the_report_builder_renders_the_contributions_and_stamps_the_pdf(zip_submission, tmp_path):
    make_tree(tmp_path)
    md, pdf = tmp_path / "writeup" / "writeup.md", tmp_path / "writeup" / "writeup.pdf"
    md.write_text(report_md(""))  # the template: an empty block
    pdf.unlink()
    text = build_report.build(str(tmp_path / "results"), str(md), str(pdf))
    assert text == report_md(FILLED) and md.read_text() == text
    assert zip_submission.hand_in_problem(str(tmp_path)) is None, "the PDF carries the stamp of writeup.md"
    (tmp_path / "writeup" / "contributions.md").write_text(FILLED.replace("reviews", "reviews and merges"))
    assert "rebuild the report" in zip_submission.hand_in_problem(str(tmp_path))
    build_report.build(str(tmp_path / "results"), str(md), str(pdf))
    assert zip_submission.hand_in_problem(str(tmp_path)) is None


def test_the_repository_hand_in_is_ready_to_pack(zip_submission):
    """writeup/contributions.md is filled in, and the committed report shows it and was built from
    the committed writeup.md."""
    assert zip_submission.hand_in_problem(REPO) is None


def test_download_script_offline_says_what_to_do(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gdown").write_text("#!/bin/sh\necho 'ConnectionError: no network' >&2\nexit 1\n")
    (bin_dir / "gdown").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    res = subprocess.run(["bash", os.path.join(REPO, "download_dataset.sh"), str(tmp_path / "data")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1
    assert "could not download" in res.stderr and "python -m tools.make_demo_data" in res.stderr
    assert not (tmp_path / "data" / "data.tar.gz").exists(), "no partial archive left behind"
