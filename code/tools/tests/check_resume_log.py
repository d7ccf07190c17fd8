"""gpu_check.sh's check of a resume: main.py's output LOG of ``--resume CHECKPOINT --epochs E`` of a
run that had trained D epochs, and the checkpoint it left, show that the run went on after epoch
D at epoch D + 1, at the lr of its warmup + cosine schedule re-planned over E epochs (computed
here from the formula, not by utils.py), and ended at epoch E.

    python -m tools.tests.check_resume_log LOG CHECKPOINT D E      # from code/

Prints one line; exit status 1 when a check fails."""
import math
import re
import sys

import torch


def planned_lr(step, peak, warmup_iters, total_iters, eta_min=1e-8):
    """The lr after ``step`` iterations: linear warmup from 0, then cosine to ``eta_min``."""
    if step < warmup_iters:
        return peak * step / warmup_iters
    progress = min(1.0, (step - warmup_iters) / max(1, total_iters - warmup_iters))
    return eta_min + 0.5 * (peak - eta_min) * (1 + math.cos(math.pi * progress))


def check(log_text, ckpt, done, epochs):
    """The line to print and whether every check passed."""
    resumed = re.search(r"^=> resumed \S+ after epoch (\d+) \(best Acc@1 [0-9.]+\): epochs (\d+) to (\d+) "
                        r"start at lr ([0-9.e+-]+)", log_text, re.M)
    first = re.search(rf"^Epoch: \[{done + 1}\]\[(\d+)/(\d+)\].*\tLR ([0-9.]+)", log_text, re.M)
    if resumed is None or first is None:
        return "no '=> resumed' line or no 'Epoch: [D+1]' line in the log", False
    k, iters = int(first.group(1)), int(first.group(2))
    args = ckpt["args"]
    warmup, total = args["warmup"] * iters, epochs * iters
    want_start, want_first = (planned_lr(s, args["lr"], warmup, total) for s in (done * iters, done * iters + k))
    problems = []
    if [int(g) for g in resumed.groups()[:3]] != [done, done + 1, epochs]:
        problems.append(f"resumed after epoch {resumed.group(1)}, epochs {resumed.group(2)} to {resumed.group(3)}")
    if not math.isclose(float(resumed.group(4)), want_start, rel_tol=1e-4):
        problems.append(f"start lr {resumed.group(4)}, planned {want_start:.6g}")
    if abs(float(first.group(3)) - want_first) > 1e-5:
        problems.append(f"lr {first.group(3)} at iteration {k} of epoch {done + 1}, planned {want_first:.5f}")
    if re.search(rf"^Epoch: \[({'|'.join(str(e) for e in range(1, done + 1))})\]", log_text, re.M):
        problems.append("epochs before the checkpoint trained again")
    if ckpt["epoch"] != epochs or args["epochs"] != epochs:
        problems.append(f"the checkpoint is at epoch {ckpt['epoch']} of {args['epochs']}, not {epochs}")
    if problems:
        return "; ".join(problems), False
    return (f"continued after epoch {done} at epoch {done + 1} (of {epochs}) at lr {want_start:.6g} as re-planned; "
            f"checkpoint at epoch {epochs}"), True


def main(argv):
    log_path, ckpt_path, done, epochs = argv
    with open(log_path, encoding="utf-8") as f:
        text = f.read()
    line, ok = check(text, torch.load(ckpt_path, map_location="cpu", weights_only=True), int(done), int(epochs))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
