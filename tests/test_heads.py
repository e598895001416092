import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, f1_score
from test_heads_support import planted, planted_split

from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import majority_baseline
from tagcons.heads import PairFeatures, load_head, make_head, pair_features
from tagcons.heads.cuts import scores_from_cuts, search_cuts
from tagcons.heads.features import cosine_of

FAST = {"mlp": {"recipe": "robust", "max_epochs": 25}, "lgbm": {"n_estimators": 200}, "logreg": {"Cs": (0.01, 1.0)}}


@pytest.fixture(scope="module")
def split():
    return planted_split()


def test_pair_features_layouts_and_normalisation():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(4, 3)) * 5, rng.normal(size=(4, 3))
    concat, rich = pair_features(img, txt, "concat"), pair_features(img, txt, "rich")
    assert concat.shape == (4, 6) and rich.shape == (4, 13)
    assert np.allclose(np.linalg.norm(concat[:, :3], axis=1), 1.0)
    assert np.allclose(rich[:, -1], cosine_of(concat), atol=1e-6)
    with pytest.raises(BadInputError, match="unknown features"):
        pair_features(img, txt, "fancy")


@pytest.mark.parametrize("kind", ["concat", "rich"])
def test_pair_features_table_builds_the_same_rows_lazily(kind):
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    ii, ti = rng.integers(0, 5, 20), rng.integers(0, 7, 20)
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    table = PairFeatures(norm(img).astype(np.float32), norm(txt).astype(np.float32), ii, ti, kind)
    expected = pair_features(img[ii], txt[ti], kind)
    assert table.shape == expected.shape
    assert np.allclose(np.asarray(table), expected, atol=1e-6)
    assert np.allclose(table.subset(np.arange(3, 9))[np.array([0, 5])], expected[[3, 8]], atol=1e-6)
    assert np.allclose(table.cosine(), cosine_of(expected), atol=1e-6)


def _brute_force(similarity, y, objective, n_grid):
    grid = np.quantile(similarity, np.arange(1, n_grid + 1) / (n_grid + 1))
    best = -np.inf
    for combo in itertools.combinations(range(n_grid), 4):
        pred = scores_from_cuts(similarity, grid[list(combo)])
        if objective == "macro_f1":
            value = f1_score(y, pred, labels=[1, 2, 3, 4, 5], average="macro", zero_division=0)
        else:
            value = cohen_kappa_score(y, pred, labels=[1, 2, 3, 4, 5], weights="quadratic")
        best = max(best, value)
    return best


@pytest.mark.parametrize("objective", ["macro_f1", "qwk"])
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_search_equals_brute_force_over_the_grid(objective, seed):
    rng = np.random.default_rng(seed)
    y = rng.choice([1, 2, 3, 4, 5], 150, p=[0.1, 0.15, 0.2, 0.25, 0.3])
    similarity = 0.05 * y + rng.normal(0, 0.12, 150)
    cuts, value = search_cuts(similarity, y, objective, n_grid=9)
    pred = scores_from_cuts(similarity, cuts)
    achieved = (
        f1_score(y, pred, labels=[1, 2, 3, 4, 5], average="macro", zero_division=0)
        if objective == "macro_f1"
        else cohen_kappa_score(y, pred, labels=[1, 2, 3, 4, 5], weights="quadratic")
    )
    assert value == pytest.approx(achieved, abs=1e-12)
    assert value == pytest.approx(_brute_force(similarity, y, objective, 9), abs=1e-12)
    assert np.all(np.diff(cuts) >= 0)


@pytest.mark.parametrize("name", ["threshold", "logreg", "mlp", "lgbm"])
def test_each_head_learns_planted_signal_well_above_majority_baseline(split, name):
    X_train, y_train, groups, X_test, y_test = split
    head = make_head(name, params=FAST.get(name, {})).fit(X_train, y_train, groups)
    pred = head.predict(X_test)
    proba = head.predict_proba(X_test)
    assert proba.shape == (len(y_test), 5) and np.allclose(proba.sum(axis=1), 1.0)
    macro = f1_score(y_test, pred, average="macro")
    assert macro > majority_baseline(y_train, y_test)["macro_f1"] + 0.2
    assert cohen_kappa_score(y_test, pred, weights="quadratic") > 0.5


@pytest.mark.parametrize(
    "name,params",
    [
        ("threshold", {"objective": "qwk"}),
        ("logreg", {}),
        ("mlp", {}),
        ("lgbm", {}),
        ("lgbm", {"objective": "regression"}),
    ],
)
def test_save_load_gives_identical_predictions_and_same_seed_same_model(split, tmp_path, name, params):
    X_train, y_train, groups, X_test, _ = split
    params = {**FAST.get(name, {}), **params}
    objective = params.pop("objective", None)
    head = make_head(name, objective, seed=3, params=params).fit(X_train, y_train, groups)
    head.save(tmp_path)
    loaded = load_head(tmp_path)
    assert np.array_equal(loaded.predict(X_test), head.predict(X_test))
    assert np.allclose(loaded.predict_proba(X_test), head.predict_proba(X_test), atol=1e-7)
    again = make_head(name, objective, seed=3, params=params).fit(X_train, y_train, groups)
    assert np.array_equal(again.predict_proba(X_test), head.predict_proba(X_test))


def test_mlp_early_stopping_restores_best_epoch_and_records_history(split):
    X_train, y_train, groups, _, _ = split
    head = make_head("mlp", params={"recipe": "robust", "max_epochs": 30, "patience": 3}).fit(X_train, y_train, groups)
    losses = head.history_["val_loss"]
    assert head.best_epoch_ == int(np.argmin(losses)) + 1
    assert len(losses) <= 30 and set(head.history_) >= {"train_loss", "val_macro_f1", "val_qwk"}


def _lazy_table(data):
    keys, texts = list(data.image_embeds), list(data.text_embeds)
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return PairFeatures(
        norm(np.stack([data.image_embeds[k] for k in keys])),
        norm(np.stack([data.text_embeds[t] for t in texts])),
        np.array([keys.index(k) for k in data.images]),
        np.array([texts.index(t) for t in data.texts]),
    )


def test_mlp_mini_batches_from_a_lazy_table_equal_the_dense_fit(monkeypatch):
    """Above the dense limit the mlp reads each batch from the table: the same rows, so the same model."""
    import tagcons.heads.mlp as mlp_module

    data = planted(n_images=30, per_image=10, dim=8)
    X = _lazy_table(data)
    params = {"recipe": "robust", "max_epochs": 5}
    dense = make_head("mlp", params=params).fit(np.asarray(X), data.labels)
    monkeypatch.setattr(mlp_module, "DENSE_TRAINING_BYTES", 0)  # force the per-batch path on a small table
    lazy = make_head("mlp", params=params).fit(X, data.labels)
    assert lazy.history_ == dense.history_ and lazy.best_epoch_ == dense.best_epoch_
    for name, weights in dense.model_.state_dict().items():
        assert torch.equal(lazy.model_.state_dict()[name], weights), name
    assert np.array_equal(lazy.predict_proba(X), dense.predict_proba(np.asarray(X)))
    assert lazy.history_["val_macro_f1"][-1] > majority_baseline(data.labels, data.labels)["macro_f1"] + 0.2


def test_logreg_streams_when_dense_copy_is_too_big(split):
    X_train, y_train, groups, X_test, y_test = split
    head = make_head("logreg", params={"C": 1.0, "max_dense_bytes": 1000, "sgd_epochs": 20}).fit(
        X_train, y_train, groups
    )
    assert not head.multinomial_
    assert (
        f1_score(y_test, head.predict(X_test), average="macro") > majority_baseline(y_train, y_test)["macro_f1"] + 0.2
    )


def test_bad_head_requests_raise_bad_input():
    with pytest.raises(BadInputError, match="unknown head 'random-forest'"):
        make_head("random-forest")
    with pytest.raises(BadInputError, match="does not apply to head 'logreg'"):
        make_head("logreg", objective="qwk")
    with pytest.raises(BadInputError, match="no setting depth"):
        make_head("mlp", params={"depth": 3})
    with pytest.raises(BadInputError, match="only score 4"):
        make_head("threshold").fit(np.ones((5, 4)), np.full(5, 4))
    with pytest.raises(BadInputError, match="unknown mlp recipe"):
        make_head("mlp", params={"recipe": "magic"}).fit(np.ones((6, 4)), np.array([1, 2, 1, 2, 1, 2]))


@pytest.mark.parametrize("name", ["logreg", "ordinal"])
def test_c_search_skips_inner_folds_whose_fitting_side_holds_one_score(name):
    X = np.random.default_rng(0).normal(size=(12, 4))
    y = np.array([1] * 11 + [2])  # the fold testing the single 2 fits on 1s only
    head = make_head(name, params={"inner_folds": 3}).fit(X, y)
    assert head.C_ in head.Cs and set(head.classes_) == {1, 2}
    images = np.repeat(["a.png", "b.png"], 6)  # two images, one score each: no fold can fit
    with pytest.raises(BadInputError, match="no fold whose fitting side holds two scores.*--param C=1"):
        make_head(name, params={"inner_folds": 2}).fit(X, np.repeat([1, 2], 6), images)


@pytest.mark.parametrize("objective", ["regression", "multiclass"])
def test_lgbm_on_a_validation_part_of_one_score_fits_saves_and_loads(tmp_path, objective, caplog):
    X = np.random.default_rng(0).normal(size=(40, 6))
    y = np.array([5] * 36 + [1, 2, 3, 4])  # the inner validation part holds 5s only; trees stop splitting early
    params = {"objective": objective, "n_estimators": 20, "min_data_in_leaf": 2}
    with caplog.at_level("WARNING", logger="tagcons"):
        head = make_head("lgbm", params=params).fit(X, y)
    if objective == "regression":
        np.testing.assert_allclose(head.cuts_, [1.5, 2.5, 3.5, 4.5])  # the predictions round to the nearest score
        assert "only score 5" in caplog.text and "--param val_size" in caplog.text
    head.save(tmp_path)
    np.testing.assert_array_equal(load_head(tmp_path).predict(X), head.predict(X))
