"""The torch build for the machine (setup.sh, code/cuda_build.py) and never a silent CPU run (main.py,
gpu_check.sh), with a fake ``nvidia-smi`` first on PATH and torch.cuda's device queries monkeypatched.
Nothing is downloaded: the install commands are printed (--dry-run) and compared."""
import ast
import os
import platform
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import cuda_build
import main as driver
from tools import CODE_DIR as CODE, REPO_DIR as ROOT

V100, T4 = "Tesla V100-SXM2-16GB, 7.0, 535.104.05", "Tesla T4, 7.5, 550.54.15"  # nvidia-smi's CSV lines
H100 = "NVIDIA H100 80GB HBM3, 9.0, 580.65.06"
CU126 = ("python -m pip install torch==2.14.1+cu126 torchvision==0.29.1+cu126 "
         "--index-url https://download.pytorch.org/whl/cu126")
CU130 = CU126.replace("cu126", "cu130")
x86_only = pytest.mark.skipif(platform.machine().lower() != "x86_64", reason="the x86_64 builds' kernels")


def fake_smi(tmp_path, *gpus, fail=None):
    """A folder holding an ``nvidia-smi`` that lists ``gpus`` (its --query-gpu CSV lines), or prints ``fail`` and
    exits 9; without either, "No devices were found" (exit 6). Returns the folder: put it first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    text = "".join(f"{line}\n" for line in gpus) if gpus else f"{fail or 'No devices were found'}\n"
    (folder / "gpus.txt").write_text(text)
    smi = folder / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\nwhile IFS= read -r line; do printf "%s\\n" "$line"; done < "{folder / "gpus.txt"}"\n'
                   f'exit {0 if gpus else 9 if fail else 6}\n')  # shell builtins only: PATH may hold nothing else
    smi.chmod(0o755)
    return str(folder)


def choose(tmp_path, *gpus, build="auto", python="/nonexistent/python", fail=None, no_smi=False):
    """Run ``cuda_build.py --dry-run`` with only the fake nvidia-smi (or none) on PATH: (exit status, the
    printed install command, the one line on stderr)."""
    path = str(tmp_path / "empty") if no_smi else fake_smi(tmp_path, *gpus, fail=fail)
    os.makedirs(path, exist_ok=True)
    res = subprocess.run([sys.executable, os.path.join(CODE, "cuda_build.py"), "--dry-run", "--python", python],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PATH=path, TORCH_BUILD=build))
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return res.returncode, res.stdout.strip().replace("/nonexistent/python", "python"), lines[0]


@x86_only
@pytest.mark.parametrize("gpus, command, reason", [
    ((V100,), CU126, "cu130 has no kernels for Tesla V100-SXM2-16GB (7.0)"),
    ((T4,), CU126, "cu130 (CUDA 13.0) needs driver >= 580, this one is 550.54.15"),
    ((H100,), CU130, "cu130 covers NVIDIA H100 80GB HBM3 (9.0) and its CUDA 13.0 runs on driver 580.65.06"),
    (("NVIDIA A10G, 8.6, 570.133.20",), CU126, "cu126 covers NVIDIA A10G (8.6)"),
    (("NVIDIA L4, 8.9, 525.60.13",), CU126, "runs on driver 525.60.13 (>= 525.60.13)"),
    (("NVIDIA L4, 8.9, 580.95.05",), CU130, "cu130 covers NVIDIA L4 (8.9)"),
    (("NVIDIA A100-SXM4-80GB, 8.0, 535.54.03",) * 2, CU126, "cu126 covers 2x NVIDIA A100-SXM4-80GB (8.0)"),
    ((V100, H100.replace("580.65.06", "550.54.15")), CU126, "Tesla V100-SXM2-16GB (7.0), NVIDIA H100 80GB HBM3 (9.0)"),
])
def test_a_machine_with_gpus_gets_the_build_that_covers_them_and_runs_on_its_driver(tmp_path, gpus, command, reason):
    status, printed, line = choose(tmp_path, *gpus)
    assert status == 0 and printed == command
    tag = command.rsplit("/", 1)[1]
    assert line.startswith(f"=> torch build: {tag}: ") and reason in line


@pytest.mark.parametrize("case", ["no nvidia-smi", "no GPU", "no driver"])
def test_without_a_gpu_the_plain_install_stays(tmp_path, case):
    status, printed, line = choose(tmp_path, no_smi=case == "no nvidia-smi",
                                   fail="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
                                   if case == "no driver" else None)
    assert status == 0 and printed == ""
    assert line.startswith("=> torch build: default: no NVIDIA GPU (") and "requirements.txt's plain install" in line
    assert {"no nvidia-smi": "nvidia-smi not on PATH", "no GPU": "nvidia-smi found no GPU",
            "no driver": "couldn't communicate"}[case] in line


@x86_only
@pytest.mark.parametrize("gpus, why", [
    (("NVIDIA A10G, 8.6, 470.82.01",), "cu126 (CUDA 12.6) needs driver >= 525.60.13, this one is 470.82.01"),
    (("NVIDIA A100-SXM4-40GB, 8.0, 525.53",), "cu126 (CUDA 12.6) needs driver >= 525.60.13, this one is 525.53"),
    (("NVIDIA B200, 10.0, 570.133.20",), "cu126 has no kernels for NVIDIA B200 (10.0)"),
    ((V100.replace("535.104.05", "580.65.06"), "NVIDIA B200, 10.0, 580.65.06"), "cu130 has no kernels for Tesla V100"),
])
def test_no_build_fits_stops_with_what_to_do(tmp_path, gpus, why):
    status, printed, line = choose(tmp_path, *gpus)
    assert status == 2 and printed == ""
    assert line.startswith("error: no CUDA build of torch 2.14.1 fits ") and why in line and "TORCH_BUILD=" in line
    assert ("update the NVIDIA driver" in line) == ("driver >=" in why or "B200, 10.0, 570" in gpus[0])


@x86_only
def test_torch_build_overrides_the_choice(tmp_path):
    status, printed, line = choose(tmp_path, T4, build="cu130")
    assert (status, printed) == (0, CU130)
    assert line == ("=> torch build: cu130: TORCH_BUILD=cu130 (your choice); note: cu130 (CUDA 13.0) needs driver "
                    ">= 580, this one is 550.54.15")
    assert choose(tmp_path, V100, build="cpu")[1] == CU126.replace("cu126", "cpu")
    status, printed, line = choose(tmp_path, V100, build="default")
    assert (status, printed) == (0, "") and "plain install (your choice)" in line
    status, _, line = choose(tmp_path, V100, build="cu118")
    assert status == 2 and line == "error: TORCH_BUILD=cu118: choose one of auto, default, cu130, cu126, cu132, cpu"


@x86_only
def test_the_right_build_installed_is_kept_another_is_replaced(tmp_path):
    """The environment's torch is read from its torch/version.py (a stand-in package here)."""
    site = tmp_path / "site" / "torch"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("raise ImportError('torch is not imported to read its version')\n")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    for installed, gpu, expected in [("2.14.1+cu126", V100, ""), ("2.14.1+cu130", V100, CU126),
                                     ("2.14.1+cu130", H100, ""), ("2.13.0+cu126", V100, CU126)]:
        (site / "version.py").write_text(f"__version__ = '{installed}'\ncuda = '12.6'\n")
        status, printed, line = choose(tmp_path, gpu, python=str(python))
        assert status == 0 and printed == expected.replace("python -m", f"{python} -m"), installed
        assert ("(installed)" in line) == (expected == "")


@x86_only
def test_setup_sh_installs_the_chosen_build_first(tmp_path):
    res = subprocess.run(["bash", os.path.join(ROOT, "setup.sh"), "--dry-run"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PATH=f"{fake_smi(tmp_path, V100)}:{os.environ['PATH']}",
                                              PYTHON=sys.executable, TORCH_BUILD=""))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [CU126.replace("python -m", ".venv/bin/python -m"),
                                       ".venv/bin/python -m pip install -r requirements.txt"]
    assert res.stderr.startswith("=> torch build: cu126: cu130 has no kernels for Tesla V100-SXM2-16GB (7.0)")


def test_pins_match_requirements_txt():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", f.read(), re.M))
    assert (pins["torch"], pins["torchvision"]) == (cuda_build.TORCH, cuda_build.TORCHVISION)


def test_cuda_build_needs_only_the_standard_library():
    """setup.sh runs it with the system python3, before torch is installed."""
    with open(os.path.join(CODE, "cuda_build.py")) as f:
        tree = ast.parse(f.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


@pytest.mark.skipif(not hasattr(torch.cuda, "PYTORCH_RELEASES_CODE_CC"), reason="torch's table of its builds")
def test_the_builds_kernels_are_torchs_own_table():
    for build in ("cu126", "cu130", "cu132"):
        for machine, arch_list in cuda_build.BUILDS[build].kernels.items():
            codes = {int(arch[3:]) for arch in arch_list}
            table = torch.cuda.PYTORCH_RELEASES_CODE_CC[cuda_build.BUILDS[build].cuda]
            assert codes == table[machine], (build, machine)


@x86_only
@pytest.mark.skipif(torch.version.cuda != "13.0" or "+" in torch.__version__ and "+cu130" not in torch.__version__,
                    reason="the installed torch is PyPI's CUDA 13.0 build")
def test_the_installed_pypi_build_has_the_kernels_we_list():
    assert torch.cuda.get_arch_list() == cuda_build.BUILDS["cu130"].kernels["x86_64"]


@pytest.mark.skipif(not hasattr(torch.cuda, "_code_compatible_with_device") or torch.version.cuda is None,
                    reason="torch's own rule")
def test_kernel_coverage_is_torchs_rule():
    devices = [(5, 0), (5, 2), (5, 3), (6, 0), (6, 1), (6, 2), (7, 0), (7, 2), (7, 5), (8, 0), (8, 6), (8, 7), (8, 9),
               (9, 0), (10, 0), (10, 3), (12, 0), (12, 1)]
    for code in (50, 60, 70, 75, 80, 86, 90, 100, 120):
        for major, minor in devices:
            ours = cuda_build.covers([f"sm_{code}"], (major, minor))
            assert ours == torch.cuda._code_compatible_with_device(10 * major + minor, code), (code, major, minor)
    assert cuda_build.covers(["sm_90a"], (9, 0)) and not cuda_build.covers(["sm_90a"], (9, 1))
    assert cuda_build.covers(["compute_90"], (12, 0)) and not cuda_build.covers(["compute_90"], (8, 9))


# ---- main.py and gpu_check.sh: a GPU that torch cannot use stops the run ------------------------------------

def fake_cuda(monkeypatch, tmp_path, smi_line, available, capability=None, arch_list=(), cuda="13.0",
              version="2.14.1+cu130"):
    """torch.cuda's answers for one GPU (``available``: what is_available() says), and nvidia-smi's line."""
    monkeypatch.setenv("PATH", f"{fake_smi(tmp_path, smi_line)}:{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(available))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: smi_line.split(",")[0])
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch, "__version__", version)


def stopped_line(demo_data, capsys, *flags):
    with pytest.raises(SystemExit) as stop:
        driver.cli([demo_data, *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


@x86_only
def test_main_stops_on_a_gpu_without_kernels(demo_data, tmp_path, monkeypatch, capsys):
    """A V100 with PyPI's CUDA 13.0 build: CUDA is available, its kernels are not."""
    fake_cuda(monkeypatch, tmp_path, V100, True, (7, 0), cuda_build.BUILDS["cu130"].kernels["x86_64"])
    line = stopped_line(demo_data, capsys)
    assert line == (f"error: Tesla V100-SXM2-16GB (compute capability 7.0, driver 535.104.05): torch 2.14.1+cu130 "
                    f"has no kernels for compute capability 7.0 (it has sm_75 sm_80 sm_86 sm_90 sm_100 sm_120); fix: "
                    f"{CU126.replace('python', sys.executable, 1)}; or --device cpu to run on the CPU")


@x86_only
def test_main_stops_on_a_driver_too_old_for_torchs_cuda(demo_data, tmp_path, monkeypatch, capsys):
    """A T4 on driver 550 with the CUDA 13.0 build: torch.cuda.is_available() is False."""
    fake_cuda(monkeypatch, tmp_path, T4, False)
    line = stopped_line(demo_data, capsys, "--epochs", "1")
    assert line.startswith("error: Tesla T4 (compute capability 7.5, driver 550.54.15): torch 2.14.1+cu130 uses CUDA "
                           "13.0, which needs driver >= 580; fix: ")
    assert line.endswith(f"{CU126.replace('python', sys.executable, 1)}; or --device cpu to run on the CPU")


@pytest.mark.parametrize("cuda, version, why", [
    (None, "2.14.1+cpu", "torch 2.14.1+cpu is built without CUDA"),
    ("13.0", "2.14.1+cu130", "torch.cuda.is_available() is False with torch 2.14.1+cu130"),
])
def test_main_stops_when_torch_sees_no_gpu_that_nvidia_smi_lists(demo_data, tmp_path, monkeypatch, capsys, cuda,
                                                                  version, why):
    fake_cuda(monkeypatch, tmp_path, H100, False, cuda=cuda, version=version)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    line = stopped_line(demo_data, capsys, "-a", "--resume", "unused.pth.tar")
    assert line.startswith(f"error: NVIDIA H100 80GB HBM3 (compute capability 9.0, driver 580.65.06): {why}; fix: ")
    if cuda is None:
        assert CU130.replace("python -m pip", "") in line
    else:
        assert "-c 'import torch; torch.cuda.init()' shows CUDA's own error" in line


def test_cpu_runs_only_on_request_or_without_an_nvidia_gpu(demo_data, tmp_path, monkeypatch, capsys):
    fake_cuda(monkeypatch, tmp_path, T4, False)
    seen = []
    monkeypatch.setattr(driver, "train", lambda args, device, is_demo: seen.append(device))
    driver.main(driver.get_args_parser().parse_args([demo_data, "--device", "cpu"]))
    assert "=> device: cpu (--device cpu)" in capsys.readouterr().out
    driver.main(driver.get_args_parser().parse_args([demo_data, "--gpu", "-1"]))  # the course's way
    assert "=> device: cpu (--gpu -1)" in capsys.readouterr().out
    monkeypatch.setenv("PATH", str(tmp_path / "no_smi"))  # no nvidia-smi: a machine without an NVIDIA GPU
    driver.main(driver.get_args_parser().parse_args([demo_data]))
    assert "=> device: cpu (nvidia-smi not on PATH)" in capsys.readouterr().out
    assert [d.type for d in seen] == ["cpu", "cpu", "cpu"]
    assert "--device cuda: torch 2.14.1+cu130 sees no CUDA device (nvidia-smi not on PATH)" in stopped_line(
        demo_data, capsys, "--device", "cuda")


def test_gpu_problem_is_none_when_torch_can_use_the_gpu(tmp_path, monkeypatch):
    fake_cuda(monkeypatch, tmp_path, H100, True, (9, 0), cuda_build.BUILDS["cu130"].kernels["x86_64"])
    assert cuda_build.gpu_problem(torch) is None
    no_gpu = SimpleNamespace(__version__="2.14.1+cu130", version=SimpleNamespace(cuda="13.0"),
                             cuda=SimpleNamespace(is_available=lambda: False))
    assert cuda_build.gpu_problem(no_gpu, query=lambda: ([], "nvidia-smi not on PATH")) is None


@pytest.mark.skipif(shutil.which("bash") is None or torch.cuda.is_available(), reason="a machine without usable CUDA")
def test_gpu_check_fails_on_a_gpu_that_torch_cannot_use(tmp_path):
    """gpu_check.sh with the venv's torch (CUDA 13.0 here, or a CPU build) and a V100 on driver 535."""
    res = subprocess.run(["bash", os.path.join(ROOT, "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PATH=f"{fake_smi(tmp_path, V100)}:{os.environ['PATH']}",
                                  PYTHON=sys.executable))
    assert res.returncode == 1
    assert res.stderr.startswith("error: gpu_check: Tesla V100-SXM2-16GB (compute capability 7.0, driver 535.104.05): ")
    assert "torch==2.14.1+cu126" in res.stderr and "==" not in res.stdout, "no step ran"
