"""Time the fused (scaled_dot_product_attention) and explicit attention paths of
student_code.Attention side by side, and the budget of SimpleViT vs ImprovedViT.

    python -m tools.bench_attention                      # CPU, writes ../results/attention_benchmark.md
    python -m tools.bench_attention --device cuda        # GPU timings with CUDA events

Attention: for each sequence length N (a square token grid), one module with one
set of weights runs forward + backward through both paths; the repeats of the two
paths are interleaved and the medians compared (ratio = explicit / fused, > 1 means
the fused path is faster). Models: parameters, forward FLOPs per image (counted by
FlopCounterMode on the explicit path, whose matrix products it sees), tokens, and
the forward + backward time per image of both models, also interleaved.
"""
import argparse
import datetime
import os
import statistics
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from mixed_precision import precision_name
from student_code import Attention, ImprovedViT, SimpleViT

from tools import REPO_DIR
from tools.benchmarking import command_line, cpu_model, time_ms

DEFAULT_OUT = os.path.join(REPO_DIR, "results", "attention_benchmark.md")


def hardware_name(device):
    """A readable name of the CPU model or the CUDA device."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def interleaved_medians(fns, device, repeats, warmup):
    """Run every callable in ``fns`` (dict name -> fn) ``warmup`` times, then
    ``repeats`` rounds in alternating order; return dict name -> median seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(time_ms(fns[name], device) / 1000.0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def fwd_bwd(module, x):
    """One forward + backward pass of ``module`` on ``x`` (gradients reset first)."""
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).square().mean().backward()
    return step


def bench_attention(args, device):
    """Rows (N, B, dim, heads, explicit ms, fused ms, ratio, max |diff|) per sequence length."""
    rows = []
    for n in args.seq_lens:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"sequence length {n} is not a square token grid")
        torch.manual_seed(0)
        attn = Attention(args.dim, num_heads=args.heads).to(device)
        x = torch.randn(args.batch, side, side, args.dim, device=device, requires_grad=True)

        def with_path(fused):
            def step():
                attn.fused = fused
                fwd_bwd(attn, x)()
            return step

        with torch.no_grad():
            attn.fused = True
            y_fused = attn(x)
            attn.fused = False
            max_diff = (attn(x) - y_fused).abs().max().item()
        med = interleaved_medians({"explicit": with_path(False), "fused": with_path(True)},
                                  device, args.repeats, args.warmup)
        rows.append((n, args.batch, args.dim, args.heads, med["explicit"] * 1e3, med["fused"] * 1e3,
                     med["explicit"] / med["fused"], max_diff))
    return rows


def forward_flops(model, img_size):
    """Forward FLOPs of ``model`` on one image, counted on the explicit attention path."""
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    saved = [m.fused for m in attns]
    for m in attns:
        m.fused = False
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, img_size, img_size))
    for m, fused in zip(attns, saved):
        m.fused = fused
    return counter.get_total_flops()


def bench_models(args, device):
    """Rows (name, params, GFLOPs, tokens, fwd+bwd ms per image) for both ViTs."""
    torch.manual_seed(0)
    models = {"SimpleViT": SimpleViT(num_classes=100), "ImprovedViT": ImprovedViT(num_classes=100)}
    tokens = {}
    for name, model in models.items():
        model.eval()
        grid_hook = model.blocks[0].register_forward_hook(
            lambda mod, inp, out, name=name: tokens.__setitem__(name, out.shape[1] * out.shape[2]))
        with torch.no_grad():
            model(torch.randn(1, 3, 128, 128))
        grid_hook.remove()
    flops = {name: forward_flops(model, 128) for name, model in models.items()}
    x = torch.randn(args.model_batch, 3, 128, 128, device=device)
    steps = {}
    for name, model in models.items():
        model.to(device).train()
        steps[name] = fwd_bwd(model, x)
    med = interleaved_medians(steps, device, args.model_repeats, 1)
    return [(name, sum(p.numel() for p in model.parameters()), flops[name] / 1e9, tokens[name],
             med[name] * 1e3 / args.model_batch) for name, model in models.items()]


def render(args, device, attn_rows, model_rows, load_before):
    """The markdown report; ``load_before`` is the 1-minute load average at the start. Every row
    names its precision (float32 tensors; on CUDA TF32 where the backend flags allow it)."""
    precision = precision_name(device)
    lines = [
        "# Attention and ViT benchmark",
        "",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Hardware: {hardware_name(device)} ({device.type})",
        f"- torch {torch.__version__}, {torch.get_num_threads()} CPU threads on {os.cpu_count()} cores, "
        f"1-minute load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
        "(other jobs share the machine when it exceeds the threads)",
        f"- Command: `{command_line('bench_attention.py', args.argv)}` (from `code/`)",
        "",
        "## Attention forward + backward, float32 tensors",
        "",
        f"Median of {args.repeats} interleaved repeats after {args.warmup} warm-up rounds; "
        "ratio = explicit / fused (> 1: the fused path is faster).",
        "",
        "| N tokens | batch | dim | heads | precision | explicit ms | fused ms | ratio | max abs diff (fwd) |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {b} | {d} | {h} | {precision} | {e:.4g} | {f:.4g} | {r:.2f} | {diff:.1e} |"
              for n, b, d, h, e, f, r, diff in attn_rows]
    if model_rows:
        lines += [
            "",
            "## Model budget (128x128 input, 100 classes)",
            "",
            f"FLOPs: one forward pass of one image (FlopCounterMode, explicit attention). Time: forward + "
            f"backward in train mode, batch {args.model_batch}, median of {args.model_repeats} "
            "interleaved repeats, divided by the batch.",
            "",
            "| model | params (M) | forward GFLOPs / image | tokens | precision | fwd+bwd ms / image |",
            "|---|---:|---:|---:|---|---:|",
        ]
        lines += [f"| {name} | {p / 1e6:.2f} | {g:.3f} | {t} | {precision} | {ms:.1f} |"
                  for name, p, g, t, ms in model_rows]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=32, help="attention batch (windows or images)")
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model-batch", type=int, default=8)
    parser.add_argument("--model-repeats", type=int, default=5)
    parser.add_argument("--no-models", action="store_true", help="skip the model budget table")
    parser.add_argument("--out", default=DEFAULT_OUT, help="markdown report path")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.repeats < 1 or args.model_repeats < 1 or args.warmup < 0:
        parser.error("repeats must be >= 1 and warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    attn_rows = bench_attention(args, device)
    model_rows = [] if args.no_models else bench_models(args, device)
    report = render(args, device, attn_rows, model_rows, load_before)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(report)
    print(report, end="")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
