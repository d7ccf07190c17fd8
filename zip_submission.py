"""Pack the hand-in zip: code/, writeup/ and results/ only.

    python zip_submission.py                 # -> submission.zip beside this file
    python zip_submission.py -o hw.zip --force

Leaves out caches, data, logs, checkpoints and TensorBoard event files, and reports the zip's
size. It refuses (one line per problem, exit status 2) a tree in which
  - writeup/contributions.md (the team's members and their parts) is missing or still holds a
    placeholder, such as "(name)" or TODO;
  - writeup/writeup.pdf is missing (unless --no-report), or the report does not show
    contributions.md as it is now, or the PDF was not built from writeup/writeup.md as it is now
    (the builder stamps the PDF with the SHA-256 of the Markdown it rendered): rebuild the report;
  - any text file that would go into the zip holds an absolute path (naming the file and the path).
"""
import argparse
import hashlib
import os
import re
import sys
import zipfile

FOLDERS = ("code", "writeup", "results")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", "logs", "data", "models", ".git"}
SKIP_SUFFIXES = (".pyc", ".pth", ".pth.tar", ".pt", ".ckpt", ".tar", ".tar.gz", ".zip", ".jpg", ".jpeg")
# A POSIX path from a well-known root, or a Windows drive path, not preceded by a character
# that would make it part of a relative path or a URL ("../data/x", "https://...").
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])(?:/(?:home|Users|tmp|work|root|mnt|media|data|scratch|content|"
                           r"private|Volumes|var|opt|srv)/[\w.-]|[A-Za-z]:[\\/][\w.-])[^\s\"'`,;)\]]*")
REPORT = os.path.join("writeup", "writeup.pdf")
REPORT_MD = os.path.join("writeup", "writeup.md")
CONTRIBUTIONS = os.path.join("writeup", "contributions.md")
BUILD_REPORT = "cd code && python -m tools.build_report"
# What a contributions template leaves to fill in: a hint in parentheses such as "(name)" or
# "(parts, files and experiments)", "to be filled in", or a TODO / TBD / FIXME note.
PLACEHOLDER = re.compile(r"\((?:name|member|role|parts, files and experiments)\)|\bto be filled in\b|"
                         r"\b(?:TODO|TBD|FIXME)\b", re.I)
CONTRIBUTIONS_BLOCK = re.compile(r"<!-- BEGIN generated: contributions -->\n(.*?)<!-- END generated: contributions -->",
                                 re.S)
REPORT_SOURCE = re.compile(rb"writeup\.md sha256 ([0-9a-f]{64})")  # the builder's stamp in the PDF


def skipped(name):
    """True for files that never belong in a hand-in."""
    return name.endswith(SKIP_SUFFIXES) or name.startswith("events.out.tfevents")


def archived_files(root):
    """The files the zip holds, as paths relative to ``root``, in archive order."""
    names = []
    for top in FOLDERS:
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            names += [os.path.relpath(os.path.join(folder, n), root) for n in sorted(files) if not skipped(n)]
    return names


def absolute_path_in(path):
    """The first absolute path that the text file at ``path`` holds, or None (also for binary
    files: those with a NUL byte or not UTF-8)."""
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data:
        return None
    try:
        m = ABSOLUTE_PATH.search(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return m.group(0) if m else None


def find_absolute_paths(root, names):
    """[(name, absolute path)] for each of the archived files ``names`` that holds one."""
    found = [(name, absolute_path_in(os.path.join(root, name))) for name in names]
    return [(name, path) for name, path in found if path]


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def hand_in_problem(root):
    """The line that says why the team's contributions or the report under ``root`` are not ready
    to hand in, or None: contributions.md missing or holding a placeholder; where the PDF exists,
    writeup.md not showing contributions.md as it is now, or the PDF not stamped with the SHA-256
    of writeup.md as it is now."""
    if not os.path.isfile(os.path.join(root, CONTRIBUTIONS)):
        return f"{CONTRIBUTIONS} is missing: write the team's members and their parts there"
    contributions = read_text(os.path.join(root, CONTRIBUTIONS))
    placeholder = PLACEHOLDER.search(contributions)
    if placeholder:
        return (f"{CONTRIBUTIONS} still holds the placeholder {placeholder.group(0)!r}: "
                "fill in the team's members and their parts")
    if not os.path.isfile(os.path.join(root, REPORT)):
        return None
    report_md = read_text(os.path.join(root, REPORT_MD)) if os.path.isfile(os.path.join(root, REPORT_MD)) else ""
    shown = CONTRIBUTIONS_BLOCK.search(report_md)
    if shown is None or shown.group(1).strip() != contributions.strip():
        return f"{REPORT_MD} does not show {CONTRIBUTIONS} as it is now: rebuild the report ({BUILD_REPORT})"
    with open(os.path.join(root, REPORT), "rb") as f:
        stamp = REPORT_SOURCE.search(f.read())
    if stamp is None or stamp.group(1).decode() != hashlib.sha256(report_md.encode("utf-8")).hexdigest():
        return f"{REPORT} was not built from {REPORT_MD} as it is now: rebuild the report ({BUILD_REPORT})"
    return None


def build_zip(root, output, require_report=True):
    """Write the zip; returns the list of archived paths. Raises ValueError on a bad tree."""
    missing = [d for d in FOLDERS if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise ValueError(f"missing folder(s) {missing} under {root}")
    if require_report and not os.path.isfile(os.path.join(root, REPORT)):
        raise ValueError(f"{REPORT} is missing: build the report first ({BUILD_REPORT}) or pass --no-report")
    problem = hand_in_problem(root)
    if problem:
        raise ValueError(problem)
    names = archived_files(root)
    hits = find_absolute_paths(root, names)
    if hits:
        raise ValueError("\n".join(f"{name} holds an absolute path: {path} (make it relative to the repository)"
                                    for name, path in hits))
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(os.path.join(root, name), name)
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
        print(f"error: {args.output} exists; pass --force to replace it", file=sys.stderr)
        sys.exit(2)
    try:
        names = build_zip(args.root, args.output, require_report=not args.no_report)
    except ValueError as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
    size = os.path.getsize(args.output)
    print(f"wrote {args.output}: {len(names)} files, {size / 2 ** 20:.2f} MiB")
    if size > 20 * 2 ** 20:
        print("note: over 20 MiB; check that no data or checkpoints slipped into results/")


if __name__ == "__main__":
    main()
