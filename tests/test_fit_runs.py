"""A fit-head run's numbers against the runs and parts they summarise, on a 0-4 scale (so nothing
falls back to the study's 1-5 by accident): repeats are the single-seed runs pooled, the majority
baseline is the training side's mode, and the bookkeeping adds up."""

import json

import numpy as np
import pandas as pd
import pytest
from test_heads_support import planted, write_cache

from tagcons.evaluate.intervals import repeat_summary
from tagcons.heads import FitHeadConfig, fit_head

SCALE = (0, 1, 2, 3, 4)
LOGREG = {"Cs": (1.0,), "threads": 1}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit_runs")
    data = planted(n_images=24, per_image=8, dim=8, seed=6)
    pairs = root / "pairs.csv"
    frame = pd.DataFrame({"Image Filename": data.images, "Hashtag": data.texts, "Score": data.labels - 1})
    frame.to_csv(pairs, index=False)
    cache = write_cache(data, root / "c.h5", skip_images=["cat_005.png"])
    return {"root": root, "pairs": pairs, "cache": cache, "frame": frame}


def _fit(files, out, **kw):
    config = FitHeadConfig(data=files["pairs"], cache=files["cache"], out=files["root"] / out, scale="0-4", **kw)
    return fit_head(config)


def _outcome(run_dir):
    """(y_true, y_pred, images, proba) of a run's test rows, as its predictions.csv holds them."""
    frame = pd.read_csv(run_dir / "predictions.csv")
    proba = frame[[f"p{k}" for k in SCALE]].to_numpy()
    return frame["true"].to_numpy(), frame["pred"].to_numpy(), frame["image"].to_numpy(), proba


def test_repeats_pool_the_single_seed_runs_with_the_runs_seed_for_the_bootstrap(files):
    repeated = _fit(files, "repeated", head="logreg", head_params=LOGREG, seed=7, repeats=2)
    single = [_fit(files, f"seed_{s}", head="logreg", head_params=LOGREG, seed=s) for s in (7, 8)]
    want = repeat_summary([_outcome(r.run_dir) for r in single], [7, 8], bootstrap_seed=7, labels=SCALE)
    assert json.dumps(repeated.metrics["repeats"], sort_keys=True) == json.dumps(want, sort_keys=True)
    assert repeated.metrics["macro_f1"] == single[0].metrics["macro_f1"]  # the run itself is the first seed's


def test_the_majority_baseline_is_the_training_sides_mode_and_the_rows_add_up(files):
    result = _fit(files, "threshold", head="threshold", seed=3)
    metrics, run = result.metrics, result.run_dir
    sides = json.loads((run / "part_keys.json").read_text())
    train_keys = set(sides["fit"]) | set(sides["validation"] or [])
    frame = files["frame"]
    keys = frame["Image Filename"] + "\t" + frame["Hashtag"]
    train_scores = frame["Score"][keys.isin(train_keys)].to_numpy()
    counts = np.bincount(train_scores, minlength=5)
    assert metrics["baselines"]["majority"]["label"] == int(np.flatnonzero(counts == counts.max()).max())
    assert metrics["baseline"] == metrics["baselines"]["majority"]
    assert set(metrics["baselines"]) == {"majority", "text_only", "image_prior"}
    assert metrics["n_train"] == len(train_keys) and metrics["n_test"] == len(sides["test"])
    assert metrics["n_train"] + metrics["n_test"] + metrics["n_dropped_fit"] + metrics["n_dropped_test"] == 192
    assert metrics["n_dropped_fit"] + metrics["n_dropped_test"] == 8  # cat_005.png's pairs have no embedding
    config = json.loads((run / "config.json").read_text())
    assert config["scale"] == "0-4" and config["split_spec"]["seed"] == 3 and config["n_pairs"] == 184
