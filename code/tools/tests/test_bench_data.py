"""bench_data.py: a tiny run end to end writes every row, the ratios and the targets."""
import os
import re

from tools import bench_data


def test_tiny_run_writes_every_pipeline_and_the_targets(demo_data, tmp_path):
    out = tmp_path / "data_pipeline.md"
    bench_data.main(["--data", demo_data, "--cache-dir", str(tmp_path / "cache"), "--images", "8", "--rounds", "1",
                     "--workers", "1", "--batch-size", "16", "--out", str(out)])
    text = out.read_text()
    assert "the generated demo set (not MiniPlaces)" in text and "Command: `python -m tools.bench_data --data" in text
    for name in bench_data.PIPELINES:
        assert re.search(rf"^\| {re.escape(name)} \| [0-9,]+ \(", text, re.M), name
    assert "| course | " in text and "(1.00x)" in text
    for row in ("constant image, transfer only", "course, decode", "warp, decode", "warp, cached",
                "torchvision-v2, decode"):
        assert re.search(rf"^\| {re.escape(row)} \| [0-9,]+ \([0-9.]+x\) \|$", text, re.M), row
    assert re.search(r"Targets: .*measured [0-9.]+x; rounds [0-9.]+x to [0-9.]+x\).*measured [0-9.]+x; rounds", text)
    for row in ("JPEG decode, one core", "warp with JPEG decode, one core",
                "decoded-cache build of the train split (64 images, one process)"):
        assert re.search(rf"^\| {re.escape(row)} \| [0-9,]+ \| [0-9,]+ \| [+-][0-9.]+% \(rounds [+-][0-9.]+% to "
                         r"[+-][0-9.]+%\) \|$", text, re.M), row
    assert sorted(os.listdir(tmp_path / "cache")) == ["decoded_train.cache"], "the builds' files removed"


def test_every_pipeline_ends_in_a_model_input(demo_data):
    import numpy as np
    import torch

    img = np.full((128, 128, 3), 100, dtype=np.uint8)
    for name, build in bench_data.PIPELINES.items():
        x = build()(torch.from_numpy(img).permute(2, 0, 1).contiguous() if name == "torchvision-v2" else img)
        assert x.shape == (3, 128, 128), name
        assert x.dtype == (torch.uint8 if name == "warp" else torch.float32), name


def test_ratios_pair_the_rows_of_each_round():
    rates = {"a": [100.0, 300.0, 200.0], "ref": [10.0, 30.0, 40.0]}  # the machine sped up, then one slow round
    assert bench_data.ratio(rates, "a", "ref") == 10.0, "median of the per-round ratios, not 200 / 30"
    assert bench_data.cell(rates, "a", "ref") == "200 (10.00x)" and bench_data.cell(rates, "b", "ref") == "-"
    assert bench_data.target(rates, "a", "ref") == "10.00x; rounds 5.00x to 10.00x"
