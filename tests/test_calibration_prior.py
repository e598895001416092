"""Probabilities that look calibrated and are not (issue 23): the balanced class weights shift a head's
probabilities towards the rare scores, a single temperature cannot undo that, and top-label ECE does not
see it. metrics.json's calibration reports class-wise ECE and the mean expected against the mean true
score; the calibration divides the class weights out before fitting the temperature, while argmax (and
the median) keep deciding as the class-weighted head does."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from test_heads_support import planted, write_cache, write_pairs

from tagcons.evaluate.calibration import calibration_metrics, classwise_ece
from tagcons.heads import FitHeadConfig, fit_head, load_head
from tagcons.heads.calibrate import fit_rule, prior_correction
from tagcons.heads.decode import ScoreRule
from tagcons.labels import class_weights

SHARES = np.array([0.06, 0.12, 0.18, 0.28, 0.36])


def _shifted(n=6000, seed=0):
    """(honest probabilities, scores drawn from them, the same probabilities shifted as balanced weights shift
    them: p_k proportional to q_k * w_k)."""
    rng = np.random.default_rng(seed)
    honest = softmax(rng.normal(size=(n, 5)) * 0.6 + np.log(SHARES), axis=1)
    y = 1 + np.array([rng.choice(5, p=p) for p in honest])
    weighted = honest * class_weights(y, (1, 2, 3, 4, 5))
    return honest, y, weighted / weighted.sum(axis=1, keepdims=True)


def test_classwise_ece_is_the_mean_over_scores_of_each_scores_binned_gap():
    proba = np.array([[0.9, 0.1, 0.0], [0.3, 0.7, 0.0], [0.2, 0.8, 0.0], [0.55, 0.45, 0.0]])
    y = np.array([1, 1, 2, 2])
    # every probability of a score falls in a bin of its own (15 bins): each row's gap |[y = k] - p_k|
    gap1 = (abs(1 - 0.9) + abs(1 - 0.3) + abs(0 - 0.2) + abs(0 - 0.55)) / 4
    gap2 = (abs(0 - 0.1) + abs(0 - 0.7) + abs(1 - 0.8) + abs(1 - 0.45)) / 4
    assert classwise_ece(proba, y, bins=15, labels=(1, 2, 3)) == pytest.approx((gap1 + gap2) / 2)  # 3: never seen
    metrics = calibration_metrics(proba, y, labels=(1, 2, 3))
    assert metrics["mean_expected_score"] == pytest.approx(np.mean(proba @ [1, 2, 3]))
    assert metrics["mean_true_score"] == pytest.approx(1.5)
    assert metrics["mean_proba"] == pytest.approx({"1": 0.4875, "2": 0.5125, "3": 0.0})
    assert metrics["true_share"] == {"1": 0.5, "2": 0.5, "3": 0.0}


def test_a_temperature_leaves_the_prior_shift_that_classwise_ece_and_the_mean_score_show():
    honest, y, weighted = _shifted()
    tempered = fit_rule(weighted[:3000], y[:3000], "argmax").proba(weighted[3000:])
    held_out, truth = calibration_metrics(honest[3000:], y[3000:]), calibration_metrics(tempered, y[3000:])
    assert truth["ece"] < 0.05  # top-label ECE: looks calibrated
    assert truth["classwise_ece"] > 2 * held_out["classwise_ece"]
    assert truth["mean_expected_score"] < truth["mean_true_score"] - 0.3


def test_dividing_the_class_weights_out_before_the_temperature_recovers_the_honest_probabilities():
    honest, y, weighted = _shifted()
    weights = class_weights(y[:3000], (1, 2, 3, 4, 5))
    rule = fit_rule(weighted[:3000], y[:3000], "argmax", prior=tuple(1 / weights))
    corrected = rule.proba(weighted[3000:])
    assert rule.temperature == pytest.approx(1.0, abs=0.1)
    np.testing.assert_allclose(corrected, honest[3000:], atol=0.05)
    metrics = calibration_metrics(corrected, y[3000:])
    assert metrics["mean_expected_score"] == pytest.approx(metrics["mean_true_score"], abs=0.05)
    # the decision stays the class-weighted head's: argmax of its own probabilities
    assert np.array_equal(rule.scores(corrected), 1 + weighted[3000:].argmax(axis=1))


def test_the_prior_undoes_the_heads_own_class_weights_and_nothing_without_them():
    class Weighted:
        classes_ = np.array([1, 2, 4])
        class_weight = "balanced"

    y_fit = np.array([1, 2, 2, 4, 4, 4, 4, 4])
    prior = prior_correction(Weighted(), y_fit, labels=(1, 2, 3, 4, 5))
    assert prior == pytest.approx((3 / 8, 6 / 8, 1.0, 15 / 8, 1.0))  # n_k * K / n; 1 off classes_
    Weighted.class_weight = "none"
    assert prior_correction(Weighted(), y_fit, labels=(1, 2, 3, 4, 5)) is None


def test_the_score_rule_keeps_its_prior_through_json():
    rule = ScoreRule(1.3, "expected", (2.5, 3.0, 3.5, 4.0), prior=(0.2, 0.5, 1.0, 1.5, 1.8))
    assert ScoreRule.from_json(rule.to_json()) == rule
    assert ScoreRule.from_json({"temperature": 1.1}).prior is None  # runs saved before the prior existed


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    data = planted(n_images=60, per_image=10, dim=16, strength=0.3, seed=11)
    pairs, cache = write_pairs(data, root / "pairs.csv"), write_cache(data, root / "c.h5")
    config = FitHeadConfig(
        cache=cache, data=pairs, head="logreg", head_params={"C": 0.05, "threads": 1}, out=root / "r"
    )
    return fit_head(config), pairs, cache


def test_a_weak_balanced_head_on_a_planted_cache_reports_honest_probabilities(weak_run):
    """Before: mean expected score 3.02 against a true 3.63, p(score 1) 0.19 against a share of 0.075."""
    result, _, _ = weak_run
    after = result.metrics["calibration"]["after"]
    frame = pd.read_csv(result.run_dir / "predictions.csv")
    assert after["mean_expected_score"] == pytest.approx(frame["expected"].mean())
    assert after["mean_true_score"] == pytest.approx(frame["true"].mean())
    assert abs(after["mean_expected_score"] - after["mean_true_score"]) < 0.2
    assert frame["p1"].mean() < 2 * (frame["true"] == 1).mean()
    before = result.metrics["calibration"]["before"]
    assert after["classwise_ece"] < before["classwise_ece"]


def test_the_prior_correction_leaves_the_argmax_decisions_and_is_saved_with_the_head(weak_run):
    result, _, _ = weak_run
    head = load_head(result.run_dir)
    assert head.rule_.prior is not None and head.rule_ == result.head.rule_
    assert result.metrics["calibration"]["prior"] == pytest.approx(head.rule_.prior)
    frame = pd.read_csv(result.run_dir / "predictions.csv")
    assert result.metrics["decode"] == "argmax"
    assert frame["pred"].nunique() >= 3  # still the balanced decisions, not all the majority score
