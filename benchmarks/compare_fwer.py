"""False-claim benchmark of `compare`: tables of equal heads with a "significant" loser (issue 23, item 1).

    nice python benchmarks/compare_fwer.py [--tables 300]

Simulated heads of equal skill (`tagcons.evaluate.simulation`: exchangeable heads, so their population
metrics are equal) on simulated test sets; for tables of 2 to 8 of them, the share of tables where
`compare` would mark at least one run significantly worse than the best (the family-wise error rate),
for macro-F1 and QWK: with the simultaneous max-|t| intervals compare uses
(`simultaneous.table_differences`), and with each run tested alone against the best at 95% (what
compare did before). Also the power: one head given a stronger signal, the share of tables where it
is best and every other run is significantly worse. Writes benchmarks/results/compare_fwer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tagcons.evaluate import intervals
from tagcons.evaluate.simulation import Population, draw_counts
from tagcons.evaluate.simultaneous import table_differences

HERE = Path(__file__).resolve().parent
HEADS = (2, 3, 4, 5, 6, 8)
METRICS = ("macro_f1", "qwk")
SETTINGS = ((33, "weak"), (20, "weak"), (100, "weak"), (33, "strong"))
SIGNALS = {"strong": 0.8, "weak": 0.3}
RESAMPLES = 1000


def claims(resampled: list, metric: str) -> tuple[bool, bool]:
    """(a loser marked significant with the simultaneous intervals, one marked when tested alone)."""
    table = table_differences(resampled, metric)
    best = int(np.nanargmax(table.point))
    others = [i for i in range(len(resampled)) if i != best]
    simultaneous = any(table.difference(i, best).significant for i in others)
    return simultaneous, any(_alone(resampled[i], resampled[best], metric) for i in others)


def _alone(run, best, metric: str) -> bool:
    values, errors = intervals.difference_resamples(run, best, metric)
    bounds = intervals.interval(intervals.studentised_replicates(values, errors))
    return bounds is not None and (bounds[0] > 0 or bounds[1] < 0)


def false_claim_rates(n_images: int, signal: float, tables: int, seed: int) -> dict:
    """{method: {metric: {heads: share of tables with a false claim}}}; every table's heads share its draw."""
    rng = np.random.default_rng(seed)
    found = {method: {m: {h: [] for h in HEADS} for m in METRICS} for method in ("simultaneous", "one_at_a_time")}
    for table in range(tables):
        counts = draw_counts(Population(signal=signal), n_images, rng, max(HEADS))
        resampled = [intervals.resample(c, RESAMPLES, table) for c in counts]
        for heads in HEADS:
            for metric in METRICS:
                simultaneous, alone = claims(resampled[:heads], metric)
                found["simultaneous"][metric][heads].append(simultaneous)
                found["one_at_a_time"][metric][heads].append(alone)
    return {
        method: {m: {str(h): float(np.mean(v)) for h, v in by_heads.items()} for m, by_heads in rates.items()}
        for method, rates in found.items()
    }


def power(n_images: int, tables: int, seed: int, heads: int = 5, signals=(0.5, 0.3)) -> dict:
    """One head of signal 0.5 among ``heads`` of 0.3: share of tables where it is best and all others
    are significantly worse, per metric."""
    rng = np.random.default_rng(seed)
    wins = {m: [] for m in METRICS}
    for table in range(tables):
        counts = draw_counts(Population(), n_images, rng, signals=(signals[0],) + (signals[1],) * (heads - 1))
        resampled = [intervals.resample(c, RESAMPLES, table) for c in counts]
        for metric in METRICS:
            result = table_differences(resampled, metric)
            best = int(np.nanargmax(result.point))
            wins[metric].append(best == 0 and all(result.difference(i, 0).significant for i in range(1, heads)))
    return {m: float(np.mean(v)) for m, v in wins.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=300)
    parser.add_argument("--power-tables", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results" / "compare_fwer.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    report = {"tables": args.tables, "resamples": RESAMPLES, "heads": list(HEADS), "settings": {}}
    for n_images, label in SETTINGS:
        rates = false_claim_rates(n_images, SIGNALS[label], args.tables, seed=n_images + len(label))
        report["settings"][f"{n_images} images, {label} signal"] = rates
        print(n_images, label, json.dumps(rates), flush=True)
    report["power"] = {"n_images": 100, "heads": 5, "signals": [0.5, 0.3], **power(100, args.power_tables, seed=1)}
    print("power", report["power"], flush=True)
    report.update(
        seconds=time.perf_counter() - started,
        cpus=os.cpu_count(),
        machine=platform.platform(),
        load_average_1min=os.getloadavg()[0],
    )
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
