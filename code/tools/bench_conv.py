"""Benchmark the custom convolution (student_code.custom_conv2d) against native F.conv2d.

    cd code
    python -m tools.bench_conv                     # batch 32, 128x128: every layer and every network
    python -m tools.bench_conv --threads 1,2       # the same at 1 and at 2 intra-op threads
    python -m tools.bench_conv --quick             # smoke run: batch 4, 64x64, SimpleNet only
    python -m tools.bench_conv --device cuda --amp bf16
    python -m tools.bench_conv --device cuda --tf32      # both sides in TF32

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
import collections
import csv
import datetime
import os
import platform
import statistics
import sys
import time

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import student_code
from mixed_precision import Float32Flags, precision_name
from student_code import CustomConv2d, custom_conv2d

from tools import REPO_DIR
from tools.benchmarking import command_line, cpu_model, synchronize, time_ms

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
    dicts of their geometry, the input size they see, whether they read the image and how many
    convolutions of the network they stand for (``count``)."""
    native = build_networks(name)[0].to(images.dtype)
    layers, seen = [], {}

    def record(module, inputs, _output, module_name):
        x = inputs[0]
        key = (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
               module.padding[0], module.bias is not None, x.shape[2], x.shape[3], x is images)
        if key not in seen:
            seen[key] = dict(zip(("ci", "co", "k", "stride", "padding", "bias", "h", "w", "first"), key),
                             name=f"{name}.{module_name}", count=0)
            layers.append(seen[key])
        seen[key]["count"] += 1

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
        cases[-1].inputs = [t for t in (x, weight, bias) if t is not None]
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



# ---------------------------------------------------------------- --factors: where the custom op's time and memory go

FACTOR_PARTS = (("fwd", "pad"), ("fwd", "unfold"), ("fwd", "gemm"), ("fwd", "other"),
                ("bwd", "pad"), ("bwd", "unfold"), ("bwd", "gemm"), ("bwd", "col2im"), ("bwd", "other"))
GPU_BATCH = 256  # main.py's default batch: the chunk a GPU would unfold at once


class PhaseTimer:
    """Times the parts of CustomConv2DFunction while active (a context manager): it wraps
    ``_Im2Col.pad`` (zero borders), ``_Im2Col.im2col`` (the unfolding copy), ``_Im2Col.col2im``
    (fold), the GEMMs (torch.mm, torch.addmm, Tensor.addmm_) and the function's forward and
    backward, each call between two synchronisations of ``device``. ``times`` sums milliseconds
    per (pass, part) with pass 'fwd' or 'bwd'; a pass's 'total' is the whole forward or backward,
    its 'other' what the parts leave (permutes, zero fills, the bias, the output copies)."""

    def __init__(self, device):
        self.device, self.times, self.phase = device, collections.Counter(), None
        self._saved = []

    def _timed(self, part, fn):
        def wrapper(*args, **kwargs):
            if self.phase is None:
                return fn(*args, **kwargs)
            synchronize(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                synchronize(self.device)
                self.times[self.phase, part] += (time.perf_counter() - start) * 1000.0
        return wrapper

    def _pass(self, phase, fn):
        def wrapper(*args, **kwargs):
            self.phase = phase
            try:
                return self._timed("total", fn)(*args, **kwargs)
            finally:
                self.phase = None
        return staticmethod(wrapper)

    def __enter__(self):
        fn_cls = student_code.CustomConv2DFunction
        patches = [(student_code._Im2Col, "pad", self._timed("pad", student_code._Im2Col.pad)),
                   (student_code._Im2Col, "im2col", self._timed("unfold", student_code._Im2Col.im2col)),
                   (student_code._Im2Col, "col2im", self._timed("col2im", student_code._Im2Col.col2im)),
                   (torch, "mm", self._timed("gemm", torch.mm)), (torch, "addmm", self._timed("gemm", torch.addmm)),
                   (torch.Tensor, "addmm_", self._timed("gemm", torch.Tensor.addmm_)),
                   (fn_cls, "forward", self._pass("fwd", fn_cls.forward)),
                   (fn_cls, "backward", self._pass("bwd", fn_cls.backward))]
        for owner, attr, new in patches:
            self._saved.append((owner, attr, owner.__dict__.get(attr)))  # None: inherited (Tensor.addmm_)
            setattr(owner, attr, new)
        return self

    def __exit__(self, *exc):
        for owner, attr, old in reversed(self._saved):
            if old is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)
        self._saved.clear()

    def parts(self):
        """{(pass, part): ms} of FACTOR_PARTS, 'other' being the pass's total less its parts."""
        out = {}
        for phase in ("fwd", "bwd"):
            named = [part for p, part in FACTOR_PARTS if p == phase and part != "other"]
            for part in named:
                out[phase, part] = self.times[phase, part]
            out[phase, "other"] = self.times[phase, "total"] - sum(out[phase, part] for part in named)
        return out


def saved_bytes(fn, inputs):
    """(bytes of the tensors autograd saves for backward while ``fn()`` runs, of those the bytes
    that are not ``inputs`` themselves): each storage counted once."""
    seen, own = {}, {t.untyped_storage().data_ptr() for t in inputs}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values()), sum(n for ptr, n in seen.items() if ptr not in own)


def pass_peaks_mb(forward, backward, device):
    """(forward peak, backward peak) in MB: the highest memory allocated during each pass above
    the level before it (forward's includes its output, backward's the gradients it returns).
    CPU: torch.profiler's allocation records; CUDA: max_memory_allocated."""
    synchronize(device)
    if device.type == "cuda":
        peaks = []
        result = None
        for step in (forward, lambda: backward(result)):
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            result = step() if result is None else step()
            synchronize(device)
            peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20)
        return tuple(peaks)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = forward()
        with record_function(BACKWARD_MARK):
            pass
        backward(result)
        del result
    events = prof.profiler.kineto_results.events()
    mark = next(e.start_ns() for e in events if e.name() == BACKWARD_MARK)
    changes = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    allocated, peaks, base = 0, [0, 0], [0, None]
    for start_ns, nbytes in changes:
        phase = int(start_ns > mark)
        if phase and base[1] is None:
            base[1] = allocated
        allocated += nbytes
        peaks[phase] = max(peaks[phase], allocated - base[phase])
    return peaks[0] / 2 ** 20, peaks[1] / 2 ** 20


def chunk_of(layer, batch_size, like):
    """(samples per chunk, MiB of one chunk's columns) that CustomConv2DFunction unfolds for
    ``layer`` at ``batch_size`` on ``like``'s device (a 'meta' tensor stands for a GPU: the same
    1 GiB bound), None for a 1x1 convolution whose columns are its input."""
    unfold = student_code._Im2Col((batch_size, layer["h"], layer["w"], layer["ci"]), layer["co"], layer["k"],
                                  layer["stride"], layer["padding"], like)
    if unfold.pointwise and not layer["first"]:
        return None
    return unfold.chunk, unfold.chunk * unfold.ho * unfold.wo * unfold.width * like.element_size() / 2 ** 20


def measure_factors(layer, batch_size, device, dtype, warmup, repeats):
    """One layer's row of the --factors table: native forward / backward ms, the custom op's ms
    per part (medians over rounds, native and custom alternating), saved and peak memory of each,
    and the custom op's column chunk here and on a GPU at GPU_BATCH."""
    native, custom = layer_cases(layer, batch_size, device, dtype)
    times = collections.defaultdict(list)
    timer = PhaseTimer(device)
    for round_index in range(warmup + repeats):
        for impl in IMPLS if round_index % 2 == 0 else IMPLS[::-1]:
            case = native if impl == "native" else custom
            if impl == "custom":
                timer.times.clear()
                with timer:
                    case.backward(case.forward())
                if round_index >= warmup:
                    for key, ms in timer.parts().items():
                        times["custom_" + "_".join(key) + "_ms"].append(ms)
                continue
            result = [None]
            fwd = time_ms(lambda: result.__setitem__(0, case.forward()), device)
            bwd = time_ms(lambda: case.backward(result[0]), device)
            if round_index >= warmup:
                times["native_fwd_ms"].append(fwd)
                times["native_bwd_ms"].append(bwd)
    row = {key: statistics.median(values) for key, values in times.items()}
    for impl, case in zip(IMPLS, (native, custom)):
        x = case.inputs
        _, saved, new = saved_bytes(case.forward, x)
        row[f"{impl}_saved_mb"], row[f"{impl}_saved_new_mb"] = saved / 2 ** 20, new / 2 ** 20
        row[f"{impl}_fwd_peak_mb"], row[f"{impl}_bwd_peak_mb"] = pass_peaks_mb(case.forward, case.backward, device)
    here = chunk_of(layer, batch_size, torch.empty(0, dtype=dtype, device=device))
    gpu = chunk_of(layer, GPU_BATCH, torch.empty(0, dtype=dtype, device="meta"))
    row.update(chunk_samples=here and here[0], chunk_mb=here and here[1],
               gpu_chunk_samples=gpu and gpu[0], gpu_chunk_mb=gpu and gpu[1])
    return row


FACTOR_COLUMNS = (["threads", "load", "name", "detail", "count", "native_fwd_ms", "native_bwd_ms"]
                  + [f"custom_{p}_{part}_ms" for p, part in FACTOR_PARTS]
                  + [f"{impl}_{what}_mb" for impl in IMPLS for what in ("saved", "saved_new", "fwd_peak", "bwd_peak")]
                  + ["chunk_samples", "chunk_mb", "gpu_chunk_samples", "gpu_chunk_mb"])
FACTOR_SUMMED = [c for c in FACTOR_COLUMNS if c.endswith("_ms")]


def factor_totals(rows):
    """One 'total' row per (threads, network): the layers' times and saved memory summed over
    every convolution of the network (a layer times its ``count``); peaks and chunks: the largest."""
    totals = []
    for key in dict.fromkeys((r["threads"], r["name"].split(".")[0]) for r in rows):
        mine = [r for r in rows if (r["threads"], r["name"].split(".")[0]) == key]
        total = {"threads": key[0], "load": max(r["load"] for r in mine), "name": f"{key[1]} (all convolutions)",
                 "detail": f"{sum(r['count'] for r in mine)} convolutions", "count": sum(r["count"] for r in mine)}
        for column in FACTOR_COLUMNS[5:]:
            if "chunk" in column:
                continue
            summed = column in FACTOR_SUMMED or "saved" in column
            values = [r[column] * (r["count"] if summed else 1) for r in mine]
            total[column] = sum(values) if summed else max(values)
        for prefix in ("", "gpu_"):  # the largest chunk of any layer, its samples and MiB
            chunked = [r for r in mine if r[f"{prefix}chunk_mb"] is not None]
            big = max(chunked, key=lambda r: r[f"{prefix}chunk_mb"]) if chunked else {}
            total[f"{prefix}chunk_samples"], total[f"{prefix}chunk_mb"] = (big.get(f"{prefix}chunk_samples"),
                                                                         big.get(f"{prefix}chunk_mb"))
        totals.append(total)
    return totals


def format_factors(rows):
    """The --factors table in Markdown: ms per part, MB, chunks."""
    header = ["threads", "load", "layer", "detail", "native fwd / bwd ms", "custom fwd ms: pad, unfold, GEMM, other",
              "custom bwd ms: pad, unfold again, GEMM, col2im, other", "custom / native time",
              "saved MB (nat / cus; new)", "fwd peak MB (nat / cus)", "bwd peak MB (nat / cus)",
              "chunk here (samples, MiB)", f"GPU chunk at batch {GPU_BATCH} (samples, MiB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        custom = sum(r[f"custom_{p}_{part}_ms"] for p, part in FACTOR_PARTS)
        native = r["native_fwd_ms"] + r["native_bwd_ms"]
        cells = [str(r["threads"]), f"{r['load']:.1f}", r["name"], r["detail"],
                 f"{r['native_fwd_ms']:.1f} / {r['native_bwd_ms']:.1f}",
                 ", ".join(f"{r[f'custom_fwd_{p}_ms']:.1f}" for p in ("pad", "unfold", "gemm", "other")),
                 ", ".join(f"{r[f'custom_bwd_{p}_ms']:.1f}" for p in ("pad", "unfold", "gemm", "col2im", "other")),
                 f"{custom / native:.2f}",
                 f"{r['native_saved_mb']:.1f} / {r['custom_saved_mb']:.1f}; "
                 f"{r['native_saved_new_mb']:.1f} / {r['custom_saved_new_mb']:.1f}",
                 f"{r['native_fwd_peak_mb']:.1f} / {r['custom_fwd_peak_mb']:.1f}",
                 f"{r['native_bwd_peak_mb']:.1f} / {r['custom_bwd_peak_mb']:.1f}"]
        for prefix in ("", "gpu_"):
            samples = r[f"{prefix}chunk_samples"]
            cells.append("none (1x1: the input)" if samples is None else f"{samples}, {r[f'{prefix}chunk_mb']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_factors(args, device, dtype, images):
    """The --factors mode: every distinct convolution of --layers networks, timed part by part
    (see PhaseTimer) against F.conv2d, with its memory; writes <stem>.md and .csv."""
    rows = []
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        for name in args.layers:
            for layer in conv_layers(name, images):
                detail = (f"{layer['ci']}->{layer['co']} k{layer['k']} s{layer['stride']} p{layer['padding']} "
                          f"@{layer['h']}x{layer['w']}" + (" (image)" if layer["first"] else "")
                          + (f", x{layer['count']}" if layer["count"] > 1 else ""))
                rows.append(dict(threads=threads, name=layer["name"], detail=detail, count=layer["count"],
                                 **measure_factors(layer, args.batch_size, device, dtype, args.warmup, args.repeats),
                                 load=load_average()))
                print(format_factors(rows[-1:]).splitlines()[-1], flush=True)
    rows += factor_totals(rows)
    print()
    print(format_factors(rows))
    stem = args.name or "conv_factors"
    os.makedirs(args.out_dir, exist_ok=True)
    memory = ("torch.profiler's records of PyTorch's CPU allocator (tensor memory only)" if device.type == "cpu"
              else "torch.cuda.max_memory_allocated")
    setup = [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- command: `{command_line('bench_conv.py', args.argv)}` (from code/)",
             f"- hardware: {hardware(device)}",
             f"- torch {torch.__version__}, python {platform.python_version()}; dtype {args.dtype}",
             f"- batch {args.batch_size}, images {args.img_size}x{args.img_size}; {args.warmup} warmup + "
             f"{args.repeats} timed rounds, native and custom alternating; medians; load = 1-minute load average",
             "- custom parts: pad = zero borders (a padded copy of the input), unfold = the im2col copy into the "
             "column buffer (in backward: the same unfold again, for the weight gradient), GEMM = the matrix "
             "products, col2im = adding the column gradients back into the input gradient, other = the rest of "
             "the pass (permutes, zero fills, bias, output copies); each part timed between two synchronisations",
             "- saved = the tensors autograd keeps for backward (new = those that are not the op's own input "
             f"and weight); fwd / bwd peak = the most memory allocated during the pass above the level before "
             f"it ({memory}), with the output or the gradients",
             f"- chunk = samples per unfold and MiB of their columns on this device at this batch; GPU chunk = "
             f"the same at batch {GPU_BATCH} on a GPU (its 1 GiB bound), computed from student_code's chunking",
             "- total rows: every convolution of the network (times and saved memory summed, a layer counted as "
             "often as it occurs); peaks and chunks: the largest layer's"]
    with open(os.path.join(args.out_dir, stem + ".md"), "w", encoding="utf-8") as f:
        f.write("# Where the custom convolution's time and memory go, against F.conv2d\n\n" + "\n".join(setup)
                + "\n\n" + format_factors(rows) + "\n")
    with open(os.path.join(args.out_dir, stem + ".csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FACTOR_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {os.path.join(args.out_dir, stem)}.md and .csv")
    return rows


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
    parser.add_argument("--layers", type=lambda s: parse_names(s, known), default=None,
                        help="networks whose conv layers are timed one by one; empty for none (default: all; "
                             "with --factors: simplenet)")
    parser.add_argument("--factors", action="store_true",
                        help="instead: time the custom op part by part (padding, unfold, GEMMs, col2im) against "
                             "F.conv2d's forward and backward, with the memory each keeps and allocates, for every "
                             "convolution of --layers; writes conv_factors.md and .csv")
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
    parser.add_argument("--out-dir", default=os.path.join(REPO_DIR, "results"))
    parser.add_argument("--name", default=None,
                        help="file name stem of the report (default conv_benchmark, conv_benchmark_quick for --quick)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.layers is None:
        args.layers = ["simplenet"] if args.factors else list(known)
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
    if args.factors:
        with Float32Flags(args.tf32):
            return run_factors(args, device, dtype, images)
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
