"""Bootstrap benchmark: the image-clustered 95% intervals of every headline metric, 2,022 pairs x 1,000 resamples.

    python benchmarks/bootstrap.py

Synthetic predictions on the study's scale (2,022 pairs, 172 images, its score distribution). Times
`bootstrap_intervals` (per-image confusion counts, resample weights, one matrix product, metrics in
numpy, and the studentised interval's standard errors: a few hundred metric evaluations for the
gradient and Hessian, then matrix products) and `paired_difference`, best of several repeats. Target (issue 9):
under 1 s on 2 CPU cores. Writes benchmarks/results/bootstrap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tagcons.evaluate.image_metrics import image_counts
from tagcons.evaluate.intervals import bootstrap_intervals, paired_difference

HERE = Path(__file__).resolve().parent
SHARES = np.array([78, 205, 315, 551, 873]) / 2022  # the study's score distribution
TARGET_S = 1.0


def synthetic(n_pairs: int, n_images: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n_pairs, p=SHARES) + 1
    noisy = np.clip(y + rng.integers(-1, 2, n_pairs), 1, 5)
    pred = np.where(rng.random(n_pairs) < 0.5, y, noisy)
    proba = rng.dirichlet(np.ones(5), n_pairs)
    return y, pred, rng.integers(0, n_images, n_pairs), proba


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2022)
    parser.add_argument("--images", type=int, default=172)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "bootstrap.json"))
    args = parser.parse_args()
    y, pred, images, proba = synthetic(args.pairs, args.images)
    other = synthetic(args.pairs, args.images, seed=1)[1]
    run, reference = image_counts(y, pred, images, proba), image_counts(y, other, images)
    report = {
        "pairs": args.pairs,
        "images": args.images,
        "resamples": args.resamples,
        "target_s": TARGET_S,
        "intervals_s": best_of(lambda: bootstrap_intervals(y, pred, images, proba, args.resamples), args.repeats),
        "paired_difference_s": best_of(
            lambda: paired_difference(run, reference, "macro_f1", args.resamples), args.repeats
        ),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "load_average_1min": os.getloadavg()[0],
    }
    report["within_target"] = report["intervals_s"] < TARGET_S
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
