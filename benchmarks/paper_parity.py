"""Parity with the study's published table: `tagcons evaluate` on each of its eight out-of-fold files.

    python benchmarks/paper_parity.py [--study ../shared/data/study-v2] [--runs DIR]

For each `oof/<model>.csv` of the study's published version (12,011 pairs, 5 folds grouped by post,
labels 0-4) this runs the equivalent of

    tagcons evaluate --predictions oof/<model>.csv --data dataset.csv --key-col sample_id \
        --pred-col pred_label --true-col true_label --fold-col fold --pred-offset 1 \
        --image-col post_id --text-col hashtag --label-col label --out RUNS/<model>

and compares the run's per-fold metrics and their mean and sd (ddof 1, as the study's table) with
`summary_metrics.csv` and `fold_metrics.csv`: accuracy, macro-F1, weighted-F1, MAE, QWK and adjacent
accuracy. Writes benchmarks/results/paper_parity.json with every difference and the largest one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from tagcons.configs import EvaluateConfig, PairColumns
from tagcons.evaluate.imported import evaluate_predictions

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent.parent / "shared" / "data" / "study-v2"
MODELS = (
    "clip_sim",
    "clip_frozen",
    "clip_ft",
    "koclip_sim",
    "koclip_frozen",
    "koclip_ft",
    "koclip_svm",
    "koclip_xgb",
)
# tagcons' metric -> the study's column stem
METRICS = {
    "accuracy": "accuracy",
    "macro_f1": "macro_f1",
    "weighted_f1": "weighted_f1",
    "mae": "mae",
    "qwk": "qwk",
    "adjacent_accuracy": "adj_acc",
}
STUDY_COLUMNS = PairColumns(image="post_id", text="hashtag", label="label")


def evaluate_model(study: Path, model: str, out: Path) -> dict:
    """metrics.json of `tagcons evaluate` on one of the study's out-of-fold files."""
    config = EvaluateConfig(
        predictions=study / "oof" / f"{model}.csv",
        data=study / "dataset.csv",
        out=out,
        pred_col="pred_label",
        true_col="true_label",
        fold_col="fold",
        key_col="sample_id",
        pred_offset=1,
        columns=STUDY_COLUMNS,
        overwrite=True,
    )
    return evaluate_predictions(config).metrics


def differences(metrics: dict, summary: pd.Series, folds: pd.DataFrame) -> dict:
    """tagcons minus the study for each metric's mean, sd and per-fold values."""
    found = metrics["fold_summary"]
    out = {}
    for ours, theirs in METRICS.items():
        per_fold = {f["fold"]: f[ours] for f in metrics["per_fold"]}
        out[ours] = {
            "mean": found["mean"][ours] - summary[f"{theirs}_mean"],
            "sd": found["sd"][ours] - summary[f"{theirs}_std"],
            "per_fold_max_abs": max(abs(per_fold[int(f)] - v) for f, v in zip(folds["fold"], folds[theirs])),
        }
    return out


def largest(diffs: dict) -> float:
    return max(abs(v) for metric in diffs.values() for v in metric.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", type=Path, default=STUDY)
    parser.add_argument("--runs", type=Path, default=None, help="Keep the runs here (default: a temporary folder).")
    args = parser.parse_args()
    summary = pd.read_csv(args.study / "summary_metrics.csv").set_index("model")
    fold_table = pd.read_csv(args.study / "fold_metrics.csv")
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        results, started = {}, time.perf_counter()
        for model in MODELS:
            metrics = evaluate_model(args.study, model, runs / model)
            diffs = differences(metrics, summary.loc[model], fold_table[fold_table["model"] == model])
            results[model] = {
                "largest_abs_difference": largest(diffs),
                "macro_f1_mean": metrics["fold_summary"]["mean"]["macro_f1"],
                "macro_f1_pooled": metrics["macro_f1"],
                "macro_f1_pooled_ci95": metrics["ci95"]["macro_f1"],
                "differences": diffs,
            }
            print(f"{model:14s} largest |tagcons - paper| {results[model]['largest_abs_difference']:.3g}")
        seconds = time.perf_counter() - started
    overall = max(r["largest_abs_difference"] for r in results.values())
    print(f"largest difference over {len(MODELS)} models x {len(METRICS)} metrics (mean, sd, folds): {overall:.3g}")
    payload = {
        "command": "python benchmarks/paper_parity.py",
        "what": "tagcons evaluate on the study's out-of-fold files vs its summary_metrics.csv and fold_metrics.csv",
        "sd": "ddof 1 (sample sd over the 5 folds), as the study's table",
        "largest_abs_difference": overall,
        "seconds": round(seconds, 2),
        "models": results,
    }
    out = HERE / "results" / "paper_parity.json"
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
