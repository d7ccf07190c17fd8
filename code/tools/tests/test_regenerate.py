"""code/tools/regenerate_demo.sh, in a throwaway git checkout whose Python modules are stand-ins
that record how they were called (as ``python -m tools.<name>``, from code/): the order of the
steps, committed code only, one commit's runs."""
import os
import shutil
import subprocess
import sys

import pytest

from tools import CODE_DIR

CALL = "import os, sys\nargs = ' '.join(['-m tools.' + os.path.basename(sys.argv[0])[:-3], *sys.argv[1:]])\n"
FAKES = {
    "main.py": "import argparse\ndef get_args_parser():\n    p = argparse.ArgumentParser()\n"
               "    p.add_argument('--seed', default=2024)\n    return p\n",
    "tools/__init__.py": "",
    "tools/run_experiments.py": CALL + "ADV_SEEDS = (1, 2)\nADV_ATTACKS = ((0.5, 10), (1.0, 3))\n"
                                "if __name__ == '__main__':\n    open('../calls.txt', 'a').write(args + '\\n')\n",
    "tools/seed_study.py": CALL + "open('../calls.txt', 'a').write(args + ' | '\n"
                           "    + ' '.join(sorted(os.listdir('../results/demo'))) + '\\n')\n",
}


@pytest.fixture
def checkout(tmp_path):
    """A git checkout holding regenerate_demo.sh and the stand-ins, committed; returns (root, git)."""
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "code" / "tools").mkdir(parents=True)
    shutil.copy(os.path.join(CODE_DIR, "tools", "regenerate_demo.sh"), tmp_path / "code" / "tools")
    for name, text in FAKES.items():
        (tmp_path / "code" / name).write_text(text)
    (tmp_path / "results" / "demo").mkdir(parents=True)
    (tmp_path / "results" / "demo" / "seeds_old_vs_older_e1-1.md").write_text("a study of older code")
    (tmp_path / "results" / "demo" / "pgd.md").write_text("kept: make_results.py rewrites it")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return tmp_path, git


def regenerate(root):
    return subprocess.run(["bash", str(root / "code" / "tools" / "regenerate_demo.sh")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=60)


def test_runs_the_demo_then_the_seed_study_then_the_report(checkout):
    root, git = checkout
    res = regenerate(root)
    assert res.returncode == 0, res.stderr
    calls = (root / "calls.txt").read_text().splitlines()
    assert calls == ["-m tools.run_experiments --demo --no-report",
                     "-m tools.seed_study --demo simplenet adv-simplenet --seeds 2024 1 2 --attack 0.5 10 --attack 1 3 | pgd.md",
                     "-m tools.run_experiments --demo"], "older studies removed before the study runs"
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert (root / "logs" / "demo" / "COMMIT").read_text().strip() == head
    assert regenerate(root).returncode == 0, "the same commit goes on where it stopped"


def test_refuses_uncommitted_code_and_runs_of_another_commit(checkout):
    root, git = checkout
    (root / "code" / "main.py").write_text(FAKES["main.py"] + "# changed\n")
    res = regenerate(root)
    assert res.returncode == 2 and res.stderr.startswith("error: code/ has uncommitted changes")
    subprocess.run([*git, "commit", "-qam", "y"], check=True)
    (root / "logs" / "demo").mkdir(parents=True)
    (root / "logs" / "demo" / "COMMIT").write_text("0000000\n")
    res = regenerate(root)
    assert res.returncode == 2 and "holds runs of commit 0000000" in res.stderr and "mv ../logs/demo" in res.stderr
    assert not (root / "calls.txt").exists(), "nothing ran"
