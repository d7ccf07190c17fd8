"""compat_check.py's logic without installing anything: a fake runner stands in for venv, pip,
git and the checks (the real run downloads several GB and is not part of CI); the checks' own
command lines run for real once, in a --code-dir of stand-in files."""
import os
import sys

import pytest

from tools import CODE_DIR, compat_check

TORCH_2_0_ERROR = "AttributeError: module 'torch.amp' has no attribute 'custom_fwd'"


class FakeRunner:
    """Records every argv. ``failures`` maps (torch version, word of argv) to the output of a
    failing run: ("2.0.1", "test_conv.py") fails test_conv.py in the torch-2.0.1 venv."""

    def __init__(self, failures=None):
        self.failures = failures or {}
        self.calls = []

    def __call__(self, argv, cwd=None, timeout=None):
        self.calls.append(list(argv))
        if argv[0] == "git":
            return 0, {"--short": "abc1234\n", "--abbrev-ref": "compat\n", "--porcelain": ""}[argv[4]]
        if argv[1:3] == ["-m", "venv"]:
            os.makedirs(os.path.join(argv[3], "bin"))
            open(compat_check.venv_python(argv[3]), "w").close()
            return 0, ""
        version = os.path.basename(os.path.dirname(os.path.dirname(argv[0])))[len("torch-"):]
        for (failing_version, word), output in self.failures.items():
            if failing_version == version and word in argv:
                return 1, output
        if argv[1] == "-c":
            return 0, f"{version}+cpu 0.x 1.26.4 3.11.7\n"
        return 0, "ok\n"


def table_rows(path):
    """{torch version: the row's cells} of the Markdown table at path."""
    with open(path, encoding="utf-8") as f:
        rows = [line.strip("|\n").split(" | ") for line in f if line.startswith("| 2.")]
    return {cells[0].strip().split("+")[0]: [c.strip() for c in cells] for cells in rows}


def test_the_pin_is_read_from_requirements_txt(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\ntorch==9.1.0  # pinned\ntorchvision==9.2.0\nnumpy==3.0\n"
                    "opencv-python-headless==6.0\ntensorboard==1.0\npytest==10.0\n")
    assert compat_check.pinned_requirements(str(path)) == (
        "9.1.0", ["torch==9.1.0", "torchvision==9.2.0", "numpy==3.0", "opencv-python-headless==6.0", "pytest==10.0"])
    versions = compat_check.all_requirements()
    assert list(versions)[:2] == ["2.0.1", "2.4.1"] and "numpy<2" in versions["2.0.1"]
    assert f"torch=={list(versions)[-1]}" in versions[list(versions)[-1]]


def test_check_commands_run_the_three_checks_with_the_venvs_python():
    commands = dict(compat_check.check_commands("/v/bin/python"))
    assert list(commands) == list(compat_check.CHECKS)
    assert commands["test_conv.py"] == ["/v/bin/python", "test_conv.py"]
    assert commands["starter interface"] == ["/v/bin/python", "-m", "pytest", "tools/tests/test_starter_interface.py",
                                             "-q", "-p", "no:cacheprovider"]
    assert commands["conv checks, both helper sets"] == ["/v/bin/python", "-m", "pytest", "tools/tests/test_conv_checks.py",
                                                         "-q", "-p", "no:cacheprovider"]
    assert commands["smoke training"] == ["/v/bin/python", "-m", "tools.compat_smoke"]
    for path in ("test_conv.py", "tools/tests/test_conv_checks.py", "tools/tests/test_starter_interface.py",
                 "tools/compat_smoke.py"):
        assert os.path.isfile(os.path.join(CODE_DIR, path)), "each runs from the code folder"


def test_last_line_names_the_failure():
    assert compat_check.last_line(f"Traceback (most recent call last):\n  File 'x'\n{TORCH_2_0_ERROR}\n\n") == \
        TORCH_2_0_ERROR
    assert compat_check.last_line("") == "(no output)"
    pytest_output = ("..FE\n==== ERRORS ====\n>   import x\nE   ImportError: no x\n==== FAILURES ====\n"
                     ">   assert f()\nE   TypeError: bad\n  more\n"
                     "==== short test summary info ====\nFAILED tests/t.py::test_a\nERROR tests/t.py::test_b\n"
                     "1 failed, 2 passed, 1 error in 0.5s\n")
    assert compat_check.last_line(pytest_output) == "FAILED tests/t.py::test_a - TypeError: bad"
    errors_only = pytest_output.split("==== FAILURES")[0] + "ERROR tests/t.py::test_b\n1 error in 0.1s\n"
    assert compat_check.last_line(errors_only) == "ERROR tests/t.py::test_b - ImportError: no x"
    with_reason = "E   KeyError\nFAILED tests/t.py::test_a - KeyError: 'x'\n1 failed in 0.1s\n"
    assert compat_check.last_line(with_reason) == "FAILED tests/t.py::test_a - KeyError: 'x'"


def test_a_failing_check_is_a_fail_row_with_its_last_line_and_exit_status_1(tmp_path, monkeypatch):
    traceback = f"Traceback (most recent call last):\n  File 'student_code.py', line 180\n{TORCH_2_0_ERROR}\n"
    runner = FakeRunner({("2.0.1", "test_conv.py"): traceback})
    monkeypatch.setattr(compat_check, "run", runner)
    out = tmp_path / "compat.md"
    status = compat_check.main(["--venv-root", str(tmp_path / "venvs"), "--out", str(out),
                                "--versions", "2.0.1", "2.4.1"])
    assert status == 1
    rows = table_rows(out)
    assert rows["2.0.1"][1:] == ["0.x", "1.26.4", "3.11.7", "**fail**", "pass", "pass", "pass",
                                 f"test_conv.py: {TORCH_2_0_ERROR}"]
    assert rows["2.4.1"][4:] == ["pass", "pass", "pass", "pass", ""]
    report = out.read_text()
    assert "branch compat at commit abc1234." in report and "CPU only" in report
    first = {argv[0]: i for i, argv in reversed(list(enumerate(runner.calls)))}
    assert first["git"] < min(i for i, argv in enumerate(runner.calls) if "test_conv.py" in argv), \
        "the table names the code as it was when the checks began"


def test_the_courses_test_conv_printing_failed_is_a_fail_although_it_exits_0(tmp_path, monkeypatch):
    printed = "Check Fprop ...\nFprop testing failed\nCheck Bprop ...\nBprop testing passed\nAll passed! End of testing.\n"

    class ExitsZero(FakeRunner):
        def __call__(self, argv, cwd=None, timeout=None):
            return (0, printed) if "test_conv.py" in argv else super().__call__(argv, cwd, timeout)

    monkeypatch.setattr(compat_check, "run", ExitsZero())
    out = tmp_path / "compat.md"
    assert compat_check.main(["--venv-root", str(tmp_path / "venvs"), "--out", str(out), "--versions", "2.0.1"]) == 1
    assert table_rows(out)["2.0.1"][4:8] == ["**fail**", "pass", "pass", "pass"]


def test_all_checks_passing_is_exit_status_0_and_an_existing_venv_is_reused(tmp_path, monkeypatch):
    runner = FakeRunner()
    monkeypatch.setattr(compat_check, "run", runner)
    venv_root = tmp_path / "venvs"
    args = ["--venv-root", str(venv_root), "--out", str(tmp_path / "compat.md"), "--versions", "2.4.1"]
    assert compat_check.main(args) == 0
    assert compat_check.main(args) == 0
    venv_calls = [argv for argv in runner.calls if argv[1:3] == ["-m", "venv"]]
    assert venv_calls == [[compat_check.sys.executable, "-m", "venv", str(venv_root / "torch-2.4.1")]]
    pip_calls = [argv[5:] for argv in runner.calls if argv[1:4] == ["-m", "pip", "install"]]
    assert pip_calls == [compat_check.OLD_TORCH["2.4.1"]] * 2
    assert table_rows(tmp_path / "compat.md")["2.4.1"][4:] == ["pass", "pass", "pass", "pass", ""]


@pytest.mark.parametrize("word, step, error", [
    ("install", "pip install", "ERROR: No matching distribution found for torch==2.0.1"),
    ("-c", "import", "ModuleNotFoundError: No module named 'torch._utils'"),
])
def test_a_broken_venv_fails_every_check_of_its_row(word, step, error, tmp_path, monkeypatch):
    runner = FakeRunner({("2.0.1", word): error})
    monkeypatch.setattr(compat_check, "run", runner)
    out = tmp_path / "compat.md"
    assert compat_check.main(["--venv-root", str(tmp_path), "--out", str(out), "--versions", "2.0.1"]) == 1
    assert table_rows(out)["2.0.1"][1:] == ["?", "?", "?", "**fail**", "**fail**", "**fail**", "**fail**",
                                            f"{', '.join(compat_check.CHECKS)}: {step}: {error}"]
    assert not any("test_conv.py" in argv for argv in runner.calls)


def test_a_failure_cannot_break_the_table_or_leak_an_absolute_path():
    failure = "FileNotFoundError: '/t/pytest-of-me/demo_data0/train.txt' | a/b.py | /h/me/x"
    row = {"torch": "2.0.1", "torchvision": "0.15.2", "numpy": "1.26.4", "python": "3.11.7",
           "results": {"test_conv.py": failure, "conv checks, both helper sets": None, "starter interface": None,
                       "smoke training": None}}
    line = compat_check.table([row], "code", "cpu", "today").splitlines()[-1]
    assert line.count(" | ") == 4 + len(compat_check.CHECKS)
    assert line.endswith("| test_conv.py: FileNotFoundError: '.../train.txt' \\| a/b.py \\| .../x |")


@pytest.mark.parametrize("args, message", [
    (["--versions", "1.13.1"], "unknown torch version 1.13.1"),
    (["--code-dir", "/nonexistent"], "holds no test_conv.py"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys, monkeypatch):
    monkeypatch.setattr(compat_check, "run", FakeRunner())
    with pytest.raises(SystemExit) as exit_info:
        compat_check.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_checks_run_in_the_code_dir_and_import_its_code(tmp_path, monkeypatch):
    """The three checks, run for real with this Python, in a --code-dir whose files are stand-ins:
    each imports the folder it runs in (``python -m tools.compat_smoke`` its own tools/ and
    student_code.py), so a second checkout is checked with its own code. A smoke that fails there
    fails the row."""
    code = tmp_path / "other-checkout" / "code"
    for rel, text in {
        "student_code.py": "WHERE = 'other checkout'\n",
        "test_conv.py": "import student_code\nassert student_code.WHERE == 'other checkout'\n",
        "tools/__init__.py": "",
        "tools/compat_smoke.py": "import os\nimport student_code\nfrom tools import __file__ as tools_init\n"
                                 "assert os.path.dirname(os.path.dirname(tools_init)) == os.getcwd()\n"
                                 "raise SystemExit('smoke: FAILED in ' + student_code.WHERE)\n",
        "tools/tests/__init__.py": "",
        "tools/tests/test_starter_interface.py": "import student_code\n\n\ndef test_here():\n"
                                                "    assert student_code.WHERE == 'other checkout'\n",
        "tools/tests/test_conv_checks.py": "import student_code\n\n\ndef test_here():\n"
                                           "    assert student_code.WHERE == 'other checkout'\n",
    }.items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text(text)
    real_run = compat_check.run

    def run(argv, cwd=None, timeout=None):  # venv, pip, git and the version line faked; the checks real
        if argv[0] == "git" or argv[1:3] == ["-m", "venv"] or argv[1:3] == ["-m", "pip"]:
            return FakeRunner()(argv, cwd, timeout)
        if argv[1] == "-c":
            return 0, "2.0.1+cpu 0.x 1.26.4 3.11.7\n"
        return real_run([sys.executable, *argv[1:]], cwd=cwd, timeout=60)

    monkeypatch.setattr(compat_check, "run", run)
    out = tmp_path / "compat.md"
    assert compat_check.main(["--venv-root", str(tmp_path / "venvs"), "--out", str(out), "--versions", "2.0.1",
                              "--code-dir", str(code)]) == 1
    assert table_rows(out)["2.0.1"][4:] == ["pass", "pass", "pass", "**fail**",
                                            "smoke training: smoke: FAILED in other checkout"]
