"""The threshold head beyond the study's scale: exact search for any number of scores, the cut rule at
its boundaries, the study's search and fixed mapping, and what a saved head restores."""

import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.heads import load_head, make_head
from tagcons.heads.cuts import STUDY_FIXED_CUTS, best_chain, scores_from_cuts, search_cuts
from tagcons.heads.features import cosine_of


def _objective(y, pred, labels, objective):
    if objective == "macro_f1":
        return f1_score(y, pred, labels=list(labels), average="macro", zero_division=0)
    return cohen_kappa_score(y, pred, labels=list(labels), weights="quadratic")


def _brute_force(similarity, y, labels, objective, n_grid):
    """The best objective over every ordered choice of len(labels) - 1 cuts from the quantile grid."""
    grid = np.quantile(similarity, np.arange(1, n_grid + 1) / (n_grid + 1))
    combos = itertools.combinations(range(n_grid), len(labels) - 1)
    return max(_objective(y, scores_from_cuts(similarity, grid[list(c)], labels), labels, objective) for c in combos)


def _scored_rows(labels, n, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    y = rng.choice(labels, n)
    return 0.08 * (y - min(labels)) + rng.normal(0, noise, n), y


SCALES = [((0, 1), 4), ((0, 1, 2), 0), ((1, 2, 3, 4), 1), ((0, 1, 2, 3), 2), ((1, 2, 3, 4, 5, 6), 3)]


@pytest.mark.parametrize("objective", ["macro_f1", "qwk"])
@pytest.mark.parametrize("labels, seed", SCALES)
@pytest.mark.parametrize("ties", [False, True])
def test_exact_search_is_the_best_over_every_grid_combination_on_any_scale(objective, labels, seed, ties):
    similarity, y = _scored_rows(labels, 120, seed)
    if ties:  # similarities on a coarse grid: rows sit exactly on the cut-points and must take the higher score
        similarity = np.round(similarity, 1)
    cuts, value = search_cuts(similarity, y, objective, n_grid=8)
    assert len(cuts) == len(labels) - 1 and np.all(np.diff(cuts) >= 0)
    assert set(cuts) <= set(np.quantile(similarity, np.arange(1, 9) / 9))  # cut-points come from the grid
    achieved = _objective(y, scores_from_cuts(similarity, cuts, labels), labels, objective)
    assert value == pytest.approx(achieved, abs=1e-12)
    assert value == pytest.approx(_brute_force(similarity, y, labels, objective, 8), abs=1e-12)


@pytest.mark.parametrize("objective", ["macro_f1", "qwk"])
@pytest.mark.parametrize("labels", [(1, 2, 3), (0, 1, 2, 3)])
def test_inverted_rows_still_get_cuts_from_the_grid_and_no_empty_end_score(objective, labels):
    """Scores falling as similarity rises: the best cuts squeeze the end scores, which the grid must not empty."""
    rng = np.random.default_rng(9)
    y = rng.choice(labels, 90)
    similarity = -0.1 * y + rng.normal(0, 0.02, 90)
    cuts, value = search_cuts(similarity, y, objective, n_grid=6)
    assert set(cuts) <= set(np.quantile(similarity, np.arange(1, 7) / 7))  # never the minimum or the maximum
    assert value == pytest.approx(_brute_force(similarity, y, labels, objective, 6), abs=1e-12)


def _every_chain(n_classes, last):
    return [(0, *inner, last) for inner in itertools.combinations(range(1, last), n_classes - 1)]


@pytest.mark.parametrize("n_classes, last, seed", [(2, 4, 0), (3, 5, 1), (4, 6, 2)])
def test_the_chain_search_is_the_best_over_every_chain_of_non_empty_segments(n_classes, last, seed):
    """Arbitrary terms (empty segments scored highest): only strictly increasing boundaries count."""
    terms = np.random.default_rng(seed).normal(size=(n_classes, last + 1, last + 1))
    terms[:, np.arange(last + 1), np.arange(last + 1)] = 10.0  # an empty segment would win if allowed
    totals = {c: sum(terms[k, c[k], c[k + 1]] for k in range(n_classes)) for c in _every_chain(n_classes, last)}
    boundaries, total = best_chain(terms)
    assert total == pytest.approx(max(totals.values()), abs=1e-12)
    assert totals[(0, *boundaries.tolist(), last)] == pytest.approx(total, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_qwk_search_beats_the_macro_f1_cuts_when_they_differ(seed):
    """Dinkelbach starts from the macro-F1 cuts and must not stop there when they are not QWK-optimal."""
    similarity, y = _scored_rows((1, 2, 3, 4, 5), 200, seed, noise=0.25)
    f1_cuts, _ = search_cuts(similarity, y, "macro_f1", n_grid=8)
    _, qwk = search_cuts(similarity, y, "qwk", n_grid=8)
    start = _objective(y, scores_from_cuts(similarity, f1_cuts), (1, 2, 3, 4, 5), "qwk")
    assert qwk > start + 1e-6  # these seeds' macro-F1 cuts are not the QWK optimum
    assert qwk == pytest.approx(_brute_force(similarity, y, (1, 2, 3, 4, 5), "qwk", 8), abs=1e-12)


def test_a_similarity_on_a_cut_takes_the_higher_score():
    cuts = [0.2, 0.4, 0.6]
    similarity = np.array([-1.0, 0.2, 0.39999, 0.4, 0.6, 0.61])
    assert scores_from_cuts(similarity, cuts, (0, 1, 2, 3)).tolist() == [0, 1, 1, 2, 3, 3]
    assert scores_from_cuts(similarity, cuts, (4, 5, 6, 7)).tolist() == [4, 5, 5, 6, 7, 7]


def _features_with_cosines(cosines):
    """Pair features [image | text] of unit vectors whose cosine is each given value."""
    angle = np.arccos(np.clip(cosines, -1, 1))
    image = np.stack([np.ones_like(angle), np.zeros_like(angle)], axis=1)
    text = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return np.hstack([image, text])


def test_head_learns_its_scores_from_y_and_restores_them(tmp_path):
    similarity, y = _scored_rows((0, 1, 2, 3), 160, seed=5, noise=0.05)
    X = _features_with_cosines(np.clip(similarity, -1, 1))
    head = make_head("threshold").fit(X, y)
    assert head.classes_.tolist() == [0, 1, 2, 3] and len(head.thresholds_) == 3
    pred = head.predict(X)
    assert set(pred) <= {0, 1, 2, 3} and np.mean(pred == y) > 0.6
    assert np.array_equal(head.predict_proba(X), (pred[:, None] == np.arange(4)[None, :]).astype(float))
    head.save(tmp_path)
    loaded = load_head(tmp_path)
    assert np.array_equal(loaded.thresholds_, head.thresholds_) and np.array_equal(loaded.predict(X), pred)
    assert loaded.train_objective_ == head.train_objective_


def test_study_fixed_mapping_is_reported_on_the_same_rows_for_five_scores_only():
    cosines = np.array([0.1, 0.25, 0.45, 0.65, 0.85, 0.9, 0.05, 0.3])
    y = np.array([1, 2, 3, 4, 5, 4, 2, 2])
    X = _features_with_cosines(cosines)
    head = make_head("threshold").fit(X, y)
    fixed = head.extra_test_metrics(X, y)["study_fixed_interval"]
    want = compute_metrics(y, scores_from_cuts(cosines, STUDY_FIXED_CUTS), labels=(1, 2, 3, 4, 5))
    assert fixed.pop("rows") == "test"  # scored on the run's test rows (docs/metrics.md)
    assert fixed.pop("per_class") == want.pop("per_class") and fixed == pytest.approx(want)
    assert fixed["accuracy"] == pytest.approx(6 / 8)
    three = make_head("threshold").fit(X[:6], np.array([0, 1, 1, 2, 2, 2]))
    assert three.extra_test_metrics(X[:6], np.array([0, 1, 1, 2, 2, 2])) == {}


def test_study_search_keeps_the_studys_five_scores_and_refuses_what_it_cannot_do():
    similarity, y = _scored_rows((1, 3, 4, 5), 80, seed=6)  # no score 2 in the training rows
    X = _features_with_cosines(np.clip(similarity, -1, 1))
    head = make_head("threshold", params={"search": "study"}).fit(X, y)
    assert head.classes_.tolist() == [1, 2, 3, 4, 5] and len(head.thresholds_) == 4
    with pytest.raises(BadInputError, match=r"^search=study cuts the study's 1-5 scale; use search=exact for another"):
        make_head("threshold", params={"search": "study"}).fit(X, y - 1)
    with pytest.raises(BadInputError, match=r"^search=study optimises macro-F1, as the study did; drop"):
        make_head("threshold", "qwk", params={"search": "study"}).fit(X, y)
    with pytest.raises(BadInputError, match=r"^threshold search 'grid': choose one of exact, study$"):
        make_head("threshold", params={"search": "grid"}).fit(X, y)


def test_the_grid_size_reaches_the_search_and_defaults_to_99():
    similarity, y = _scored_rows((1, 2, 3, 4, 5), 300, seed=8, noise=0.15)
    X = _features_with_cosines(np.clip(similarity, -1, 1))
    default_head = make_head("threshold").fit(X, y)

    for n_grid in (None, 9):
        params = {} if n_grid is None else {"n_grid": n_grid}
        head = make_head("threshold", params=params).fit(X, y)
        assert np.array_equal(head.thresholds_, search_cuts(cosine_of(X), y, "macro_f1", n_grid or 99)[0])
    assert not np.array_equal(default_head.thresholds_, search_cuts(cosine_of(X), y, "macro_f1", 100)[0])


def test_study_fixed_mapping_uses_the_runs_own_five_scores():
    cosines = np.array([0.1, 0.25, 0.45, 0.65, 0.85, 0.3])
    y = np.array([0, 1, 2, 3, 4, 1])  # a 0-4 scale
    X = _features_with_cosines(cosines)
    fixed = make_head("threshold").fit(X, y).extra_test_metrics(X, y)["study_fixed_interval"]
    assert fixed["accuracy"] == 1.0 and set(fixed["per_class"]) == {"0", "1", "2", "3", "4"}


def test_a_damaged_saved_head_names_its_file_and_the_cut_points(tmp_path):
    X = _features_with_cosines(np.linspace(0, 1, 20))
    make_head("threshold").fit(X, np.repeat([1, 2, 3, 4, 5], 4)).save(tmp_path)
    saved = json.loads((tmp_path / "head.json").read_text())
    saved["state"]["thresholds"] = [0.9, 0.1, 0.5, 0.7]
    (tmp_path / "head.json").write_text(json.dumps(saved))
    with pytest.raises(BadInputError, match=r"head\.json: thresholds must be 4 increasing numbers, found \[0\.9"):
        load_head(tmp_path)


def test_search_defaults_to_macro_f1_on_a_99_point_grid():
    similarity, y = _scored_rows((1, 2, 3, 4, 5), 300, seed=9, noise=0.2)
    default = search_cuts(similarity, y)
    explicit = search_cuts(similarity, y, "macro_f1", 99)
    assert np.array_equal(default[0], explicit[0]) and default[1] == explicit[1]
    assert not np.array_equal(default[0], search_cuts(similarity, y, "qwk", 99)[0])
    assert not np.array_equal(default[0], search_cuts(similarity, y, "macro_f1", 100)[0])


def test_a_grid_with_fewer_candidates_than_cuts_is_refused():
    similarity, y = np.linspace(0, 1, 50), np.repeat([1, 2, 3, 4, 5], 10)
    with pytest.raises(BadInputError, match="n_grid=3: 5 scores need at least 4 candidate cut-points"):
        make_head("threshold", params={"n_grid": 3}).fit(similarity[:, None], y)
