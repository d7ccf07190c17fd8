"""code/ shows the homework first: its top level holds the course's files and the modules main.py
imports, nothing there imports the tooling, and every tool the documentation names exists where
it says (``python -m tools.<name>`` from code/)."""
import ast
import glob
import importlib.util
import os
import re

from tools import CODE_DIR, REPO_DIR

COURSE_FILES = {"student_code.py", "main.py", "custom_blocks.py", "custom_dataloader.py", "custom_transforms.py",
                "utils.py", "test_conv.py"}
MAIN_IMPORTS = {"cuda_build.py", "decoded_cache.py", "mixed_precision.py", "pretrained.py", "visualization.py"}
DOCS = ("README.md", "run.sh", "run_tests.sh", "setup.sh", ".ci/run", "gpu_check.sh", "download_dataset.sh",
        "data/README.md", "results/README.md", "code/tools/README.md", "code/tools/regenerate_demo.sh",
        "code/custom_dataloader.py")


def read(rel):
    with open(os.path.join(REPO_DIR, rel), encoding="utf-8") as f:
        return f.read()


def local_imports(name):
    """The modules of code/'s top level that ``name`` (a file there) imports, directly or not."""
    found, todo = set(), [name]
    while todo:
        tree = ast.parse(read(os.path.join("code", todo.pop())))
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for module in modules:
                file = module.split(".")[0] + ".py"
                if os.path.isfile(os.path.join(CODE_DIR, file)) and file not in found:
                    found.add(file)
                    todo.append(file)
    return found


def test_code_top_level_holds_the_course_files_and_what_main_imports(zip_submission):
    handed_in = {name.split("/")[1] for name in zip_submission.archived_files(REPO_DIR) if name.startswith("code/")}
    assert handed_in == COURSE_FILES | MAIN_IMPORTS | {"tools"}, "new tooling goes into code/tools/"
    needed = set().union(*(local_imports(name) for name in ("main.py", "student_code.py", "test_conv.py")))
    assert needed - COURSE_FILES == MAIN_IMPORTS, "each extra module is one main.py needs"


def test_nothing_at_the_top_level_imports_the_tooling():
    for name in COURSE_FILES | MAIN_IMPORTS:
        tree = ast.parse(read(os.path.join("code", name)))
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.split(".")[0] == "tools" for m in modules), f"{name} imports {modules}"


def test_no_file_puts_folders_on_the_import_path():
    """The tools and tests import by package (``from tools import x``), run with ``python -m``."""
    trick = "sys." + "path"  # spelled in two parts, so that this file does not hold it
    for path in glob.glob(os.path.join(CODE_DIR, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            assert trick not in f.read(), os.path.relpath(path, CODE_DIR)


def test_every_tool_the_documentation_names_exists():
    named = set()
    for rel in DOCS:
        named |= set(re.findall(r"-m (tools(?:\.\w+)+)", read(rel)))
    assert {"tools.make_demo_data", "tools.run_experiments", "tools.build_report"} <= named
    for module in sorted(named):
        path = os.path.join(CODE_DIR, *module.split(".")) + ".py"
        assert os.path.isfile(path), f"{module} is named but {os.path.relpath(path, REPO_DIR)} does not exist"
        with open(path, encoding="utf-8") as f:
            assert 'if __name__ == "__main__":' in f.read(), f"{module} runs as a script"
    for rel in DOCS:
        for script in re.findall(r"\bpython3? +([\w/.-]+\.py)\b", read(rel)):
            folder = os.path.dirname(os.path.join(REPO_DIR, rel)) if rel.startswith("code/") else CODE_DIR
            assert (os.path.isfile(os.path.join(folder, script)) or os.path.isfile(os.path.join(REPO_DIR, script))), \
                f"{rel} runs python {script}, which is not in code/ or the repository root"


def test_readme_paths_exist():
    readme = read("README.md") + read("code/tools/README.md")
    paths = set(re.findall(r"`((?:code|writeup|results)/[\w/.*<>-]*)`", readme))  # data/... are log tags
    paths |= {"code/" + p for p in re.findall(r"`(tools/[\w/.*-]*)`", readme)}
    assert "code/tools/tests/" in paths
    for path in sorted(paths):
        if "<" in path or path.startswith("results/gpu/"):
            continue  # a pattern such as results/<scale>/, or what gpu_check.sh writes
        assert glob.glob(os.path.join(REPO_DIR, path)), f"README names {path}, which does not exist"
    assert importlib.util.find_spec("tools.tests") is not None
