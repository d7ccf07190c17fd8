"""bench_conv.py: its memory accounting, its conv swap and a tiny end-to-end run."""
import contextlib
import csv
import os

import pytest
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


def test_factors_split_the_custom_op_into_parts_that_add_up(tmp_path):
    import student_code

    patched = (student_code._Im2Col.im2col, student_code.CustomConv2DFunction.forward, torch.mm)
    rows = bench_conv.main(["--factors", "--batch-size", "2", "--img-size", "32", "--repeats", "1", "--warmup", "0",
                            "--threads", "1", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert (student_code._Im2Col.im2col, student_code.CustomConv2DFunction.forward, torch.mm) == patched, \
        "the timers are removed afterwards"
    assert "addmm_" not in torch.Tensor.__dict__, "Tensor.addmm_ is torch's own again"
    layers, total = rows[:-1], rows[-1]
    assert len(layers) == 7 and total["name"] == "simplenet (all convolutions)" and total["count"] == 7
    first = layers[0]
    assert first["custom_fwd_unfold_ms"] > 0 and first["custom_fwd_gemm_ms"] > 0 and first["custom_bwd_gemm_ms"] > 0
    assert first["custom_bwd_col2im_ms"] == 0, "the image's gradient is not needed: no col2im"
    assert layers[2]["custom_bwd_col2im_ms"] > 0 and layers[2]["custom_bwd_unfold_ms"] > 0, "a 3x3 layer's backward"
    assert layers[1]["chunk_samples"] is None, "1x1: the input is the columns, a view"
    assert layers[1]["custom_fwd_unfold_ms"] < layers[1]["custom_fwd_gemm_ms"]
    summed = sum(r[k] for r in layers for k in bench_conv.FACTOR_SUMMED)
    assert summed == pytest.approx(sum(total[k] for k in bench_conv.FACTOR_SUMMED))
    for r in layers[1:]:
        assert r["custom_saved_mb"] == pytest.approx(r["native_saved_mb"], rel=0.01) and r["custom_saved_new_mb"] == 0, \
            "both keep the input and the weight, no copy"
    assert first["custom_saved_mb"] < first["native_saved_mb"], "the image needs no gradient: no weight kept for it"
    assert first["gpu_chunk_samples"] == bench_conv.GPU_BATCH == 256, "a GPU unfolds every sample at once"
    assert first["gpu_chunk_mb"] == pytest.approx(256 * 16 * 16 * 7 * 7 * 3 * 4 / 2 ** 20)
    with open(tmp_path / "conv_factors.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert "hardware: CPU" in (tmp_path / "conv_factors.md").read_text()


def test_phase_timer_counts_each_part_where_it_runs():
    timer = bench_conv.PhaseTimer(torch.device("cpu"))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    with timer:
        out = bench_conv.custom_conv2d(x, w, None, 1, 1)
        torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # outside the op: not counted
        out.sum().backward()
    parts = timer.parts()
    assert set(parts) == set(bench_conv.FACTOR_PARTS)
    assert all(ms >= 0 for ms in parts.values()) and parts["fwd", "unfold"] > 0 and parts["bwd", "col2im"] > 0
    assert sum(parts.values()) == pytest.approx(timer.times["fwd", "total"] + timer.times["bwd", "total"])
