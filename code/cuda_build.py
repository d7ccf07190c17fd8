"""Which torch build fits this machine's NVIDIA GPUs and driver, and why an installed torch cannot use them.

Standard library only: setup.sh runs it with the system python3 before the virtual environment holds torch.

    python3 code/cuda_build.py --python .venv/bin/python   # install the build (one line says which and why)
    python3 code/cuda_build.py --dry-run                   # print the install command instead
    TORCH_BUILD=cu126 bash setup.sh                        # override: auto, default, cpu, cu126, cu130, cu132

main.py and gpu_check.sh call :func:`gpu_problem` (with torch): one line naming the GPU, the torch build,
the driver and the command that fixes it, for a machine whose NVIDIA GPU the installed torch cannot use.

The facts (README, "GPU machines", gives the sources):
- torch 2.14.1 has three CUDA builds: cu126, cu130 (the one PyPI serves on Linux x86_64) and cu132.
- Their kernels: cu126 sm_50 ... sm_90 (Maxwell to Hopper, Volta included); cu130 and cu132 sm_75 ...
  sm_120 (Turing to Blackwell, no Volta). torch 2.14.1's own table: torch.cuda.PYTORCH_RELEASES_CODE_CC.
- A kernel built for sm_XY runs on GPUs of compute capability X.y with y >= Y (the embedded 5.3, 6.2,
  7.2, 8.7 excepted); PTX (compute_XY) on every capability >= X.Y.
- CUDA 12.x runs on NVIDIA drivers >= 525.60.13, CUDA 13.x on drivers >= 580 (CUDA's minor-version
  compatibility).
"""
import argparse
import collections
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys

TORCH, TORCHVISION = "2.14.1", "0.29.1"  # requirements.txt's pins (a test keeps them in step)
INDEX = "https://download.pytorch.org/whl/"
EMBEDDED = {(5, 3), (6, 2), (7, 2), (8, 7), (10, 1), (11, 0)}  # Jetson / Thor: only their own kernels run there

Build = collections.namedtuple("Build", "tag cuda min_driver kernels")  # kernels: machine -> arch list
_CUDA13 = {"x86_64": "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120".split(),
           "aarch64": "sm_80 sm_90 sm_100 sm_110 sm_120".split()}
BUILDS = {
    "cu130": Build("cu130", "13.0", (580,), _CUDA13),
    "cu126": Build("cu126", "12.6", (525, 60, 13), {"x86_64": "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90".split(),
                                                    "aarch64": "sm_80 sm_90".split()}),
    "cu132": Build("cu132", "13.2", (580,), _CUDA13),
    "cpu": Build("cpu", None, None, {}),
}
AUTO_ORDER = ("cu130", "cu126")  # PyPI's own build where it fits; else the one for Volta and drivers 525-579
MIN_DRIVER = {"12": (525, 60, 13), "13": (580,)}  # CUDA major version -> the oldest driver that runs it
CHOICES = ("auto", "default") + tuple(BUILDS)

Gpu = collections.namedtuple("Gpu", "name capability driver")  # capability: (major, minor)


class NoBuild(Exception):
    """No torch build has kernels for every GPU and runs on the driver: the message says what to do."""


def version_tuple(text):
    """'535.104.05' -> (535, 104, 5)."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


def query_gpus():
    """(GPUs nvidia-smi lists, a note on how it went): ([], 'nvidia-smi not on PATH') without one."""
    if shutil.which("nvidia-smi") is None:
        return [], "nvidia-smi not on PATH"
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi failed ({e})"
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        message = (lines or done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        return [], ("nvidia-smi found no GPU" if "No devices were found" in message
                    else f"nvidia-smi failed: {message}")
    gpus = []
    for line in lines:
        name, capability, driver = (field.strip() for field in line.rsplit(",", 2))
        gpus.append(Gpu(name, version_tuple(capability)[:2], driver))
    return gpus, f"nvidia-smi lists {len(gpus)} GPU(s)"


def covers(arch_list, capability):
    """Whether kernels ``arch_list`` (torch.cuda.get_arch_list()'s form: 'sm_86', 'sm_90a', 'compute_90') run on
    a GPU of ``capability`` (major, minor)."""
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = number.rstrip("af")
        code = (int(digits[:-1]), int(digits[-1]))  # 'sm_120' -> (12, 0)
        if kind == "compute" and tuple(capability) >= code:
            return True
        same_family = (capability[0] == code[0] and capability[1] >= code[1] and tuple(capability) not in EMBEDDED
                       and not number.endswith("a"))
        if kind == "sm" and (tuple(capability) == code or same_family):
            return True
    return False


def describe(gpus):
    """'2x NVIDIA A100-SXM4-80GB (8.0), Tesla V100-SXM2-16GB (7.0)'."""
    counts = collections.Counter((g.name, g.capability) for g in gpus)
    return ", ".join(f"{n}x " * (n > 1) + f"{name} ({cap[0]}.{cap[1]})" for (name, cap), n in counts.items())


def misfit(build, gpus, machine):
    """Why ``build`` does not fit ``gpus`` (its kernels, then its driver), or '' when it does."""
    missing = [g for g in gpus if not covers(build.kernels.get(machine, ()), g.capability)]
    if missing:
        return f"{build.tag} has no kernels for {describe(missing)}"
    driver = min(version_tuple(g.driver) for g in gpus)
    if driver and driver < build.min_driver:  # () : the driver is unknown
        need = ".".join(map(str, build.min_driver))
        return f"{build.tag} (CUDA {build.cuda}) needs driver >= {need}, this one is {gpus[0].driver}"
    return ""


def choose(gpus, note="", machine=None, override="auto"):
    """(Build to install, or None for requirements.txt's plain install; the reason, one line).

    ``gpus``: :func:`query_gpus`' list (``note`` says how it went). ``override``: TORCH_BUILD's value ("auto":
    decide; "default": the plain install; a tag: that build). Raises NoBuild when no build fits."""
    machine = machine or platform.machine().lower()
    if override not in CHOICES:
        raise NoBuild(f"TORCH_BUILD={override}: choose one of {', '.join(CHOICES)}")
    if override == "default":
        return None, "TORCH_BUILD=default: requirements.txt's plain install (your choice)"
    if override != "auto":
        build = BUILDS[override]
        caveat = misfit(build, gpus, machine) if gpus and build.cuda else ""
        return build, f"TORCH_BUILD={override} (your choice)" + (f"; note: {caveat}" if caveat else "")
    if not gpus:
        return None, f"no NVIDIA GPU ({note}): requirements.txt's plain install"
    reasons = []
    for tag in AUTO_ORDER:
        why_not = misfit(BUILDS[tag], gpus, machine)
        if not why_not:
            build = BUILDS[tag]
            fits = (f"{tag} covers {describe(gpus)} and its CUDA {build.cuda} runs on driver {gpus[0].driver}"
                    f" (>= {'.'.join(map(str, build.min_driver))})")
            return build, "; ".join(reasons + [fits])
        reasons.append(why_not)
    update = any("driver" in reason for reason in reasons)
    driver = "update the NVIDIA driver (CUDA 12: >= 525.60.13, CUDA 13: >= 580), or " * update
    raise NoBuild(f"no CUDA build of torch {TORCH} fits {describe(gpus)} with driver {gpus[0].driver}: "
                  f"{'; '.join(reasons)}; {driver}pick a build with TORCH_BUILD=cu126|cu130|cpu (and the GPUs it "
                  "covers with CUDA_VISIBLE_DEVICES; README, GPU machines)")


def pip_install(build, python="python"):
    """The command that installs torch and torchvision of ``build`` from PyTorch's index (argv list)."""
    return [python, "-m", "pip", "install", f"torch=={TORCH}+{build.tag}", f"torchvision=={TORCHVISION}+{build.tag}",
            "--index-url", INDEX + build.tag]


def installed_torch(python):
    """``torch.__version__`` in the environment of interpreter ``python`` (read from torch/version.py
    without importing torch), or None."""
    if not python or not os.path.exists(python):
        return None
    find = "import importlib.util as u; s = u.find_spec('torch'); print(s.origin if s else '')"
    try:
        origin = subprocess.run([python, "-c", find], capture_output=True, text=True, timeout=120).stdout.strip()
        with open(os.path.join(os.path.dirname(origin), "version.py")) as f:
            match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", f.read())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return match.group(1) if match else None


def gpu_problem(torch, index=0, query=query_gpus):
    """None when ``torch`` (the module) can use CUDA device ``index``, or the machine has no NVIDIA GPU (no
    nvidia-smi, or it lists none); else one line: the GPU, the torch build, the driver, why torch cannot use
    it and the command that fixes it (or nvidia-smi's failure)."""
    build = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        if not 0 <= index < torch.cuda.device_count():
            return None  # a bad --gpu index: the caller names it
        capability, arch_list = tuple(torch.cuda.get_device_capability(index)), torch.cuda.get_arch_list()
        if not arch_list or covers(arch_list, capability):
            return None
        gpus, _ = query()
        gpu = Gpu(torch.cuda.get_device_name(index), capability, gpus[0].driver if gpus else "unknown")
        why = (f"{build} has no kernels for compute capability {capability[0]}.{capability[1]} "
               f"(it has {' '.join(arch_list)})")
    else:
        gpus, note = query()
        if not gpus and note.startswith("nvidia-smi failed"):  # an NVIDIA driver is installed, and broken
            return f"{note}; fix: the NVIDIA driver (nvidia-smi must list the GPU)"
        if not gpus:
            return None
        gpu = gpus[index] if index < len(gpus) else gpus[0]
        cuda = torch.version.cuda
        need = MIN_DRIVER.get(cuda.split(".")[0]) if cuda else None
        if cuda is None:
            why = f"{build} is built without CUDA"
        elif need and version_tuple(gpu.driver) < need:
            why = f"{build} uses CUDA {cuda}, which needs driver >= {'.'.join(map(str, need))}"
        else:
            hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
            why = (f"torch.cuda.is_available() is False with {build}"
                   + (f" and CUDA_VISIBLE_DEVICES={hidden!r}" if hidden is not None else ""))
    gpus = gpus or [gpu]
    try:
        fit, _ = choose(gpus)
        fix = shlex.join(pip_install(fit, sys.executable))
        if f"+{fit.tag}" in torch.__version__:  # the right build is installed: CUDA itself fails
            fix = f"{shlex.quote(sys.executable)} -c 'import torch; torch.cuda.init()' shows CUDA's own error"
    except NoBuild as e:
        fix = str(e)
    return (f"{gpu.name} (compute capability {gpu.capability[0]}.{gpu.capability[1]}, driver {gpu.driver}): "
            f"{why}; fix: {fix}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Install the torch build that fits this machine's NVIDIA GPUs.")
    parser.add_argument("--build", default=os.environ.get("TORCH_BUILD") or "auto",
                        help=f"one of {', '.join(CHOICES)} (default: $TORCH_BUILD, else auto)")
    parser.add_argument("--python", default=None, help="the interpreter to install into (its torch is checked first)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    try:
        gpus, note = query_gpus() if args.build not in ("default", "cpu") else ([], "")
        build, reason = choose(gpus, note, override=args.build)
    except NoBuild as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    installed = installed_torch(args.python) if build else None
    done = build is not None and installed == f"{TORCH}+{build.tag}"
    print(f"=> torch build: {build.tag if build else 'default'}{' (installed)' * done}: {reason}", file=sys.stderr,
          flush=True)
    if build is None or done:
        return 0
    command = pip_install(build, args.python or "python")
    if args.dry_run:
        print(shlex.join(command))
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
