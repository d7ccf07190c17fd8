"""What our hand-in changes in the code the course provides, by class and function.

    python -m tools.provided_changes          # from code/: one line per change

Compares each file of the course's release (its verbatim copy in tests/course_release/: code/*.py,
zip_submission.py, download_dataset.sh) with ours at the same place in the repository. Python
files are compared unit by unit, each unit by its syntax tree (ast.dump), so formatting and
comments do not count, docstrings do:
  - ``f`` for a top-level function, ``X`` for a name bound by a top-level assignment;
  - ``C.m`` for each method that the course's class ``C`` defines, and ``C`` for the rest of the
    class: its bases, decorators, docstring, class attributes and any method we added. So a
    method we changed is named alone, and a method we added to a provided class changes the class;
  - ``(module code)`` for the top-level statements that are neither imports nor definitions
    (e.g. ``if __name__ == "__main__": main()``, or statements added where the course has none).
    Imports and the module docstring define no provided code and are left out.
Other files (download_dataset.sh) are compared as a whole, byte for byte.

writeup/provided_changes.md gives one reason per changed or removed name, and one per provided file
that we added names to (by its path, e.g. code/main.py: ``reason_keys``); the report's section
"Changes to the provided code" is built from both (tools/build_report.py).
"""
import ast
import os
import re
import sys
import warnings
from collections import namedtuple

from tools import CODE_DIR, REPO_DIR

RELEASE_DIR = os.path.join(CODE_DIR, "tools", "tests", "course_release")
REASONS_FILE = os.path.join(REPO_DIR, "writeup", "provided_changes.md")
MODULE_CODE = "(module code)"
REASON_ROW = re.compile(r"^\|\s*`?([^`|]+?)`?\s*\|\s*(.*?)\s*\|\s*$")


class Change(namedtuple("Change", "file name kind")):
    """One difference from the course's release: ``file`` relative to the repository root
    (code/student_code.py), ``name`` of the unit (SimpleNet.forward, (module code), or the file
    name for a file compared as a whole) and ``kind``: "changed", "removed" or "added" (a new
    top-level name in a provided Python file)."""

    @property
    def key(self):
        """The name as the reasons table writes it: student_code.SimpleNet.forward,
        utils.(module code), download_dataset.sh."""
        if not self.file.endswith(".py"):
            return self.name
        return f"{os.path.basename(self.file)[:-3]}.{self.name}"


def provided_changes(repo_dir=REPO_DIR, release_dir=RELEASE_DIR):
    """Yield a Change for every provided unit that ``repo_dir`` changed or removed, and for every
    top-level name it added to a provided Python file: file by file (code/ first, then the root's
    files, each sorted), a file's changed and removed units in the course's order, then its
    additions in ours. Raises FileNotFoundError when ``release_dir`` holds no release."""
    for rel in provided_files(release_dir):
        course_path, our_path = os.path.join(release_dir, rel), os.path.join(repo_dir, rel)
        if not rel.endswith(".py"):
            if not os.path.isfile(our_path):
                yield Change(rel, os.path.basename(rel), "removed")
            elif _read(course_path, "rb") != _read(our_path, "rb"):
                yield Change(rel, os.path.basename(rel), "changed")
            continue
        course = _units(course_path)
        ours = _units(our_path) if os.path.isfile(our_path) else {}
        for name, node in course.items():
            if name not in ours:
                yield Change(rel, name, "removed")
            elif not _same(node, ours[name]):
                yield Change(rel, name, "changed")
        for name in ours:
            if name not in course and "." not in name and name != MODULE_CODE:
                yield Change(rel, name, "added")


def reason_keys(changes):
    """The names writeup/provided_changes.md must give a reason for, in the order of ``changes``:
    each changed or removed unit's key (student_code.SimpleNet), and the path of each provided file
    that we added names to (code/main.py), once."""
    keys = []
    for change in changes:
        key = change.file if change.kind == "added" else change.key
        if key not in keys:
            keys.append(key)
    return keys


def provided_files(release_dir=RELEASE_DIR):
    """The release's files, relative to the repository root: code/ first, then the root's, each sorted."""
    files = [f"code/{f}" for f in sorted(os.listdir(os.path.join(release_dir, "code")))]
    return files + sorted(f for f in os.listdir(release_dir)
                          if os.path.isfile(os.path.join(release_dir, f)) and f != "README.md")


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _read(path, mode="r"):
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        return f.read()


def _units(path):
    """{unit name: AST node} of the Python file at ``path`` (see the module docstring); the
    module code is one ast.Module of its statements."""
    with warnings.catch_warnings():  # the course's custom_blocks.py has an invalid escape ("\\l") in a docstring
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        body = ast.parse(_read(path)).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the module docstring
    units, module_code = {}, []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _imports_only(node):
            continue
        if isinstance(node, (ast.ClassDef, *_DEFS)):
            units[node.name] = node
            if isinstance(node, ast.ClassDef):
                units.update((f"{node.name}.{m.name}", m) for m in node.body if isinstance(m, _DEFS))
        elif names := _bound_names(node):
            units.update((name, node) for name in names)
        else:
            module_code.append(node)
    units[MODULE_CODE] = ast.Module(body=module_code, type_ignores=[])  # compared even when empty
    return units


def _same(course_node, our_node):
    """Whether two units are the same code. A class is compared without the methods the course's
    class defines (they are units of their own); a method we added stays in, so it counts."""
    if isinstance(course_node, ast.ClassDef) and isinstance(our_node, ast.ClassDef):
        methods = {m.name for m in course_node.body if isinstance(m, _DEFS)}
        return _class_rest(course_node, methods) == _class_rest(our_node, methods)
    return ast.dump(course_node) == ast.dump(our_node)


def _class_rest(node, methods):
    """ast.dump of the class ``node`` without its methods named in ``methods``."""
    body = [m for m in node.body if not (isinstance(m, _DEFS) and m.name in methods)]
    return ast.dump(ast.ClassDef(name=node.name, bases=node.bases, keywords=node.keywords, body=body,
                                 decorator_list=node.decorator_list))


def _imports_only(node):
    """A try/except or if statement that only imports (try: from collections.abc import ...)."""
    if not isinstance(node, (ast.Try, ast.If)):
        return False
    inner = list(ast.walk(node))[1:]
    statements = [n for n in inner if isinstance(n, ast.stmt)]
    return bool(statements) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in statements)


def _bound_names(node):
    """Names a top-level assignment binds, or that an if / try statement binds by definitions and
    assignments in its branches (our ``if hasattr(torch, ...): def f ... else: def f ...``)."""
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, ast.If) and "__main__" in ast.dump(node.test):
        return []  # if __name__ == "__main__": module code, whatever it assigns
    if isinstance(node, (ast.If, ast.Try)):
        names = []
        for n in ast.walk(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(n.name)
            elif isinstance(n, (ast.Assign, ast.AnnAssign)):
                names += _bound_names(n)
        return list(dict.fromkeys(names))
    return []


def read_reasons(path=REASONS_FILE):
    """{name: reason} from the Markdown table ``| name | reason |`` of ``path`` (names may be in
    backticks). Raises ValueError naming the line of a name given twice or without a reason."""
    reasons = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            m = REASON_ROW.match(line.rstrip("\n"))
            if not m or m.group(1) == "name" or set(m.group(1)) <= set("-: "):
                continue  # not a table row, the header or the separator
            name, reason = m.groups()
            if name in reasons or not reason:
                problem = "is given twice" if name in reasons else "has no reason"
                raise ValueError(f"{os.path.basename(path)}:{lineno}: {name} {problem}")
            reasons[name] = reason
    return reasons


def main():
    changes = list(provided_changes())
    for change in changes:
        print(f"{change.kind:8s} {change.file:28s} {change.name}")
    counts = {kind: sum(c.kind == kind for c in changes) for kind in ("changed", "removed", "added")}
    print(f"{counts['changed']} changed, {counts['removed']} removed, {counts['added']} added "
          f"(compared with {os.path.relpath(RELEASE_DIR, CODE_DIR)})")


if __name__ == "__main__":
    sys.exit(main())
