"""Parity with the study's published table (study-v2): `tagcons evaluate` on its out-of-fold files reproduces
summary_metrics.csv (mean and sd over the 5 folds) to floating-point precision. Skipped without the data;
benchmarks/paper_parity.py checks all eight models."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagcons.cli import main

STUDY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "study-v2"
METRICS = {"accuracy": "accuracy", "macro_f1": "macro_f1", "weighted_f1": "weighted_f1", "mae": "mae"}
METRICS.update(qwk="qwk", adjacent_accuracy="adj_acc")
pytestmark = pytest.mark.skipif(not (STUDY / "oof").is_dir(), reason="study-v2 data not present (../shared/data)")


def _evaluate(model: str, out: Path) -> dict:
    args = ["-q", "evaluate", "--predictions", STUDY / "oof" / f"{model}.csv", "--data", STUDY / "dataset.csv"]
    args += ["--key-col", "sample_id", "--pred-col", "pred_label", "--true-col", "true_label", "--fold-col", "fold"]
    args += ["--pred-offset", "1", "--image-col", "post_id", "--text-col", "hashtag", "--label-col", "label"]
    main([str(a) for a in [*args, "--out", out]])  # returns on success; bad input would exit 2
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("model", ["koclip_ft", "clip_ft"])
def test_evaluate_reproduces_the_papers_mean_and_sd_over_folds(tmp_path, model):
    metrics = _evaluate(model, tmp_path / model)
    paper = pd.read_csv(STUDY / "summary_metrics.csv").set_index("model").loc[model]
    summary = metrics["fold_summary"]
    for ours, theirs in METRICS.items():
        assert summary["mean"][ours] == pytest.approx(paper[f"{theirs}_mean"], abs=1e-9), ours
        assert summary["sd"][ours] == pytest.approx(paper[f"{theirs}_std"], abs=1e-9), ours
    assert metrics["n_test"] == 12011 and metrics["n_test_images"] == 1673 and summary["n_folds"] == 5
    low, high = metrics["ci95"]["macro_f1"]
    assert low < metrics["macro_f1"] < high and np.isfinite([low, high]).all()
