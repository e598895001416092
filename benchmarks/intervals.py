"""Interval coverage benchmark: how often the 95% intervals contain the population value (issue 23, item 2).

    nice python benchmarks/intervals.py [--sets 300] [--images 20 33 50 100 200]

Simulated test sets (`tagcons.evaluate.simulation`: image effects, the study's score shares, about
11.8 pairs per image) at strong signal (QWK about 0.73) and at the study's weak signal (QWK about
0.25). For each set, every headline metric's interval as fit-head writes it (`bootstrap_intervals`:
studentised cluster bootstrap) and the percentile interval it replaced, on the same resamples; the
share of sets whose interval contains the population value (from 100,000 simulated images), and the
mean width. Also the paired difference of two heads (`paired_difference`, one of them weaker)
against the population difference, and the pooled interval of three repeated splits
(`repeat_summary`). Writes benchmarks/results/intervals.json; docs/intervals.md states the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tagcons.evaluate import image_metrics, intervals
from tagcons.evaluate.simulation import Population, draw, draw_counts, population_metrics

HERE = Path(__file__).resolve().parent
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mae", "qwk", "spearman", "mae_expected")
SIGNALS = {"strong": 0.8, "weak": 0.3}
RESAMPLES = 1000
PAIRED = ("accuracy", "macro_f1", "mae", "qwk")


def coverage(population: Population, truth: dict, n_images: int, sets: int, seed: int) -> dict:
    """{method: {metric: {"coverage", "width"}}} over ``sets`` simulated test sets."""
    rng = np.random.default_rng(seed)
    hits = {method: {m: [] for m in METRICS} for method in ("studentised", "percentile")}
    widths = {method: {m: [] for m in METRICS} for method in hits}
    undefined = {m: 0 for m in METRICS}
    for trial in range(sets):
        y_true, preds, images, proba = draw(population, n_images, rng)
        block = intervals.bootstrap_intervals(y_true, preds[0], images, proba[0], RESAMPLES, seed=trial)
        counts = image_metrics.image_counts(y_true, preds[0], images, proba[0])
        before = image_metrics.resampled_metrics(counts, image_metrics.image_weights(counts.n_images, RESAMPLES, trial))
        for name in METRICS:
            undefined[name] += block["bootstrap"]["undefined"][name]
            for method, bounds in (
                ("studentised", block["ci95"][name]),
                ("percentile", intervals.percentile_interval(before[name])),
            ):
                hits[method][name].append(bounds is not None and bounds[0] <= truth[name] <= bounds[1])
                widths[method][name].append(np.nan if bounds is None else bounds[1] - bounds[0])
    out = {
        method: {
            m: {"coverage": float(np.mean(hits[method][m])), "width": float(np.nanmean(widths[method][m]))}
            for m in METRICS
        }
        for method in hits
    }
    out["undefined_share"] = {m: undefined[m] / (sets * RESAMPLES) for m in METRICS}
    return out


def paired_coverage(n_images: int, sets: int, seed: int, signals=(0.8, 0.7)) -> dict:
    """Coverage of `paired_difference` (a head of signal 0.8 minus one of 0.7 on the same test sets)."""
    first, second = (population_metrics(Population(signal=s)) for s in signals)
    rng = np.random.default_rng(seed)
    hits = {m: [] for m in PAIRED}
    for trial in range(sets):
        run, reference = draw_counts(Population(), n_images, rng, signals=signals)
        for m in PAIRED:
            diff = intervals.paired_difference(run, reference, m, RESAMPLES, seed=trial)
            hits[m].append(diff.ci95 is not None and diff.ci95[0] <= first[m] - second[m] <= diff.ci95[1])
    return {
        "difference": {m: first[m] - second[m] for m in PAIRED},
        "coverage": {m: float(np.mean(hits[m])) for m in PAIRED},
    }


def pooled_coverage(sets: int, seed: int, repeats: int = 3, n_images: int = 165, test_share: float = 0.2) -> dict:
    """Coverage of `repeat_summary`'s ``ci95_pooled``: one simulated table of ``n_images`` images at the
    weak signal, ``repeats`` random test parts of ``test_share`` of its images (33 of 165, the study's
    scale), predictions fixed per pair (one model), against the population value."""
    population = Population(signal=SIGNALS["weak"])
    truth = population_metrics(population)
    rng = np.random.default_rng(seed)
    hits = {m: [] for m in PAIRED}
    for trial in range(sets):
        y_true, preds, images, proba = draw(population, n_images, rng)
        outcomes = []
        for _ in range(repeats):
            test = np.isin(images, rng.choice(n_images, int(round(test_share * n_images)), replace=False))
            outcomes.append((y_true[test], preds[0][test], images[test], proba[0][test]))
        pooled = intervals.repeat_summary(outcomes, list(range(repeats)), RESAMPLES, trial)["ci95_pooled"]
        for m in PAIRED:
            hits[m].append(pooled[m] is not None and pooled[m][0] <= truth[m] <= pooled[m][1])
    return {
        "repeats": repeats,
        "n_images": n_images,
        "test_share": test_share,
        **{m: float(np.mean(v)) for m, v in hits.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=int, default=300)
    parser.add_argument("--images", type=int, nargs="+", default=[20, 33, 50, 100, 200])
    parser.add_argument("--paired-sets", type=int, default=150)
    parser.add_argument("--paired-images", type=int, nargs="+", default=[20, 33, 100])
    parser.add_argument("--pooled-sets", type=int, default=150)
    parser.add_argument("--out", default=str(HERE / "results" / "intervals.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    report = {
        "sets": args.sets,
        "paired_sets": args.paired_sets,
        "pooled_sets": args.pooled_sets,
        "resamples": RESAMPLES,
        "level": intervals.LEVEL,
        "method": intervals.METHOD,
    }
    report["populations"] = {}
    for label, signal in SIGNALS.items():
        population = Population(signal=signal)
        truth = population_metrics(population)
        entry = {"signal": signal, "population_metrics": truth, "by_images": {}}
        for n_images in args.images:
            entry["by_images"][str(n_images)] = coverage(population, truth, n_images, args.sets, seed=n_images)
            print(label, n_images, _summary(entry["by_images"][str(n_images)]), flush=True)
        report["populations"][label] = entry
    report["paired"] = {}
    for n_images in args.paired_images:
        report["paired"][str(n_images)] = paired_coverage(n_images, args.paired_sets, seed=n_images)
        print("paired", n_images, report["paired"][str(n_images)]["coverage"], flush=True)
    report["pooled"] = pooled_coverage(args.pooled_sets, seed=7)
    print("pooled", report["pooled"], flush=True)
    report.update(
        seconds=time.perf_counter() - started,
        cpus=os.cpu_count(),
        machine=platform.platform(),
        load_average_1min=os.getloadavg()[0],
    )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


def _summary(result: dict) -> str:
    return " ".join(
        f"{m}={result['studentised'][m]['coverage']:.3f}({result['percentile'][m]['coverage']:.3f})" for m in METRICS
    )


if __name__ == "__main__":
    main()
