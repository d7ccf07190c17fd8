#!/usr/bin/env bash
# Regenerate every demo-set result and the report from the committed code, in one command:
#
#     bash tools/regenerate_demo.sh          # from code/; PYTHON=... picks the interpreter
#
# 1. tools.run_experiments --demo: every experiment of the demo plan (resumable);
# 2. tools.seed_study: the standard and the adversarially trained SimpleNet with main.py's seed and
#    run_experiments.ADV_SEEDS, each attacked with every run_experiments.ADV_ATTACKS (epsilon, steps)
#    (the main seed is step 1's run, and its attacks step 1's where they match);
# 3. tools.run_experiments --demo again: nothing left to train, so it writes the bootstrap intervals,
#    results/demo (tools.make_results) and writeup/writeup.pdf (tools.build_report).
#
# Stopped at any point, the same command goes on where it stopped. logs/demo/COMMIT names the commit
# whose runs logs/demo holds; with other code committed since, the script stops and says so, so
# that no result of older code reaches the report. The runner's EXPERIMENTS comment gives its CPU budget.
set -euo pipefail
cd "$(dirname "$0")/.."  # code/: main.py and the tools run from there
py=${PYTHON:-python}
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain --untracked-files=no -- .)" ]; then
  echo "error: code/ has uncommitted changes: commit them first, so that the report names the commit it ran" >&2
  exit 2
fi
mkdir -p ../logs/demo
if [ -f ../logs/demo/COMMIT ] && [ "$(cat ../logs/demo/COMMIT)" != "$commit" ]; then
  echo "error: ../logs/demo holds runs of commit $(cat ../logs/demo/COMMIT), not $commit:" \
       "move it away (mv ../logs/demo ../logs/demo-$(cat ../logs/demo/COMMIT)) and run again" >&2
  exit 2
fi
echo "$commit" > ../logs/demo/COMMIT
seeds=$("$py" -c 'import main; from tools import run_experiments as r; print(main.get_args_parser().get_default("seed"), *r.ADV_SEEDS)')
attacks=$("$py" -c 'from tools import run_experiments as r; print(*(f"--attack {e:g} {n}" for e, n in r.ADV_ATTACKS))')
"$py" -m tools.run_experiments --demo --no-report
rm -f ../results/demo/seeds_*  # studies of older plans; this one is rewritten from its logs below
# shellcheck disable=SC2086  # the seeds and the attacks are separate arguments
"$py" -m tools.seed_study --demo simplenet adv-simplenet --seeds $seeds $attacks
"$py" -m tools.run_experiments --demo
