"""Train two rows of run_experiments.py's table with several seeds and compare them.

    python -m tools.seed_study --demo simplenet cnn --seeds 1 2 3 4 5   # the rows' epochs
    python -m tools.seed_study --demo simplenet cnn --epochs-factor 2    # both rows twice their epochs
    python -m tools.seed_study --demo simplenet cnn --epochs 10 8        # epochs of A and of B
    python -m tools.seed_study --full simplenet cnn --seeds 1 2 3       # MiniPlaces, a GPU job
    python -m tools.seed_study --demo simplenet adv-simplenet --seeds 2024 1 2 3 4 --attack-eps 0.5

Each (row, seed, epochs) is the row's main.py flags at that scale with ``--epochs E`` and
``--seed S``, run by run_experiments.run_one into ``<root>/logs/<scale>/seeds/<row>-e<E>-seed<S>/``
(resumable: finished runs are skipped, interrupted ones resume, and studies that ask for the
same run share it). main.py's default seed with the row's own epochs is the row's own run of
run_experiments.py (``<root>/logs/<scale>/<row>/``), not trained twice. ``--attack-eps EPS``
also attacks every run's best checkpoint with PGD at that epsilon (``pgd-<run>``; the row's
own run reuses run_experiments.py's attack row with the same flags) and reports its top-1 too.
``--epochs-factor K`` keeps the rows' budget ratio; ``--epochs`` sets each.
The per-seed best val top-1 of both rows, their paired differences (B - A), the mean difference
with a 95% Student-t interval over the seeds and the number of seeds B wins go to
``<root>/results/<scale>/seeds_<A>_vs_<B>_e<EA>-<EB>.md`` and ``.csv``.
compare_checkpoints.py's bootstrap covers only which val images were drawn; this interval also
covers the randomness of training (initialization, data order, augmentation).
"""
import argparse
import collections
import csv
import dataclasses
import math
import os
import statistics

from tools import run_experiments as runner


def student_t_quantile(p, df):
    """The p-quantile (0.5 <= p < 1) of Student's t with ``df`` >= 1 degrees of freedom: the
    density integrated by Simpson's rule (2000 panels), the upper limit found by bisection."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x):
        h = x / 2000
        ys = [math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(2001)]
        return 0.5 + h / 3 * (ys[0] + ys[-1] + 4 * sum(ys[1:-1:2]) + 2 * sum(ys[2:-1:2]))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def summarize(acc_a, acc_b):
    """Paired summary of two lists of per-seed accuracies (same seeds, same order): a dict with
    n, mean and sd of each, the mean difference B - A, its 95% t-interval (None below 2 seeds)
    and the number of seeds where B is strictly better."""
    if len(acc_a) != len(acc_b) or not acc_a:
        raise ValueError("need the same, non-zero number of seeds for both rows")
    diffs = [b - a for a, b in zip(acc_a, acc_b)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    interval = None
    if n > 1:
        half = student_t_quantile(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
        interval = (mean - half, mean + half)
    spread = {f"sd_{k}": statistics.stdev(v) if n > 1 else 0.0 for k, v in (("a", acc_a), ("b", acc_b))}
    return dict(n=n, mean_a=statistics.fmean(acc_a), mean_b=statistics.fmean(acc_b), **spread,
                mean_diff=mean, interval=interval, wins_b=sum(d > 0 for d in diffs))


def best_top1(log_root, name):
    """The best val top-1 that ``<log_root>/<name>``'s newest run recorded in its checkpoint."""
    import torch

    run_dir = runner.newest_run(os.path.join(log_root, name), name)
    ckpt = torch.load(os.path.join(run_dir, "models", "checkpoint.pth.tar"), map_location="cpu",
                      weights_only=True)
    return float(ckpt["best_acc1"])


def row_epochs(exp, scale):
    """The ``--epochs`` of row ``exp`` at ``scale``."""
    return int(runner.flag_value(getattr(exp, scale), "--epochs"))


def seeded(exp, seed, epochs, scale):
    """The row ``exp`` as ``<name>-e<E>-seed<S>``: at ``scale`` its ``--epochs`` set to E and
    ``--seed S`` appended (the other scale's flags get only the seed)."""
    def flags(args, e):
        args = list(args)
        args[args.index("--epochs") + 1] = str(e)
        return (*args, "--seed", str(seed))

    other = "full" if scale == "demo" else "demo"
    return dataclasses.replace(exp, name=f"{exp.name}-e{epochs}-seed{seed}", **{
        scale: flags(getattr(exp, scale), epochs), other: flags(getattr(exp, other), row_epochs(exp, other))})


def main_seed():
    """main.py's default ``--seed``: the seed of run_experiments.py's own runs."""
    import main

    return main.get_args_parser().get_default("seed")


def attack_row(run, epsilon, scale):
    """The PGD attack (``-a --attack-eps epsilon``) of training row ``run`` at ``scale``."""
    flags = ("-a", "--attack-eps", f"{epsilon:g}", *(runner.ATTACK_DEMO if scale == "demo" else ()))
    return runner.Experiment(f"pgd-{run.name}", run.part, f"PGD (epsilon {epsilon:g}) on {run.name}",
                             **{scale: flags, "full" if scale == "demo" else "demo": ("-a",)}, target=run.name)


def own_attack(row, attack, scale):
    """run_experiments.py's attack row of ``row`` with the same flags as ``attack``, or None."""
    return next((e for e in runner.EXPERIMENTS if e.target == row.name and getattr(e, scale) is not None
                 and [a for a in getattr(e, scale) if a != "-v"] == list(getattr(attack, scale))), None)


def run_study(rows, seeds, epochs, scale, data_dir, root, resnet18_weights=None, main_py=runner.MAIN_PY,
              attack_eps=None):
    """Train every (row, seed), row i for ``epochs[i]`` epochs, and attack each run when
    ``attack_eps`` is given; returns (per-row accuracies {name: [top-1 per seed]}, per-row PGD
    top-1 {name: [...]} (empty lists without an attack), data label, hardware, code versions
    ('commit 1a2b3c4 (6 runs)')) or raises RunnerError naming the runs that did not finish."""
    own_root = os.path.join(root, "logs", scale)
    log_root = os.path.join(own_root, "seeds")
    data = runner.prepare_data(data_dir, scale)
    default_seed = main_seed()
    jobs = []  # (row name, log root, table, training row, attack row or None)
    for row, e in zip(rows, epochs):
        for s in seeds:
            if s == default_seed and e == row_epochs(row, scale):
                attack = attack_row(row, attack_eps, scale) if attack_eps is not None else None
                jobs.append((row.name, own_root, runner.EXPERIMENTS, row,
                             attack and (own_attack(row, attack, scale) or attack)))
            else:
                run = seeded(row, s, e, scale)
                attack = attack_row(run, attack_eps, scale) if attack_eps is not None else None
                jobs.append((row.name, log_root, (run, attack) if attack else (run,), run, attack))
    runner.check_table([x for *_, run, attack in jobs if run not in runner.EXPERIMENTS for x in (run, attack) if x])
    acc, pgd, failed, hardware = {row.name: [] for row in rows}, {row.name: [] for row in rows}, [], set()
    codes = collections.Counter()
    for name, where, table, run, attack in jobs:
        for exp in (run, attack) if attack else (run,):
            print(f"{exp.name}: {exp.title}", flush=True)
            status = runner.run_one(exp, scale, data_dir, data, where, table, resnet18_weights, main_py)
            print(f"   {runner.status_line(status)}", flush=True)
            if status["status"] != "finished":
                failed.append(exp.name)
                break
            if exp is run:
                hardware.add(status["hardware"])
                codes[status["code"]] += 1
                acc[name].append(best_top1(where, run.name))
            else:
                pgd[name].append(status["acc1"])
    if failed:
        raise runner.RunnerError(f"not finished: {', '.join(failed)} (see {log_root}/<name>/stdout.log)")
    code = "; ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in sorted(codes.items()))
    return acc, pgd, data[1], "; ".join(sorted(hardware)), code


def write_report(out_dir, rows, seeds, epochs, acc, data_label, hardware, scale, pgd=None, attack_eps=None, code=None):
    """Write seeds_<A>_vs_<B>_e<EA>-<EB>.md and .csv into ``out_dir`` (with PGD top-1 columns
    when ``pgd`` holds each row's attacked top-1 per seed); returns the Markdown text."""
    (a, b) = [e.name for e in rows]
    stem = f"seeds_{a}_vs_{b}_e{epochs[0]}-{epochs[1]}"
    ratios = [f"{e / row_epochs(row, scale):g}" for e, row in zip(epochs, rows)]
    budget = ("the same number of epochs" if epochs[0] == epochs[1] else
              "the epochs of run_experiments.py's table" if ratios == ["1", "1"] else
              f"{ratios[0]} times the epochs of run_experiments.py's table" if ratios[0] == ratios[1] else
              f"{ratios[0]} and {ratios[1]} times the epochs of run_experiments.py's table")
    measures = [("top1", "top-1", acc)] + ([("pgd_top1", "PGD top-1", pgd)] if pgd and pgd[a] else [])
    cells = [[f"{x:.2f}", f"{y:.2f}", f"{y - x:+.2f}"] for _, _, m in measures for x, y in zip(m[a], m[b])]
    per_seed = [[str(seed), *(c for k in range(len(measures)) for c in cells[k * len(seeds) + i])]
                for i, seed in enumerate(seeds)]  # seed, then (A, B, B - A) of each measure
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", *(c for key, _, _ in measures for c in (f"{a}_{key}", f"{b}_{key}", f"{key}_difference"))])
        w.writerows(per_seed)
    head = " | ".join(f"{a} {label} (%) | {b} {label} (%) | {b} - {a} (points)" for _, label, _ in measures)
    lines = [f"| seed | {head} |", "|---" * (1 + 3 * len(measures)) + "|"]
    lines += [f"| {' | '.join(row)} |" for row in per_seed]
    said = []
    for _, label, m in measures:
        s = summarize(m[a], m[b])
        interval = (f"95% Student-t interval over the seeds [{s['interval'][0]:+.2f}, {s['interval'][1]:+.2f}]"
                    if s["interval"] else "no interval from one seed")
        said.append(f"{label}: {a} {s['mean_a']:.2f} +/- {s['sd_a']:.2f} %, {b} {s['mean_b']:.2f} +/- "
                    f"{s['sd_b']:.2f} % (mean +/- sd); difference {b} - {a}: {s['mean_diff']:+.2f} points, "
                    f"{interval}; {b} is better in {s['wins_b']} of {s['n']} seeds.")
    attack = (f" PGD: epsilon {attack_eps:g} and main.py's other attack defaults, on each run's best checkpoint."
              if len(measures) > 1 else "")
    text = "\n".join([
        f"{len(seeds)} seeds of each row, trained with run_experiments.py's {scale} flags plus `--seed S`, "
        f"{a} for {epochs[0]} epochs and {b} for {epochs[1]}, {budget} "
        f"(`python -m tools.seed_study --{scale} {a} {b} --seeds {' '.join(map(str, seeds))} "
        f"--epochs {epochs[0]} {epochs[1]}{f' --attack-eps {attack_eps:g}' if attack else ''}`). "
        f"Data: {data_label}. Hardware: {hardware}. {f'Code: {code}. ' if code else ''}"
        f"Top-1 is each run's best val top-1 over its epochs.{attack}",
        "", *lines, "", *said, ""])
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(text)
    return text


def get_args_parser():
    """The study's command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale = parser.add_mutually_exclusive_group(required=True)
    scale.add_argument("--demo", action="store_const", const="demo", dest="scale", help="the generated demo set")
    scale.add_argument("--full", action="store_const", const="full", dest="scale", help="MiniPlaces (GPU)")
    parser.add_argument("rows", nargs=2, metavar="ROW", help="two training rows of run_experiments.py (A then B)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds (default 1 2 3)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs-factor", type=int, default=1, metavar="K",
                        help="train both rows K times their epochs (default 1), keeping their budget ratio")
    budget.add_argument("--epochs", nargs=2, type=int, metavar=("EA", "EB"), help="epochs of row A and of row B")
    parser.add_argument("--data", default=os.path.join(runner.REPO_DIR, "data"), help="data folder")
    parser.add_argument("--root", default=runner.REPO_DIR,
                        help="logs go to ROOT/logs/<scale>/seeds, results to ROOT/results/<scale>")
    parser.add_argument("--resnet18-weights", default=None, metavar="PATH", help="for the resnet18 row")
    parser.add_argument("--attack-eps", type=float, default=None, metavar="EPS",
                        help="also attack every run's best checkpoint with PGD at this epsilon")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run although code/ has uncommitted changes (a trial: its results name no commit)")
    return parser


def main(argv=None):
    """Command line: train what is missing, then write and print the comparison."""
    args = get_args_parser().parse_args(argv)
    by_name = {e.name: e for e in runner.EXPERIMENTS}
    try:
        rows = [by_name.get(name) for name in args.rows]
        bad = [n for n, e in zip(args.rows, rows) if e is None or e.target or getattr(e, args.scale) is None]
        if bad:
            raise runner.RunnerError(f"{bad} are not training rows of run_experiments.py at --{args.scale} "
                                     "(see its --list)")
        if args.rows[0] == args.rows[1] or len(set(args.seeds)) != len(args.seeds):
            raise runner.RunnerError("give two different rows and distinct seeds")
        epochs = args.epochs or [args.epochs_factor * row_epochs(e, args.scale) for e in rows]
        if min(epochs) < 1:
            raise runner.RunnerError(f"epochs {epochs} must be 1 or more")
        runner.check_clean(args.allow_dirty)
        acc, pgd, data_label, hardware, code = run_study(rows, args.seeds, epochs, args.scale,
                                                         os.path.abspath(args.data), args.root, args.resnet18_weights,
                                                         attack_eps=args.attack_eps)
    except runner.RunnerError as e:
        runner.fail(e)
    print(write_report(os.path.join(args.root, "results", args.scale), rows, args.seeds, epochs, acc, data_label,
                       hardware, args.scale, pgd, args.attack_eps, code), end="")


if __name__ == "__main__":
    main()
