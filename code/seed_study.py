"""Train two rows of run_experiments.py's table with several seeds and compare them.

    python seed_study.py --demo simplenet cnn --seeds 1 2 3 4 5   # the rows' epochs
    python seed_study.py --demo simplenet cnn --epochs-factor 2    # both rows twice their epochs
    python seed_study.py --demo simplenet cnn --epochs 10 8        # epochs of A and of B
    python seed_study.py --full simplenet cnn --seeds 1 2 3       # MiniPlaces, a GPU job

Each (row, seed, epochs) is the row's main.py flags at that scale with ``--epochs E`` and
``--seed S``, run by run_experiments.run_one into ``<root>/logs/<scale>/seeds/<row>-e<E>-seed<S>/``
(resumable: finished runs are skipped, interrupted ones resume, and studies that ask for the
same run share it). ``--epochs-factor K`` keeps the rows' budget ratio; ``--epochs`` sets each.
The per-seed best val top-1 of both rows, their paired differences (B - A), the mean difference
with a 95% Student-t interval over the seeds and the number of seeds B wins go to
``<root>/results/<scale>/seeds_<A>_vs_<B>_e<EA>-<EB>.md`` and ``.csv``.
compare_checkpoints.py's bootstrap covers only which val images were drawn; this interval also
covers the randomness of training (initialization, data order, augmentation).
"""
import argparse
import csv
import dataclasses
import math
import os
import statistics
import sys

import run_experiments as runner


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


def run_study(rows, seeds, epochs, scale, data_dir, root, resnet18_weights=None, main_py=runner.MAIN_PY):
    """Train every (row, seed), row i for ``epochs[i]`` epochs; returns (per-row accuracies
    {name: [top-1 per seed]}, data label, hardware) or raises RunnerError naming the runs that did
    not finish."""
    log_root = os.path.join(root, "logs", scale, "seeds")
    data = runner.prepare_data(data_dir, scale)
    table = tuple((row.name, seeded(row, s, e, scale)) for row, e in zip(rows, epochs) for s in seeds)
    runner.check_table([exp for _, exp in table])
    acc, failed, hardware = {row.name: [] for row in rows}, [], set()
    for row, exp in table:
        print(f"{exp.name}: {exp.title}", flush=True)
        status = runner.run_one(exp, scale, data_dir, data, log_root, (exp,), resnet18_weights, main_py)
        print(f"   {runner.status_line(status)}", flush=True)
        if status["status"] != "finished":
            failed.append(exp.name)
            continue
        hardware.add(status["hardware"])
        acc[row].append(best_top1(log_root, exp.name))
    if failed:
        raise runner.RunnerError(f"not finished: {', '.join(failed)} (see {log_root}/<name>/stdout.log)")
    return acc, data[1], "; ".join(sorted(hardware))


def write_report(out_dir, rows, seeds, epochs, acc, data_label, hardware, scale):
    """Write seeds_<A>_vs_<B>_e<EA>-<EB>.md and .csv into ``out_dir``; returns the Markdown text."""
    (a, b) = [e.name for e in rows]
    stem = f"seeds_{a}_vs_{b}_e{epochs[0]}-{epochs[1]}"
    ratios = [f"{e / row_epochs(row, scale):g}" for e, row in zip(epochs, rows)]
    budget = ("the same number of epochs" if epochs[0] == epochs[1] else
              "the epochs of run_experiments.py's table" if ratios == ["1", "1"] else
              f"{ratios[0]} times the epochs of run_experiments.py's table" if ratios[0] == ratios[1] else
              f"{ratios[0]} and {ratios[1]} times the epochs of run_experiments.py's table")
    s = summarize(acc[a], acc[b])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", f"{a}_top1", f"{b}_top1", "difference"])
        w.writerows([seed, f"{x:.2f}", f"{y:.2f}", f"{y - x:+.2f}"] for seed, x, y in zip(seeds, acc[a], acc[b]))
    lines = [f"| seed | {a} top-1 (%) | {b} top-1 (%) | {b} - {a} (points) |", "|---|---|---|---|"]
    lines += [f"| {seed} | {x:.2f} | {y:.2f} | {y - x:+.2f} |" for seed, x, y in zip(seeds, acc[a], acc[b])]
    interval = (f"95% Student-t interval over the seeds [{s['interval'][0]:+.2f}, {s['interval'][1]:+.2f}]"
                if s["interval"] else "no interval from one seed")
    text = "\n".join([
        f"{s['n']} seeds of each row, trained with run_experiments.py's {scale} flags plus `--seed S`, "
        f"{a} for {epochs[0]} epochs and {b} for {epochs[1]}, {budget} "
        f"(`python seed_study.py --{scale} {a} {b} --seeds {' '.join(map(str, seeds))} "
        f"--epochs {epochs[0]} {epochs[1]}`). "
        f"Data: {data_label}. Hardware: {hardware}. Top-1 is each run's best val top-1 over its epochs.",
        "", *lines, "",
        f"{a}: {s['mean_a']:.2f} +/- {s['sd_a']:.2f} %, {b}: {s['mean_b']:.2f} +/- {s['sd_b']:.2f} % "
        f"(mean +/- sd). Difference {b} - {a}: {s['mean_diff']:+.2f} points, {interval}; "
        f"{b} is better in {s['wins_b']} of {s['n']} seeds.", ""])
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
    return parser


def main(argv=None):
    """Command line: train what is missing, then write and print the comparison."""
    args = get_args_parser().parse_args(argv)
    by_name = {e.name: e for e in runner.EXPERIMENTS}
    try:
        rows = [by_name.get(name) for name in args.rows]
        bad = [n for n, e in zip(args.rows, rows) if e is None or e.target]
        if bad:
            raise runner.RunnerError(f"{bad} are not training rows of run_experiments.py (see its --list)")
        if args.rows[0] == args.rows[1] or len(set(args.seeds)) != len(args.seeds):
            raise runner.RunnerError("give two different rows and distinct seeds")
        epochs = args.epochs or [args.epochs_factor * row_epochs(e, args.scale) for e in rows]
        if min(epochs) < 1:
            raise runner.RunnerError(f"epochs {epochs} must be 1 or more")
        acc, data_label, hardware = run_study(rows, args.seeds, epochs, args.scale, os.path.abspath(args.data),
                                              args.root, args.resnet18_weights)
    except runner.RunnerError as e:
        sys.exit(f"error: {e}")
    print(write_report(os.path.join(args.root, "results", args.scale), rows, args.seeds, epochs, acc, data_label,
                       hardware, args.scale), end="")


if __name__ == "__main__":
    main()
