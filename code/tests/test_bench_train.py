"""bench_train.py: a tiny CPU run end to end, the recorded command line and the GPU target line."""
import pytest

import bench_train


def test_tiny_cpu_run_writes_its_report(tmp_path):
    out = tmp_path / "throughput.md"
    bench_train.main(["--models", "SimpleNet", "--batch-size", "2", "--img-size", "32", "--steps", "1",
                      "--warmup", "0", "--repeats", "1", "--device", "cpu", "--out", str(out),
                      "--note", "engineers' jobs"])
    text = out.read_text()
    assert ("- Command: `python bench_train.py --models SimpleNet --batch-size 2 --img-size 32 --steps 1 --warmup 0 "
            f"--repeats 1 --device cpu --out {out} --note \"engineers' jobs\"` (from `code/`)") in text
    assert "Hardware: CPU" in text and "Target (GPU)" not in text
    assert text.count("| SimpleNet |") == 2


def test_target_line_on_the_improved_cnn():
    results = {("SceneResNet", "fp32"): [(100.0, None), (110.0, None), (90.0, None)],
               ("SceneResNet", "amp_cl"): [(250.0, None), (150.0, None), (200.0, None)]}
    assert bench_train.default_cnn_model.__name__ == "SceneResNet"
    assert bench_train.speedup(results, "SceneResNet") == pytest.approx(200 / 90)
    assert bench_train.target_line(results, ["SceneResNet"]) == (
        "- Target (GPU): AMP + channels_last >= 2x fp32 images/s on SceneResNet (the improved CNN): 2.22x, met")
    results[("SceneResNet", "amp_cl")] = [(150.0, None)] * 3
    assert bench_train.target_line(results, ["SceneResNet"]).endswith("1.50x, NOT met")
    assert bench_train.target_line(results, ["SimpleNet"]) is None
