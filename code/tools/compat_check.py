"""Run the hand-in's checks on every PyTorch from 2.0 to the pin, one virtual environment each.

    python -m tools.compat_check               # from code/: every version, table to ../results/compat.md
    python -m tools.compat_check --versions 2.0.1 --code-dir ../../other-checkout/code --out compat-other.md

Not part of CI: the first run downloads several GB (PyPI's torch wheels pull their CUDA
packages). Each version gets the venv ``<venv-root>/torch-<version>``, made with this Python
(``python -m venv``) the first time and reused after; ``pip install`` of the version's
requirements runs every time and does nothing while they are satisfied.

In each venv, from the code folder (``--code-dir``: a code/ folder of this repository, default
the one holding tools/), it runs
  test_conv.py        python test_conv.py                                  (the autograder's check)
  conv checks         python -m pytest tools/tests/test_conv_checks.py ...  (test_conv.py beside both helper sets)
  starter interface   python -m pytest tools/tests/test_starter_interface.py -q -p no:cacheprovider
  smoke training      python -m tools.compat_smoke                         (SimpleNet, CNNs, ViT, PGD)
and writes one table row per version: torch, torchvision, numpy and Python as installed, each
check's pass or fail, and each failure's last line. Exit status 1 if any check fails, 2 on bad
arguments.
"""
import argparse
import datetime
import os
import re
import subprocess
import sys

from tools import CODE_DIR, REPO_DIR
from tools.benchmarking import cpu_model

SMOKE = "tools.compat_smoke"  # run as a module from the code folder, so it imports that folder's code
STARTER_TESTS = "tools/tests/test_starter_interface.py"
CONV_TESTS = "tools/tests/test_conv_checks.py"  # the course's test_conv.py beside our helpers and beside the course's
PIN_PACKAGES = ("torch", "torchvision", "numpy", "opencv-python-headless", "pytest")
OLD_TORCH = {  # torch 2.0 predates numpy 2 (and opencv >= 4.11 needs it); 2.4 takes pip's newest numpy
    "2.0.1": ["torch==2.0.1", "torchvision==0.15.2", "numpy<2", "opencv-python-headless<4.11", "pytest"],
    "2.4.1": ["torch==2.4.1", "torchvision==0.19.1", "opencv-python-headless", "pytest"],
}
VERSIONS_SCRIPT = ("import sys, numpy, torch, torchvision; "
                   "print(torch.__version__, torchvision.__version__, numpy.__version__, sys.version.split()[0])")
CHECKS = ("test_conv.py", "conv checks, both helper sets", "starter interface", "smoke training")
# A folder path from the root, as in a traceback's file name: a table cell keeps only what follows it
ABSOLUTE_FOLDER = re.compile(r"(?<![\w.~/:-])/(?:[\w.+-]+/)+")
CHECK_TIMEOUT_S = 1200
INSTALL_TIMEOUT_S = 3600


def pinned_requirements(path=os.path.join(REPO_DIR, "requirements.txt")):
    """(torch version, pip requirements) of the pin in requirements.txt."""
    pins = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            name, sep, version = line.split("#")[0].strip().partition("==")
            if sep:
                pins[name.strip().lower()] = version.strip()
    return pins["torch"], [f"{name}=={pins[name]}" for name in PIN_PACKAGES]


def all_requirements():
    """{torch version: pip requirements} for every version checked, oldest first."""
    pin, requirements = pinned_requirements()
    return {**OLD_TORCH, pin: requirements}


def run(argv, cwd=None, timeout=CHECK_TIMEOUT_S):
    """Run argv; returns (exit status, stdout and stderr together). A timeout is a failure."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the checked code folder as it was
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 1, f"timed out after {timeout} s"
    return done.returncode, done.stdout


def last_line(output):
    """The line that says why a run failed: the last line, or for pytest its last FAILED test
    (else its last ERROR) with the last exception line ("E ...") of the report, which is that test's."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("FAILED ")] or [
        line for line in lines if line.startswith("ERROR ")]
    if not failed:
        return lines[-1] if lines else "(no output)"
    exceptions = [line[1:].strip() for line in lines if line.startswith("E ")]
    return f"{failed[-1]} - {exceptions[-1]}" if exceptions and " - " not in failed[-1] else failed[-1]


def venv_python(venv):
    return os.path.join(venv, "bin", "python")


def prepare_venv(venv, requirements, base_python):
    """Make ``venv`` if it has no Python yet and pip-install ``requirements`` into it.

    Returns None when ready, else the failing step's last line."""
    python = venv_python(venv)
    if not os.path.exists(python):
        status, output = run([base_python, "-m", "venv", venv])
        if status:
            return f"venv: {last_line(output)}"
    status, output = run([python, "-m", "pip", "install", "-q", *requirements], timeout=INSTALL_TIMEOUT_S)
    return f"pip install: {last_line(output)}" if status else None


def check_commands(python):
    """[(check name, argv)] run from the code folder with the venv's ``python``."""
    return [
        ("test_conv.py", [python, "test_conv.py"]),
        ("conv checks, both helper sets", [python, "-m", "pytest", CONV_TESTS, "-q", "-p", "no:cacheprovider"]),
        ("starter interface", [python, "-m", "pytest", STARTER_TESTS, "-q", "-p", "no:cacheprovider"]),
        ("smoke training", [python, "-m", SMOKE]),
    ]


def check_version(torch_version, requirements, venv_root, code_dir, base_python):
    """One table row: {"torch", "torchvision", "numpy", "python", "results": {check: None or last line}}."""
    venv = os.path.join(venv_root, f"torch-{torch_version}")
    row = {"torch": torch_version, "torchvision": "?", "numpy": "?", "python": "?"}
    problem = prepare_venv(venv, requirements, base_python)
    if problem is None:
        status, output = run([venv_python(venv), "-c", VERSIONS_SCRIPT])
        if status:
            problem = f"import: {last_line(output)}"
        else:
            row.update(zip(("torch", "torchvision", "numpy", "python"), output.splitlines()[-1].split()))
    if problem is not None:
        row["results"] = dict.fromkeys(CHECKS, problem)
        return row
    row["results"] = {}
    for name, argv in check_commands(venv_python(venv)):
        print(f"  {name} ...", flush=True)
        status, output = run(argv, cwd=code_dir)
        if name == "test_conv.py" and "testing failed" in output:
            status = 1  # the course's test_conv.py prints its verdicts and exits 0 either way
        row["results"][name] = last_line(output) if status else None
    return row


def code_version(code_dir):
    """'branch B at commit C' of the git checkout holding code_dir, '+ uncommitted changes' if dirty."""
    def git(*args):
        status, output = run(["git", "-C", code_dir, *args], timeout=60)
        return output.strip() if status == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "not a git checkout"
    dirty = " + uncommitted changes" if git("status", "--porcelain", "--", ".") else ""
    return f"branch {git('rev-parse', '--abbrev-ref', 'HEAD')} at commit {commit}{dirty}"


def cell(text):
    """Text fit for one Markdown table cell, without absolute paths (".../file" stays)."""
    text = ABSOLUTE_FOLDER.sub(".../", text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def table(rows, code, hardware, date):
    """The Markdown report of ``rows`` (see check_version)."""
    lines = [
        "# Every PyTorch from 2.0 to the pin",
        "",
        f"Made by `python -m tools.compat_check` (from `code/`) on {date}: one virtual environment per",
        f"PyTorch, each running `test_conv.py`, `{CONV_TESTS}` (the course's `test_conv.py` beside",
        f"our helper files and beside the course's own, and our conv checks), `{STARTER_TESTS}`",
        "(`student_code.py` beside the course's helper files) and `tools/compat_smoke.py` (2 SGD steps of",
        "SimpleNet, the improved CNN with nn.Conv2d and with CustomConv2d and the ViT, and a PGD attack).",
        "",
        f"- Code: {code}.",
        "- Data: synthetic (a generated demo set of 4 classes in the smoke training; random tensors in",
        "  test_conv.py).",
        f"- Hardware: {hardware}; CPU only.",
        "",
        "| torch | torchvision | numpy | python | " + " | ".join(CHECKS) + " | failures (last line) |",
        "|---" * (5 + len(CHECKS)) + "|",
    ]
    for row in rows:
        results = row["results"]
        verdicts = ["pass" if results[name] is None else "**fail**" for name in CHECKS]
        by_failure = {}  # failure line: the checks that failed with it
        for name in CHECKS:
            if results[name] is not None:
                by_failure.setdefault(results[name], []).append(name)
        failures = "; ".join(f"{', '.join(names)}: {failure}" for failure, names in by_failure.items())
        lines.append(f"| {row['torch']} | {row['torchvision']} | {row['numpy']} | {row['python']} | "
                     + " | ".join(verdicts) + f" | {cell(failures)} |")
    return "\n".join(lines) + "\n"


def parse_args(argv, versions):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=list(versions), metavar="TORCH",
                        help=f"torch versions to check (default: all of {', '.join(versions)})")
    parser.add_argument("--venv-root", default=os.path.join(os.path.expanduser("~"), ".cache", "miniplaces-compat"),
                        help="folder of the venvs, one torch-<version> each (default: %(default)s)")
    parser.add_argument("--code-dir", default=CODE_DIR,
                        help="the code/ folder to check (default: the one holding tools/)")
    parser.add_argument("--out", default=os.path.join(REPO_DIR, "results", "compat.md"),
                        help="the Markdown table to write (default: results/compat.md)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that makes new venvs (default: this one)")
    args = parser.parse_args(argv)
    unknown = [v for v in args.versions if v not in versions]
    if unknown:
        parser.exit(2, f"compat_check.py: error: unknown torch version {', '.join(unknown)}; "
                       f"choose from {', '.join(versions)}\n")
    for needed in ("test_conv.py", CONV_TESTS, STARTER_TESTS, SMOKE.replace(".", "/") + ".py"):
        if not os.path.isfile(os.path.join(args.code_dir, needed)):
            parser.exit(2, f"compat_check.py: error: --code-dir {args.code_dir} holds no {needed}\n")
    args.code_dir = os.path.abspath(args.code_dir)
    return args


def main(argv=None):
    requirements = all_requirements()
    args = parse_args(argv, requirements)
    code = code_version(args.code_dir)  # before the checks, which may take a while
    rows = []
    for version in args.versions:
        print(f"torch {version}: venv {os.path.join(args.venv_root, 'torch-' + version)}", flush=True)
        rows.append(check_version(version, requirements[version], args.venv_root, args.code_dir, args.python))
        for name, failure in rows[-1]["results"].items():
            print(f"  {name}: {'pass' if failure is None else 'FAIL: ' + failure}", flush=True)
    hardware = f"{cpu_model()}, {os.cpu_count()} cores"
    report = table(rows, code, hardware, datetime.date.today().isoformat())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(report)
    print(f"wrote {args.out}")
    return 1 if any(failure is not None for row in rows for failure in row["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
