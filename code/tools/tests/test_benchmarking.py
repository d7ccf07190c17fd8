"""benchmarking.py: the CPU name every report prints, the timer the benchmarks share and the
command line they record."""
import os
import shlex
import time

import torch

from tools import benchmarking


def test_cpu_model_reads_proc_cpuinfo():
    name = benchmarking.cpu_model()
    assert isinstance(name, str) and name
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        assert name == (models[0] if models else name)


def test_time_ms_measures_the_call_in_milliseconds():
    calls = []
    elapsed = benchmarking.time_ms(lambda: (calls.append(1), time.sleep(0.02)), torch.device("cpu"))
    assert calls == [1] and 20.0 <= elapsed < 20_000.0
    benchmarking.synchronize(torch.device("cpu"))


def test_command_line_is_readable_and_pastes_back():
    argv = ["--batch-size", "8", "--note", "2-core VM shared with 4 other engineers' jobs: CPU figures are noisy",
            "--out", "a b.md", "--tag", "it's $HOME", "--plain", ""]
    line = benchmarking.command_line("/some/where/bench_train.py", argv)
    assert line == ("python -m tools.bench_train --batch-size 8 --note \"2-core VM shared with 4 other engineers' "
                    "jobs: CPU figures are noisy\" --out 'a b.md' --tag 'it'\"'\"'s $HOME' --plain ''")
    assert shlex.split(line) == ["python", "-m", "tools.bench_train", *argv]


def test_bench_train_records_its_own_arguments(monkeypatch):
    from tools import bench_train

    monkeypatch.setattr(bench_train.sys, "argv", ["pytest", "-q"])
    args = bench_train.parse_args(["--note", "engineers' jobs", "--device", "cpu"])
    assert args.argv == ["--note", "engineers' jobs", "--device", "cpu"]
