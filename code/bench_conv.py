"""Benchmark the custom convolution (student_code.custom_conv2d) against native F.conv2d.

    cd code
    python bench_conv.py                     # batch 32, 128x128: every layer and every network
    python bench_conv.py --threads 1,2       # the same at 1 and at 2 intra-op threads
    python bench_conv.py --quick             # smoke run: batch 4, 64x64, SimpleNet only
    python bench_conv.py --device cuda --amp bf16
    python bench_conv.py --device cuda --tf32      # both sides in TF32

For every distinct convolution layer of the networks in --layers and for every network in
--nets, native and custom run side by side in one process and the table gives custom / native
ratios of:
  fwd    time of a forward pass without autograd (a layer: the convolution alone)
  train  time of forward + loss + backward (a layer: forward + backward for a random output
         gradient; the gradients of the input, weight and bias)
  held   memory allocated after the forward pass minus before it: what autograd keeps for
         backward (plus the small output)
  peak   highest memory allocated during forward + backward, minus before

Precision, like with like: native and custom compute in the same precision, named in every
row. On CUDA, PyTorch's defaults would give cuDNN's native convolutions TF32 (cudnn.allow_tf32)
and the custom op's matrix products true fp32 (cuda.matmul.allow_tf32 off); the benchmark sets
both flags off (both true fp32), or with --tf32 both on. Under --amp both run in bf16 / fp16.

Timing: --warmup untimed rounds, then --repeats rounds; each round times native and custom
back to back, alternating which goes first, and the table reports medians. CPU: perf_counter;
CUDA: a pair of torch.cuda.Event around the call, synchronised.

Memory on CPU: torch.profiler with profile_memory=True records every allocation and free made
through PyTorch's CPU allocator, with its size and time. Summed in time order they give the
bytes allocated at every moment; a record_function marker between forward and backward splits
the two, giving held and peak. This counts tensor memory only: memory that a library takes
outside PyTorch's allocator (a oneDNN scratchpad, say) is not seen. Memory on CUDA:
torch.cuda.memory_allocated and max_memory_allocated after reset_peak_memory_stats.

Inputs: a layer gets its input in the layout it has inside its network. The first layer of a
network reads the image batch (contiguous NCHW, no gradient); later native layers read NCHW
and later custom layers channels_last, the layout the custom op returns and that ReLU,
pooling and batch norm keep. Networks get the image batch and random labels.

Networks are built by name: "simplenet" (student_code.SimpleNet), "default_cnn"
(student_code.default_cnn_model, measured once if it is SimpleNet) and "resnet18"
(torchvision's, every nn.Conv2d swapped for CustomConv2d with the same weights). The
student_code networks are built with conv_op=nn.Conv2d / conv_op=CustomConv2d.

Output: the table on stdout and, at the repository root, results/conv_benchmark.md and
results/conv_benchmark.csv (conv_benchmark_quick.* for --quick; --out-dir to change), stating
hardware, torch version, threads, date and command. Each row also gives the 1-minute load
average when it was measured: on a shared CPU, other processes' load stalls every
multi-threaded op, and the custom op, which runs many more (smaller) ops than one native
convolution, suffers more; compare ratios taken at low load, or use --threads 1.
"""
import argparse
import csv
import datetime
import os
import platform
import statistics
import sys

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import student_code
from benchmarking import command_line, cpu_model, synchronize, time_ms
from mixed_precision import Float32Flags, precision_name
from student_code import CustomConv2d, custom_conv2d

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 100
BACKWARD_MARK = "bench_conv.backward"
IMPLS = ("native", "custom")


def swap_convs(model):
    """Replace every nn.Conv2d in ``model`` (in place) by a CustomConv2d with the same weights."""
    for name, child in model.named_children():
        if isinstance(child, nn.Conv2d):
            square = len(set(child.kernel_size)) == len(set(child.stride)) == len(set(child.padding)) == 1
            if not square or child.dilation != (1, 1) or child.groups != 1:
                raise ValueError(f"{name}: CustomConv2d computes square kernels, one stride and padding, dilation 1 "
                                 f"and groups 1, not {child}")
            custom = CustomConv2d(child.in_channels, child.out_channels, child.kernel_size[0], child.stride[0],
                                  child.padding[0], bias=child.bias is not None)
            custom.load_state_dict(child.state_dict())
            setattr(model, name, custom)
        else:
            swap_convs(child)
    return model


def build_networks(name):
    """(native, custom) versions of network ``name`` with the same weights."""
    if name == "resnet18":
        native = torchvision.models.resnet18(num_classes=NUM_CLASSES)
        custom = torchvision.models.resnet18(num_classes=NUM_CLASSES)
        custom.load_state_dict(native.state_dict())
        return native, swap_convs(custom)
    cls = {"simplenet": student_code.SimpleNet, "default_cnn": student_code.default_cnn_model}[name]
    native = cls(conv_op=nn.Conv2d, num_classes=NUM_CLASSES)
    custom = cls(conv_op=CustomConv2d, num_classes=NUM_CLASSES)
    custom.load_state_dict(native.state_dict())
    return native, custom


def conv_layers(name, images):
    """The distinct convolutions of network ``name`` run on ``images`` (B, 3, H, W):
    dicts of their geometry, the input size they see and whether they read the image."""
    native = build_networks(name)[0].to(images.dtype)
    layers, seen = [], set()

    def record(module, inputs, _output, module_name):
        x = inputs[0]
        key = (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
               module.padding[0], module.bias is not None, x.shape[2], x.shape[3], x is images)
        if key not in seen:
            seen.add(key)
            layers.append(dict(zip(("ci", "co", "k", "stride", "padding", "bias", "h", "w", "first"), key),
                               name=f"{name}.{module_name}"))

    hooks = [m.register_forward_hook(lambda m, i, o, n=n: record(m, i, o, n))
             for n, m in native.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        native(images)
    for hook in hooks:
        hook.remove()
    return layers


class Case:
    """One thing to measure, in one implementation: ``infer()`` (forward only),
    ``forward()`` -> result and ``backward(result)`` (the training step split in two)."""

    def __init__(self, infer, forward, backward, prepare=lambda: None):
        self.infer, self.forward, self.backward, self.prepare = infer, forward, backward, prepare


def layer_cases(layer, batch_size, device, dtype):
    """(native, custom) cases for one convolution layer."""
    gen = torch.Generator().manual_seed(0)
    shape = (batch_size, layer["ci"], layer["h"], layer["w"])
    batch = torch.randn(shape, generator=gen, dtype=dtype).to(device)
    weight = (torch.randn(layer["co"], layer["ci"], layer["k"], layer["k"], generator=gen, dtype=dtype) * 0.05
              ).to(device).requires_grad_()
    bias = torch.zeros(layer["co"], dtype=dtype, device=device).requires_grad_() if layer["bias"] else None
    args = (layer["stride"], layer["padding"])
    cases = []
    for impl, conv in zip(IMPLS, (F.conv2d, custom_conv2d)):
        x = batch.clone()
        if not layer["first"]:
            if impl == "custom":
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
        inputs = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
        with torch.no_grad():
            grad_output = torch.randn_like(conv(x, weight, bias, *args))

        def infer(conv=conv, x=x):
            with torch.no_grad():
                return conv(x, weight, bias, *args)

        cases.append(Case(infer, lambda conv=conv, x=x: conv(x, weight, bias, *args),
                          lambda out, inputs=inputs, g=grad_output: torch.autograd.grad(out, inputs, g.to(out.dtype))))
    return cases


def network_cases(name, images, labels):
    """(native, custom) cases for one whole network: cross-entropy training step."""
    criterion = nn.CrossEntropyLoss()
    cases = []
    for model in build_networks(name):
        model.to(images.device, images.dtype).train()

        def infer(model=model):
            with torch.no_grad():
                return model(images)

        cases.append(Case(infer, lambda model=model: criterion(model(images), labels), lambda loss: loss.backward(),
                          prepare=lambda model=model: model.zero_grad(set_to_none=True)))
    return cases


def memory_mb(case, device, autocast):
    """(held, peak) MB of one training step of ``case``, as the module docstring defines them."""
    case.prepare()
    synchronize(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with autocast():
            result = case.forward()
        synchronize(device)
        held = torch.cuda.memory_allocated(device) - base
        case.backward(result)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return held / 2 ** 20, peak / 2 ** 20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with autocast():
            result = case.forward()
        with record_function(BACKWARD_MARK):
            pass
        case.backward(result)
    events = prof.profiler.kineto_results.events()
    mark = next(e.start_ns() for e in events if e.name() == BACKWARD_MARK)
    changes = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    allocated = peak = 0
    held = None
    for start_ns, nbytes in changes:
        if held is None and start_ns > mark:
            held = allocated
        allocated += nbytes
        peak = max(peak, allocated)
    return (allocated if held is None else held) / 2 ** 20, peak / 2 ** 20


def measure(cases, device, autocast, warmup, repeats):
    """Median times and memory of the (native, custom) cases, measured side by side."""
    times = {(impl, what): [] for impl in IMPLS for what in ("fwd", "train")}

    def train_step(case):
        case.prepare()
        with autocast():
            result = case.forward()
        case.backward(result)

    for round_index in range(warmup + repeats):
        order = list(zip(IMPLS, cases))
        for impl, case in order if round_index % 2 == 0 else order[::-1]:
            with autocast():
                fwd = time_ms(case.infer, device)
            train = time_ms(lambda: train_step(case), device)
            if round_index >= warmup:
                times[impl, "fwd"].append(fwd)
                times[impl, "train"].append(train)
    row = {f"{impl}_{what}_ms": statistics.median(values) for (impl, what), values in times.items()}
    for impl, case in zip(IMPLS, cases):
        row[f"{impl}_held_mb"], row[f"{impl}_peak_mb"] = memory_mb(case, device, autocast)
    for what in ("fwd_ms", "train_ms", "held_mb", "peak_mb"):
        native = row[f"native_{what}"]
        row[f"{what.split('_')[0]}_ratio"] = row[f"custom_{what}"] / native if native > 0 else float("nan")
    return row


def load_average():
    """The system's 1-minute load average (runnable processes; compare with the core count)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


CUSTOM_TIME_TARGET = 3.0  # on a GPU: custom / native forward + backward time of a whole network


def target_lines(rows):
    """The GPU target, one line per network row: custom / native train time <= CUSTOM_TIME_TARGET."""
    return [f"- Target (GPU): custom / native forward + backward time <= {CUSTOM_TIME_TARGET:g}x on {r['name']} "
            f"(threads {r['threads']}): {r['train_ratio']:.2f}x, "
            + ("met" if r["train_ratio"] <= CUSTOM_TIME_TARGET else "NOT met")
            for r in rows if r["kind"] == "network"]


def hardware(device):
    """A line naming the device that ran the benchmark."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"GPU {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}), CUDA {torch.version.cuda}"
    return f"CPU {cpu_model()}, {os.cpu_count()} logical cores"


COLUMNS = ["threads", "load", "kind", "name", "detail", "precision",
           "native_fwd_ms", "custom_fwd_ms", "fwd_ratio", "native_train_ms", "custom_train_ms", "train_ratio",
           "native_held_mb", "custom_held_mb", "held_ratio", "native_peak_mb", "custom_peak_mb", "peak_ratio"]


def format_table(rows):
    """A markdown table of the rows: times in ms, memory in MB, ratios custom / native."""
    header = ["threads", "load", "kind", "name", "detail", "precision", "fwd ms (nat / cus)", "fwd x",
              "train ms (nat / cus)", "train x", "held MB (nat / cus)", "held x", "peak MB (nat / cus)", "peak x"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["threads"]), f"{r['load']:.1f}", r["kind"], r["name"], r["detail"], r["precision"]]
        for what, unit in (("fwd", "ms"), ("train", "ms"), ("held", "mb"), ("peak", "mb")):
            native, custom = r[f"native_{what}_{unit}"], r[f"custom_{what}_{unit}"]
            cells += [f"{native:.1f} / {custom:.1f}", f"{r[f'{what}_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows, args, device, out_dir, stem):
    """Write <stem>.md (setup and table) and <stem>.csv (one row per measurement) to out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    amp = "off" if args.amp == "none" else args.amp
    setup = [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- command: `{command_line('bench_conv.py', args.argv)}` (from code/)",
             f"- hardware: {hardware(device)}",
             f"- torch {torch.__version__}, torchvision {torchvision.__version__}, python {platform.python_version()}",
             f"- intra-op threads: {args.threads}; dtype {args.dtype}; autocast {amp}; load = 1-minute load "
             "average when the row was measured (other processes sharing the cores)",
             "- precision: what both sides compute in (the same for native and custom), from the autocast "
             "dtype and torch.backends.cudnn.allow_tf32 / torch.backends.cuda.matmul.allow_tf32, which the "
             "benchmark sets alike (off; on with --tf32)",
             f"- batch {args.batch_size}, images {args.img_size}x{args.img_size}, {args.warmup} warmup + "
             f"{args.repeats} timed rounds (medians), native and custom alternating",
             "- held = memory allocated after forward minus before (what autograd keeps); peak = highest "
             "allocated during forward + backward minus before; see bench_conv.py's docstring for how"]
    if device.type == "cuda":
        setup += target_lines(rows)
    with open(os.path.join(out_dir, stem + ".md"), "w", encoding="utf-8") as f:
        f.write("# Custom convolution vs native F.conv2d\n\n" + "\n".join(setup) + "\n\n"
                "Ratios are custom / native (lower is better for custom).\n\n" + format_table(rows) + "\n")
    with open(os.path.join(out_dir, stem + ".csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def row_precision(device, dtype, amp_dtype):
    """The precision that native and custom both compute in: "fp64" for --dtype float64 (autocast
    leaves float64 alone), else precision_name under the flags set (see the module docstring)."""
    return "fp64" if dtype == torch.float64 else precision_name(device, amp_dtype)


def parse_names(text, known):
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown network(s) {unknown}; choose from {sorted(known)}")
    return names


def parse_args(argv=None):
    known = ("simplenet", "default_cnn", "resnet18")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", type=lambda s: parse_names(s, known), default=list(known),
                        help="whole networks to time, comma separated (default: all)")
    parser.add_argument("--layers", type=lambda s: parse_names(s, known), default=list(known),
                        help="networks whose conv layers are timed one by one; empty for none (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--threads", default=str(torch.get_num_threads()),
                        help="intra-op CPU thread counts to measure at, comma separated (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                        help="run forward under torch.autocast with this dtype")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: native convolutions and the custom op's matrix products both in TF32 "
                             "(default: both in true fp32)")
    parser.add_argument("--quick", action="store_true",
                        help="batch 4, 64x64, 1 warmup + 2 rounds, SimpleNet only; writes conv_benchmark_quick.*")
    parser.add_argument("--out-dir", default=os.path.join(REPO_ROOT, "results"))
    parser.add_argument("--name", default=None,
                        help="file name stem of the report (default conv_benchmark, conv_benchmark_quick for --quick)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.quick:
        args.nets, args.layers, args.batch_size, args.img_size, args.warmup, args.repeats = (
            ["simplenet"], ["simplenet"], 4, 64, 1, 2)
    if min(args.batch_size, args.img_size, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch-size, --img-size and --repeats must be >= 1, --warmup >= 0")
    try:
        args.thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be comma-separated ints, got {args.threads!r}")
    if min(args.thread_counts) < 1:
        parser.error(f"--threads must be >= 1, got {args.threads!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    if student_code.default_cnn_model is student_code.SimpleNet:
        for names in (args.nets, args.layers):
            if "default_cnn" in names and "simplenet" in names:
                names.remove("default_cnn")
                print("default_cnn_model is SimpleNet: measured once, as simplenet")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=gen, dtype=dtype)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=gen)
    layers = [layer for name in args.layers for layer in conv_layers(name, images)]
    images, labels = images.to(device), labels.to(device)

    rows = []
    with Float32Flags(args.tf32):  # native and custom alike: both TF32 or both true fp32 on CUDA
        precision = row_precision(device, dtype, amp_dtype)
        for threads in args.thread_counts:
            torch.set_num_threads(threads)
            for layer in layers:
                detail = (f"{layer['ci']}->{layer['co']} k{layer['k']} s{layer['stride']} p{layer['padding']} "
                          f"@{layer['h']}x{layer['w']}" + (" (image)" if layer["first"] else ""))
                cases = layer_cases(layer, args.batch_size, device, dtype)
                rows.append(dict(threads=threads, kind="layer", name=layer["name"], detail=detail, precision=precision,
                                 **measure(cases, device, autocast, args.warmup, args.repeats), load=load_average()))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
            for name in args.nets:
                cases = network_cases(name, images, labels)
                rows.append(dict(threads=threads, kind="network", name=name, detail=f"batch {args.batch_size}",
                                 precision=precision, **measure(cases, device, autocast, args.warmup, args.repeats),
                                 load=load_average()))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)

    print()
    print(format_table(rows))
    stem = args.name or ("conv_benchmark_quick" if args.quick else "conv_benchmark")
    write_results(rows, args, device, args.out_dir, stem)
    if device.type == "cuda":
        print("\n".join(target_lines(rows)))
    print(f"\nwrote {os.path.join(args.out_dir, stem)}.md and .csv")
    return rows


if __name__ == "__main__":
    main()
