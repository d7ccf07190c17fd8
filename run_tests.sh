#!/usr/bin/env bash
# Command 2: the autograder's conv check, then the whole pytest suite (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/code"
PY=../.venv/bin/python
[ -x "$PY" ] || PY=python3
$PY test_conv.py
$PY -m pytest tools/tests -q -p no:cacheprovider "$@"
