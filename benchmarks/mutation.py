"""Mutation score of the evaluation core (`make mutate`): mutmut once per module, with that module's tests.

    python benchmarks/mutation.py                    # every module, then write benchmarks/results/mutation.json
    python benchmarks/mutation.py --module tagcons/heads/fit.py     # one module (the others keep their result)
    python benchmarks/mutation.py --resume           # keep earlier mutants' results, check only the rest
    python benchmarks/mutation.py --report-only      # only summarise the last runs
    python benchmarks/mutation.py --max-children 4

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
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"
# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), folded into the columns we report.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no_tests", 33: "no_tests", 34: "skipped", 36: "timeout"}
STATUS.update({24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed"})


SCRATCH = ROOT / "build" / "mutate"
EQUIVALENTS = ROOT / "benchmarks" / "mutation_equivalents.toml"
COPIED = ("tagcons", "tests", "setup.cfg")  # what a scratch tree needs besides its pyproject.toml


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


def module_result(module: str, seconds: float | None) -> dict:
    meta = scratch_of(module) / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return {"error": "no mutmut results for this module; run `make mutate`"}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    statuses = {name: STATUS.get(code, "not_checked" if code is None else "suspicious") for name, code in codes.items()}
    counts = Counter(statuses.values())
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no_tests", "suspicious"))
    listed = {name: why for name, why in equivalent_mutants().items() if name in statuses}
    return {
        "tests": tests_by_module()[module],
        "seconds": None if seconds is None else round(seconds, 1),
        **{k: counts.get(k, 0) for k in ("killed", "survived", "timeout", "no_tests", "suspicious", "not_checked")},
        "total": len(statuses),
        "score": score(counts),
        "equivalent": {name: listed[name] for name in survivors if name in listed},
        "score_without_equivalent": score(counts, n_equivalent=sum(name in listed for name in survivors)),
        "unexplained_survivors": [name for name in survivors if name not in listed],
        "listed_but_killed": sorted(name for name in listed if name not in survivors),  # stale entries
    }


def score(counts: Counter, n_equivalent: int = 0) -> float | None:
    detected = counts.get("killed", 0) + counts.get("timeout", 0)
    judged = detected + counts.get("survived", 0) + counts.get("no_tests", 0) + counts.get("suspicious", 0)
    judged -= n_equivalent
    return round(detected / judged, 4) if judged else None


def summary(seconds_by_module: dict[str, float | None], max_children: int) -> dict:
    modules = {module: module_result(module, seconds_by_module.get(module)) for module in tests_by_module()}
    totals = Counter()
    for result in modules.values():
        totals.update({k: v for k, v in result.items() if isinstance(v, int)})
    n_equivalent = sum(len(result.get("equivalent", {})) for result in modules.values())
    timed = [s for s in seconds_by_module.values() if s is not None]
    return {
        "tool": f"mutmut {_version()}",
        "max_children": max_children,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "seconds": round(sum(timed), 1) if len(timed) == len(modules) else None,
        "score_rule": "(killed + timeout) / (killed + timeout + survived + no_tests + suspicious)",
        "complete": totals.get("not_checked", 0) == 0 and all("error" not in r for r in modules.values()),
        "total": {
            **dict(totals),
            "score": score(totals),
            "equivalent": n_equivalent,
            "score_without_equivalent": score(totals, n_equivalent),
        },
        "modules": modules,
    }


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def _previous_seconds() -> dict[str, float | None]:
    if not RESULT.is_file():
        return {}
    modules = json.loads(RESULT.read_text(encoding="utf-8")).get("modules", {})
    return {module: result.get("seconds") for module, result in modules.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--module", action="append", help="run only this module (repeatable); others keep their result")
    parser.add_argument("--resume", action="store_true", help="keep the scratch trees and the mutants already checked")
    parser.add_argument("--report-only", action="store_true", help="summarise the last runs without running mutmut")
    args = parser.parse_args()
    seconds = _previous_seconds()
    for module, tests in tests_by_module().items():
        if args.report_only or (args.module and module not in args.module):
            continue
        scratch = prepare_scratch(module, tests, args.resume)
        spent = run_mutmut(scratch, args.max_children)
        seconds[module] = spent + ((seconds.get(module) or 0.0) if args.resume else 0.0)
        print(f"{module}: {spent:.0f} s", flush=True)
    result = summary(seconds, args.max_children)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for module, numbers in result["modules"].items():
        print(
            f"{module}: {numbers.get('killed')} killed, {numbers.get('survived')} survived "
            f"({len(numbers.get('equivalent', {}))} equivalent), {numbers.get('timeout')} timeout, "
            f"{numbers.get('no_tests')} no tests, score {numbers.get('score')}"
        )
    print(f"total score {result['total']['score']} in {result['seconds']} s -> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
