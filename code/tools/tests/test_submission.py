"""zip_submission.py and download_dataset.sh, on throwaway trees."""
import os
import subprocess
import sys
import zipfile

import pytest

from tools import REPO_DIR as REPO


def make_tree(root):
    for rel, content in {
        "code/student_code.py": "x = 1\n",
        "code/__pycache__/student_code.cpython-311.pyc": "bytecode",
        "code/models/checkpoint.pth.tar": "weights",
        "code/best.pth": "weights",
        "writeup/writeup.pdf": "%PDF-1.4",
        "writeup/writeup.md": "# report",
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
    assert names == ["code/student_code.py", "results/table.md", "writeup/writeup.md", "writeup/writeup.pdf"]


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
    ("writeup/writeup.md", "see " + HOME + "/me/report.pdf.", HOME + "/me/report.pdf."),
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
