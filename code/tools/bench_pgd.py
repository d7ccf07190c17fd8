"""Our PGDAttack against torchattacks' PGD in targeted least-likely mode, side by side.

    cd code && python -m tools.bench_pgd                   # SimpleNet, demo set, CPU
    python -m tools.bench_pgd --budgets 0.1:0.01 --settings normalized --repeats 5

Needs the benchmark-only dependencies: ``pip install --no-deps -r ../requirements-bench.txt``.

The script makes a small demo set (make_demo_data.py, the MiniPlaces layout), trains the
homework's SimpleNet on it for a few epochs, then runs both attacks on the validation images
with the same model, epsilon, step size, step count and least-likely target, and prints for each
the success rate (the fraction of images that the model then assigns to the least-likely label
of the clean image), the accuracy under attack and the throughput (images/s: every batch is
attacked ``--repeats`` times by each attack in turn, alternating which goes first). It also
times one SimpleNet training step with adversarial training off and on. Everything lands in
../results/pgd_vs_torchattacks.md.

Same units. torchattacks works on [0, 1] pixels with one scalar epsilon and step size, and with
``set_normalization_used`` it de-normalizes its input, attacks the pixels and normalizes the
result. Our attack works in the model's normalized units, where one scalar epsilon is the
per-channel pixel radius epsilon * std[c]. Two settings:

* ``pixel``, exactly equivalent: our PGDAttack gets mean 0 and std 1 (valid range [0, 1]) and
  attacks the module ``model(normalize(p))`` on pixels p, torchattacks attacks ``model`` with
  set_normalization_used(ImageNet statistics); both get epsilon * mean(std) and
  step * mean(std) in pixels. Both then descend the same function over the same ball with the
  same step, and each normalizes once per forward.
* ``normalized``: our attack exactly as ``main.py -a`` runs it (epsilon and step in normalized
  units, no normalization in the loop); torchattacks gets epsilon * max(std) and
  step * max(std) in pixels, a box that contains ours in every channel (ours is 2% smaller in
  green and blue), so a tie in success there favours torchattacks.

Least-likely target: torchattacks drops the label it is given and takes the least likely of the
rest; it is given the model's clean prediction, so its target is the least likely of all labels,
which is our target (the top-1 is never the least likely one when the logits differ).

Budgets: ``main.py -a`` uses epsilon 0.1 and step 0.01; in our runs the SimpleNet trained on
the demo set kept its accuracy under that budget, so the default run adds a budget ten times
larger, where the attacks succeed on part of the images.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
from torch import nn
from torch.nn import functional as F

from custom_dataloader import MiniPlacesLoader
from student_code import IMAGENET_MEAN, IMAGENET_STD, PGDAttack, SimpleNet, get_val_transforms

from tools import REPO_DIR
from tools.benchmarking import command_line, cpu_model
from tools.make_demo_data import make_demo_dataset

RESULT_FILE = os.path.join(REPO_DIR, "results", "pgd_vs_torchattacks.md")
SETTINGS = ("pixel", "normalized")


class Normalized(nn.Module):
    """``model(normalize(p))``: (B, 3, H, W) pixels in [0, 1] -> the model's logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))  # (1, 3, 1, 1)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))  # (1, 3, 1, 1)

    def forward(self, pixels):
        return self.model((pixels - self.mean) / self.std)


def load_demo_set(args):
    """Generate the demo set and read both splits through the validation transform:
    train and val images (N, 3, 128, 128) normalized, labels (N,) renumbered 0..classes-1."""
    splits = {}
    with tempfile.TemporaryDirectory() as root:
        make_demo_dataset(root, num_classes=args.classes, train_per_class=args.train_per_class,
                          val_per_class=args.val_per_class, seed=args.seed)
        for split in ("train", "val"):
            dataset = MiniPlacesLoader(root, split=split, transforms=get_val_transforms())
            images, labels = zip(*(dataset[i] for i in range(len(dataset))))
            splits[split] = (torch.stack(images), torch.tensor(labels))
    used = torch.unique(splits["train"][1])  # (classes,) the MiniPlaces ids that the demo set drew
    renumber = torch.full((100,), -1, dtype=torch.long)
    renumber[used] = torch.arange(len(used))
    return {split: (images, renumber[labels]) for split, (images, labels) in splits.items()}


def train_simplenet(images, labels, num_classes, args):
    """SimpleNet trained with Adam on normalized images (N, 3, H, W); returned in eval mode."""
    torch.manual_seed(args.seed)
    model = SimpleNet(num_classes=num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), args.batch_size):
            idx = order[start:start + args.batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"  epoch {epoch + 1}/{args.epochs}: last batch loss {loss.item():.3f}", flush=True)
    return model.eval()


def interleaved_seconds(runs, repeats):
    """{name: [seconds per repeat]} for the callables in ``runs``, run in turn, the order
    alternating between repeats so that neither always goes first; the i-th times of all
    names were taken side by side."""
    names = list(runs)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def build_attacks(setting, model, epsilon, step_size, steps, torchattacks):
    """(ours, torchattacks' PGD, the module ours attacks, normalized -> ours' input,
    ours' output -> normalized, torchattacks' pixel epsilon, pixel step) for one setting."""
    pixel_std = max(IMAGENET_STD) if setting == "normalized" else statistics.mean(IMAGENET_STD)
    pixel_eps, pixel_step = epsilon * pixel_std, step_size * pixel_std
    theirs = torchattacks.PGD(model, eps=pixel_eps, alpha=pixel_step, steps=steps, random_start=False)
    theirs.set_normalization_used(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    theirs.set_mode_targeted_least_likely(quiet=True)
    if setting == "normalized":
        ours = PGDAttack(nn.CrossEntropyLoss(), steps, step_size, epsilon)
        return ours, theirs, model, (lambda x: x), (lambda x: x), pixel_eps, pixel_step
    ours = PGDAttack(nn.CrossEntropyLoss(), steps, pixel_step, pixel_eps, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    wrapped = Normalized(model).eval()
    return (ours, theirs, wrapped, (lambda x: x * wrapped.std + wrapped.mean),
            (lambda p: (p - wrapped.mean) / wrapped.std), pixel_eps, pixel_step)


def compare(setting, epsilon, step_size, model, val_images, val_labels, args, torchattacks):
    """One row: success, accuracy under attack and throughput of both attacks, their ratio and
    the largest difference of their samples.

    Every batch is attacked ``args.repeats`` times by each attack in turn; images/s is one over
    the median time per image, and the ratio is the median over these side-by-side pairs of
    (torchattacks' time / ours), so that load changes of the shared machine mostly cancel.
    """
    ours, theirs, our_model, to_ours, from_ours, pixel_eps, pixel_step = build_attacks(
        setting, model, epsilon, step_size, args.steps, torchattacks)
    batches = val_images.split(args.batch_size)
    with torch.no_grad():
        clean_logits = torch.cat([model(x) for x in batches])  # (N, K)
    top1 = clean_logits.argmax(dim=1).split(args.batch_size)
    outputs = {"ours": [None] * len(batches), "torchattacks": [None] * len(batches)}
    seconds = {"ours": [], "torchattacks": []}
    ours.perturb(our_model, to_ours(batches[0]))  # warm-up
    theirs(batches[0], top1[0])
    for i, x in enumerate(batches):

        def run_ours(i=i, x=x):
            outputs["ours"][i] = from_ours(ours.perturb(our_model, to_ours(x)))

        def run_theirs(i=i, x=x):
            outputs["torchattacks"][i] = theirs(x, top1[i])

        for name, s in interleaved_seconds({"ours": run_ours, "torchattacks": run_theirs}, args.repeats).items():
            seconds[name] += [t / len(x) for t in s]  # seconds per image
    row = {"setting": setting, "epsilon": epsilon, "step_size": step_size, "pixel_eps": pixel_eps,
           "pixel_step": pixel_step,
           "ratio": statistics.median(t / o for o, t in zip(seconds["ours"], seconds["torchattacks"]))}
    for name, adv_batches in outputs.items():
        adv = torch.cat(adv_batches)
        with torch.no_grad():
            preds = torch.cat([model(a).argmax(dim=1) for a in adv_batches])
        row[name] = {"adv": adv, "images_per_s": 1.0 / statistics.median(seconds[name]),
                     "success": (preds == clean_logits.argmin(dim=1)).float().mean().item(),
                     "accuracy": (preds == val_labels).float().mean().item()}
    diff = (row["ours"].pop("adv") - row["torchattacks"].pop("adv")).abs()
    row["max_abs_diff"] = diff.max().item()
    row["frac_diff"] = (diff > 1e-4).float().mean().item()
    return row


def adversarial_training_cost(images, labels, num_classes, args):
    """Median seconds of one SimpleNet training step (Adam) with adversarial training off and on,
    and the median of the side-by-side ratios (adversarial / clean)."""
    torch.manual_seed(args.seed)
    models = {"clean": SimpleNet(num_classes=num_classes), "adversarial": SimpleNet(num_classes=num_classes)}
    models["adversarial"].enable_adversarial_training(adv_ratio=args.adv_ratio, num_steps=args.adv_steps)
    x, y = images[:args.batch_size], labels[:args.batch_size]
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}

    def step(name):
        models[name].train()
        loss = F.cross_entropy(models[name](x), y)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    step("clean")  # warm-up
    step("adversarial")
    seconds = interleaved_seconds({name: (lambda name=name: step(name)) for name in models}, args.train_steps)
    cost = {name: statistics.median(s) for name, s in seconds.items()}
    cost["ratio"] = statistics.median(a / c for c, a in zip(seconds["clean"], seconds["adversarial"]))
    return cost


def hardware():
    """One line on the CPU, threads and library versions."""
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}")


def format_row(row):
    """One markdown table row of a ``compare`` result."""
    ours, theirs = row["ours"], row["torchattacks"]
    return (f"| {row['setting']} | {row['epsilon']:g} / {row['step_size']:g} "
            f"| {row['pixel_eps']:.5f} / {row['pixel_step']:.6f} "
            f"| {ours['success']:.1%} / {theirs['success']:.1%} | {ours['accuracy']:.1%} / {theirs['accuracy']:.1%} "
            f"| {ours['images_per_s']:.2f} / {theirs['images_per_s']:.2f} | {row['ratio']:.3f} "
            f"| {row['max_abs_diff']:.1e} ({row['frac_diff']:.2%}) |")


def write_report(rows, cost, clean_acc, args, versions, command):
    """Markdown report at RESULT_FILE."""
    os.makedirs(os.path.dirname(RESULT_FILE), exist_ok=True)
    lines = [
        "# PGD towards the least-likely label: ours against torchattacks",
        "",
        f"Measured {datetime.date.today().isoformat()} on {versions['hardware']}; "
        f"torchattacks {versions['torchattacks']}. CPU only, on a machine shared with other jobs: "
        "expect timing noise.",
        "",
        f"Command (from `code/`): `{command}`",
        "",
        f"Model: SimpleNet ({args.classes} classes) trained {args.epochs} epochs with Adam on a generated "
        f"demo set ({args.train_per_class} training images per class), clean accuracy {clean_acc:.1%} on "
        f"{args.classes * args.val_per_class} validation images of 128x128, attacked in batches of "
        f"{args.batch_size} with {args.steps} steps. Each batch is attacked {args.repeats} times by each "
        "attack in turn (order alternating); images/s = 1 / median time per image; the ratio is the "
        "median of the side-by-side ratios torchattacks' time / ours (> 1: ours is faster).",
        "",
        "| setting | epsilon / step (normalized) | torchattacks epsilon / step (pixels) "
        "| success ours / torchattacks | accuracy under attack ours / torchattacks "
        "| images/s ours / torchattacks | speed ratio | max abs difference of the samples "
        "(elements > 1e-4) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [format_row(row) for row in rows]
    lines += [
        "",
        "Settings (details in the docstring of `code/tools/bench_pgd.py`): `pixel` is exactly equivalent",
        "(both attack `model(normalize(p))` over the same pixel ball with the same step, in pixels",
        "epsilon * mean(std)); `normalized` runs our attack as `main.py -a` does (no normalization",
        "inside the loop) against torchattacks with epsilon * max(std) pixels, a box that contains",
        "ours in every channel. Success: the model assigns the adversarial image to the least-likely",
        "label of the clean image. The difference column is in normalized units: in the `pixel`",
        "setting the two attacks compute the same samples except where float rounding, which differs",
        "between the projections `clip(x, x0 - eps, x0 + eps)` (ours) and `x0 + clip(x - x0, -eps, eps)`",
        "(torchattacks), flips the sign of a later gradient element. Ours reuses the forward pass",
        "that picks the least-likely label as the first step's forward: `steps` forward passes per",
        "batch instead of `steps + 1`.",
        "",
        "## Cost of adversarial training",
        "",
        f"One SimpleNet training step (Adam, batch {args.batch_size}, 128x128): "
        f"{cost['clean'] * 1000:.0f} ms clean, {cost['adversarial'] * 1000:.0f} ms with "
        f"`enable_adversarial_training(adv_ratio={args.adv_ratio}, num_steps={args.adv_steps})`, "
        f"{cost['ratio']:.2f} times the clean step (medians of {args.train_steps} interleaved pairs).",
        "",
    ]
    with open(RESULT_FILE, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def parse_budgets(text):
    """'0.1:0.01,1.0:0.1' -> [(0.1, 0.01), (1.0, 0.1)] (epsilon:step in normalized units)."""
    try:
        budgets = [tuple(float(v) for v in item.split(":")) for item in text.split(",")]
    except ValueError:
        budgets = []
    if not budgets or any(len(b) != 2 or b[0] < 0 or b[1] <= 0 for b in budgets):
        raise argparse.ArgumentTypeError(f"expected epsilon:step pairs like 0.1:0.01,1.0:0.1, got {text!r}")
    return budgets


def parse_settings(text):
    """'pixel,normalized' -> ['pixel', 'normalized']."""
    settings = text.split(",")
    if not settings or any(s not in SETTINGS for s in settings):
        raise argparse.ArgumentTypeError(f"settings must be among {SETTINGS}, got {text!r}")
    return settings


def parse_args(argv):
    """Command-line options; exits with a message naming a bad value."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=10, help="demo-set classes")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6, help="SimpleNet training epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (main.py -a: 10)")
    parser.add_argument("--budgets", type=parse_budgets, default=parse_budgets("0.1:0.01,1.0:0.1"),
                        help="epsilon:step pairs in normalized units (main.py -a: 0.1:0.01)")
    parser.add_argument("--settings", type=parse_settings, default=list(SETTINGS),
                        help="comma-separated, among pixel (exactly equivalent) and normalized (as main.py)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each attack per batch")
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps of each kind")
    parser.add_argument("--adv-ratio", type=float, default=0.5, help="adversarial training mix")
    parser.add_argument("--adv-steps", type=int, default=3, help="adversarial training PGD steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("classes", "train_per_class", "val_per_class", "epochs", "batch_size", "steps",
                 "repeats", "train_steps", "adv_steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.classes < 2:
        parser.error(f"--classes must be >= 2 for a least-likely label, got {args.classes}")
    return args


def main(argv=None):
    """Train, compare the attacks, time adversarial training, write RESULT_FILE."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        import torchattacks
    except ImportError:
        sys.exit("bench_pgd.py needs torchattacks: pip install --no-deps -r ../requirements-bench.txt")
    torch.set_num_threads(args.threads)
    versions = {"hardware": hardware(), "torchattacks": torchattacks.__version__}
    print(versions["hardware"], flush=True)
    data = load_demo_set(args)
    (train_images, train_labels), (val_images, val_labels) = data["train"], data["val"]
    print(f"training SimpleNet on {len(train_images)} demo images", flush=True)
    model = train_simplenet(train_images, train_labels, args.classes, args)
    with torch.no_grad():
        clean_acc = (model(val_images).argmax(dim=1) == val_labels).float().mean().item()
    print(f"clean validation accuracy {clean_acc:.1%} on {len(val_images)} images", flush=True)
    rows = []
    for epsilon, step_size in args.budgets:
        for setting in args.settings:
            rows.append(compare(setting, epsilon, step_size, model, val_images, val_labels, args, torchattacks))
            print(format_row(rows[-1]), flush=True)
    cost = adversarial_training_cost(train_images, train_labels, args.classes, args)
    print(f"training step: clean {cost['clean'] * 1000:.0f} ms, adversarial {cost['adversarial'] * 1000:.0f} ms "
          f"({cost['ratio']:.2f}x)", flush=True)
    write_report(rows, cost, clean_acc, args, versions, command_line("bench_pgd.py", argv))
    print(f"wrote {RESULT_FILE}")


if __name__ == "__main__":
    main()
