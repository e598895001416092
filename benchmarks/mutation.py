"""Mutation score of the evaluation core (`make mutate`): mutmut over the modules in pyproject.toml.

    python benchmarks/mutation.py                 # run mutmut, then write benchmarks/results/mutation.json
    python benchmarks/mutation.py --report-only   # only summarise the last run (the mutants/ folder)
    python benchmarks/mutation.py --max-children 4
    python benchmarks/mutation.py --only "tagcons.evaluate.metrics.*"   # one module's mutants (mutmut names)

Which modules are mutated and which tests run are read from [tool.mutmut] in pyproject.toml
(only_mutate, pytest_add_cli_args_test_selection), so a module that moves only needs its path changed
there. mutmut runs for each mutant only the selected tests that call the mutated function. The score
counts a mutant as detected when a test failed (killed) or ran past mutmut's time limit (timeout);
mutants no test reaches count as not detected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def mutmut_config() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]


def run_mutmut(max_children: int, only: list[str]) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *only]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def module_result(module: str) -> dict:
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return {"error": "no mutmut results for this module; run `make mutate`"}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    statuses = {name: STATUS.get(code, "not_checked" if code is None else "suspicious") for name, code in codes.items()}
    counts = Counter(statuses.values())
    return {
        **{k: counts.get(k, 0) for k in ("killed", "survived", "timeout", "no_tests", "suspicious", "not_checked")},
        "total": len(statuses),
        "score": score(counts),
        "survivors": sorted(n for n, s in statuses.items() if s in ("survived", "no_tests", "suspicious")),
    }


def score(counts: Counter) -> float | None:
    detected = counts.get("killed", 0) + counts.get("timeout", 0)
    judged = detected + counts.get("survived", 0) + counts.get("no_tests", 0) + counts.get("suspicious", 0)
    return round(detected / judged, 4) if judged else None


def summary(seconds: float | None, max_children: int) -> dict:
    modules = {module: module_result(module) for module in mutmut_config()["only_mutate"]}
    totals = Counter()
    for result in modules.values():
        totals.update({k: v for k, v in result.items() if isinstance(v, int)})
    return {
        "tool": f"mutmut {_version()}",
        "tests": mutmut_config().get("pytest_add_cli_args_test_selection", []),
        "max_children": max_children,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seconds": None if seconds is None else round(seconds, 1),
        "score_rule": "(killed + timeout) / (killed + timeout + survived + no_tests + suspicious)",
        "complete": totals.get("not_checked", 0) == 0,  # false: the run was stopped; `make mutate` resumes it
        "total": {**dict(totals), "score": score(totals)},
        "modules": modules,
    }


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def _previous_seconds() -> float | None:
    return json.loads(RESULT.read_text(encoding="utf-8")).get("seconds") if RESULT.is_file() else None


def _previous_incomplete() -> bool:
    return RESULT.is_file() and not json.loads(RESULT.read_text(encoding="utf-8")).get("complete", True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--report-only", action="store_true", help="summarise the last run without running mutmut")
    parser.add_argument("--only", nargs="*", default=[], help="mutant name patterns, e.g. 'tagcons.heads.fit.*'")
    args = parser.parse_args()
    seconds = _previous_seconds() if args.report_only else run_mutmut(args.max_children, args.only)
    if not args.report_only and _previous_incomplete():  # a resumed run: count the time already spent
        seconds += _previous_seconds() or 0.0
    result = summary(seconds, args.max_children)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for module, numbers in result["modules"].items():
        print(
            f"{module}: {numbers.get('killed')} killed, {numbers.get('survived')} survived, "
            f"{numbers.get('timeout')} timeout, {numbers.get('no_tests')} no tests, score {numbers.get('score')}"
        )
    print(f"total score {result['total']['score']} in {result['seconds']} s -> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
