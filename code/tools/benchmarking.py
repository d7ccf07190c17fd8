"""Helpers shared by the benchmark scripts and the experiment runner: the CPU's name, timing and
the command line a report records."""
import os
import platform
import shlex
import time

import torch

from tools import CODE_DIR, REPO_DIR


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows (e.g. 'x86_64')."""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def portable_path(arg):
    """An absolute path in a command line as a report records it: inside the repository relative
    to code/ (where the commands run), outside it ``<outside the repository>/<name>``; "--flag=PATH"
    likewise; any other argument unchanged. Reports hold no absolute paths."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    inside = os.path.commonpath([os.path.abspath(value), REPO_DIR]) == REPO_DIR
    value = os.path.relpath(value, CODE_DIR) if inside else f"<outside the repository>/{os.path.basename(value)}"
    return flag + eq + value


def command_line(script, argv):
    """``python -m tools.<script> <argv>`` as one line to paste into a shell in code/, for a
    report: arguments are quoted only where the shell needs it, in double quotes when they hold a
    single quote and nothing that the shell expands inside double quotes (shlex.quote writes
    ``'"'"'`` for it). ``script`` (a file name or path) is reduced to its module name, absolute
    paths as portable_path says."""
    def word(arg):
        arg = portable_path(arg)
        if "'" in arg and not any(c in arg for c in '"$`\\!'):
            return f'"{arg}"'
        return shlex.quote(arg)
    module = os.path.splitext(os.path.basename(script))[0]
    return " ".join(["python", "-m", f"tools.{module}"] + [word(a) for a in argv])


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
