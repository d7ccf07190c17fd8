#!/usr/bin/env bash
# GPU self-check: one command on a CUDA machine, at most 8 minutes.
#   bash gpu_check.sh
# 1. the CUDA-only tests (pytest -m cuda);
# 2. bench_train.py at batch 256: the starter's loop (fp32 weights, TF32 convolutions: PyTorch's
#    default), the same loop in true fp32, and AMP + channels_last, for SimpleNet, the improved CNN
#    and ResNet18 (random init); target: >= 2x the starter's images/s on the improved CNN;
# 3. bench_conv.py on CUDA (fp32, native and custom both in true fp32; then the networks under AMP);
#    target: custom <= 3x native time;
# 4. bench_attention.py on CUDA;
# 5. a short training on a generated demo set with AMP; a resume to a longer --epochs, checked for
#    the epoch it continued at and the lr of the re-planned schedule; -e and -a; the custom
#    convolution trained and attacked;
# 6. torchrun with 2 processes (NCCL) and --adv-train where there are 2 GPUs ("not run" otherwise;
#    the CPU test suite runs the same with 2 gloo processes).
# Each step has a share of the overall budget (GPU_CHECK_BUDGET_S, default 450 s; the shares add up
# to it) and is sized to fit it; it runs under `timeout` for its share. A step that the budget can no
# longer reach is "not run", not failed. Writes results/gpu/*.md, each naming the GPU and the torch
# version, and the steps' logs to results/gpu/logs/; exit status 1 when a step failed or timed out.
# Without an NVIDIA GPU it says so in one line and exits 0; with one that torch cannot use (no kernels for it,
# a driver too old for torch's CUDA) it names the fix in one line and exits 1, as main.py stops there.
# PYTHON=... picks the interpreter (default .venv/bin/python, else python3).
set -uo pipefail
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-450}
cd "$(dirname "$0")" || exit 2
ROOT=$(pwd)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
# "1": torch can use the GPU; "0": no NVIDIA GPU; otherwise the line that says why torch cannot use it
if ! cuda=$(cd code && timeout 120 "$PY" -c "import torch; from cuda_build import gpu_problem, query_gpus
print(gpu_problem(torch) or int(torch.cuda.is_available()) or query_gpus()[1])" 2>/dev/null); then
  echo "error: gpu_check: cannot import torch with $PY (run setup.sh, or set PYTHON)" >&2
  exit 2
fi
case $cuda in
  1) ;;
  "nvidia-smi not on PATH" | "nvidia-smi found no GPU")
    echo "gpu_check: no NVIDIA GPU ($cuda): nothing to check"
    exit 0 ;;
  *)
    echo "error: gpu_check: $cuda" >&2
    exit 1 ;;
esac

OUT="$ROOT/results/gpu"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
FAILED=0
ROWS=()  # the summary table, one row per step
DEMO=$(mktemp -d)
trap 'rm -rf "$DEMO"' EXIT

# share PERCENT: that part of the budget, in seconds. The steps' shares add up to 100.
share() { echo $((BUDGET * $1 / 100)); }

# run_step NAME PERCENT LOG COMMAND...: run COMMAND in code/ for at most its share of the budget,
# output to results/gpu/logs/LOG; status 0 when it succeeded. When less than its share is left
# (earlier steps overran theirs), the step is not run and the status is 2.
run_step() {
  local name=$1 limit log=$3
  limit=$(share "$2")
  shift 3
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < limit)); then
    echo "== $name: not run (${left} s of the budget left, its share is ${limit} s)"
    ROWS+=("| $name | not run: ${left} s of the budget left, its share is ${limit} s | 0 | |")
    return 2
  fi
  echo "== $name (at most ${limit} s)"
  local t0=$SECONDS rc=0 status
  (cd "$ROOT/code" && timeout --kill-after=2 "$limit" "$@") >"$LOGS/$log" 2>&1 || rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="timed out after ${limit} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || FAILED=1
  echo "   $status in $((SECONDS - t0)) s (results/gpu/logs/$log)"
  ROWS+=("| $name | $status | $((SECONDS - t0)) | \`logs/$log\` |")
  [ "$rc" = 0 ]
}

# expect NAME LOG COUNT TEXT: the log must hold exactly COUNT lines with TEXT (COUNT + : at least)
expect() {
  local found
  found=$(grep -cF -- "$4" "$LOGS/$2")
  if [ "${3%+}" != "$3" ] && ((found >= ${3%+})) || [ "$found" = "$3" ]; then return 0; fi
  echo "   FAILED: $found line(s) with '$4' in results/gpu/logs/$2, expected $3"
  ROWS+=("| $1 | FAILED: $found line(s) with \`$4\` in the log, expected $3 | | \`logs/$2\` |")
  FAILED=1
  return 1
}

# check NAME LOG COMMAND...: a check of a step's results; its output is appended to the step's log
check() {
  local name=$1 log=$2
  shift 2
  if (cd "$ROOT/code" && "$@") >>"$LOGS/$log" 2>&1; then
    ROWS+=("| $name | ok: $(tail -n 1 "$LOGS/$log") | | \`logs/$log\` |")
    return 0
  fi
  echo "   FAILED: $name ($(tail -n 1 "$LOGS/$log"))"
  ROWS+=("| $name | FAILED: $(tail -n 1 "$LOGS/$log") | | \`logs/$log\` |")
  FAILED=1
  return 1
}

# not_run NAME WHY: a step that cannot run (an earlier step failed, or the machine lacks something)
not_run() {
  ROWS+=("| $1 | not run: $2 | 0 | |")
}

# The steps' shares of the budget (percent, adding up to 100; at 450 s, 1% = 4.5 s). Each step's
# work is sized to run in about half of its share on a T4.
P_ENV=4 P_CUDA_TESTS=14 P_BENCH_TRAIN=14 P_BENCH_CONV=12 P_BENCH_CONV_AMP=6 P_BENCH_ATTENTION=6
P_DEMO_DATA=3 P_TRAIN=9 P_RESUME=6 P_EVAL=4 P_ATTACK=4 P_CUSTOM_TRAIN=6 P_CUSTOM_ATTACK=4 P_TORCHRUN=8

ENV_LINES=$(cd code && timeout "$(share $P_ENV)" "$PY" - <<'EOF'
import platform

import torch
import torchvision

from mixed_precision import cuda_amp_dtype

d = torch.cuda.current_device()
p = torch.cuda.get_device_properties(d)
print(f"- GPU: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2 ** 30:.0f} GiB "
      f"({torch.cuda.device_count()} visible)")
print(f"- torch {torch.__version__}, torchvision {torchvision.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, Python {platform.python_version()}")
print(f"- main.py's AMP dtype here: {str(cuda_amp_dtype(d)).replace('torch.', '')}")
EOF
) || { ENV_LINES="- (could not read the GPU's properties)"; FAILED=1; }
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
[ -n "$DRIVER" ] && ENV_LINES+=$'\n'"- NVIDIA driver $DRIVER"
case $ENV_LINES in *"AMP dtype here: bfloat16"*) AMP=bf16 ;; *) AMP=fp16 ;; esac
GPUS=$(sed -n 's/.*(\([0-9]*\) visible).*/\1/p' <<<"$ENV_LINES")
echo "$ENV_LINES"
STAMP="- Date: $(date '+%Y-%m-%d %H:%M'), written by \`bash gpu_check.sh\`"

# 1. CUDA-only tests
run_step "CUDA-only tests (pytest -m cuda)" $P_CUDA_TESTS cuda_tests.log \
  "$PY" -m pytest tools/tests -m cuda -q -p no:cacheprovider -rs
{
  printf '# CUDA-only tests (pytest -m cuda)\n\n%s\n%s\n\n```\n' "$STAMP" "$ENV_LINES"
  tail -n 30 "$LOGS/cuda_tests.log" 2>/dev/null
  printf '```\n'
} >"$OUT/cuda_tests.md"

# 2. training throughput at batch 256: 3 models x 3 loops x 2 rounds of 2 + 5 steps
run_step "bench_train.py, batch 256" $P_BENCH_TRAIN bench_train.log \
  "$PY" -m tools.bench_train --batch-size 256 --steps 5 --warmup 2 --repeats 2 --device cuda \
  --out "$OUT/train_throughput.md" && expect "bench_train.py target line" bench_train.log 1 "Target (GPU)"

# 3. custom vs native convolution: every layer and network in true fp32, then the networks under AMP
run_step "bench_conv.py, fp32" $P_BENCH_CONV bench_conv.log \
  "$PY" -m tools.bench_conv --device cuda --repeats 3 --out-dir "$OUT" &&
  expect "bench_conv.py target lines" bench_conv.log 3+ "Target (GPU)"
run_step "bench_conv.py, AMP $AMP, networks" $P_BENCH_CONV_AMP bench_conv_amp.log \
  "$PY" -m tools.bench_conv --device cuda --amp "$AMP" --layers "" --repeats 3 --out-dir "$OUT" --name conv_benchmark_amp

# 4. attention paths and ViT budgets
run_step "bench_attention.py" $P_BENCH_ATTENTION bench_attention.log \
  "$PY" -m tools.bench_attention --device cuda --out "$OUT/attention_benchmark.md"

# 5. demo-set training with AMP, resume, -e, -a; the custom convolution trained and attacked
DATA="$DEMO/data"
DEMO_FLAGS=(-b 64 --lr 0.05 -j 4 -p 4 --device cuda)
if run_step "demo set: make_demo_data.py" $P_DEMO_DATA demo_data.log \
  "$PY" -m tools.make_demo_data "$DATA" --classes 10 --train-per-class 50 --val-per-class 10; then
  run_step "demo: train the improved CNN, AMP, 2 epochs" $P_TRAIN demo_train.log \
    "$PY" main.py "$DATA" --arch cnn --epochs 2 --warmup 1 "${DEMO_FLAGS[@]}" --log-dir "$DEMO/logs" &&
    expect "demo: AMP in use" demo_train.log 1 "=> precision: AMP"
  runs=("$DEMO"/logs/*/)  # the run folder main.py made (the pattern itself when there is none)
  RUN=${runs[0]}
  if [ -f "${RUN}models/checkpoint.pth.tar" ]; then
    # --resume with a longer --epochs only: the run's other flags come from its checkpoint
    run_step "demo: resume to 3 epochs" $P_RESUME demo_resume.log \
      "$PY" main.py "$DATA" --epochs 3 --resume "${RUN}models/checkpoint.pth.tar" &&
      check "demo: resumed at epoch 3 with the re-planned lr" demo_resume.log \
        "$PY" -m tools.tests.check_resume_log "$LOGS/demo_resume.log" "${RUN}models/checkpoint.pth.tar" 2 3
    run_step "demo: -e (flip averaging)" $P_EVAL demo_eval.log \
      "$PY" main.py "$DATA" -e --resume "${RUN}models/model_best.pth.tar" -j 4 --log-dir "$DEMO/logs_eval" &&
      expect "demo: -e accuracies" demo_eval.log 2 "******Acc@1"
    run_step "demo: -a (PGD)" $P_ATTACK demo_attack.log \
      "$PY" main.py "$DATA" -a --resume "${RUN}models/checkpoint.pth.tar" -j 4 --log-dir "$DEMO/logs_eval" &&
      expect "demo: -a clean and adversarial accuracy" demo_attack.log 1 "=> clean:" &&
      expect "demo: -a accuracy" demo_attack.log 1 "******Acc@1"
  else
    not_run "demo: resume, -e, -a" "the training left no checkpoint"
  fi
  run_step "demo: train SimpleNet with the custom conv, AMP, 1 epoch" $P_CUSTOM_TRAIN demo_custom_train.log \
    "$PY" main.py "$DATA" --arch simplenet --use-custom-conv --epochs 1 --warmup 0 "${DEMO_FLAGS[@]}" \
    --log-dir "$DEMO/logs_custom"
  runs=("$DEMO"/logs_custom/*/)
  CRUN=${runs[0]}
  if [ -f "${CRUN}models/checkpoint.pth.tar" ]; then
    run_step "demo: -a on the custom conv" $P_CUSTOM_ATTACK demo_custom_attack.log \
      "$PY" main.py "$DATA" -a --resume "${CRUN}models/checkpoint.pth.tar" -j 4 --log-dir "$DEMO/logs_eval" &&
      expect "demo: custom-conv -a accuracy" demo_custom_attack.log 1 "******Acc@1"
  else
    not_run "demo: -a on the custom conv" "its training left no checkpoint"
  fi
  # 6. DDP: torchrun, 2 processes on 2 GPUs (NCCL), adversarial training (PGD inside forward)
  if [ "${GPUS:-1}" -ge 2 ]; then
    run_step "demo: torchrun --nproc_per_node=2 (NCCL), --adv-train, 1 epoch" $P_TORCHRUN demo_ddp.log \
      "$PY" -m torch.distributed.run --nproc_per_node=2 main.py "$DATA" --arch simplenet --adv-train 0.5 \
      --adv-steps 1 --epochs 1 --warmup 0 "${DEMO_FLAGS[@]}" --log-dir "$DEMO/logs_ddp" &&
      expect "demo: DDP replicas identical" demo_ddp.log 1 "identical on all 2 ranks"
  else
    not_run "demo: torchrun --nproc_per_node=2 (NCCL), --adv-train" \
      "${GPUS:-1} GPU visible, it needs 2 (the CPU suite runs it with 2 gloo processes)"
  fi
else
  not_run "demo: training, resume, -e, -a, torchrun" "no demo set"
fi
{
  printf '# Demo-set runs of main.py on the GPU\n\n%s\n%s\n' "$STAMP" "$ENV_LINES"
  printf -- '- Data: a generated DEMO set (10 classes, 50 train / 10 val images each), NOT MiniPlaces: the\n'
  printf '  accuracies only show that the runs work.\n\n'
  for log in demo_train demo_resume demo_eval demo_attack demo_custom_train demo_custom_attack demo_ddp; do
    [ -f "$LOGS/$log.log" ] || continue
    printf '## %s\n\n```\n' "$log"
    grep -E '^(=>|\*{6}|Epoch: .*\[[0-9]+/[0-9]+\].*Loss|error)' "$LOGS/$log.log" | tail -n 12
    printf '```\n\n'
  done
} >"$OUT/demo_run.md"

TARGETS=$(cat "$OUT/train_throughput.md" "$OUT/conv_benchmark.md" 2>/dev/null | grep -F "Target (GPU)")
{
  printf '# GPU self-check\n\n%s\n%s\n- Budget %s s, used %s s\n\n' "$STAMP" "$ENV_LINES" "$BUDGET" "$((SECONDS - START))"
  printf '| step | status | seconds | log |\n|---|---|---|---|\n'
  printf '%s\n' "${ROWS[@]}"
  printf '\n## Targets\n\n%s\n\n' "${TARGETS:-(none measured)}"
  printf 'Reports: %s, %s, %s (and %s), %s, %s (demo data, not MiniPlaces).\n' "\`cuda_tests.md\`" \
    "\`train_throughput.md\`" "\`conv_benchmark.md\`" "\`conv_benchmark_amp.md\`" "\`attention_benchmark.md\`" \
    "\`demo_run.md\`"
} >"$OUT/summary.md"
echo
echo "${TARGETS:-no target measured}"
echo "gpu_check: $([ "$FAILED" = 0 ] && echo "all steps that ran passed" || echo "some steps FAILED") in $((SECONDS - START)) s; see results/gpu/summary.md"
exit "$FAILED"
