#!/usr/bin/env bash
# Command 1: set up, then train and evaluate SimpleNet (MiniPlaces) or the improved CNN (demo set).
#  - MiniPlaces in data/ (bash download_dataset.sh): the assignment's full run (a GPU job).
#  - Otherwise: generates the small demo set into data/ and trains the improved CNN a few minutes on the CPU.
# Extra arguments go to main.py, e.g.  bash run.sh --epochs 3
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
cd code
PY=../.venv/bin/python
if [ ! -f ../data/train.txt ]; then
  echo "MiniPlaces not found in data/: generating the DEMO set (run download_dataset.sh for the real one)"
  $PY -m tools.make_demo_data ../data
fi
if [ -f ../data/DEMO_DATASET.txt ]; then
  # The improved CNN learns in 3 epochs; the course's default-initialized SimpleNet needs batch 4
  # and 10 epochs on the demo set (README, "Two commands").
  flags=(--arch cnn --epochs 3 --warmup 1 -b 32 --lr 0.05 -j 2)
else
  flags=(--arch simplenet --epochs 60)
fi
# The run folder is the one main.py names ("logs and checkpoints in RUN"), wherever --log-dir puts it.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
PYTHONUNBUFFERED=1 $PY main.py ../data "${flags[@]}" "$@" | tee -i "$out"
run=$(sed -n 's/^=> .*; logs and checkpoints in //p' "$out" | tail -n 1)
if [ -z "$run" ]; then
  echo "=> main.py trained nothing (see above): nothing to evaluate"
  exit 0
fi
echo "=> evaluating the best checkpoint of ${run}"
device=()  # a --device or --gpu given for the training holds for the evaluation too
for ((i = 1; i <= $#; i++)); do
  j=$((i + 1))
  case ${!i} in --device | --gpu) device+=("${!i}" "${!j:-}") ;; --device=* | --gpu=*) device+=("${!i}") ;; esac
done
$PY main.py ../data -e --resume "${run}/models/model_best.pth.tar" -j 2 --log-dir "$(dirname "$run")" "${device[@]}"
echo "=> curves: tensorboard --logdir logs   (from the repository root)"
