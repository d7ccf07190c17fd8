"""The course's release kept in the repository, CustomConv2d token for token, the check that lists
our changes to the provided code (tools/provided_changes.py) and the reasons table beside it
(writeup/provided_changes.md)."""
import ast
import io
import os
import tokenize

import pytest

from tools import build_report
from tools.provided_changes import (MODULE_CODE, RELEASE_DIR, REPO_DIR, REASONS_FILE, Change, _units,
                                    provided_changes, read_reasons, reason_keys)

SHARED_RELEASE = os.path.join(os.path.dirname(REPO_DIR), "shared", "course-starter")


def release_files(root):
    """{relative path: bytes} of every file under ``root`` but our README.md."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if rel != "README.md" and "__pycache__" not in rel:
                with open(os.path.join(folder, name), "rb") as f:
                    files[rel] = f.read()
    return files


@pytest.mark.skipif(not os.path.isdir(SHARED_RELEASE), reason="no ../shared/course-starter beside the repository")
def test_the_release_in_the_repository_is_the_courses_verbatim():
    ours, course = release_files(RELEASE_DIR), release_files(SHARED_RELEASE)
    assert sorted(ours) == sorted(course)
    assert [rel for rel in course if ours[rel] != course[rel]] == []


def test_the_release_names_whose_files_it_holds():
    with open(os.path.join(RELEASE_DIR, "README.md"), encoding="utf-8") as f:
        assert "course's release" in f.read()
    assert sorted(release_files(RELEASE_DIR)) == sorted(
        ["download_dataset.sh", "zip_submission.py"] + [os.path.join("code", f) for f in (
            "custom_blocks.py", "custom_dataloader.py", "custom_transforms.py", "main.py", "student_code.py",
            "test_conv.py", "utils.py")])


def class_source(path, name):
    """(AST node, source text) of the top-level class ``name`` in the Python file ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == name)
    return node, ast.get_source_segment(text, node)


def tokens(source):
    """The source's tokens as (type, text), comments included, layout (newlines, indents) left out."""
    layout = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in layout]


def test_custom_conv2d_is_the_courses_class_token_for_token():
    ours, our_text = class_source(os.path.join(REPO_DIR, "code", "student_code.py"), "CustomConv2d")
    course, course_text = class_source(os.path.join(RELEASE_DIR, "code", "student_code.py"), "CustomConv2d")
    assert ast.dump(ours) == ast.dump(course)
    assert tokens(our_text) == tokens(course_text)


def test_every_changed_name_has_a_reason_and_every_reason_a_change():
    changed = set(reason_keys(provided_changes()))
    reasons = read_reasons()
    added_to = {c.file for c in provided_changes() if c.kind == "added"}
    assert {"code/custom_blocks.py", "code/custom_dataloader.py", "code/custom_transforms.py", "code/main.py",
            "code/utils.py"} <= added_to <= changed, "each provided file we added to needs its own reason"
    assert sorted(changed - set(reasons)) == [], f"changed or removed without a reason in {REASONS_FILE}"
    assert sorted(set(reasons) - changed) == [], f"reasons in {REASONS_FILE} for names that did not change"


def course_python_files():
    folder = os.path.join(RELEASE_DIR, "code")
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".py")]


def test_the_graded_wrapper_and_the_provided_blocks_are_unchanged():
    """What the course provides complete and we had no need to change is as provided."""
    changed = {c.key for c in provided_changes() if c.kind != "added"}
    units = {f"{os.path.basename(path)[:-3]}.{name}" for path in course_python_files() for name in _units(path)}
    for name in ("student_code.CustomConv2d", "student_code.CustomConv2d.__init__", "student_code.SimpleNet.__init__",
                 "student_code.SimpleNet.reset_parameters", "student_code.TransformerBlock",
                 "student_code.TransformerBlock.forward", "student_code.Attention.__init__",
                 "student_code.SimpleViT._init_weights", "student_code.vis_grid", "student_code.custom_conv2d",
                 "custom_blocks.trunc_normal_", "custom_blocks.drop_path", "custom_transforms.RandomColor",
                 "custom_transforms.Scale.__call__", "utils.resize_image", "utils.AverageMeter",
                 "custom_dataloader.MiniPlacesLoader.get_index_mapping", "test_conv.(module code)"):
        assert name in units and name not in changed
    assert not [c for c in provided_changes() if c.file in ("code/custom_blocks.py", "code/custom_transforms.py",
                                                            "code/test_conv.py") and c.kind != "added"]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


COURSE_FILE = '''import os


class Net(object):
    """A net."""
    scale = 2

    def forward(self, x):
        # the course's comment
        return x * self.scale

    def reset(self):
        pass


def helper(a, b=1):
    return a + b


def gone():
    return 0


DEFAULT = Net
print("loaded")
'''


@pytest.fixture
def release(tmp_path):
    """A release (code/mod.py, run.sh) and a repository holding an unchanged copy of it."""
    for root in (tmp_path / "release", tmp_path / "repo"):
        write(str(root / "code" / "mod.py"), COURSE_FILE)
        write(str(root / "run.sh"), "echo hi\n")
    write(str(tmp_path / "release" / "README.md"), "whose files\n")
    return str(tmp_path / "release"), str(tmp_path / "repo")


def changes(release, edit=None):
    release_dir, repo_dir = release
    if edit is not None:
        write(os.path.join(repo_dir, "code", "mod.py"), edit(COURSE_FILE))
    return [tuple(c) for c in provided_changes(repo_dir, release_dir)]


def test_an_unchanged_copy_has_no_changes(release):
    assert changes(release) == []


def test_formatting_and_comments_do_not_count(release):
    reformatted = lambda t: t.replace("def helper(a, b=1):", "def helper(a,\n           b = 1):  # reflowed").replace(
        "        # the course's comment\n", "")
    assert changes(release, reformatted) == []


def test_a_changed_method_is_named_alone_and_a_docstring_counts(release):
    assert changes(release, lambda t: t.replace("return x * self.scale", "return x * self.scale + 1")) == [
        ("code/mod.py", "Net.forward", "changed")]
    assert changes(release, lambda t: t.replace('"""A net."""', '"""Another net."""')) == [
        ("code/mod.py", "Net", "changed")]


def test_a_method_added_to_a_provided_class_changes_the_class(release):
    added = lambda t: t.replace("    def reset(self):", "    def extra(self):\n        return 1\n\n    def reset(self):")
    assert changes(release, added) == [("code/mod.py", "Net", "changed")]


def test_removed_added_and_module_code(release):
    def edit(text):
        text = text.replace("def gone():\n    return 0\n", "def new_helper():\n    return 1\n")
        return text.replace('print("loaded")', 'print("loaded", flush=True)') + "NEW_CONSTANT = 3\n"

    assert changes(release, edit) == [("code/mod.py", "gone", "removed"), ("code/mod.py", MODULE_CODE, "changed"),
                                      ("code/mod.py", "new_helper", "added"), ("code/mod.py", "NEW_CONSTANT", "added")]
    assert changes(release, lambda t: t.replace("DEFAULT = Net", "DEFAULT = object")) == [
        ("code/mod.py", "DEFAULT", "changed")]


def test_other_files_count_as_a_whole_and_a_missing_file_is_removed(release):
    release_dir, repo_dir = release
    write(os.path.join(repo_dir, "run.sh"), "echo hello\n")
    assert changes(release) == [("run.sh", "run.sh", "changed")]
    os.remove(os.path.join(repo_dir, "code", "mod.py"))
    assert ("code/mod.py", "Net", "removed") in changes(release)


def test_keys_name_the_module():
    assert Change("code/student_code.py", "SimpleNet.forward", "changed").key == "student_code.SimpleNet.forward"
    assert Change("zip_submission.py", MODULE_CODE, "changed").key == "zip_submission.(module code)"
    assert Change("download_dataset.sh", "download_dataset.sh", "changed").key == "download_dataset.sh"


def test_reasons_table_rejects_a_name_twice_or_without_a_reason(tmp_path):
    path = tmp_path / "reasons.md"
    path.write_text("| name | reason |\n|---|---|\n| `a.f` | because |\n| b.g | also |\n")
    assert read_reasons(str(path)) == {"a.f": "because", "b.g": "also"}
    path.write_text("| name | reason |\n|---|---|\n| `a.f` | because |\n| `a.f` | again |\n")
    with pytest.raises(ValueError, match="reasons.md:4: a.f is given twice"):
        read_reasons(str(path))
    path.write_text("| name | reason |\n|---|---|\n| `a.f` |  |\n")
    with pytest.raises(ValueError, match="a.f has no reason"):
        read_reasons(str(path))


def test_the_reports_section_lists_every_change_with_its_reason():
    section = build_report.gen_provided_changes(None)
    reasons = read_reasons()
    for change in provided_changes():
        if change.kind == "added":
            line = next(line for line in section.splitlines() if line.startswith(f"- `{change.file}`: "))
            assert f"`{change.name}`" in line and line.startswith(f"- `{change.file}`: {reasons[change.file]} Added: ")
        else:
            assert f"- `{change.key}`: {reasons[change.key]}\n" in section


def test_the_report_is_not_built_with_a_change_that_has_no_reason(monkeypatch):
    import tools.provided_changes as check

    reasons = read_reasons()
    monkeypatch.setattr(check, "read_reasons", lambda: {k: v for k, v in reasons.items() if k != "utils.load_image"})
    with pytest.raises(ValueError, match=r"no reason for \['utils.load_image'\]"):
        build_report.gen_provided_changes(None)
    monkeypatch.setattr(check, "read_reasons", lambda: {k: v for k, v in reasons.items() if k != "code/main.py"})
    with pytest.raises(ValueError, match=r"no reason for \['code/main.py'\]"):
        build_report.gen_provided_changes(None)
    monkeypatch.setattr(check, "read_reasons", lambda: {**reasons, "utils.resize_image": "we did not change it"})
    with pytest.raises(ValueError, match=r"did not change: \['utils.resize_image'\]"):
        build_report.gen_provided_changes(None)


def test_a_file_we_added_to_needs_one_reason_a_changed_unit_its_own():
    changes = [Change("code/a.py", "f", "changed"), Change("code/a.py", "g", "added"),
               Change("code/a.py", "h", "added"), Change("code/a.py", "C.m", "removed"), Change("run.sh", "run.sh", "changed")]
    assert reason_keys(changes) == ["a.f", "code/a.py", "a.C.m", "run.sh"]
