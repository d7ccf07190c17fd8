"""Training throughput (images/s) and peak memory: the starter's loop vs our AMP +
channels_last loop, for SimpleNet, SceneResNet and ResNet18, side by side; every row names
its precision (fp32, tf32, bf16 or fp16), read from PyTorch's backend flags.

    python -m tools.bench_train                                    # GPU: batch 256
    python -m tools.bench_train --batch-size 8 --steps 2 --warmup 1 --repeats 3   # CPU smoke run

Each measurement builds a fresh model and SGD optimizer, runs ``--warmup`` steps,
then times ``--steps`` training steps (forward, cross-entropy, backward, SGD step)
on one random batch kept on the device, so data loading is excluded. The loops:

  starter  the starter's loop: fp32 weights and activations, NCHW, PyTorch's default backend
           flags; on CUDA these let cuDNN run convolutions in TF32 (``cudnn.allow_tf32``), so
           the row says "tf32 conv, fp32 matmul". The baseline of the speed-ups and the target.
  fp32     the same loop in true fp32 (TF32 off for convolutions and matrix products); CUDA
           only, since the CPU has no TF32: it shows how much of AMP's gain TF32 already gives.
  amp_cl   main.py's loop: autocast (bf16 or fp16) + channels_last, GradScaler for fp16.

The (model, loop) configurations run interleaved in each of ``--repeats`` rounds; the
table gives the median images/s and the median of the per-round speed-ups over the
starter's loop. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed steps
(CUDA only). The report goes to ``<repo>/results/train_throughput.md`` (``--out`` to change).
"""
import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

from mixed_precision import Float32Flags, cuda_amp_dtype, precision_name
from pretrained import build_resnet18
from student_code import SceneResNet, SimpleNet, default_cnn_model

from tools import REPO_DIR
from tools.benchmarking import command_line, cpu_model, synchronize

NUM_CLASSES = 100
MODELS = {
    "SimpleNet": lambda: SimpleNet(num_classes=NUM_CLASSES),
    "SceneResNet": lambda: SceneResNet(num_classes=NUM_CLASSES),
    "ResNet18": lambda: build_resnet18(num_classes=NUM_CLASSES, pretrained=False),
}
SPEEDUP_TARGET = 2.0  # on a GPU: amp_cl / starter images/s of the improved CNN


def parse_args(argv=None):
    """Command-line options; ``argv`` None reads sys.argv."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds over all configurations")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp-dtype", choices=("auto", "bf16", "fp16"), default="auto",
                        help="auto: bf16 on the CPU and on GPUs of compute capability >= 8.0, else fp16")
    parser.add_argument("--out", default=os.path.join(REPO_DIR, "results", "train_throughput.md"))
    parser.add_argument("--note", default="", help="free text added to the report (e.g. machine load)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    for name in ("batch_size", "img_size", "steps", "repeats"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device!r} but CUDA is not available")
    return args


def resolve_amp_dtype(name, device):
    """torch dtype for autocast: "bf16", "fp16", or "auto" (bf16 on the CPU, the GPU's native
    dtype on CUDA: cuda_amp_dtype, main.py's rule)."""
    if name == "auto":
        return cuda_amp_dtype(device) if device.type == "cuda" else torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def loops(device):
    """The loops measured on ``device`` (module docstring): no true-fp32 loop on the CPU."""
    return ("starter", "fp32", "amp_cl") if device.type == "cuda" else ("starter", "amp_cl")


def loop_flags(loop):
    """The backend flags a loop runs under: TF32 off for "fp32", PyTorch's as they are otherwise."""
    return Float32Flags(False) if loop == "fp32" else contextlib.nullcontext()


def loop_precision(loop, device, amp_dtype):
    """The precision of a loop's convolutions and matrix products, as its flags set it."""
    with loop_flags(loop):
        return precision_name(device, amp_dtype if loop == "amp_cl" else None)


def make_step(model, loop, device, amp_dtype):
    """One training step ``step(x, y)`` for x (B, 3, H, W) images and y (B,) labels.

    "starter" and "fp32": the starter's loop (fp32 NCHW; run "fp32" under loop_flags). "amp_cl":
    main.py's loop: autocast to ``amp_dtype``, channels_last weights (inputs must be channels_last
    too), a GradScaler for fp16, the fused SGD kernel on CUDA.
    """
    criterion = nn.CrossEntropyLoss()
    fused = loop == "amp_cl" and device.type == "cuda"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, fused=fused)
    if loop != "amp_cl":
        def step(x, y):
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return step
    model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def step(x, y):
        with torch.autocast(device.type, dtype=amp_dtype):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def measure(model_name, loop, args, device, amp_dtype):
    """Train ``model_name`` with ``loop``; returns (images/s, peak bytes or None on CPU)."""
    torch.manual_seed(0)
    model = MODELS[model_name]().to(device).train()
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
    if loop == "amp_cl":
        x = x.contiguous(memory_format=torch.channels_last)
    step = make_step(model, loop, device, amp_dtype)
    with loop_flags(loop):
        for _ in range(args.warmup):
            step(x, y)
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(x, y)
        synchronize(device)
        elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del model, step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return args.steps * args.batch_size / elapsed, peak


def hardware(device):
    """One line naming the device the benchmark ran on."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}), CUDA {torch.version.cuda}"
    return f"CPU {cpu_model()}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads"


def speedup(results, name, loop="amp_cl"):
    """Median over the rounds of ``loop`` / starter images/s of model ``name``."""
    return statistics.median(a[0] / b[0] for a, b in zip(results[(name, loop)], results[(name, "starter")]))


def target_line(results, models):
    """The GPU target: AMP + channels_last >= SPEEDUP_TARGET x the starter loop's images/s on the
    improved CNN (default_cnn_model), and the same against true fp32 where it was measured; None
    when that model was not measured."""
    name = default_cnn_model.__name__
    if name not in models:
        return None
    ratio = speedup(results, name)
    line = (f"- Target (GPU): AMP + channels_last >= {SPEEDUP_TARGET:g}x the starter loop's images/s (TF32 "
            f"convolutions) on {name} (the improved CNN): {ratio:.2f}x, "
            + ("met" if ratio >= SPEEDUP_TARGET else "NOT met"))
    if (name, "fp32") in results:
        fp32 = statistics.median(a[0] / b[0] for a, b in zip(results[(name, "amp_cl")], results[(name, "fp32")]))
        line += f"; against true fp32: {fp32:.2f}x"
    return line


def report(args, device, amp_dtype, results):
    """Markdown report; ``results[(model, loop)]`` is a list of (images/s, peak) per round."""
    amp_name = precision_name(device, amp_dtype)
    lines = [
        "# Training throughput: the starter's loop vs AMP + channels_last",
        "",
        f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Command: `{command_line('bench_train.py', args.argv)}` (from `code/`)",
        f"- Hardware: {hardware(device)}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"cudnn.benchmark {torch.backends.cudnn.benchmark}",
        f"- Batch {args.batch_size} x 3 x {args.img_size} x {args.img_size}, {args.warmup} warm-up + "
        f"{args.steps} timed steps per measurement, {args.repeats} interleaved rounds, "
        f"AMP dtype {amp_name}; synthetic batch on the device (no data loading).",
        "- starter: the starter's loop, the baseline (fp32 weights, NCHW, PyTorch's default backend flags: on "
        "CUDA cuDNN convolutions in TF32, matrix products in fp32)."
        + (" fp32: the same loop in true fp32 (TF32 off)." if device.type == "cuda" else
           " No true-fp32 row: the CPU has no TF32, the starter's loop is fp32 already.")
        + " amp_cl: main.py's loop, autocast + channels_last"
        + (" + GradScaler" if amp_dtype == torch.float16 else " (bf16 needs no GradScaler)")
        + (", fused SGD." if device.type == "cuda" else "."),
        "- precision: what the loop's convolutions and matrix products compute in, read from "
        "torch.backends.cudnn.allow_tf32 / torch.backends.cuda.matmul.allow_tf32 and the autocast dtype.",
    ]
    if device.type == "cpu":
        lines.append("- CPU run: it checks that the benchmark works; GPU throughput needs a CUDA device.")
    elif target_line(results, args.models):
        lines.append(target_line(results, args.models))
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += [
        "",
        "| model | params (M) | loop | precision | images/s (median) | images/s (min-max) | peak memory (MiB) "
        "| speed-up vs starter (median of rounds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.models:
        with torch.device("meta"):
            params = sum(p.numel() for p in MODELS[name]().parameters())
        for loop in loops(device):
            rates = [r[0] for r in results[(name, loop)]]
            peaks = [r[1] for r in results[(name, loop)] if r[1] is not None]
            peak = f"{max(peaks) / 2 ** 20:.0f}" if peaks else "n/a (CPU)"
            ratio = 1.0 if loop == "starter" else speedup(results, name, loop)
            lines.append(f"| {name} | {params / 1e6:.2f} | {loop} | {loop_precision(loop, device, amp_dtype)} "
                         f"| {statistics.median(rates):.1f} | {min(rates):.1f}-{max(rates):.1f} | {peak} "
                         f"| {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Run every (model, loop) configuration ``--repeats`` times interleaved and write the report."""
    args = parse_args(argv)
    device = torch.device(args.device)
    amp_dtype = resolve_amp_dtype(args.amp_dtype, device)
    torch.backends.cudnn.benchmark = True
    results = {(name, loop): [] for name in args.models for loop in loops(device)}
    for round_idx in range(args.repeats):
        for name in args.models:
            for loop in loops(device):
                rate, peak = measure(name, loop, args, device, amp_dtype)
                results[(name, loop)].append((rate, peak))
                print(f"round {round_idx + 1}/{args.repeats} {name:11s} {loop:7s} {rate:9.1f} images/s",
                      flush=True)
    text = report(args, device, amp_dtype, results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text + f"written to {args.out}")


if __name__ == "__main__":
    main()
