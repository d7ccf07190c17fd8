"""Pack the hand-in zip: code/, writeup/ and results/ only.

    python zip_submission.py                 # -> submission.zip beside this file
    python zip_submission.py -o hw.zip --force

Leaves out caches, data, logs, checkpoints and TensorBoard event files, refuses
code that hard-codes an absolute path, and reports the zip's size.
"""
import argparse
import os
import re
import sys
import zipfile

FOLDERS = ("code", "writeup", "results")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", "logs", "data", "models", ".git"}
SKIP_SUFFIXES = (".pyc", ".pth", ".pth.tar", ".pt", ".ckpt", ".tar", ".tar.gz", ".zip", ".jpg", ".jpeg")
ABSOLUTE_PATH = re.compile(r"""["'](/(home|Users|mnt|media|data|root|scratch|content|tmp|work)/|[A-Za-z]:\\\\)""")
REPORT = os.path.join("writeup", "writeup.pdf")


def skipped(name):
    """True for files that never belong in a hand-in."""
    return name.endswith(SKIP_SUFFIXES) or name.startswith("events.out.tfevents")


def find_absolute_paths(root):
    """[(file, line number, line)] of string literals holding an absolute path in code/*.py."""
    hits = []
    for folder, dirs, files in os.walk(os.path.join(root, "code")):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and d != "tests"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    hits += [(path, i, ln.strip()) for i, ln in enumerate(f, 1) if ABSOLUTE_PATH.search(ln)]
    return hits


def build_zip(root, output, require_report=True):
    """Write the zip; returns the list of archived paths. Raises ValueError on a bad tree."""
    missing = [d for d in FOLDERS if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise ValueError(f"missing folder(s) {missing} under {root}")
    if require_report and not os.path.isfile(os.path.join(root, REPORT)):
        raise ValueError(f"{REPORT} is missing: build the report first (python writeup/build_report.py) "
                         "or pass --no-report")
    hits = find_absolute_paths(root)
    if hits:
        where = "; ".join(f"{os.path.relpath(p, root)}:{i}: {ln}" for p, i, ln in hits[:3])
        raise ValueError(f"code hard-codes absolute paths (use paths relative to code/): {where}")
    names = []
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as zf:
        for top in FOLDERS:
            for folder, dirs, files in os.walk(os.path.join(root, top)):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                for name in sorted(files):
                    if not skipped(name):
                        path = os.path.join(folder, name)
                        arc = os.path.relpath(path, root)
                        zf.write(path, arc)
                        names.append(arc)
    return names


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(here, "submission.zip"))
    parser.add_argument("--root", default=here, help="repository root to pack")
    parser.add_argument("--force", action="store_true", help="replace an existing zip")
    parser.add_argument("--no-report", action="store_true", help="allow a zip without writeup.pdf")
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.force:
        sys.exit(f"error: {args.output} exists; pass --force to replace it")
    try:
        names = build_zip(args.root, args.output, require_report=not args.no_report)
    except ValueError as e:
        sys.exit(f"error: {e}")
    size = os.path.getsize(args.output)
    print(f"wrote {args.output}: {len(names)} files, {size / 2 ** 20:.2f} MiB")
    if size > 20 * 2 ** 20:
        print("note: over 20 MiB; check that no data or checkpoints slipped into results/")


if __name__ == "__main__":
    main()
