"""Run the assignment's experiments in order, resumably, then build results/ and the report.

    python -m tools.run_experiments --demo          # (from code/) the demo set, few epochs (sized for a CPU)
    python -m tools.run_experiments --full          # MiniPlaces, the assignment's epochs (a GPU job)
    python -m tools.run_experiments --demo --only simplenet conv-native conv-custom
    python -m tools.run_experiments --demo --list   # the plan and each experiment's state; runs nothing
    bash tools/regenerate_demo.sh                   # the demo, its seed study and the report, in one go

Every experiment is one call of main.py with its own folder ``<root>/logs/<scale>/<name>/``
holding ``stdout.log`` (main.py's output, appended per attempt), ``status.json`` (what
happened: finished / failed / skipped and why, the data and the hardware) and main.py's
run folder(s). A training experiment is finished when the newest run's
``models/checkpoint.pth.tar`` has ``epoch`` equal to the requested epochs; with fewer it is
resumed from that checkpoint. An attack experiment runs ``-a`` on the best checkpoint of its
target and records main.py's ``******Acc@1 X Acc@5 Y`` line; an evaluation experiment runs
``-e`` there and records both of its lines (without, then with flip averaging). A failing
experiment never stops the others. At the end compare_checkpoints.py writes the paired-bootstrap intervals of
COMPARISONS (SimpleNet vs the improved CNN, SimpleViT vs the improved ViT), then make_results.py
and tools/build_report.py turn the logs into results/ and writeup/writeup.pdf. It refuses
to run code that no commit holds (--allow-dirty for a trial), so every result names its commit,
and it records paths relative to code/.
"""
import argparse
import datetime
import glob
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from tools import CODE_DIR, REPO_DIR

MAIN_PY = os.path.join(CODE_DIR, "main.py")


@dataclass(frozen=True)
class Experiment:
    """One row of the experiment table.

    name: folder under logs/<scale>/ and the row name in every table (no '_' or '/').
    part: the assignment part it answers; title: a short description for tables.
    demo, full: main.py flags at demo and at full scale (training rows state ``--epochs``).
    target: for attack (``-a``) and evaluation (``-e``) rows, the training row whose best
        checkpoint is attacked or evaluated.
    needs_imagenet_weights: ResNet18 fine-tuning; gets ``--resnet18-weights PATH`` when the
        runner is given one, and is skipped at demo scale without it (offline).
    demo (or full) None: the row is not part of that scale's plan.
    demo_run_of: at demo scale the row is the run of this earlier training row (same flags), not
        trained again.
    """
    name: str
    part: str
    title: str
    demo: tuple
    full: tuple
    target: str = ""
    needs_imagenet_weights: bool = False
    demo_run_of: str = ""


CNN_DEMO = ("--warmup", "1", "-b", "32", "--lr", "0.05", "-j", "2", "-p", "8")
# SimpleNet keeps PyTorch's default initialization (the course's network): its eight plain conv
# layers start with a vanishing signal (at init its last features vary about 1e-4 as much across
# random inputs as the inputs do), and SGD must first grow it. On the demo set (2-core Xeon CPU) it
# stayed at chance level at batch 16 or 32 (lr 0.05 to 0.4, 3 to 6 epochs; lr 1.0 diverged), at
# batch 8 and at batch 4 with lr 0.1, and at batch 2 with lr 0.05 (5 to 8 epochs). At batch 4 it
# learned, but some runs diverged just as they left chance level: 1 of 3 with lr 0.05, 1 of 8 with
# lr 0.03 (seed 4, epoch 3). With the gradient norm clipped at 1 (lr 0.03) it learned faster and
# did not diverge: best top-1 after 10 epochs 83.0, 82.0 and 83.5% with seeds 2024, 4 and 2, and
# the adversarially trained one with seed 4 passed 55% in 6 epochs. Batch 4 gives 250 steps per
# epoch at about the same CPU time per epoch as batch 32.
SIMPLENET_BATCH = ("--warmup", "1", "-b", "4", "--lr", "0.03", "--clip-grad", "1", "-j", "2", "-p", "64")
SIMPLENET_DEMO = ("--arch", "simplenet", "--epochs", "10", *SIMPLENET_BATCH)
VIT_DEMO = ("--epochs", "10", "--warmup", "1", "-b", "32", "--lr", "0.001", "--wd", "0.05", "-j", "2", "-p", "8")
VIT_FULL = ("--epochs", "90", "--wd", "0.05", "--lr", "0.01")
ATTACK_DEMO = ("-j", "2")
# The demo images carry pixel noise of 18/255 (make_demo_data.py), three times the course's
# default epsilon 0.1 (about 6/255), which then barely moves a prediction; at 0.5 the attack visibly lowers
# top-1, so 0.5 is the demo's default attack.
DEMO_EPS = ("--attack-eps", "0.5")
DEMO_ADV = ("--adv-train", "0.5", "--adv-steps", "1", "--adv-eps", "0.5")  # trained at the attack's epsilon
ADV_SEEDS = (1, 2, 3, 4)  # extra seeds of the standard / adversarially trained SimpleNet pair (seed_study.py)
# (epsilon, steps) of the attacks on every seed of that pair (seed_study.py): the plan's attacks on SimpleNet
ADV_ATTACKS = ((0.1, 10), (0.5, 3), (0.5, 10), (1.0, 10))

# Demo budget: code/tools/regenerate_demo.sh runs all of the demo in one sitting on a 2-core CPU. Median
# epoch times (train + val) on the demo set, 2-core Xeon, from the regeneration at dea0f96: SimpleNet
# 9 s (batch 4), with CustomConv2d 11 s, with one-step adversarial training 14 s; the improved CNN
# 26 s, SimpleViT 5 s, the improved ViT 65 s. A PGD step on the 200 val images costs about 1.6 s and
# every main.py call about 10 s to start. Every pair that the report compares trains for the same
# number of epochs: SimpleNet, the improved CNN (and ResNet18, given weights), SimpleViT and the
# improved ViT all 10, the standard and the adversarially trained SimpleNet 10 (the nn.Conv2d row of
# Part I.1 is SimpleNet's run). Estimate: training 22 min (the improved ViT 11 of them), the attacks
# and evaluations of the plan 6 min, the seed study (4 more seeds of the adversarial pair, 4 attacks
# on each of its 10 models) 31 min, bootstrap, results and report 2 min: about 62 minutes on an
# idle machine (the plan before equal budgets took about 35).
EXPERIMENTS = (
    Experiment("simplenet", "I.2", "SimpleNet", SIMPLENET_DEMO, ("--arch", "simplenet", "--epochs", "60")),
    Experiment("simplenet-chain", "I.2", "SimpleNet, the course's multi-pass augmentation chain", None,
               ("--arch", "simplenet", "--epochs", "60", "--augment", "chain")),
    Experiment("conv-native", "I.1", "SimpleNet, nn.Conv2d", SIMPLENET_DEMO, ("--arch", "simplenet", "--epochs", "10"),
               demo_run_of="simplenet"),
    Experiment("conv-custom", "I.1", "SimpleNet, CustomConv2d", (*SIMPLENET_DEMO, "--use-custom-conv"),
               ("--arch", "simplenet", "--epochs", "10", "--use-custom-conv")),
    Experiment("cnn", "I.2", "improved CNN", ("--arch", "cnn", "--epochs", "10", *CNN_DEMO),
               ("--arch", "cnn", "--epochs", "60", "--label-smoothing", "0.1", "--ema-decay", "0.999")),
    Experiment("resnet18", "I.2", "ResNet18, ImageNet fine-tuned",
               ("--arch", "resnet18", "--epochs", "10", "--warmup", "1", "-b", "32", "--lr", "0.01", "-j", "2",
                "-p", "8"),
               ("--arch", "resnet18", "--epochs", "60", "--lr", "0.01"), needs_imagenet_weights=True),
    Experiment("simplevit", "II", "SimpleViT", ("--arch", "simplevit", *VIT_DEMO),
               ("--arch", "simplevit", *VIT_FULL)),
    Experiment("vit", "II", "improved ViT", ("--arch", "vit", *VIT_DEMO),
               ("--arch", "vit", "--epochs", "90", "--wd", "0.05", "--lr", "0.001", "--label-smoothing", "0.1")),
    Experiment("pgd-simplenet", "III", "PGD on SimpleNet", ("-a", "-v", *DEMO_EPS, *ATTACK_DEMO), ("-a", "-v"),
               target="simplenet"),
    Experiment("pgd-simplenet-eps-low", "III", "PGD, a smaller epsilon",
               ("-a", "-v", "--attack-eps", "0.1", *ATTACK_DEMO), ("-a", "--attack-eps", "0.05"), target="simplenet"),
    Experiment("pgd-simplenet-eps-high", "III", "PGD, a larger epsilon",
               ("-a", "--attack-eps", "1.0", *ATTACK_DEMO), ("-a", "--attack-eps", "0.2"), target="simplenet"),
    Experiment("pgd-simplenet-steps1", "III", "PGD, 1 step", ("-a", "--attack-steps", "1", *DEMO_EPS, *ATTACK_DEMO),
               ("-a", "--attack-steps", "1"), target="simplenet"),
    Experiment("pgd-simplenet-steps3", "III", "PGD, 3 steps", ("-a", "--attack-steps", "3", *DEMO_EPS, *ATTACK_DEMO),
               ("-a", "--attack-steps", "3"), target="simplenet"),
    Experiment("pgd-simplenet-fine", "III", "PGD, more steps and a smaller epsilon",
               ("-a", "-v", "--attack-steps", "40", "--attack-eps", "0.25", *ATTACK_DEMO),
               ("-a", "-v", "--attack-steps", "40", "--attack-eps", "0.05"), target="simplenet"),
    Experiment("adv-simplenet", "III", "SimpleNet, adversarial training",
               ("--arch", "simplenet", *DEMO_ADV, "--epochs", "10", *SIMPLENET_BATCH),
               ("--arch", "simplenet", "--adv-train", "0.5", "--epochs", "60")),
    Experiment("pgd-adv-simplenet", "III", "PGD on the adversarially trained SimpleNet",
               ("-a", "-v", *DEMO_EPS, *ATTACK_DEMO), ("-a", "-v"), target="adv-simplenet"),
)
# main.py -e (without, then with horizontal-flip averaging) on the best checkpoint of every row trained.
EXPERIMENTS += tuple(Experiment(f"eval-{e.name}", e.part, f"{e.title}: -e, flip-averaged",
                                ("-e", *ATTACK_DEMO) if e.demo and not e.demo_run_of else None, ("-e",),
                                target=e.name) for e in EXPERIMENTS if not e.target)

# Paired-bootstrap comparisons (compare_checkpoints.py) written into results/<scale>/ beside
# make_results.py's tables: (file, row A, row B), B being the improved model.
COMPARISONS = (("ci_cnn.md", "simplenet", "cnn"), ("ci_vit.md", "simplevit", "vit"))

SCALES = ("demo", "full")
ACC_LINE = re.compile(r"^\*{6}Acc@1 ([0-9.]+) Acc@5 ([0-9.]+)\s*$")
ARGPARSE_ERROR = re.compile(r"main\.py: error: (.*)$")


class RunnerError(Exception):
    """A problem with the runner's own input (data folder, table, flags): exit status 2."""


def flag_value(args, flag):
    """The value after ``flag`` in an argument tuple, or None when the flag is absent."""
    args = list(args)
    if flag not in args:
        return None
    i = args.index(flag)
    if i + 1 >= len(args):
        raise RunnerError(f"flag {flag} has no value in {args}")
    return args[i + 1]


def at_scale(experiments, scale):
    """The rows of ``experiments`` that are part of ``scale``'s plan (flags not None)."""
    return [e for e in experiments if getattr(e, scale) is not None]


def check_table(experiments):
    """Fail fast on a malformed experiment table: names, targets, epochs and shared runs."""
    names = [e.name for e in experiments]
    for i, e in enumerate(experiments):
        if not re.fullmatch(r"[A-Za-z0-9.-]+", e.name):
            raise RunnerError(f"experiment name {e.name!r} may hold only letters, digits, '.' and '-'")
        if names.count(e.name) > 1:
            raise RunnerError(f"experiment name {e.name!r} appears twice")
        if e.demo_run_of:
            shared = experiments[names.index(e.demo_run_of)] if e.demo_run_of in names[:i] else None
            if shared is None or shared.target or shared.demo != e.demo:
                raise RunnerError(f"{e.name}: demo_run_of {e.demo_run_of!r} must be a training row above it "
                                  "with the same demo flags")
        if e.target:
            if e.target not in names[:i]:
                raise RunnerError(f"{e.name}: target {e.target!r} is not a training row above it")
            if experiments[names.index(e.target)].target:
                raise RunnerError(f"{e.name}: target {e.target!r} is an attack, not a training row")
            planned = [flags for flags in (e.demo, e.full) if flags is not None]
            if not any(all(flag in flags for flags in planned) for flag in ("-a", "-e")):
                raise RunnerError(f"{e.name}: rows with a target need -a (attack) or -e (evaluation) at each scale")
        else:
            for scale in SCALES:
                if getattr(e, scale) is None:
                    continue
                epochs = flag_value(getattr(e, scale), "--epochs")
                if epochs is None or not epochs.isdigit() or int(epochs) < 1:
                    raise RunnerError(f"{e.name}: the {scale} flags must set --epochs N (N >= 1), got {epochs!r}")


def describe_hardware():
    """The machine as one line, e.g. 'NVIDIA H100 GPU; 16-core CPU (...)' or '2-core CPU (...), no GPU'."""
    import torch
    from tools.benchmarking import cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = cpu_model()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU; {cores}-core CPU ({cpu})"
    return f"{cores}-core CPU ({cpu}), no GPU"


def code_version():
    """The code that runs: 'commit 1a2b3c4' when ``code/`` matches the checkout's commit,
    'uncommitted changes on commit 1a2b3c4' when it differs (main refuses to start then, unless
    --allow-dirty), 'not a git checkout' otherwise (a zipped copy)."""
    def git(*args):
        result = subprocess.run(["git", "-C", CODE_DIR, *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", CODE_DIR)
    except OSError:  # no git installed
        commit = None
    if commit is None:
        return "not a git checkout"
    return f"uncommitted changes on commit {commit}" if changed else f"commit {commit}"


def shown(path):
    """``path`` as the records name it: relative to code/, where main.py runs (no absolute paths
    in logs or results, whatever machine made them)."""
    return os.path.relpath(path, CODE_DIR) if os.path.isabs(path) else path


def shown_command(cmd):
    """``python main.py ...`` for a main.py call ``cmd``, every absolute path relative to code/."""
    return shlex.join(["python", "main.py", *map(shown, cmd[2:])])


def describe_data(data_dir):
    """(is_demo, label): the data set of ``data_dir`` named with its class and image counts."""
    from tools.make_demo_data import DEMO_MARKER

    counts, classes = {}, set()
    for split in ("train", "val"):
        with open(os.path.join(data_dir, f"{split}.txt")) as f:
            lines = [ln.split() for ln in f if ln.strip()]
        counts[split] = len(lines)
        classes.update(parts[-1] for parts in lines)
    is_demo = os.path.isfile(os.path.join(data_dir, DEMO_MARKER))
    size = f"{len(classes)} classes, {counts['train']} train / {counts['val']} val images"
    return is_demo, (f"demo set (synthetic, {size}; not MiniPlaces)" if is_demo else f"MiniPlaces ({size})")


def prepare_data(data_dir, scale):
    """Check that ``data_dir`` fits the scale (demo set for demo, MiniPlaces for full); at demo
    scale an empty folder gets the demo set. Returns (is_demo, label) as describe_data."""
    if not os.path.isfile(os.path.join(data_dir, "train.txt")):
        if scale == "full":
            raise RunnerError(f"--full needs MiniPlaces in {data_dir}: run bash ../download_dataset.sh "
                              "(or pass --data FOLDER)")
        from tools.make_demo_data import make_demo_dataset

        make_demo_dataset(data_dir)
        print(f"=> generated the demo set in {data_dir} (not MiniPlaces)")
    is_demo, label = describe_data(data_dir)
    if scale == "demo" and not is_demo:
        raise RunnerError(f"--demo runs on the demo set, but {data_dir} holds MiniPlaces; pass "
                          "--data FOLDER (an empty folder gets the demo set)")
    if scale == "full" and is_demo:
        raise RunnerError(f"--full runs on MiniPlaces, but {data_dir} holds the demo set; download "
                          "MiniPlaces (bash ../download_dataset.sh) and pass --data FOLDER")
    return is_demo, label


def newest_run(exp_dir, prefix):
    """The newest folder ``exp_dir/<prefix>_<YYYYmmdd-HHMMSS>[-k]`` that holds
    ``models/checkpoint.pth.tar``, or None."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d{{8}}-\d{{6}})(?:-(\d+))?$")
    runs = []
    for path in glob.glob(os.path.join(glob.escape(exp_dir), f"{glob.escape(prefix)}_*")):
        m = pattern.match(os.path.basename(path))
        if m and os.path.isfile(os.path.join(path, "models", "checkpoint.pth.tar")):
            runs.append(((m.group(1), int(m.group(2) or 0)), path))
    return max(runs)[1] if runs else None


def checkpoint_epoch(run_dir):
    """The epoch stored in ``run_dir/models/checkpoint.pth.tar`` (0 when run_dir is None)."""
    import torch

    if run_dir is None:
        return 0
    ckpt = torch.load(os.path.join(run_dir, "models", "checkpoint.pth.tar"), map_location="cpu",
                      weights_only=True)
    return int(ckpt["epoch"])


def newest_attack_folder(exp_dir):
    """The newest ``*-attack_<stamp>`` folder that main.py's ``-a -v`` wrote, or None."""
    folders = [p for p in glob.glob(os.path.join(glob.escape(exp_dir), "*-attack_*")) if os.path.isdir(p)]
    return max(folders, key=os.path.getmtime) if folders else None


def attack_settings(args):
    """(epsilon, num_steps) of an attack row: its --attack-eps / --attack-steps, otherwise the
    defaults of student_code.default_attack; None where neither says."""
    from student_code import default_attack

    params = inspect.signature(default_attack).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    eps, steps = flag_value(args, "--attack-eps"), flag_value(args, "--attack-steps")
    return (float(eps) if eps is not None else defaults.get("epsilon"),
            int(steps) if steps is not None else defaults.get("num_steps"))


def read_status(exp_dir):
    """The experiment's status.json as a dict, or None when it has none."""
    path = os.path.join(exp_dir, "status.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_status(exp_dir, status):
    """Write status.json atomically (temporary file, then rename)."""
    tmp = os.path.join(exp_dir, ".status.json.tmp")
    with open(tmp, "w") as f:
        json.dump(status, f, indent=1)
    os.replace(tmp, os.path.join(exp_dir, "status.json"))


def execute(cmd, log_path):
    """Run ``cmd`` in code/ with stdout and stderr appended to ``log_path``; (exit status, seconds)."""
    start = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')} {shlex.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=CODE_DIR, stdout=log, stderr=subprocess.STDOUT).returncode
    return rc, time.time() - start


def failure(log_path, rc):
    """(status, reason) of a main.py call that exited with ``rc`` != 0: 'skipped' when argparse
    rejected a flag main.py does not have yet, 'failed' otherwise, with main.py's last words."""
    with open(log_path) as f:
        attempt = f.read().rsplit("\n=== ", 1)[-1]
    lines = [ln.strip() for ln in attempt.splitlines() if ln.strip()]
    for line in reversed(lines):
        m = ARGPARSE_ERROR.search(line)
        if m and rc == 2:
            return "skipped", f"main.py does not accept these flags yet ({m.group(1)})"
    last = lines[-1] if len(lines) > 1 else "no output"
    return "failed", f"main.py exited with status {rc}: {last}"


def run_training(exp, args, exp_dir, data_dir, main_py, base):
    """Train (or resume, or recognise as finished) one training row; returns its status."""
    epochs = int(flag_value(args, "--epochs"))
    run_dir = newest_run(exp_dir, exp.name)
    done = checkpoint_epoch(run_dir)
    if done == epochs:
        previous = read_status(exp_dir)
        if previous and previous["status"] == "finished" and previous.get("run_dir") == os.path.basename(run_dir):
            return dict(previous, note="finished earlier")
        return dict(base, status="finished", reason="", run_dir=os.path.basename(run_dir), epochs=epochs,
                    seconds=None, hardware="not recorded (the run finished outside run_experiments.py)")
    resume = ("--resume", os.path.join(run_dir, "models", "checkpoint.pth.tar")) if 0 < done < epochs else ()
    cmd = [sys.executable, main_py, data_dir, *args, "--log-dir", exp_dir, "--exp-name", exp.name, *resume]
    print(f"   {'resuming at epoch ' + str(done) if resume else 'training'} -> {exp_dir}/stdout.log", flush=True)
    rc, seconds = execute(cmd, os.path.join(exp_dir, "stdout.log"))
    status = dict(base, command=shown_command(cmd), seconds=round(seconds, 1), epochs=epochs)
    if rc != 0:
        state, reason = failure(os.path.join(exp_dir, "stdout.log"), rc)
        return dict(status, status=state, reason=reason)
    run_dir = newest_run(exp_dir, exp.name)
    done = checkpoint_epoch(run_dir)
    if done != epochs:
        return dict(status, status="failed", reason=f"main.py exited normally but the newest checkpoint has "
                                                    f"epoch {done}, not {epochs}")
    return dict(status, status="finished", reason="", run_dir=os.path.basename(run_dir))


def run_attack(exp, args, exp_dir, data_dir, main_py, base, log_root, experiments):
    """Attack (``-a``) or evaluate (``-e``) the best checkpoint of the row's finished target;
    returns its status. ``acc1``/``acc5`` are main.py's last accuracy line; an evaluation
    also records its first one (without flip averaging) as ``plain_acc1``/``plain_acc5``."""
    target = next(e for e in experiments if e.name == exp.target)
    target_dir = os.path.join(log_root, target.name)
    target_epochs = int(flag_value(getattr(target, base["scale"]), "--epochs"))
    run_dir = newest_run(target_dir, target.name)
    if checkpoint_epoch(run_dir) != target_epochs:
        known = read_status(target_dir)
        why = f"{known['status']}: {known['reason']}" if known and known["reason"] else "not finished"
        return dict(base, status="skipped", reason=f"needs {target.name} trained first ({why})")
    best = os.path.join(run_dir, "models", "model_best.pth.tar")
    checkpoint = os.path.relpath(best, log_root)
    previous = read_status(exp_dir)
    if previous and previous["status"] == "finished" and previous.get("checkpoint") == checkpoint:
        return dict(previous, note="finished earlier")
    cmd = [sys.executable, main_py, data_dir, *args, "--resume", best, "--log-dir", exp_dir]
    print(f"   {'attacking' if base['kind'] == 'attack' else 'evaluating'} {checkpoint} -> {exp_dir}/stdout.log",
          flush=True)
    before = newest_attack_folder(exp_dir)
    rc, seconds = execute(cmd, os.path.join(exp_dir, "stdout.log"))
    status = dict(base, command=shown_command(cmd), seconds=round(seconds, 1), target=target.name,
                  checkpoint=checkpoint)
    if base["kind"] == "attack":
        epsilon, num_steps = attack_settings(args)
        status.update(epsilon=epsilon, num_steps=num_steps)
    if rc != 0:
        state, reason = failure(os.path.join(exp_dir, "stdout.log"), rc)
        return dict(status, status=state, reason=reason)
    with open(os.path.join(exp_dir, "stdout.log")) as f:
        found = [ACC_LINE.match(ln) for ln in f.read().rsplit("\n=== ", 1)[-1].splitlines()]
    found = [(float(m.group(1)), float(m.group(2))) for m in found if m]
    needed = 2 if base["kind"] == "eval" else 1
    if len(found) < needed:
        return dict(status, status="failed", reason=f"main.py printed {len(found)} '******Acc@1 X Acc@5 Y' "
                                                    f"line(s), not {needed}")
    if base["kind"] == "eval":
        status.update(plain_acc1=found[0][0], plain_acc5=found[0][1])
    images = newest_attack_folder(exp_dir) if "-v" in args else None
    return dict(status, status="finished", reason="", acc1=found[-1][0], acc5=found[-1][1],
                run_dir=os.path.basename(images) if images and images != before else None)


def shared_run(exp, base, log_root):
    """The status of a row whose demo run is that of ``exp.demo_run_of``: finished when that
    row is, its run folder named from this row's folder."""
    other = read_status(os.path.join(log_root, exp.demo_run_of))
    if not (other and other["status"] == "finished"):
        return dict(base, status="skipped", reason=f"its run is {exp.demo_run_of}'s, which has not finished")
    return dict(base, status="finished", reason="", run_dir=os.path.join("..", exp.demo_run_of, other["run_dir"]),
                epochs=other["epochs"], seconds=0, hardware=other["hardware"], run_of=exp.demo_run_of)


def run_one(exp, scale, data_dir, data, log_root, experiments, resnet18_weights=None, main_py=MAIN_PY):
    """Run one row at ``scale``; writes and returns its status dict (see the module docstring)."""
    exp_dir = os.path.join(log_root, exp.name)
    os.makedirs(exp_dir, exist_ok=True)
    args = tuple(getattr(exp, scale))
    if exp.needs_imagenet_weights and resnet18_weights:
        args += ("--resnet18-weights", shown(os.path.abspath(resnet18_weights)))
    kind = "train" if not exp.target else "attack" if "-a" in args else "eval"
    base = {"name": exp.name, "part": exp.part, "title": exp.title, "kind": kind,
            "scale": scale, "demo_data": data[0], "data": data[1], "hardware": describe_hardware(),
            "code": code_version(), "args": list(args)}
    previous = read_status(exp_dir)
    if exp.needs_imagenet_weights and not resnet18_weights and scale == "demo":
        status = dict(base, status="skipped", reason="no ImageNet weights (offline); pass --resnet18-weights PATH")
    elif previous and previous["status"] == "finished" and previous["args"] != list(args):
        return dict(base, status="failed", reason=f"{exp_dir} holds a finished run with other flags "
                                                  f"({shlex.join(previous['args'])}); delete that folder to "
                                                  "run the new flags")
    elif exp.target:
        status = run_attack(exp, args, exp_dir, data_dir, main_py, base, log_root, experiments)
    elif scale == "demo" and exp.demo_run_of:
        status = shared_run(exp, base, log_root)
    else:
        status = run_training(exp, args, exp_dir, data_dir, main_py, base)
    if status.get("note") != "finished earlier":
        status["recorded_at"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_status(exp_dir, status)
    return status


def status_line(status):
    """A status as one line: 'finished', 'finished earlier', 'finished (simplenet's run)' or
    'failed: <reason>'."""
    shared = f" ({status['run_of']}'s run)" if status.get("run_of") else ""
    return f"{status.get('note') or status['status']}{shared}{': ' + status['reason'] if status['reason'] else ''}"


def run_all(experiments, scale, data_dir, log_root, only=(), resnet18_weights=None, main_py=MAIN_PY):
    """Run the rows (all, or those named in ``only``) in table order; returns {name: status}."""
    check_table(experiments)
    unknown = sorted(set(only) - {e.name for e in at_scale(experiments, scale)})
    if unknown:
        raise RunnerError(f"--only: {unknown} not in the {scale} plan; see --list")
    data = prepare_data(data_dir, scale)
    chosen = [e for e in at_scale(experiments, scale) if not only or e.name in only]
    statuses = {}
    for i, exp in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {exp.name}: {exp.title}", flush=True)
        status = run_one(exp, scale, data_dir, data, log_root, experiments, resnet18_weights, main_py)
        statuses[exp.name] = status
        print(f"   {status_line(status)}", flush=True)
    return statuses


def write_comparisons(data_dir, log_root, out_dir, comparisons=COMPARISONS):
    """compare_checkpoints.py on the best checkpoints of every pair whose rows are both finished
    (as their status.json says); the file of a pair that is not finished is removed, so no
    interval outlives its runs. Returns {file: 'written' | 'removed' | 'not run'}."""
    os.makedirs(out_dir, exist_ok=True)
    done = {}
    for stem, a, b in comparisons:
        out = os.path.join(out_dir, stem)
        statuses = [read_status(os.path.join(log_root, name)) for name in (a, b)]
        if not all(s and s["status"] == "finished" for s in statuses):
            done[stem] = "removed" if os.path.isfile(out) else "not run"
            if os.path.isfile(out):
                os.remove(out)
            continue
        best = [os.path.join(log_root, s["name"], s["run_dir"], "models", "model_best.pth.tar") for s in statuses]
        cmd = [sys.executable, "-m", "tools.compare_checkpoints", data_dir, *best, "-o", out]
        if subprocess.run(cmd, cwd=CODE_DIR).returncode != 0:
            raise RunnerError(f"compare_checkpoints.py failed on {a} and {b} (its message is above)")
        done[stem] = "written"
    return done


def check_clean(allow_dirty):
    """Refuse to run code that no commit holds (unless ``allow_dirty``): every result must name
    the exact commit that made it."""
    version = code_version()
    if version.startswith("uncommitted") and not allow_dirty:
        raise RunnerError(f"code/ has {version}: commit first, so that every result names its commit "
                          "(or pass --allow-dirty for a trial run)")


def list_plan(experiments, scale, log_root):
    """Print each row's main.py flags and its recorded state; runs nothing."""
    check_table(experiments)
    for exp in at_scale(experiments, scale):
        status = read_status(os.path.join(log_root, exp.name))
        state = status_line(status) if status else "not run"
        target = f" [{'attacks' if '-a' in getattr(exp, scale) else 'evaluates'} {exp.target}]" if exp.target else ""
        print(f"{exp.name:18s} {state}\n   main.py {shlex.join(getattr(exp, scale))}{target}")


def fail(error):
    """Stop with one line naming a problem with the runner's input: exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def get_args_parser():
    """The runner's command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale = parser.add_mutually_exclusive_group(required=True)
    scale.add_argument("--demo", action="store_const", const="demo", dest="scale",
                       help="the generated demo set and few epochs (sized for a CPU)")
    scale.add_argument("--full", action="store_const", const="full", dest="scale",
                       help="MiniPlaces and the assignment's epochs (GPU)")
    parser.add_argument("--data", default=os.path.join(REPO_DIR, "data"),
                        help="data folder (default ../data; at --demo an empty folder gets the demo set)")
    parser.add_argument("--root", default=REPO_DIR, help="logs go to ROOT/logs/<scale>, results to ROOT/results")
    parser.add_argument("--only", nargs="+", default=(), metavar="NAME", help="run only these experiments")
    parser.add_argument("--resnet18-weights", default=None, metavar="PATH",
                        help="ImageNet ResNet18 weights for the resnet18 row (needed offline)")
    parser.add_argument("--list", action="store_true", help="show the plan and each experiment's state")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run although code/ has uncommitted changes (a trial: its results name no commit)")
    parser.add_argument("--no-report", action="store_true",
                        help="stop after the experiments (skip make_results.py and build_report.py)")
    return parser


def main(argv=None):
    """Command line: run, then build results/ and the report; exit status 1 when a run failed."""
    args = get_args_parser().parse_args(argv)
    log_root = os.path.join(args.root, "logs", args.scale)
    try:
        if args.list:
            return list_plan(EXPERIMENTS, args.scale, log_root)
        check_clean(args.allow_dirty)
        if args.resnet18_weights and not os.path.isfile(args.resnet18_weights):
            raise RunnerError(f"--resnet18-weights {args.resnet18_weights} is not a file")
        statuses = run_all(EXPERIMENTS, args.scale, os.path.abspath(args.data), log_root, args.only,
                           args.resnet18_weights)
    except RunnerError as e:
        fail(e)
    for state in ("finished", "skipped", "failed"):
        names = [n for n, s in statuses.items() if s["status"] == state]
        print(f"=> {state}: {', '.join(names) if names else 'none'}")
    if not args.no_report:
        results = os.path.abspath(os.path.join(args.root, "results"))  # the steps below run in code/
        try:
            for stem, state in write_comparisons(os.path.abspath(args.data), log_root,
                                                 os.path.join(results, args.scale)).items():
                print(f"=> {stem}: {state}")
        except RunnerError as e:
            fail(e)
        logs = os.path.abspath(os.path.join(args.root, "logs"))
        for step in (["tools.make_results", "--logs", logs, "--out", results], ["tools.build_report", "--results", results]):
            if subprocess.run([sys.executable, "-m", *step], cwd=CODE_DIR).returncode != 0:
                sys.exit(f"error: {step[0]} failed (its message is above)")
    failed = [n for n, s in statuses.items() if s["status"] == "failed"]
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (see {log_root}/<name>/stdout.log)")


if __name__ == "__main__":
    main()
