"""Mutation score of the evaluation core (`make mutate`): mutmut once per module, with that module's tests.

    python benchmarks/mutation.py                    # the modules changed since their recorded result (default)
    python benchmarks/mutation.py --all              # every module (`make mutate-all`, `make mutate MUTATE=all`)
    python benchmarks/mutation.py --list             # which modules would run and why; runs nothing
    python benchmarks/mutation.py --module tagcons/heads/fit.py     # one module (the others keep their result)
    python benchmarks/mutation.py --resume           # keep earlier mutants' results, check only the rest
    python benchmarks/mutation.py --report-only      # only summarise the recorded results
    python benchmarks/mutation.py --jobs 2 --max-children 2        # two modules at once, two workers each

A module's result is recorded with the git blob hash of every file it was computed from (``inputs``: the
module, its tests, the test helpers they import, tests/conftest.py) and of its settings (its test list and
[tool.mutmut]). By default only the modules whose inputs differ from the recorded ones, or that have no
result, are run again; the others keep theirs (survivors re-read against the current list of equivalents).
A change to another module the tests go through does not count: `--all` reruns everything. The exit status
is 1 when the gate fails: a module without a current result, scoring under MIN_SCORE, or with an
unexplained survivor.

The modules and the tests of each are listed under [tool.tagcons.mutate] in pyproject.toml; the shared
mutmut settings under [tool.mutmut]. Each module runs in its own scratch copy of the tree
(build/mutate/<module>/), whose pyproject.toml adds `only_mutate` and the test selection, so mutmut
runs for each mutant only that module's tests that call the mutated function. The score counts a
mutant as detected when a test failed (killed) or ran past mutmut's CPU-time limit (timeout);
mutants no test reaches count as not detected. Survivors that cannot change behaviour are listed with the
reason in benchmarks/mutation_equivalents.toml; the result reports them apart (``equivalent``) and gives
the score without them beside the plain score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"
# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), folded into the columns we report.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no_tests", 33: "no_tests", 34: "skipped", 36: "timeout"}
STATUS.update({24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed"})


SCRATCH = ROOT / "build" / "mutate"
EQUIVALENTS = ROOT / "benchmarks" / "mutation_equivalents.toml"
COPIED = ("tagcons", "tests", "setup.cfg")  # what a scratch tree needs besides its pyproject.toml
COMMIT_FILE = "COMMIT"  # in a scratch tree: the commit it was copied at
MIN_SCORE = 0.90  # the gate: every module's score without its listed equivalents
SHARED_TEST_FILES = ("tests/conftest.py",)  # every module's tests run under it
# `from test_heads_support import ...` in a test file: a helper module of tests/ whose change changes the result
_TEST_HELPER_IMPORT = re.compile(r"^from (\w+) import", re.MULTILINE)


def _toml(text: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _pyproject() -> dict:
    return _toml((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def tests_by_module() -> dict[str, list[str]]:
    return _pyproject()["tool"]["tagcons"]["mutate"]


def scratch_of(module: str) -> Path:
    return SCRATCH / module.removesuffix(".py").replace("/", ".")


def scratch_pyproject(module: str, tests: list[str]) -> str:
    """The tree's pyproject.toml with this module and its tests added to [tool.mutmut] (the last table)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8").rstrip("\n")
    text += f"\nonly_mutate = {json.dumps([module])}\npytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    assert _toml(text)["tool"]["mutmut"]["only_mutate"] == [module], "keep [tool.mutmut] last"
    return text


def prepare_scratch(module: str, tests: list[str], resume: bool) -> Path:
    """A fresh copy of the tree for one module's run (kept as it is with ``resume``, mutants included)."""
    scratch = scratch_of(module)
    if scratch.exists() and not resume:
        shutil.rmtree(scratch)
    if not scratch.exists():
        scratch.mkdir(parents=True)
        for name in COPIED:
            copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
            copy(ROOT / name, scratch / name, **({"ignore": _CACHE_FILES} if copy is shutil.copytree else {}))
    (scratch / "pyproject.toml").write_text(scratch_pyproject(module, tests), encoding="utf-8")
    if not (scratch / COMMIT_FILE).is_file():  # the commit the copy was taken at (kept with --resume)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        (scratch / COMMIT_FILE).write_text(head.stdout.strip() or "?", encoding="utf-8")
    return scratch


_CACHE_FILES = shutil.ignore_patterns("__pycache__", "*.pyc")


def run_mutmut(scratch: Path, max_children: int) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no installed plugin is needed; loading them cost 0.3 s per mutant
    subprocess.run(command, cwd=scratch, env=env, check=False, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def equivalent_mutants() -> dict[str, str]:
    """Surviving mutants that cannot change behaviour, with the reason (benchmarks/mutation_equivalents.toml)."""
    return _toml(EQUIVALENTS.read_text(encoding="utf-8")).get("equivalent", {}) if EQUIVALENTS.is_file() else {}


def blob_hash(path: Path) -> str:
    """git's blob hash of a file's content (`git hash-object`), also for a file git does not track yet."""
    content = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def test_helpers(test_file: Path, root: Path) -> list[str]:
    """tests/ modules a test file imports by name (helpers such as test_heads_support.py), transitively."""
    found, queue = [], [test_file]
    while queue:
        text = queue.pop().read_text(encoding="utf-8")
        for name in _TEST_HELPER_IMPORT.findall(text):
            helper = root / "tests" / f"{name}.py"
            relative = helper.relative_to(root).as_posix()
            if helper.is_file() and relative not in found:
                found.append(relative)
                queue.append(helper)
    return found


def input_files(module: str, tests: list[str], root: Path | None = None) -> list[str]:
    """Every file the module's result depends on: itself, its tests (files or folders), their helpers."""
    root, files = root or ROOT, [module]
    for test in tests:
        path = root / test.split("::")[0]
        files += [p.relative_to(root).as_posix() for p in (sorted(path.rglob("*.py")) if path.is_dir() else [path])]
    files += [helper for test in list(files[1:]) for helper in test_helpers(root / test, root)]
    return sorted(dict.fromkeys(files + list(SHARED_TEST_FILES)))


def module_inputs(module: str, tests: list[str], root: Path | None = None) -> dict[str, str]:
    """{path: blob hash} of the module's input files in the tree ``root`` (the checkout, or the scratch copy a
    run mutated), plus ``settings``: the hash of its test list and of [tool.mutmut] (less what the runner adds)."""
    root = root or ROOT
    inputs = {path: blob_hash(root / path) for path in input_files(module, tests, root)}
    mutmut = dict(_toml((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"])
    for added in ("only_mutate", "pytest_add_cli_args_test_selection"):
        mutmut.pop(added, None)
    settings = json.dumps({"tests": tests, "mutmut": mutmut}, sort_keys=True)
    inputs["settings"] = hashlib.sha1(settings.encode("utf-8")).hexdigest()
    return inputs


def why_stale(module: str, previous: dict | None) -> str | None:
    """Why the recorded result of ``module`` is not current (None: it is)."""
    if not previous or "error" in previous:
        return "no result recorded"
    if previous.get("not_checked"):
        return f"{previous['not_checked']} mutants not checked"
    recorded, now = previous.get("inputs") or {}, module_inputs(module, tests_by_module()[module])
    changed = sorted(path for path in set(recorded) | set(now) if recorded.get(path) != now.get(path))
    if not recorded:
        return "no inputs recorded"
    return f"changed: {', '.join(changed)}" if changed else None


def module_result(module: str, seconds: float | None) -> dict:
    meta = scratch_of(module) / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return {"error": "no mutmut results for this module; run `make mutate`"}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    statuses = {name: STATUS.get(code, "not_checked" if code is None else "suspicious") for name, code in codes.items()}
    counts = Counter(statuses.values())
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no_tests", "suspicious"))
    result = {
        "tests": tests_by_module()[module],
        "seconds": None if seconds is None else round(seconds, 1),
        **{k: counts.get(k, 0) for k in ("killed", "survived", "timeout", "no_tests", "suspicious", "not_checked")},
        "total": len(statuses),
        "score": score(counts),
        "inputs": module_inputs(module, tests_by_module()[module], scratch_of(module)),  # what was mutated
        "ran_at": _ran_at(meta, scratch_of(module)),
    }
    return {**result, **_survivor_entries(survivors, counts, set(statuses))}


def _ran_at(meta: Path, scratch: Path) -> str:
    """When the module's mutants were last checked (the time of mutmut's result file), and the commit the
    scratch copy was taken at (its files may differ from that commit: ``inputs`` says what they were)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(meta.stat().st_mtime))
    commit = (scratch / COMMIT_FILE).read_text(encoding="utf-8") if (scratch / COMMIT_FILE).is_file() else "?"
    return f"{when}, copied at commit {commit}"


def _survivor_entries(survivors: list[str], counts: Counter, names: set[str]) -> dict:
    """The survivors split into listed equivalents and unexplained ones, and the score without the first."""
    listed = {name: why for name, why in equivalent_mutants().items() if name in names}
    return {
        "equivalent": {name: listed[name] for name in survivors if name in listed},
        "score_without_equivalent": score(counts, n_equivalent=sum(name in listed for name in survivors)),
        "unexplained_survivors": [name for name in survivors if name not in listed],
        "listed_but_killed": sorted(name for name in listed if name not in survivors),  # stale entries
    }


def recorded_result(module: str, previous: dict) -> dict:
    """A module's recorded result, its survivors judged against the current list of equivalents."""
    survivors = sorted([*previous.get("equivalent", {}), *previous.get("unexplained_survivors", [])])
    counts = Counter({k: previous.get(k, 0) for k in ("killed", "survived", "timeout", "no_tests", "suspicious")})
    names = set(survivors) | set(previous.get("listed_but_killed", []))
    prefix = module.removesuffix(".py").replace("/", ".") + "."
    names |= {name for name in equivalent_mutants() if name.startswith(prefix)}  # entries added since the run
    return {**previous, **_survivor_entries(survivors, counts, names), "stale": why_stale(module, previous)}


def score(counts: Counter, n_equivalent: int = 0) -> float | None:
    detected = counts.get("killed", 0) + counts.get("timeout", 0)
    judged = detected + counts.get("survived", 0) + counts.get("no_tests", 0) + counts.get("suspicious", 0)
    judged -= n_equivalent
    return round(detected / judged, 4) if judged else None


def summary(ran: dict[str, float], previous: dict[str, dict], max_children: int, jobs: int = 1) -> dict:
    """mutation.json: the modules run now (``ran``: module -> seconds) from their scratch trees, the others
    from their recorded result (``previous``), or from a scratch tree left by an earlier run."""
    modules = {module: _result_of(module, ran, previous) for module in tests_by_module()}
    totals = Counter()
    for result in modules.values():
        totals.update({k: v for k, v in result.items() if isinstance(v, int)})
    n_equivalent = sum(len(result.get("equivalent", {})) for result in modules.values())
    timed = [r.get("seconds") for r in modules.values() if r.get("seconds") is not None]
    return {
        "tool": f"mutmut {_version()}",
        "max_children": max_children,
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "ran_now": sorted(ran),
        "seconds_now": round(sum(ran.values()), 1),
        "seconds": round(sum(timed), 1) if len(timed) == len(modules) else None,  # every module once, one by one
        "score_rule": "(killed + timeout) / (killed + timeout + survived + no_tests + suspicious)",
        "gate": {"min_score_without_equivalent": MIN_SCORE, "failing": gate_failures(modules)},
        "complete": totals.get("not_checked", 0) == 0 and all("error" not in r for r in modules.values()),
        "total": {
            **dict(totals),
            "score": score(totals),
            "equivalent": n_equivalent,
            "score_without_equivalent": score(totals, n_equivalent),
        },
        "modules": modules,
    }


def _result_of(module: str, ran: dict[str, float], previous: dict[str, dict]) -> dict:
    if module in ran:
        return module_result(module, ran[module])
    if previous.get(module) and "error" not in previous[module]:
        return recorded_result(module, previous[module])
    result = module_result(module, None)  # a scratch tree left by an earlier run, if any
    return result if "error" in result else {**result, "stale": why_stale(module, result)}


def gate_failures(modules: dict[str, dict]) -> dict[str, str]:
    """module -> why it fails the gate (no result, not current, under MIN_SCORE, unexplained survivors)."""
    failing = {}
    for module, result in modules.items():
        kept = result.get("score_without_equivalent")
        if "error" in result or result.get("stale"):
            failing[module] = result.get("error") or f"not current ({result['stale']})"
        elif result.get("not_checked"):
            failing[module] = f"{result['not_checked']} mutants not checked"
        elif kept is None or kept < MIN_SCORE:
            failing[module] = f"score without equivalents {kept} < {MIN_SCORE}"
        elif result.get("unexplained_survivors"):
            failing[module] = f"{len(result['unexplained_survivors'])} unexplained survivor(s)"
    return failing


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def previous_results() -> dict[str, dict]:
    if not RESULT.is_file():
        return {}
    return json.loads(RESULT.read_text(encoding="utf-8")).get("modules", {})


def chosen_modules(args, previous: dict[str, dict]) -> dict[str, str]:
    """module -> why it runs now: named (--module), everything (--all), or its result is not current."""
    if args.report_only:
        return {}
    if args.module:
        unknown = sorted(set(args.module) - set(tests_by_module()))
        if unknown:
            raise SystemExit(f"not in [tool.tagcons.mutate]: {', '.join(unknown)}")
        return {module: "named" for module in tests_by_module() if module in args.module}
    if args.all:
        return {module: "--all" for module in tests_by_module()}
    reasons = {module: why_stale(module, previous.get(module)) for module in tests_by_module()}
    return {module: why for module, why in reasons.items() if why}


def run_module(module: str, resume: bool, max_children: int, previous: dict[str, dict]) -> float:
    scratch = prepare_scratch(module, tests_by_module()[module], resume)
    spent = run_mutmut(scratch, max_children)
    print(f"{module}: {spent:.0f} s", flush=True)
    return spent + ((previous.get(module, {}).get("seconds") or 0.0) if resume else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="mutmut workers per module")
    parser.add_argument("--jobs", type=int, default=1, help="modules run at once (each with --max-children workers)")
    parser.add_argument("--all", action="store_true", help="run every module, current or not")
    parser.add_argument("--module", action="append", help="run only this module (repeatable); others keep their result")
    parser.add_argument("--resume", action="store_true", help="keep the scratch trees and the mutants already checked")
    parser.add_argument("--report-only", action="store_true", help="summarise the recorded results, run nothing")
    parser.add_argument("--list", action="store_true", help="say which modules would run and why, run nothing")
    args = parser.parse_args()
    previous = previous_results()
    chosen = chosen_modules(args, previous)
    for module, why in chosen.items():
        print(f"{'would run' if args.list else 'runs'} {module}: {why}", flush=True)
    if args.list:
        return
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {m: pool.submit(run_module, m, args.resume, args.max_children, previous) for m in chosen}
        ran = {module: future.result() for module, future in futures.items()}
    result = summary(ran, previous, args.max_children, args.jobs)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_result(result)
    sys.exit(1 if result["gate"]["failing"] else 0)


def print_result(result: dict) -> None:
    for module, numbers in result["modules"].items():
        if "error" in numbers:
            print(f"{module}: {numbers['error']}")
            continue
        print(
            f"{module}: {numbers.get('killed')} killed, {numbers.get('survived')} survived "
            f"({len(numbers.get('equivalent', {}))} equivalent), {numbers.get('timeout')} timeout, "
            f"{numbers.get('no_tests')} no tests, score {numbers.get('score')} "
            f"({numbers.get('score_without_equivalent')} without equivalents)"
            + (f"; not current: {numbers['stale']}" if numbers.get("stale") else "")
        )
    ran = f"ran {len(result['ran_now'])} module(s) in {result['seconds_now']} s"
    print(f"total score {result['total']['score']}; {ran}")
    for module, why in result["gate"]["failing"].items():
        print(f"gate fails: {module}: {why}")
    print(f"-> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
