#!/usr/bin/env bash
# Create .venv and install requirements.txt (idempotent). With an NVIDIA GPU, first the torch build whose
# kernels cover every GPU nvidia-smi lists and whose CUDA runs on its driver (code/cuda_build.py; one line
# says which and why). TORCH_BUILD=cu126 (or cu130, cu132, cpu, default) overrides the choice;
# --dry-run prints the install commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if [ "${1:-}" = "--dry-run" ]; then
  "$PY" code/cuda_build.py --python .venv/bin/python --dry-run
  echo ".venv/bin/python -m pip install -r requirements.txt"
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
"$PY" code/cuda_build.py --python .venv/bin/python
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
