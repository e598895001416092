"""The `make mutate` runner's bookkeeping (no mutmut run): which files a module's result depends on, when a
recorded result is no longer current, and when the gate fails."""

import importlib.util
import json
from collections import Counter

import pytest
from conftest import REPO_ROOT

RUNNER = REPO_ROOT / "benchmarks" / "mutation.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("mutation_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree(tmp_path):
    """A small tree: one module, its test, the helper that test imports, and the one that helper imports."""
    (tmp_path / "tagcons").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tagcons" / "m.py").write_text("X = 1\n")
    (tmp_path / "tests" / "conftest.py").write_text("")
    (tmp_path / "tests" / "test_m.py").write_text("from test_support import make\nfrom tagcons import m\n")
    (tmp_path / "tests" / "test_support.py").write_text("from deeper_helpers import base\n")
    (tmp_path / "tests" / "deeper_helpers.py").write_text("base = 1\n")
    (tmp_path / "tests" / "test_other.py").write_text("")
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["tagcons"]\n')
    return tmp_path


def test_inputs_are_the_module_its_tests_their_helpers_and_conftest(runner, tree):
    files = runner.input_files("tagcons/m.py", ["tests/test_m.py"], tree)
    assert files == [
        "tagcons/m.py",
        "tests/conftest.py",
        "tests/deeper_helpers.py",
        "tests/test_m.py",
        "tests/test_support.py",
    ]


def test_inputs_change_with_any_of_them_and_with_the_settings_only(runner, tree):
    before = runner.module_inputs("tagcons/m.py", ["tests/test_m.py"], tree)
    assert set(before) == {*runner.input_files("tagcons/m.py", ["tests/test_m.py"], tree), "settings"}
    (tree / "tests" / "test_other.py").write_text("changed = True\n")  # not one of its inputs
    assert runner.module_inputs("tagcons/m.py", ["tests/test_m.py"], tree) == before
    (tree / "tests" / "deeper_helpers.py").write_text("base = 2\n")
    after = runner.module_inputs("tagcons/m.py", ["tests/test_m.py"], tree)
    assert {k for k in before if before[k] != after[k]} == {"tests/deeper_helpers.py"}
    other_tests = runner.module_inputs("tagcons/m.py", ["tests/test_m.py", "tests/test_other.py"], tree)
    assert other_tests["settings"] != after["settings"]
    (tree / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["tagcons"]\nonly_mutate = ["x"]\n')
    assert runner.module_inputs("tagcons/m.py", ["tests/test_m.py"], tree)["settings"] == after["settings"]


def test_blob_hash_is_gits(runner, tmp_path):
    (tmp_path / "f").write_text("hello\n")
    assert runner.blob_hash(tmp_path / "f") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_a_recorded_result_is_current_only_while_every_input_is_unchanged(runner, monkeypatch, tree):
    monkeypatch.setattr(runner, "ROOT", tree)
    monkeypatch.setattr(runner, "tests_by_module", lambda: {"tagcons/m.py": ["tests/test_m.py"]})
    recorded = {"killed": 9, "inputs": runner.module_inputs("tagcons/m.py", ["tests/test_m.py"], tree)}
    assert runner.why_stale("tagcons/m.py", recorded) is None
    (tree / "tagcons" / "m.py").write_text("X = 2\n")
    assert runner.why_stale("tagcons/m.py", recorded) == "changed: tagcons/m.py"
    assert runner.why_stale("tagcons/m.py", None) == "no result recorded"
    assert runner.why_stale("tagcons/m.py", {"killed": 9}) == "no inputs recorded"
    assert runner.why_stale("tagcons/m.py", {**recorded, "not_checked": 3}) == "3 mutants not checked"


def test_the_gate_fails_on_a_missing_stale_low_or_unexplained_result(runner):
    good = {"score_without_equivalent": 0.95, "unexplained_survivors": [], "not_checked": 0}
    modules = {
        "good": good,
        "missing": {"error": "no mutmut results for this module; run `make mutate`"},
        "stale": {**good, "stale": "changed: tests/test_m.py"},
        "low": {**good, "score_without_equivalent": 0.85},
        "unexplained": {**good, "unexplained_survivors": ["tagcons.m.x_f__mutmut_1"]},
    }
    failing = runner.gate_failures(modules)
    assert set(failing) == {"missing", "stale", "low", "unexplained"}
    assert "not current" in failing["stale"] and "0.85" in failing["low"]


def test_a_kept_result_is_judged_against_the_current_equivalents(runner, monkeypatch, tmp_path):
    listed = tmp_path / "equivalents.toml"
    listed.write_text('[equivalent]\n"tagcons.m.x_f__mutmut_2" = "same value"\n')
    monkeypatch.setattr(runner, "EQUIVALENTS", listed)
    monkeypatch.setattr(runner, "why_stale", lambda module, previous: None)
    previous = {"killed": 8, "survived": 2, "equivalent": {}, "unexplained_survivors": ["tagcons.m.x_f__mutmut_1"]}
    previous["unexplained_survivors"].append("tagcons.m.x_f__mutmut_2")  # listed since the run
    kept = runner.recorded_result("tagcons/m.py", previous)
    assert kept["equivalent"] == {"tagcons.m.x_f__mutmut_2": "same value"}
    assert kept["unexplained_survivors"] == ["tagcons.m.x_f__mutmut_1"]
    assert kept["score_without_equivalent"] == pytest.approx(8 / 9, abs=1e-4)  # rounded to 4 places
    assert runner.score(Counter(killed=8, survived=2)) == 0.8
    json.dumps(kept)
