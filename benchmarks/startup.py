"""Whole-process times of short commands: what a user waits for, start-up included.

On the study table's 2,022 pairs (the reference CSV when it lies beside the project, else a table
of its shape) with small placeholder images, embedded once with the `tiny` backbone:

- `tagcons --help`
- `tagcons fit-head --head threshold` (target: <= 2.5 s on a quiet 2-core machine)
- `tagcons embed` rerun when everything is cached (target: <= 3 s)
- each of threshold, logreg, mlp, lgbm in its own process, against all four in one process
  (target: the one process <= the four separate ones minus three start-ups)

Each command runs in a fresh interpreter (`python -m tagcons`), timed from spawn to exit; the median
of --repeats runs is reported. The CPU seconds (user + system) of the same processes are saved beside
the wall times: on a shared machine they move far less with other people's load.
Results go to benchmarks/results/startup.json.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from embed_throughput import study_table  # noqa: E402

HEADS = ("threshold", "logreg", "mlp", "lgbm")
TARGETS_S = {"fit_head_threshold": 2.5, "embed_noop": 3.0, "help": 0.5}


CPU_SECONDS: dict[str, list[float]] = {}


def tagcons(*args) -> float:
    """Wall seconds one `tagcons ARGS` process takes (its CPU seconds go to CPU_SECONDS); raises if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tagcons", *map(str, args)], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    name = next((a for a in args if a in ("--help", "embed", "fit-head")), "?")
    CPU_SECONDS.setdefault(name, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"tagcons {' '.join(map(str, args))} failed:\n{done.stderr}")
    return seconds


def median_of(repeats: int, make_args) -> float:
    return statistics.median(tagcons(*make_args(i)) for i in range(repeats))


def build_inputs(directory: Path) -> tuple[Path, Path, Path, str]:
    """pairs.csv, placeholder images and a tiny-backbone cache of them."""
    from PIL import Image

    frame, source = study_table()
    images = directory / "images"
    images.mkdir()
    for i, key in enumerate(dict.fromkeys(frame["Image Filename"])):
        Image.new("RGB", (64, 64), (i * 37 % 256, i * 91 % 256, i * 13 % 256)).save(images / key)
    pairs = directory / "pairs.csv"
    frame.to_csv(pairs, index=False)
    cache = directory / "cache.h5"
    tagcons("-q", "embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", cache, "--workers", "0")
    return pairs, images, cache, source


def measure(directory: Path, repeats: int) -> dict:
    pairs, images, cache, source = build_inputs(directory)
    fit = ("-q", "fit-head", "--cache", cache, "--data", pairs)
    embed = ("-q", "embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", cache)
    times = {
        "help": median_of(repeats, lambda i: ("--help",)),
        "fit_head_threshold": median_of(repeats, lambda i: (*fit, "--head", "threshold", "--out", directory / f"t{i}")),
        "embed_noop": median_of(repeats, lambda i: (*embed, "--workers", "0")),
    }
    separate = {head: tagcons(*fit, "--head", head, "--out", directory / "separate" / head) for head in HEADS}
    grid = [arg for head in HEADS for arg in ("--head", head)]
    try:
        times["four_heads_one_process"] = tagcons(*fit, *grid, "--out", directory / "together")
    except RuntimeError:  # a tagcons older than `fit-head --head A --head B` (a baseline measurement)
        times["four_heads_one_process"] = None
    times["four_heads_separate"] = separate
    times["four_heads_separate_sum"] = sum(separate.values())
    cpu = {name: [round(v, 3) for v in values] for name, values in CPU_SECONDS.items()}
    return {"data": source, "n_pairs": len(study_table()[0]), "seconds": times, "cpu_seconds_per_process": cpu}


def verdicts(seconds: dict) -> dict:
    found = {
        key: {"seconds": seconds[key], "target": limit, "met": seconds[key] <= limit}
        for key, limit in TARGETS_S.items()
    }
    # One process saves every start-up but the first; a threshold fit-head is almost all start-up and join.
    limit = seconds["four_heads_separate_sum"] - 3 * seconds["fit_head_threshold"]
    if seconds["four_heads_one_process"] is None:
        return found
    found["four_heads_one_process"] = {
        "seconds": seconds["four_heads_one_process"],
        "target": limit,
        "met": seconds["four_heads_one_process"] <= limit,
    }
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "startup.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(Path(tmp), args.repeats)
    report.update(
        verdicts=verdicts(report["seconds"]),
        repeats=args.repeats,
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for key, verdict in report["verdicts"].items():
        met = "met" if verdict["met"] else "NOT met"
        print(f"{key:28s} {verdict['seconds']:6.2f} s  (target <= {verdict['target']:.2f} s: {met})")
    print(f"separate: {', '.join(f'{h} {s:.2f} s' for h, s in report['seconds']['four_heads_separate'].items())}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
