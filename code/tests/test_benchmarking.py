"""benchmarking.py: the CPU name every report prints and the timer the benchmarks share."""
import os
import time

import torch

import benchmarking


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
