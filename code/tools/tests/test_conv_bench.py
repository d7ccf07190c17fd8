"""bench_conv.py: its memory accounting, its conv swap and a tiny end-to-end run."""
import contextlib
import csv
import os

import torch
import torchvision

from tools import bench_conv

MB = 2 ** 20


def test_cpu_memory_accounting_matches_known_allocations():
    kept = []

    def forward():
        kept.append(torch.ones(MB // 4))  # 1 MB kept for "backward"
        return torch.ones(MB // 2)  # 2 MB result

    def backward(result):
        scratch = torch.ones(3 * MB // 4)  # 3 MB on top of the 3 MB held, freed on return
        kept.clear()
        return scratch.sum() + result.sum()

    held, peak = bench_conv.memory_mb(bench_conv.Case(None, forward, backward), torch.device("cpu"),
                                      contextlib.nullcontext)
    assert abs(held - 3) < 0.01 and abs(peak - 6) < 0.01, (held, peak)


def test_swap_convs_keeps_resnet_outputs_and_gradients():
    torch.manual_seed(0)
    native = torchvision.models.resnet18(num_classes=10)
    custom = torchvision.models.resnet18(num_classes=10)
    custom.load_state_dict(native.state_dict())
    bench_conv.swap_convs(custom)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in custom.modules())
    assert sum(isinstance(m, bench_conv.CustomConv2d) for m in custom.modules()) == 20
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)  # float64, 64x64: batch norm over few values amplifies rounding
    outputs = [model.double()(x) for model in (native, custom)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-9, atol=1e-9)
    for out in outputs:
        out.square().sum().backward()
    for custom_param, native_param in zip(custom.parameters(), native.parameters()):
        torch.testing.assert_close(custom_param.grad, native_param.grad, rtol=1e-7, atol=1e-9)


def test_tiny_run_writes_results_with_equal_held_memory(tmp_path):
    rows = bench_conv.main(["--nets", "simplenet", "--layers", "simplenet", "--batch-size", "2", "--img-size", "32",
                            "--repeats", "1", "--warmup", "0", "--threads", "1", "--device", "cpu",
                            "--out-dir", str(tmp_path)])
    with open(tmp_path / "conv_benchmark.csv", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert [r["kind"] for r in written] == ["layer"] * 7 + ["network"]  # SimpleNet's 7 distinct convolutions
    assert len(rows) == len(written)
    network = written[-1]
    assert float(network["native_held_mb"]) > 0
    assert float(network["held_ratio"]) == 1.0  # the custom op keeps exactly what native keeps
    assert all(float(r[k]) > 0 for r in written for k in ("native_train_ms", "custom_train_ms", "train_ratio"))
    assert "hardware: CPU" in open(os.path.join(tmp_path, "conv_benchmark.md"), encoding="utf-8").read()
    assert {r["precision"] for r in written} == {"fp32"}, "every row names its precision"


def test_native_and_custom_compute_alike(tmp_path, monkeypatch):
    """The rows are measured under TF32 flags set alike for cuDNN's convolutions (native) and
    cuBLAS's matrix products (custom): both off by default, both on with --tf32; PyTorch's own
    defaults (TF32 convolutions, fp32 matrix products) would compare TF32 with fp32. On a (faked)
    CUDA device the row says so; the flags are restored afterwards."""
    cuda = torch.device("cuda", 0)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    seen = []
    assert bench_conv.row_precision(torch.device("cpu"), torch.float64, None) == "fp64"

    def record(device, dtype, amp_dtype):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                     bench_conv.precision_name(cuda, amp_dtype)))
        return "fp32"

    monkeypatch.setattr(bench_conv, "row_precision", record)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        for flags in ([], ["--tf32"]):
            bench_conv.main(["--nets", "simplenet", "--layers", "", "--batch-size", "1", "--img-size", "16",
                             "--repeats", "1", "--warmup", "0", "--threads", "1", "--device", "cpu",
                             "--out-dir", str(tmp_path), *flags])
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [(False, False, "fp32"), (True, True, "tf32")]


def test_named_report_and_gpu_target_lines(tmp_path):
    bench_conv.main(["--nets", "simplenet", "--layers", "", "--batch-size", "2", "--img-size", "32", "--repeats", "1",
                     "--warmup", "0", "--threads", "1", "--device", "cpu", "--out-dir", str(tmp_path),
                     "--name", "conv_amp"])
    assert sorted(os.listdir(tmp_path)) == ["conv_amp.csv", "conv_amp.md"]
    text = open(tmp_path / "conv_amp.md", encoding="utf-8").read()
    assert "Target (GPU)" not in text, "a CPU run states no GPU target"
    rows = [dict(kind="layer", name="simplenet", threads=1, train_ratio=9.0),
            dict(kind="network", name="simplenet", threads=1, train_ratio=2.5),
            dict(kind="network", name="resnet18", threads=1, train_ratio=3.5)]
    assert bench_conv.target_lines(rows) == [
        "- Target (GPU): custom / native forward + backward time <= 3x on simplenet (threads 1): 2.50x, met",
        "- Target (GPU): custom / native forward + backward time <= 3x on resnet18 (threads 1): 3.50x, NOT met"]
