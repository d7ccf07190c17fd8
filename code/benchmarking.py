"""Helpers shared by the benchmark scripts and the experiment runner: the CPU's name and timing."""
import os
import platform
import time

import torch


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows (e.g. 'x86_64')."""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def synchronize(device):
    """Wait for the queued CUDA work of ``device``; nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device):
    """Wall time of ``fn()`` in milliseconds: CUDA events on a GPU, perf_counter on a CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0
