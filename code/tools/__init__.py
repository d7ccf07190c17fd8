"""Our tooling around the homework (benchmarks, compatibility checks, the experiment runner, the
results and report builders, the demo-data maker) and its tests. Nothing in the graded files or
main.py imports it. Run each tool from code/ as ``python -m tools.<name>`` (see tools/README.md)."""
import os

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # code/: where main.py runs
REPO_DIR = os.path.dirname(CODE_DIR)  # the repository root: data/, logs/, results/, writeup/
