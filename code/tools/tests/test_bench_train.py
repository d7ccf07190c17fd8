"""bench_train.py: a tiny CPU run end to end, the recorded command line and the GPU target line."""
import pytest
import torch

from tools import bench_train


def test_tiny_cpu_run_writes_its_report(tmp_path):
    out = tmp_path / "throughput.md"
    bench_train.main(["--models", "SimpleNet", "--batch-size", "2", "--img-size", "32", "--steps", "1",
                      "--warmup", "0", "--repeats", "1", "--device", "cpu", "--out", str(out),
                      "--note", "engineers' jobs"])
    text = out.read_text()
    assert ("- Command: `python -m tools.bench_train --models SimpleNet --batch-size 2 --img-size 32 --steps 1 "
            "--warmup 0 --repeats 1 --device cpu --out '<outside the repository>/throughput.md' --note \"engineers' jobs\"` "
            "(from `code/`)") in text
    assert "Hardware: CPU" in text and "Target (GPU)" not in text
    rows = [ln.split(" | ")[2:4] for ln in text.splitlines() if ln.startswith("| SimpleNet |")]
    assert rows == [["starter", "fp32"], ["amp_cl", "bf16"]], "each row names its precision; no TF32 on a CPU"
    assert "cuDNN convolutions in TF32" in text, "the table says what the starter's loop is on a GPU"


def test_target_line_on_the_improved_cnn():
    results = {("SceneResNet", "starter"): [(100.0, None), (110.0, None), (90.0, None)],
               ("SceneResNet", "amp_cl"): [(250.0, None), (150.0, None), (200.0, None)]}
    assert bench_train.default_cnn_model.__name__ == "SceneResNet"
    assert bench_train.speedup(results, "SceneResNet") == pytest.approx(200 / 90)
    assert bench_train.target_line(results, ["SceneResNet"]) == (
        "- Target (GPU): AMP + channels_last >= 2x the starter loop's images/s (TF32 convolutions) on SceneResNet "
        "(the improved CNN): 2.22x, met")
    results[("SceneResNet", "fp32")] = [(50.0, None)] * 3
    assert bench_train.target_line(results, ["SceneResNet"]).endswith("2.22x, met; against true fp32: 4.00x")
    results[("SceneResNet", "amp_cl")] = [(150.0, None)] * 3
    assert "1.50x, NOT met" in bench_train.target_line(results, ["SceneResNet"])
    assert bench_train.target_line(results, ["SimpleNet"]) is None


def test_row_precision_comes_from_the_backend_flags():
    """On a (faked) CUDA device with PyTorch's default flags the starter's loop is TF32 for
    convolutions, the fp32 loop true fp32 whatever the flags, AMP its autocast dtype."""
    cuda = torch.device("cuda", 0)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        assert bench_train.loops(cuda) == ("starter", "fp32", "amp_cl")
        assert [bench_train.loop_precision(loop, cuda, torch.float16) for loop in bench_train.loops(cuda)] == [
            "tf32 conv, fp32 matmul", "fp32", "fp16"]
        assert torch.backends.cudnn.allow_tf32, "the fp32 loop restores the flags"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert bench_train.loop_precision("starter", cuda, torch.bfloat16) == "tf32"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert bench_train.loops(torch.device("cpu")) == ("starter", "amp_cl")


def test_recorded_paths_are_relative_to_the_repository():
    """benchmarking.command_line: an --out-dir inside the repository is recorded relative to code/
    (where the commands run), one elsewhere by its name only: no report holds an absolute path."""
    import os

    from tools import REPO_DIR
    from tools.benchmarking import command_line

    results = os.path.join(REPO_DIR, "results", "conv_benchmark_layers_2threads")
    assert command_line("bench_conv.py", ["--threads", "2", "--out-dir", results, f"--out={results}/x.md"]) == (
        "python -m tools.bench_conv --threads 2 --out-dir ../results/conv_benchmark_layers_2threads "
        "--out=../results/conv_benchmark_layers_2threads/x.md")
    outside = os.path.join(os.sep, "tmp", "convq")
    assert command_line("bench_conv.py", ["--out-dir", outside, "--note", "a/b"]) == (
        "python -m tools.bench_conv --out-dir '<outside the repository>/convq' --note a/b")
