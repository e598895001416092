"""What the pixels add, on the study's real labels and its own folds (study-v2: 12,011 pairs, 1,673 posts).

    python benchmarks/paper_pixels.py [--study ../shared/data/study-v2] [--runs DIR]

1. `tagcons evaluate` on each of the study's eight published out-of-fold files (as benchmarks/paper_parity.py).
2. Under the study's own 5 folds (`fit-head --folds folds.csv --key-col sample_id`, every row kept), the
   heads that never look at a pixel: `text-only` (the hashtag's character n-grams), `text-only` with the
   image id one-hot (`--param image_onehot=true`; under folds grouped by post every test image is unseen,
   so the id cannot help) and `image-prior` (each image's mean training score; the global mean here).
3. One `tagcons compare` of all eleven runs (they share test_rows_hash: the same 12,011 rows), and paired
   image-clustered bootstrap differences (1,000 resamples of the 1,673 posts) of each published model
   from the best pixel-free head, per metric (macro-F1, QWK, adjacent accuracy), plus the paper's
   head-to-head rankings (fine-tuned KoCLIP vs its SVM and XGBoost heads).

The best pixel-free head is picked per metric on these same rows: that favours the text baseline, so a
published model's lead over it is, if anything, understated. Writes benchmarks/results/paper_pixels.json
and paper_pixels_compare.md / .csv (the compare table).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from paper_parity import MODELS, STUDY, STUDY_COLUMNS, evaluate_model

from tagcons.configs import FitHeadConfig
from tagcons.evaluate.compare import paired_differences, write_comparison
from tagcons.evaluate.intervals import aligned_counts, paired_difference
from tagcons.heads.fit import fit_head

HERE = Path(__file__).resolve().parent
METRICS = ("macro_f1", "qwk", "adjacent_accuracy")
PIXEL_FREE = {
    "text_only": ("text-only", {}),
    "text_only_image_id": ("text-only", {"image_onehot": True}),
    "image_prior": ("image-prior", {}),
}
HEAD_TO_HEAD = [("koclip_ft", "koclip_svm"), ("koclip_ft", "koclip_xgb"), ("koclip_svm", "koclip_xgb")]


def fit_pixel_free(study: Path, runs: Path) -> dict[str, dict]:
    """metrics.json of each pixel-free head fitted under the study's folds."""
    out = {}
    for name, (head, params) in PIXEL_FREE.items():
        config = FitHeadConfig(
            data=study / "dataset.csv",
            head=head,
            out=runs / name,
            folds=study / "folds.csv",
            key_col="sample_id",
            columns=STUDY_COLUMNS,
            head_params=dict(params),
            overwrite=True,
        )
        started = time.perf_counter()
        out[name] = fit_head(config).metrics
        print(f"{name:20s} fitted in {time.perf_counter() - started:.0f} s: macro_f1 {out[name]['macro_f1']:.4f}")
    return out


def summary_row(metrics: dict) -> dict:
    """Pooled value with its interval, and the fold mean and sd, of each metric."""
    row = {}
    for metric in METRICS:
        row[metric] = {
            "pooled": metrics[metric],
            "ci95": metrics["ci95"][metric],
            "fold_mean": metrics["fold_summary"]["mean"][metric],
            "fold_sd": metrics["fold_summary"]["sd"][metric],
        }
    return row


def diff_record(diff) -> dict:
    return {"difference": diff.difference, "ci95": diff.ci95, "p": diff.p_value, "significant": diff.significant}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", type=Path, default=STUDY)
    parser.add_argument("--runs", type=Path, default=None, help="Keep the runs here (default: a temporary folder).")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        metrics = {model: evaluate_model(args.study, model, runs / model) for model in MODELS}
        metrics.update(fit_pixel_free(args.study, runs))
        names = list(metrics)
        hashes = {metrics[name]["test_rows_hash"] for name in names}
        assert len(hashes) == 1, f"runs tested on different rows: {hashes}"
        groups = paired_differences([runs / name for name in names], metrics=METRICS)
        markdown, _ = write_comparison(groups, HERE / "results" / "paper_pixels_compare.md")
        frames = [pd.read_csv(runs / name / "predictions.csv") for name in names]
    counts = dict(zip(names, aligned_counts(frames)))
    best_free = {m: max(PIXEL_FREE, key=lambda n: metrics[n][m]) for m in METRICS}
    versus_free = {
        model: {m: diff_record(paired_difference(counts[model], counts[best_free[m]], m)) for m in METRICS}
        for model in MODELS
    }
    head_to_head = {
        f"{a} - {b}": {m: diff_record(paired_difference(counts[a], counts[b], m)) for m in ("macro_f1", "qwk")}
        for a, b in HEAD_TO_HEAD
    }
    payload = {
        "command": "python benchmarks/paper_pixels.py",
        "rows": f"the study's 12,011 pairs, out-of-fold under its 5 folds (test rows {hashes.pop()[:12]})",
        "intervals": "95% image-clustered bootstrap (1,000 resamples of the 1,673 posts), paired for differences",
        "best_pixel_free": best_free,
        "runs": {name: summary_row(metrics[name]) for name in names},
        "vs_best_pixel_free": versus_free,
        "head_to_head": head_to_head,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = HERE / "results" / "paper_pixels.json"
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    for model in MODELS:
        cells = [f"{m} {versus_free[model][m]['difference']:+.4f} {_interval(versus_free[model][m])}" for m in METRICS]
        print(f"{model:14s} vs best pixel-free: " + "; ".join(cells))
    for pair, diffs in head_to_head.items():
        print(f"{pair}: " + "; ".join(f"{m} {d['difference']:+.4f} {_interval(d)}" for m, d in diffs.items()))
    print(f"written {out} and {markdown}")


def _interval(record: dict) -> str:
    low, high = record["ci95"]
    return f"[{low:+.4f}, {high:+.4f}]" + (" *" if record["significant"] else "")


if __name__ == "__main__":
    main()
