"""Train two rows of run_experiments.py's table with several seeds and compare them.

    python -m tools.seed_study --demo simplenet cnn --seeds 1 2 3 4 5   # the rows' epochs
    python -m tools.seed_study --demo simplenet cnn --epochs-factor 2    # both rows twice their epochs
    python -m tools.seed_study --demo simplenet cnn --epochs 10 8        # epochs of A and of B
    python -m tools.seed_study --full simplenet cnn --seeds 1 2 3       # MiniPlaces, a GPU job
    python -m tools.seed_study --demo simplenet adv-simplenet --seeds 2024 1 2 3 4 --attack 0.5 10 --attack 1 10

Each (row, seed, epochs) is the row's main.py flags at that scale with ``--epochs E`` and
``--seed S``, run by run_experiments.run_one into ``<root>/logs/<scale>/seeds/<row>-e<E>-seed<S>/``
(resumable: finished runs are skipped, interrupted ones resume, and studies that ask for the
same run share it). main.py's default seed with the row's own epochs is the row's own run of
run_experiments.py (``<root>/logs/<scale>/<row>/``), not trained twice. Each ``--attack EPS
STEPS`` also attacks every run's best checkpoint with PGD at that epsilon and number of steps
(main.py's step size for them: epsilon / 10 by default), as ``pgd-<run>-eps<EPS>-steps<STEPS>``;
the row's own run reuses run_experiments.py's attack row of the same epsilon and steps.
``--attack-eps EPS`` is ``--attack EPS <PGDAttack's default steps>``.
``--epochs-factor K`` keeps the rows' budget ratio; ``--epochs`` sets each.
The per-seed best val top-1 of both rows (clean, and under each attack), their paired differences
(B - A), the mean difference with a 95% Student-t interval over the seeds and the number of
seeds B wins go to ``<root>/results/<scale>/seeds_<A>_vs_<B>_e<EA>-<EB>.md`` and ``.csv`` (one
line per seed and measure).
compare_checkpoints.py's bootstrap covers only which val images were drawn; this interval also
covers the randomness of training (initialization, data order, augmentation).
"""
import argparse
import collections
import csv
import dataclasses
import inspect
import math
import os
import re
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


def attack_row(run, epsilon, steps, scale):
    """The PGD attack (``-a --attack-eps epsilon --attack-steps steps``) of training row ``run``."""
    flags = ("-a", "--attack-eps", f"{epsilon:g}", "--attack-steps", str(steps),
             *(runner.ATTACK_DEMO if scale == "demo" else ()))
    return runner.Experiment(f"pgd-{run.name}-eps{epsilon:g}-steps{steps}", run.part,
                             f"PGD (epsilon {epsilon:g}, {steps} steps) on {run.name}",
                             **{scale: flags, "full" if scale == "demo" else "demo": ("-a",)}, target=run.name)


def own_attack(row, attack, scale):
    """run_experiments.py's attack row of ``row`` with the epsilon and steps of ``attack`` and no
    other attack flag (a step size of its own), or None."""
    wanted = runner.attack_settings(getattr(attack, scale))
    return next((e for e in runner.EXPERIMENTS if e.target == row.name and getattr(e, scale) is not None
                 and "-a" in getattr(e, scale) and "--attack-step-size" not in getattr(e, scale)
                 and runner.attack_settings(getattr(e, scale)) == wanted), None)


def run_study(rows, seeds, epochs, scale, data_dir, root, resnet18_weights=None, main_py=runner.MAIN_PY,
              attacks=()):
    """Train every (row, seed), row i for ``epochs[i]`` epochs, and attack each run with every
    (epsilon, steps) of ``attacks``; returns (per-row accuracies {name: [top-1 per seed]}, per-row
    PGD top-1 {name: {(epsilon, steps): [top-1 per seed]}}, data label, hardware, code versions
    ('commit 1a2b3c4 (6 runs)')) or raises RunnerError naming the runs that did not finish."""
    own_root = os.path.join(root, "logs", scale)
    log_root = os.path.join(own_root, "seeds")
    data = runner.prepare_data(data_dir, scale)
    default_seed = main_seed()
    jobs = []  # (row name, log root, table, training row, [attack rows])
    for row, e in zip(rows, epochs):
        for s in seeds:
            if s == default_seed and e == row_epochs(row, scale):
                mine = [attack_row(row, eps, steps, scale) for eps, steps in attacks]
                jobs.append((row.name, own_root, runner.EXPERIMENTS, row,
                             [own_attack(row, a, scale) or a for a in mine]))
            else:
                run = seeded(row, s, e, scale)
                mine = [attack_row(run, eps, steps, scale) for eps, steps in attacks]
                jobs.append((row.name, log_root, (run, *mine), run, mine))
    runner.check_table([x for *_, run, mine in jobs if run not in runner.EXPERIMENTS for x in (run, *mine)])
    acc = {row.name: [] for row in rows}
    pgd = {row.name: {setting: [] for setting in attacks} for row in rows}
    failed, hardware, codes = [], set(), collections.Counter()
    for name, where, table, run, mine in jobs:
        table = tuple(table) + tuple(a for a in mine if a not in table)
        for exp in (run, *mine):
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
                pgd[name][status["epsilon"], status["num_steps"]].append(status["acc1"])
    if failed:
        raise runner.RunnerError(f"not finished: {', '.join(failed)} (see {log_root}/<name>/stdout.log)")
    code = "; ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in sorted(codes.items()))
    return acc, pgd, data[1], "; ".join(sorted(hardware)), code


def measure_name(setting):
    """'clean' for None, 'PGD epsilon 0.5, 10 steps' for (0.5, 10)."""
    return "clean" if setting is None else f"PGD epsilon {setting[0]:g}, {setting[1]} steps"


def write_report(out_dir, rows, seeds, epochs, acc, data_label, hardware, scale, pgd=None, code=None):
    """Write seeds_<A>_vs_<B>_e<EA>-<EB>.md and .csv into ``out_dir``: clean top-1 per seed and,
    for every attack of ``pgd`` ({row: {(epsilon, steps): [top-1 per seed]}}), PGD top-1; one CSV
    line per seed and measure (columns seed, epsilon, steps, A, B, B - A; no epsilon for clean).
    Returns the Markdown text."""
    (a, b) = [e.name for e in rows]
    stem = f"seeds_{a}_vs_{b}_e{epochs[0]}-{epochs[1]}"
    ratios = [f"{e / row_epochs(row, scale):g}" for e, row in zip(epochs, rows)]
    budget = ("the same number of epochs" if epochs[0] == epochs[1] else
              "the epochs of run_experiments.py's table" if ratios == ["1", "1"] else
              f"{ratios[0]} times the epochs of run_experiments.py's table" if ratios[0] == ratios[1] else
              f"{ratios[0]} and {ratios[1]} times the epochs of run_experiments.py's table")
    settings = [k for k in (pgd or {}).get(a, {}) if pgd[a][k]]
    measures = [(None, acc[a], acc[b])] + [(k, pgd[a][k], pgd[b][k]) for k in settings]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "epsilon", "steps", f"{a}_top1", f"{b}_top1", "difference"])
        for setting, xs, ys in measures:
            for seed, x, y in zip(seeds, xs, ys):
                w.writerow([seed, *(("", "") if setting is None else (f"{setting[0]:g}", setting[1])),
                            f"{x:.2f}", f"{y:.2f}", f"{y - x:+.2f}"])
    lines = [f"| seed | {' | '.join(f'{measure_name(k)}: {a} / {b} (%)' for k, _, _ in measures)} |",
             "|---" * (1 + len(measures)) + "|"]
    lines += [f"| {seed} | " + " | ".join(f"{xs[i]:.2f} / {ys[i]:.2f}" for _, xs, ys in measures) + " |"
              for i, seed in enumerate(seeds)]
    said = []
    for setting, xs, ys in measures:
        s = summarize(xs, ys)
        interval = (f"95% Student-t interval over the seeds [{s['interval'][0]:+.2f}, {s['interval'][1]:+.2f}]"
                    if s["interval"] else "no interval from one seed")
        said.append(f"- {measure_name(setting)}: {a} {s['mean_a']:.2f} +/- {s['sd_a']:.2f} %, {b} {s['mean_b']:.2f} "
                    f"+/- {s['sd_b']:.2f} % (mean +/- sd); difference {b} - {a}: {s['mean_diff']:+.2f} points, "
                    f"{interval}; {b} is better in {s['wins_b']} of {s['n']} seeds.")
    attacks = "".join(f" --attack {e:g} {n}" for e, n in settings)
    attack = (" PGD: each attack's epsilon and steps, main.py's step size for them (epsilon / 10 unless given) "
              "and its other attack defaults, on each run's best checkpoint." if settings else "")
    text = "\n".join([
        f"{len(seeds)} seeds of each row, trained with run_experiments.py's {scale} flags plus `--seed S`, "
        f"{a} for {epochs[0]} epochs and {b} for {epochs[1]}, {budget} "
        f"(`python -m tools.seed_study --{scale} {a} {b} --seeds {' '.join(map(str, seeds))} "
        f"--epochs {epochs[0]} {epochs[1]}{attacks}`). "
        f"Data: {data_label}. Hardware: {hardware}. {f'Code: {code}. ' if code else ''}"
        f"Top-1 is each run's best val top-1 over its epochs.{attack}",
        "", *lines, "", *said, ""])
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(text)
    return text


def read_report(csv_path, legacy_steps=10):
    """A seeds_*.csv as (rows A and B, seeds, {None or (epsilon, steps): ([A per seed], [B per seed])})
    in the order written. Also reads the one-attack files of earlier versions (columns
    <A>_top1, <B>_top1, top1_difference[, <A>_pgd_top1, <B>_pgd_top1, pgd_top1_difference], the
    epsilon in the .md beside it, ``legacy_steps`` steps)."""
    with open(csv_path) as f:
        reader = csv.DictReader(f)
        fields, lines = reader.fieldnames, list(reader)
    if "epsilon" not in fields:
        a, b = (c[:-len("_top1")] for c in fields[1:3])
        measures = {None: ([float(r[f"{a}_top1"]) for r in lines], [float(r[f"{b}_top1"]) for r in lines])}
        if f"{a}_pgd_top1" in fields:
            with open(csv_path[:-4] + ".md") as f:
                eps = float(re.search(r"PGD: epsilon ([0-9.]+)", f.read()).group(1))
            measures[eps, legacy_steps] = ([float(r[f"{a}_pgd_top1"]) for r in lines],
                                           [float(r[f"{b}_pgd_top1"]) for r in lines])
        return (a, b), [int(r["seed"]) for r in lines], measures
    a, b = (c[:-len("_top1")] for c in fields[3:5])
    measures, seeds = {}, []
    for line in lines:
        key = None if not line["epsilon"] else (float(line["epsilon"]), int(line["steps"]))
        xs, ys = measures.setdefault(key, ([], []))
        xs.append(float(line[f"{a}_top1"]))
        ys.append(float(line[f"{b}_top1"]))
        if key is None:
            seeds.append(int(line["seed"]))
    return (a, b), seeds, measures


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
    parser.add_argument("--attack", nargs=2, action="append", default=[], metavar=("EPS", "STEPS"),
                        help="also attack every run's best checkpoint with PGD at this epsilon and number of "
                             "steps (repeat for several attacks)")
    parser.add_argument("--attack-eps", type=float, default=None, metavar="EPS",
                        help="the same as --attack EPS with PGDAttack's default number of steps")
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
        attacks = parse_attacks(args.attack, args.attack_eps)
        runner.check_clean(args.allow_dirty)
        acc, pgd, data_label, hardware, code = run_study(rows, args.seeds, epochs, args.scale,
                                                         os.path.abspath(args.data), args.root, args.resnet18_weights,
                                                         attacks=attacks)
    except runner.RunnerError as e:
        runner.fail(e)
    print(write_report(os.path.join(args.root, "results", args.scale), rows, args.seeds, epochs, acc, data_label,
                       hardware, args.scale, pgd, code), end="")


def parse_attacks(pairs, attack_eps):
    """[(epsilon, steps), ...] of --attack EPS STEPS pairs and --attack-eps; RunnerError when a
    value is not a number, epsilon is not > 0, steps not >= 1, or an attack repeats."""
    import student_code

    default_steps = inspect.signature(student_code.default_attack).parameters["num_steps"].default
    given = [*pairs, *([(str(attack_eps), str(default_steps))] if attack_eps is not None else [])]
    attacks = []
    for eps, steps in given:
        try:
            setting = (float(eps), int(steps))
        except ValueError:
            raise runner.RunnerError(f"--attack {eps} {steps}: give an epsilon and a whole number of steps")
        if not (setting[0] > 0 and setting[1] >= 1):
            raise runner.RunnerError(f"--attack {eps} {steps}: epsilon must be > 0 and steps >= 1")
        if setting in attacks:
            raise runner.RunnerError(f"--attack {eps} {steps} is given twice")
        attacks.append(setting)
    return attacks


if __name__ == "__main__":
    main()
