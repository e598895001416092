"""The study's svm and xgb heads: the svm is scikit-learn's SVC computed from saved arrays, xgb stops early on
a grouped inner validation part; both save without pickle, take range-checked settings and fit in fit-head."""

import json

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from test_heads_support import dense, planted, write_cache, write_pairs

from tagcons.errors import BadInputError
from tagcons.heads import FitHeadConfig
from tagcons.heads.base import load_head
from tagcons.heads.params import parse_head_params
from tagcons.heads.registry import get_head_class, make_head
from tagcons.labels import class_weights


def _blobs(k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(1, k + 1, 240)
    X = rng.normal(size=(240, 6))
    X[:, 0] += y
    return X, y


@pytest.mark.parametrize("k", [2, 5])
def test_svm_decisions_are_scikit_learns_svc_on_standardised_features(k):
    X, y = _blobs(k)
    head = make_head("svm").fit(X, y)
    Z = StandardScaler().fit_transform(X)
    weights = {int(c): float(w) for c, w in zip(np.unique(y), class_weights(y, np.unique(y)))}
    svc = SVC(kernel="rbf", gamma="scale", class_weight=weights, decision_function_shape="ovo", break_ties=k > 2)
    svc.fit(Z, y)
    ovo = svc.decision_function(Z).reshape(len(Z), -1) * (-1 if k == 2 else 1)  # libsvm's sign for two classes
    np.testing.assert_allclose(head.decision_ovo(Z), ovo, atol=1e-9)
    if k > 2:
        svc.set_params(decision_function_shape="ovr")
    np.testing.assert_array_equal(head.predict(X), svc.predict(Z))
    np.testing.assert_allclose(head.predict_proba(X).sum(axis=1), 1.0)


@pytest.mark.parametrize("name, data_file", [("svm", "svm.npz"), ("xgb", "xgb.json")])
def test_saved_heads_load_without_pickle_and_predict_the_same(tmp_path, name, data_file):
    X, y = _blobs(4, seed=1)
    head = make_head(name, params={"n_estimators": 30} if name == "xgb" else None).fit(X, y, np.arange(240) // 4)
    head.save(tmp_path)
    if name == "svm":
        np.load(tmp_path / data_file, allow_pickle=False).close()  # plain arrays
    else:
        json.loads((tmp_path / data_file).read_text())  # xgboost's JSON model
    np.testing.assert_allclose(load_head(tmp_path).predict_proba(X), head.predict_proba(X), atol=1e-12)
    (tmp_path / data_file).write_bytes(b"not a model")
    with pytest.raises(BadInputError, match=data_file):
        load_head(tmp_path)


def test_xgb_stops_early_on_its_inner_validation_part():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(300, 5)), rng.integers(1, 6, 300)  # noise: the validation loss stops improving soon
    head = make_head("xgb").fit(X, y, np.arange(300) // 3)
    assert head.best_iteration_ < 500 and head.booster_.num_boosted_rounds() <= head.best_iteration_ + 20


@pytest.mark.parametrize(
    "name, setting, text",
    [("svm", "C", "0"), ("svm", "gamma", "-1"), ("xgb", "subsample", "1.5"), ("xgb", "max_depth", "0")],
)
def test_settings_out_of_range_are_refused(name, setting, text):
    with pytest.raises(BadInputError, match=f"--param {setting}={text}"):  # its type (gamma) or its range (make_head)
        make_head(name, params=parse_head_params(get_head_class(name), {setting: text}))
    assert parse_head_params(get_head_class("svm"), {"gamma": "scale", "C": "2"}) == {"gamma": "scale", "C": 2.0}


def test_svm_and_xgb_fit_in_fit_head_with_calibrated_probabilities(tmp_path):
    from tagcons.heads import fit_heads

    data = planted(n_images=40, per_image=10, dim=8, strength=2.0, seed=4)
    pairs, cache = write_pairs(data, tmp_path / "pairs.csv"), write_cache(data, tmp_path / "c.h5")
    config = FitHeadConfig(data=pairs, cache=cache, head="svm", out=tmp_path / "runs", head_params={"n_estimators": 40})
    results = fit_heads(config, ["svm", "xgb"])
    for result in results:
        assert result.metrics["calibration"]["after"]["log_loss"] > 0
        assert result.metrics["macro_f1"] > 2 * result.metrics["baselines"]["majority"]["macro_f1"], result.run_dir
        assert load_head(result.run_dir).input_width() == dense(data).shape[1]
