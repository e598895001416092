"""The behaviours of issue 30 that no test caught: a review planted each bug in a copy of the code and
the suite stayed green. Each test names the bug it catches (issue 30's numbering).

Bug 3: `--decode expected` cut-points fitted on one set of probabilities and applied to another (the
uncalibrated ones of the rows being scored, or the class-weighted decision probabilities): the cuts must
cut the same calibrated probabilities they were fitted on, wherever scores are decoded (a run's test side,
a fine-tune's sides, `predict`). The fitting side (cuts fitted on raw validation probabilities) was already
caught by test_ordinal.py::test_expected_cuts_are_fitted_on_the_calibrated_probabilities_they_cut; the
applying side was not.

Bugs 1, 2, 4 and 7 of the issue, planted here, were caught by existing tests (test_intervals.py,
test_evaluate_imported.py, test_report.py, test_ordinal.py, test_scale.py, test_finetune_scale.py), so
they have none of their own in this file.
"""

import dataclasses

import numpy as np
import pytest
from test_heads_support import planted_split
from test_ordinal import _overconfident

from tagcons.heads import make_head
from tagcons.heads.calibrate import calibrate_head, evaluate_probabilities, evaluate_side, fit_rule
from tagcons.heads.decode import decode_scores
from tagcons.labels import LABELS

SHARES = (0.1, 0.15, 0.25, 0.3, 0.2)


@pytest.mark.parametrize("prior", [None, (2.0, 1.5, 1.0, 0.8, 0.6)])
def test_bug3_expected_decoding_cuts_the_calibrated_probabilities_of_new_rows(prior):
    """Bug 3: a side's expected decoding is its calibrated probabilities (``side.proba``, what predictions.csv
    reports) cut at the rule's cut-points, never the raw ones nor the class-weighted decision probabilities."""
    rng = np.random.default_rng(30)
    y_val, y_test = 1 + rng.choice(5, size=600, p=SHARES), 1 + rng.choice(5, size=400, p=SHARES)
    rule = fit_rule(_overconfident(y_val, LABELS, strength=0.8, seed=4), y_val, "expected", prior=prior)
    raw = _overconfident(y_test, LABELS, strength=0.8, seed=5)
    side = evaluate_probabilities(raw, y_test, rule)
    want = decode_scores(side.proba, "expected", rule.cuts, cut_scores=rule.cut_scores)
    # the test can tell: the same cuts on the raw (or decision) probabilities decode other scores
    assert not np.array_equal(want, decode_scores(raw, "expected", rule.cuts, cut_scores=rule.cut_scores))
    if prior is not None:
        decision = rule.decision_proba(side.proba)
        assert not np.array_equal(want, decode_scores(decision, "expected", rule.cuts, cut_scores=rule.cut_scores))
    assert np.array_equal(side.by_decode["expected"], want)
    assert np.array_equal(side.pred, want)


def test_bug3_a_heads_saved_expected_rule_cuts_its_calibrated_probabilities():
    """Bug 3, through a fitted head: `predict_scores` (what `predict` writes) and `evaluate_side` (a run's test
    side) both cut the calibrated probabilities, and agree."""
    X_train, y_train, _, X_test, y_test = planted_split()
    head = make_head("logreg", seed=0, params={"C": 1.0, "threads": 1}).fit(X_train[::2], y_train[::2])
    rule = calibrate_head(head, X_train[1::2], y_train[1::2], "expected", y_fit=y_train[::2])
    head.rule_ = dataclasses.replace(rule, temperature=rule.temperature * 3.0)  # far from 1: raw != calibrated
    scores, proba = head.predict_scores(X_test)
    assert np.allclose(proba, head.rule_.proba(head.scale_proba(X_test)))
    want = decode_scores(proba, "expected", head.rule_.cuts, cut_scores=head.rule_.cut_scores)
    raw_cut = decode_scores(head.scale_proba(X_test), "expected", head.rule_.cuts, cut_scores=head.rule_.cut_scores)
    assert not np.array_equal(want, raw_cut)
    assert np.array_equal(scores, want)
    assert np.array_equal(evaluate_side(head, X_test, y_test).pred, want)
