"""Fault suite, the security review as tests (issue 24 defect 13 and its closing note): the library
never unpickles, never evaluates strings, loads torch files with weights_only, never runs a
checkpoint's own code, and says allow_pickle=False wherever it loads NumPy files.

The checks read the source's syntax tree, so a comment or a docstring that names these calls does
not count, and `model.eval()` (a method) is not `eval`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tagcons"
UNSAFE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}


def calls():
    """(file, line, call node) of every call in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                yield path.relative_to(PACKAGE.parent), node.lineno, node


def dotted(func: ast.expr) -> str:
    return f"{dotted(func.value)}.{func.attr}" if isinstance(func, ast.Attribute) else getattr(func, "id", "?")


def keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def test_no_module_imports_a_pickle_family_loader():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
    assert found == []


@pytest.mark.parametrize("builtin", ["eval", "exec", "compile", "__import__"])
def test_no_string_is_evaluated(builtin):
    assert [(f, line) for f, line, call in calls() if isinstance(call.func, ast.Name) and call.func.id == builtin] == []


def test_numpy_files_load_with_allow_pickle_false():
    loads = [(f, line, c) for f, line, c in calls() if dotted(c.func) in ("np.load", "numpy.load")]
    assert loads, "no np.load found: the check lost its target"
    assert [(f, line) for f, line, c in loads if not keyword_is(c, "allow_pickle", False)] == []


def test_torch_files_load_with_weights_only():
    loads = [(f, line, c) for f, line, c in calls() if dotted(c.func) == "torch.load"]
    assert loads, "no torch.load found: the check lost its target"
    assert [(f, line) for f, line, c in loads if not keyword_is(c, "weights_only", True)] == []


def test_remote_code_is_never_trusted():
    settings = [(f, line, k.value) for f, line, c in calls() for k in c.keywords if k.arg == "trust_remote_code"]
    assert settings, "no trust_remote_code setting found: the loader must say False explicitly"
    assert [
        (f, line) for f, line, value in settings if not (isinstance(value, ast.Constant) and value.value is False)
    ] == []


def test_no_shell_is_spawned():
    shells = [(f, line) for f, line, c in calls() if keyword_is(c, "shell", True) or dotted(c.func) == "os.system"]
    assert shells == []
