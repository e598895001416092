import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest
from test_heads_support import planted, write_cache, write_pairs

import tagcons.heads.fit as fit_module
from tagcons.errors import BadInputError, FingerprintMismatchError
from tagcons.evaluate.compare import compare_runs, render_markdown
from tagcons.heads import HEADS, FitHeadConfig, PredictConfig, fit_head, predict
from tagcons.heads.threshold import ThresholdHead

METRIC_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "mae",
    "qwk",
    "spearman",
    "n_train",
    "n_test",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads_fit")
    data = planted(n_images=30, per_image=10, dim=16, seed=5)
    pairs = write_pairs(data, root / "pairs.csv")
    cache = write_cache(data, root / "cache.h5", skip_images=["cat_000.png"], failed_images=["cat_001.png"])
    other = write_cache(data, root / "other.h5", backbone="clip")
    return {"root": root, "pairs": pairs, "cache": cache, "other": other, "data": data}


def _fit(files, out, **kw):
    return fit_head(FitHeadConfig(cache=files["cache"], data=files["pairs"], out=files["root"] / out, **kw))


def test_fit_head_writes_a_complete_run_and_excludes_missing_pairs(files, caplog):
    with caplog.at_level(logging.WARNING):
        result = _fit(files, "thr", head="threshold", split="images")
    assert (
        "20 of 300 pairs have no embedding" in caplog.text
        and "cat_000.png" in caplog.text
        and "cat_001.png" in caplog.text
    )
    run = result.run_dir
    assert {p.name for p in run.iterdir()} >= {
        "config.json",
        "metrics.json",
        "predictions.csv",
        "confusion_matrix.png",
        "head.json",
    }
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS and metrics["n_train"] + metrics["n_test"] == 280
    assert metrics["macro_f1"] > metrics["baseline"]["macro_f1"] + 0.2
    assert "study_fixed_interval" in metrics
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == "threshold" and config["backbone"] == "tiny" and config["cache_fingerprint"]
    assert set(config["versions"]) >= {"tagcons", "torch", "scikit-learn", "lightgbm", "numpy"}
    test_images = set(pd.read_csv(run / "predictions.csv")["image"])
    assert not test_images & {"cat_000.png", "cat_001.png"}


def test_same_seed_gives_identical_metrics(files):
    kw = dict(head="mlp", head_params={"recipe": "robust", "max_epochs": 8}, seed=11)
    first = _fit(files, "mlp_a", **kw).metrics
    second = _fit(files, "mlp_b", **kw).metrics
    assert first == second
    assert (files["root"] / "mlp_a" / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pairs_split_and_cv_report_pooled_and_per_fold(files):
    metrics = _fit(files, "cv", head="logreg", head_params={"Cs": (0.1,)}, cv=3, split="images").metrics
    assert len(metrics["per_fold"]) == 3 and metrics["n_test"] == 280 and metrics["cv"] == 3
    pairs = _fit(files, "pairs", head="threshold", split="pairs", features="rich").metrics
    # the split is of all 300 rows (60 test); the 20 pairs without embeddings leave it afterwards
    assert pairs["n_test"] + pairs["n_dropped_test"] == 60 and pairs["n_dropped_test"] > 0


def test_predict_scores_pairs_and_names_missing_ones_with_embed_command(files, caplog):
    run = _fit(files, "lgbm", head="lgbm", head_params={"n_estimators": 60}).run_dir
    out = files["root"] / "out" / "pred.csv"
    with caplog.at_level(logging.WARNING):
        result = predict(PredictConfig(run=run, cache=files["cache"], data=files["pairs"], out=out, images="imgs"))
    assert "tagcons embed --data" in caplog.text and "--images imgs --backbone tiny" in caplog.text
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image", "text", "true", "pred", "expected", "p1", "p2", "p3", "p4", "p5"]
    assert result.n_scored == len(frame) == 280 and result.n_missing == 20
    assert np.allclose(frame[["p1", "p2", "p3", "p4", "p5"]].sum(axis=1), 1.0)
    test_rows = pd.read_csv(run / "predictions.csv")
    merged = test_rows.merge(frame, on=["image", "text"], suffixes=("_fit", "_predict"))
    assert (merged["pred_fit"] == merged["pred_predict"]).all()  # the saved head reproduces the run


def test_predict_without_labels(files):
    run = _fit(files, "thr_nolabel", head="threshold").run_dir
    unlabelled = write_pairs(files["data"], files["root"] / "nolabel.csv", labels=False)
    result = predict(PredictConfig(run=run, cache=files["cache"], data=unlabelled, out=files["root"] / "p2.csv"))
    assert result.metrics is None and "true" not in pd.read_csv(result.out).columns


def test_predict_refuses_a_cache_with_another_fingerprint(files):
    run = _fit(files, "thr_fp", head="threshold").run_dir
    with pytest.raises(FingerprintMismatchError, match="embedded with other settings than the cache run"):
        predict(PredictConfig(run=run, cache=files["other"], data=files["pairs"], out=files["root"] / "x.csv"))


def test_bad_inputs_raise_clear_errors(files, tmp_path):
    with pytest.raises(BadInputError, match="unknown head"):
        _fit(files, "bad1", head="random-forest")
    with pytest.raises(BadInputError, match="unknown --split"):
        _fit(files, "bad2", head="threshold", split="rows")
    with pytest.raises(BadInputError, match="cache file not found"):
        fit_head(FitHeadConfig(cache=tmp_path / "none.h5", data=files["pairs"], head="threshold", out=tmp_path / "r"))
    stranger = planted(n_images=3, per_image=4, dim=16, seed=9)
    stranger.images = np.array([f"zz_{k}" for k in stranger.images])
    strange_pairs = write_pairs(stranger, tmp_path / "strange.csv")
    with pytest.raises(BadInputError, match="none of the 12 pairs"):
        fit_head(FitHeadConfig(cache=files["cache"], data=strange_pairs, head="threshold", out=tmp_path / "r"))
    _fit(files, "bad_existing", head="threshold")
    with pytest.raises(BadInputError, match="already holds a run"):
        _fit(files, "bad_existing", head="threshold")
    with pytest.raises(BadInputError, match="a tagcons run directory"):
        predict(PredictConfig(run=tmp_path, cache=files["cache"], data=files["pairs"], out=tmp_path / "p.csv"))


def test_compare_runs_from_fit_head(files):
    runs = [
        _fit(files, "cmp_thr", head="threshold").run_dir,
        _fit(files, "cmp_lgbm", head="lgbm", head_params={"n_estimators": 30}).run_dir,
    ]
    frame = compare_runs(runs)
    assert list(frame["head"]) == ["threshold", "lgbm"] and set(frame["split"]) == {"images"}
    for run, (_, row) in zip(runs, frame.iterrows()):
        assert row["macro_f1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["macro_f1"])
    assert render_markdown(frame).count("**") >= 2 * 7


class _SpyHead(ThresholdHead):
    """The threshold head, recording the rows each fit is given (a test double, registered for one test)."""

    name = "spy"
    calls: list = []

    def fit(self, X, y, groups=None):
        self.calls.append((len(X), None if groups is None else np.asarray(groups).copy()))
        return super().fit(X, y, groups)


@pytest.fixture
def spy_head(monkeypatch):
    monkeypatch.setitem(HEADS, "spy", _SpyHead)
    monkeypatch.setattr(_SpyHead, "calls", [])
    return _SpyHead.calls


def test_holdout_head_is_fitted_on_training_rows_only_grouped_by_image(files, spy_head):
    result = _fit(files, "spy_holdout", head="spy", split="images")
    test_images = set(pd.read_csv(result.run_dir / "predictions.csv")["image"])
    [(n_rows, groups)] = spy_head
    assert n_rows == result.metrics["n_train"] == 280 - result.metrics["n_test"]  # never the test rows
    assert groups is not None and len(groups) == n_rows  # inner validation / C search split by image
    assert test_images and not set(groups) & test_images


def test_pairs_split_gives_the_head_no_groups(files, spy_head):
    _fit(files, "spy_pairs", head="spy", split="pairs")
    [(_, groups)] = spy_head
    assert groups is None


def test_cv_heads_see_each_image_in_all_folds_but_its_own_then_refit_on_all(files, spy_head):
    _fit(files, "spy_cv", head="spy", split="images", cv=4)
    *folds, (n_final, final_groups) = spy_head
    assert len(folds) == 4 and all(groups is not None and len(groups) == n for n, groups in folds)
    seen = pd.Series(np.concatenate([np.unique(groups) for _, groups in folds])).value_counts()
    assert len(seen) == 28 and set(seen) == {3}  # grouped folds: each image is tested in exactly one fold
    assert n_final == 280 and len(np.unique(final_groups)) == 28


def test_baseline_heads_with_a_cache_test_on_its_rows_and_predict(files):
    """Given a cache, a pixel-free head leaves out the same pairs as the heads it is a baseline for."""
    text = _fit(files, "text_only", head="text-only")
    threshold = _fit(files, "thr_rows", head="threshold")
    assert text.metrics["test_rows_hash"] == threshold.metrics["test_rows_hash"]
    out = files["root"] / "text_pred.csv"
    predict(PredictConfig(run=text.run_dir, cache=files["cache"], data=files["pairs"], out=out))
    tested = pd.read_csv(text.run_dir / "predictions.csv")
    merged = tested.merge(pd.read_csv(out), on=["image", "text"], suffixes=("_fit", "_predict"))
    assert len(merged) == len(tested) and (merged["pred_fit"] == merged["pred_predict"]).all()


@pytest.fixture(scope="module")
def mostly_fives(tmp_path_factory):
    """16 images, every pair but two images' scored 5: a validation part drawn from the others holds one score."""
    root = tmp_path_factory.mktemp("mostly_fives")
    data = planted(n_images=16, per_image=4, dim=8, seed=3)
    data.labels = np.where(np.isin(data.images, ["cat_000.png", "cat_001.png"]), data.labels, 5)
    return write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5")


@pytest.mark.parametrize("head", ["logreg", "mlp", "lgbm", "ordinal"])
def test_a_validation_part_of_one_score_leaves_temperature_1_and_rounding_cuts_with_a_warning(
    mostly_fives, tmp_path, caplog, monkeypatch, head
):
    pairs, cache = mostly_fives
    params = {"C": 1.0} if head in ("logreg", "ordinal") else {}  # a fixed C: no inner search on 12 images
    config = FitHeadConfig(cache=cache, data=pairs, head=head, out=tmp_path / head, head_params=params)
    drawn = fit_module.calibration_rows

    def only_fives_in_validation(rows, y, *args):  # the draw a stratified split avoids when it can
        fit_rows, val_rows = drawn(rows, y, *args)
        other = val_rows[y[val_rows] != 5]
        return np.sort(np.r_[fit_rows, other]), val_rows[y[val_rows] == 5]

    monkeypatch.setattr(fit_module, "calibration_rows", only_fives_in_validation)
    with caplog.at_level(logging.WARNING):
        result = fit_head(config)
    assert result.head.rule_.temperature == 1.0
    np.testing.assert_allclose(result.head.rule_.cuts, [1.5, 2.5, 3.5, 4.5])
    assert result.head.rule_.cut_scores == (1, 2, 3, 4, 5)
    assert any("only score 5" in r.getMessage() and "--val-size" in r.getMessage() for r in caplog.records)


def test_compare_puts_runs_on_different_scales_in_separate_groups(files, tmp_path):
    from tagcons.evaluate.compare import paired_differences

    shifted = dataclasses.replace(files["data"], labels=files["data"].labels - 1)
    zero_to_four = write_pairs(shifted, tmp_path / "pairs_0_4.csv")
    runs = [
        _fit(files, "scale_thr", head="threshold").run_dir,
        _fit(files, "scale_lgbm", head="lgbm", head_params={"n_estimators": 30}).run_dir,
        *[
            fit_head(
                FitHeadConfig(cache=files["cache"], data=zero_to_four, out=tmp_path / name, head=head, scale="0-4")
            ).run_dir
            for name, head in (("thr_0_4", "threshold"), ("text_0_4", "text-only"))
        ],
    ]
    groups = paired_differences(runs, resamples=200)
    assert [list(g.frame["run"]) for g in groups] == [["scale_thr", "scale_lgbm"], ["thr_0_4", "text_0_4"]]
    assert all(g.differences for g in groups)  # each pair of runs compared within its own scale
    assert "1-5 scale" in groups[0].reason and "0-4 scale" in groups[1].reason
