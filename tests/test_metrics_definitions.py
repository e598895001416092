"""Every value of `compute_metrics` against the metric's textbook definition, written out here.

The reference below shares no code with tagcons or scikit-learn's metric functions, so a changed
argument (labels, zero_division, averaging), key or formula in tagcons.evaluate.metrics shows up
as a wrong number or a wrong key. Cases cover absent middle scores, predictions outside the true
scores, another score scale and the undefined values (None).

Macro averages run over the scores present in the true or the predicted labels (scikit-learn's
``average="macro"`` with ``labels=None``); ``macro_f1_full_scale`` averages F1 over every score of the
scale, present or not (docs/metrics.md).
"""

import itertools
import json
import warnings

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import f1_score, precision_score, recall_score

from tagcons.evaluate.image_metrics import metrics_from_confusion
from tagcons.evaluate.intervals import INTERVAL_METRICS
from tagcons.evaluate.metrics import (
    Confusion,
    compute_metrics,
    majority_baseline,
    majority_label,
    per_class_report,
    pooled_and_per_fold,
    quick_scores,
)

CASES = {
    "absent middle score": ([1, 1, 2, 2, 5, 5, 5, 5], [1, 2, 2, 1, 5, 5, 2, 5], (1, 2, 3, 4, 5)),
    "prediction outside the true scores": ([1, 2, 3, 3, 5, 5], [2, 2, 4, 3, 5, 1], (1, 2, 3, 4, 5)),
    "unbalanced, all scores": ([5, 5, 5, 5, 4, 4, 3, 2, 1, 5], [5, 4, 5, 5, 4, 3, 3, 3, 2, 5], (1, 2, 3, 4, 5)),
    "a 0-3 relevance grade": ([0, 0, 1, 3, 3, 2], [0, 1, 1, 3, 2, 2], (0, 1, 2, 3)),
}


def _per_class(y_true, y_pred, labels):
    rows = {}
    for k in labels:
        tp = int(np.sum((y_true == k) & (y_pred == k)))
        n_pred, n_true = int(np.sum(y_pred == k)), int(np.sum(y_true == k))
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows[str(k)] = {"precision": precision, "recall": recall, "f1": f1, "support": n_true}
    return rows


def _qwk(y_true, y_pred, labels):
    """Quadratic weighted kappa from its definition; 0 where it is undefined (no expected disagreement)."""
    k = len(labels)
    index = {label: i for i, label in enumerate(labels)}
    observed = np.zeros((k, k))
    for t, p in zip(y_true, y_pred):
        observed[index[t], index[p]] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    chance = (weights * expected).sum()
    return 1 - (weights * observed).sum() / chance if chance else 0.0


def _spearman(y_true, y_pred):
    return float(np.corrcoef(rankdata(y_true), rankdata(y_pred))[0, 1])


def _averages(rows, prefix, weights):
    weights = np.asarray(weights, dtype=float)
    return {
        f"{prefix}_{name}": float(np.dot([row[name] for row in rows.values()], weights))
        for name in ("precision", "recall", "f1")
    }


def reference_metrics(y_true, y_pred, labels):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rows = _per_class(y_true, y_pred, labels)
    support = np.array([row["support"] for row in rows.values()])
    recalls_of_present = [rows[str(k)]["recall"] for k in labels if np.any(y_true == k)]
    seen = np.array([np.any(y_true == k) or np.any(y_pred == k) for k in labels])
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean(recalls_of_present)),
        **_averages(rows, "macro", seen / seen.sum()),
        "macro_f1_full_scale": float(np.mean([row["f1"] for row in rows.values()])),
        **_averages(rows, "weighted", support / support.sum()),
        "mae": float(np.mean(np.abs(y_true - y_pred))),
        "qwk": _qwk(y_true, y_pred, labels),
        "adjacent_accuracy": float(np.mean(np.abs(y_true - y_pred) <= 1)),
        "spearman": _spearman(y_true, y_pred),
        "per_class": rows,
        "n": len(y_true),
    }


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, dict):
            _assert_same(got[key], value)
        elif value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("case", CASES)
def test_every_metric_equals_its_definition(case):
    y_true, y_pred, labels = CASES[case]
    _assert_same(compute_metrics(y_true, y_pred, labels=labels), reference_metrics(y_true, y_pred, labels))


@pytest.mark.parametrize("case", CASES)
def test_quick_scores_equal_the_definitions(case):
    y_true, y_pred, labels = CASES[case]
    want = reference_metrics(y_true, y_pred, labels)
    got = quick_scores(y_true, y_pred, labels)
    assert got == pytest.approx({key: want[key] for key in ("accuracy", "macro_f1", "qwk")}, abs=1e-12)


def _small_tables(labels=(1, 2, 3), max_rows=3):
    """Every (y_true, y_pred) of 1 to ``max_rows`` rows on a 3-score scale: the edge cases of tiny parts."""
    for n in range(1, max_rows + 1):
        for y_true in itertools.product(labels, repeat=n):
            for y_pred in itertools.product(labels, repeat=n):
                yield np.array(y_true), np.array(y_pred)


def test_quick_scores_equal_the_definitions_on_every_tiny_table():
    labels = (1, 2, 3)
    for y_true, y_pred in _small_tables(labels):
        rows = _per_class(y_true, y_pred, labels)
        seen = set(y_true.tolist()) | set(y_pred.tolist())
        want = {
            "accuracy": float(np.mean(y_true == y_pred)),
            "macro_f1": float(np.mean([rows[str(k)]["f1"] for k in sorted(seen)])),
            "qwk": _qwk(y_true, y_pred, labels),
        }
        assert quick_scores(y_true, y_pred, labels) == pytest.approx(want, abs=1e-12), (y_true, y_pred)


@pytest.mark.parametrize("case", CASES)
def test_macro_averages_are_scikit_learns_default_over_the_scores_that_occur(case):
    y_true, y_pred, labels = CASES[case]
    got = compute_metrics(y_true, y_pred, labels=labels)
    for name, metric in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
        assert got[f"macro_{name}"] == pytest.approx(metric(y_true, y_pred, average="macro", zero_division=0)), name
    full_scale = f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0)
    assert got["macro_f1_full_scale"] == pytest.approx(full_scale)


@pytest.mark.parametrize("case", CASES)
def test_the_bootstrap_computes_each_interval_metric_as_compute_metrics_does(case):
    y_true, y_pred, labels = CASES[case]
    counts = Confusion.of(y_true, y_pred, labels).counts
    from_counts = {name: float(value) for name, value in metrics_from_confusion(counts, labels).items()}
    want = compute_metrics(y_true, y_pred, labels=labels)
    assert from_counts == pytest.approx({name: want[name] for name in INTERVAL_METRICS}, abs=1e-12)


def test_perfect_predictions_score_one_when_the_scale_has_unused_scores():
    """A 1-7 scale where only 2-6 are used: perfect predictions had macro-F1 5/7 = 0.714 (issue 23)."""
    y = np.array([2, 3, 3, 4, 5, 6, 6, 2])
    labels = tuple(range(1, 8))
    got = compute_metrics(y, y, labels=labels)
    assert got["macro_f1"] == pytest.approx(1.0) and got["macro_precision"] == pytest.approx(1.0)
    assert got["macro_recall"] == pytest.approx(1.0) and got["macro_f1_full_scale"] == pytest.approx(5 / 7)
    assert quick_scores(y, y, labels)["macro_f1"] == pytest.approx(1.0)
    assert metrics_from_confusion(Confusion.of(y, y, labels).counts, labels)["macro_f1"] == pytest.approx(1.0)


def test_quick_scores_of_nothing_and_of_one_score_are_zero_not_nan():
    assert quick_scores([], []) == {"accuracy": 0.0, "macro_f1": 0.0, "qwk": 0.0}
    assert quick_scores([3, 3], [3, 3]) == {"accuracy": 1.0, "macro_f1": 1.0, "qwk": 0.0}


@pytest.mark.parametrize("case", CASES)
def test_metrics_raise_no_warnings_on_absent_scores_and_constant_predictions(case):
    y_true, y_pred, labels = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. UndefinedMetricWarning, ConstantInputWarning
        compute_metrics(y_true, y_pred, labels=labels)
        compute_metrics(y_true, np.full(len(y_true), labels[0]), labels=labels)
        compute_metrics(np.full(len(y_true), labels[-1]), y_pred, labels=labels)
        per_class_report(np.asarray(y_true), np.asarray(y_pred), labels)


def test_undefined_rank_metrics_are_none_and_json_clean():
    constant_prediction = compute_metrics([1, 2, 5], [4, 4, 4])
    assert constant_prediction["spearman"] is None and constant_prediction["qwk"] is not None
    constant_truth = compute_metrics([2, 2, 2], [1, 2, 3])
    assert constant_truth["spearman"] is None and constant_truth["qwk"] is not None
    one_score_everywhere = compute_metrics([4, 4], [4, 4])
    assert one_score_everywhere["qwk"] is None and one_score_everywhere["spearman"] is None
    json.dumps(one_score_everywhere, allow_nan=False)


def test_two_scores_are_enough_for_qwk_and_spearman():
    m = compute_metrics([1, 5, 1, 5], [1, 5, 5, 1])
    assert m["qwk"] == pytest.approx(_qwk([1, 5, 1, 5], [1, 5, 5, 1], (1, 2, 3, 4, 5)))
    assert m["spearman"] == pytest.approx(0.0)


def test_expected_score_mae_uses_the_scale_values():
    proba = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75], [1.0, 0, 0, 0]])
    m = compute_metrics([0, 3, 1], [0, 3, 0], proba, labels=(0, 1, 2, 3))
    assert m["mae_expected"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert "mae_expected" not in compute_metrics([0, 3, 1], [0, 3, 0], labels=(0, 1, 2, 3))


def test_per_class_report_names_every_scale_value_even_unseen_ones():
    report = per_class_report(np.array([0, 0, 2]), np.array([0, 2, 2]), labels=(0, 1, 2))
    assert report == {
        "0": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
        "1": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        "2": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
    }


@pytest.mark.parametrize(
    "y_train, labels, want",
    [([1, 1, 5, 5], (1, 2, 3, 4, 5), 5), ([2, 2, 2, 4], (1, 2, 3, 4, 5), 2), ([0, 1, 1, 0, 3], (0, 1, 2, 3), 1)],
)
def test_majority_label_is_the_mode_with_ties_to_the_higher_score(y_train, labels, want):
    assert majority_label(y_train, labels) == want


def test_majority_baseline_scores_the_training_mode_on_the_test_rows():
    base = majority_baseline([0, 0, 3], [0, 3, 3, 1], labels=(0, 1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        want = reference_metrics([0, 3, 3, 1], [0, 0, 0, 0], (0, 1, 2, 3))
    want["spearman"] = None  # undefined for a constant prediction
    assert base.pop("label") == 0
    _assert_same(base, want)


def test_pooled_metrics_are_those_of_all_folds_together_and_keep_the_probabilities():
    rng = np.random.default_rng(3)
    folds = []
    for n in (7, 9, 8):
        proba = rng.dirichlet(np.ones(4), n)
        folds.append((rng.integers(0, 4, n), rng.integers(0, 4, n), proba))
    pooled, per_fold = pooled_and_per_fold(folds, labels=(0, 1, 2, 3))
    y_true, y_pred, proba = (np.concatenate(part) for part in zip(*folds))
    _assert_same(pooled, compute_metrics(y_true, y_pred, proba, labels=(0, 1, 2, 3)))
    for fold, got in zip(folds, per_fold):
        _assert_same(got, compute_metrics(*fold, labels=(0, 1, 2, 3)))
    partly_without = pooled_and_per_fold([folds[0], (*folds[1][:2], None)], labels=(0, 1, 2, 3))
    assert "mae_expected" not in partly_without[0] and "mae_expected" in partly_without[1][0]


@pytest.mark.parametrize("y_true, off", [([1, 9, 2], "[9]"), ([0, 3, 3], "[0]"), ([1, 2, 7, 7, 6], "[6, 7]")])
def test_scores_off_the_scale_or_no_rows_are_a_programming_error_named_plainly(y_true, off):
    with pytest.raises(ValueError, match=rf"^scores \[{off[1:-1]}\] are not on the scale \[1, 2, 3, 4, 5\]$"):
        compute_metrics(y_true, [1] * len(y_true))
    with pytest.raises(ValueError, match=r"^no rows to compute metrics on$"):
        compute_metrics([], [])


def test_fold_summary_is_the_mean_and_sample_sd_over_folds_leaving_undefined_values_out():
    from tagcons.evaluate.metrics import fold_summary

    folds = [compute_metrics(*case[:2], labels=case[2]) for case in list(CASES.values())[:3]]
    folds[1]["spearman"] = None  # undefined in one fold: summarised over the other two
    for number, fold in enumerate(folds):
        fold["fold"] = number
    summary = fold_summary(folds)
    accuracies = [f["accuracy"] for f in folds]
    assert summary["mean"]["accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert summary["sd"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-12)
    spearman = [folds[0]["spearman"], folds[2]["spearman"]]
    assert summary["mean"]["spearman"] == pytest.approx(np.mean(spearman), abs=1e-12)
    assert summary["sd"]["spearman"] == pytest.approx(np.std(spearman, ddof=1), abs=1e-12)
    assert "n" not in summary["mean"] and "fold" not in summary["mean"] and "per_class" not in summary["mean"]
    assert summary["n_folds"] == 3 and "ddof 1" in summary["rows"]
    one = fold_summary(folds[:1])
    assert one["mean"]["accuracy"] == pytest.approx(folds[0]["accuracy"]) and one["sd"]["accuracy"] is None
