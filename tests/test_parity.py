"""Parity modes and consistent imbalance handling: the study's threshold search cut for cut, the mlp
recipes (robust by default, paper = the study's 10-epoch protocol), one class weighting for every head,
lgbm regression cuts chosen on held-out predictions, training and validation losses computed alike."""

import inspect
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from test_heads_support import dense, planted, write_cache, write_pairs

from tagcons.data.splits import validation_indices
from tagcons.errors import BadInputError
from tagcons.heads import FitHeadConfig, fit_head, make_head
from tagcons.heads.cuts import search_cuts, study_search
from tagcons.heads.features import cosine_of
from tagcons.heads.registry import all_head_classes
from tagcons.labels import class_weights


def study_loop(similarities, y):
    """The study's code, as it ran: seeded candidates, the first 5,000 combinations, f1_score macro."""
    np.random.seed(42)
    candidates = sorted(np.random.uniform(0.05, 0.95, 100))
    best_f1, best_thresholds = -1.0, None
    seen = {}  # only to save time: equal predictions have equal scores (most combinations repeat one)
    for i, thresholds in enumerate(itertools.combinations(candidates, 4)):
        if i >= 5000:
            break
        predictions = np.digitize(similarities, thresholds) + 1
        key = predictions.tobytes()
        if key not in seen:
            seen[key] = f1_score(y, predictions, average="macro")
        f1 = seen[key]
        if f1 > best_f1:
            best_f1, best_thresholds = f1, thresholds
    return np.asarray(best_thresholds), best_f1


@pytest.mark.parametrize(
    "spread, seed",
    [
        ("clip-like", 4),
        ("whole range", 4),
        ("score 2 absent, one score 3", 4),
        ("score 2 absent, one score 3", 137),
        ("score 2 neither true nor predicted", 4),
    ],
)
def test_study_search_equals_the_studys_loop_on_fixed_similarities(spread, seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(np.arange(1, 6), 150, p=[0.05, 0.1, 0.15, 0.3, 0.4])
    if spread.startswith("score 2"):  # macro-F1 over the scores that are true or predicted, as sklearn
        y = np.where(y == 2, 1, np.where(y == 3, 4, y))
        y[0] = 3
    if spread != "whole range":  # all below 0.2: the study's first combinations fit them
        similarities = np.clip(0.02 + 0.025 * y + rng.normal(0, 0.03, len(y)), 0, 1)
    else:  # some above the last candidates (0.95): the top score must still count them
        similarities = np.clip(0.2 * y - 0.1 + rng.normal(0, 0.05, len(y)), 0, 1)
    if spread == "score 2 neither true nor predicted":  # nothing between the first two candidates (0.055-0.069)
        similarities = np.where((similarities >= 0.05) & (similarities < 0.07), similarities + 0.02, similarities)
    state = np.random.get_state()
    expected_cuts, expected_f1 = study_loop(similarities, y)
    np.random.set_state(state)
    cuts, f1 = study_search(similarities, y)
    assert np.array_equal(cuts, expected_cuts) and f1 == pytest.approx(expected_f1, abs=1e-12)
    assert cuts[0] < 0.06 and cuts[1] < 0.075  # the first combinations keep the first two cuts low
    assert spread != "whole range" or np.max(similarities) > 0.95


def test_threshold_head_search_study_uses_the_studys_search(tmp_path):
    data = planted(n_images=12, per_image=8, dim=8, seed=2)
    X = dense(data)
    head = make_head("threshold", params={"search": "study"}).fit(X, data.labels)
    assert np.array_equal(head.thresholds_, study_search(cosine_of(X), data.labels)[0])
    assert not np.array_equal(head.thresholds_, search_cuts(cosine_of(X), data.labels)[0])
    with pytest.raises(BadInputError, match="search=study optimises macro-F1"):
        make_head("threshold", "qwk", params={"search": "study"}).fit(X, data.labels)


@pytest.fixture(scope="module")
def planted_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    data = planted(n_images=60, per_image=10, dim=16, strength=0.4, seed=7)
    return root, write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5")


def test_default_mlp_learns_a_planted_signal_on_the_images_split(planted_cache):
    root, pairs, cache = planted_cache
    result = fit_head(FitHeadConfig(cache=cache, data=pairs, head="mlp", out=root / "mlp", split="images"))
    assert result.head.recipe == "robust"
    assert result.metrics["macro_f1"] >= 0.35 > result.metrics["baseline"]["macro_f1"]


def test_paper_recipe_trains_exactly_10_epochs_on_the_whole_training_part(planted_cache, monkeypatch):
    def no_validation_part(*args, **kwargs):
        raise AssertionError("recipe=paper carved a validation part")

    monkeypatch.setattr("tagcons.heads.mlp.validation_indices", no_validation_part)
    data = planted(n_images=20, per_image=8, dim=8, seed=1)
    head = make_head("mlp", params={"recipe": "paper"}).fit(dense(data), data.labels, data.images)
    assert len(head.history_["train_loss"]) == 10 and head.best_epoch_ == 10
    assert head.history_["val_loss"] == [] and head.settings_["val_size"] == 0


def test_mlp_train_loss_is_the_eval_mode_loss_like_the_validation_loss():
    data = planted(n_images=20, per_image=8, dim=8, seed=1)
    X, y = dense(data), data.labels
    head = make_head("mlp", params={"val_size": 0, "max_epochs": 3, "dropout": 0.9}).fit(X, y)
    with torch.no_grad():
        logits = head.model_(torch.from_numpy(X.astype(np.float32)))
    weights = torch.tensor(class_weights(y), dtype=torch.float32)
    eval_loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y - 1).long(), weight=weights))
    assert head.history_["train_loss"][-1] == pytest.approx(eval_loss, rel=1e-5)
    assert head.history_["train_loss_running"][-1] != pytest.approx(eval_loss, rel=1e-3)  # dropout 0.9 was on


def test_every_weighting_head_balances_classes_by_default_and_can_turn_it_off():
    heads = all_head_classes()
    weighting = {name for name, cls in heads.items() if "class_weight" in cls._get_param_names()}
    assert weighting >= {"logreg", "mlp", "lgbm"}
    for name in weighting:
        assert inspect.signature(heads[name].__init__).parameters["class_weight"].default == "balanced", name
    rng = np.random.default_rng(0)
    y = rng.choice(np.arange(1, 6), 400, p=[0.04, 0.06, 0.1, 0.2, 0.6])
    X = rng.normal(size=(400, 6)) + 0.4 * y[:, None]
    params = {"Cs": (1.0,)}
    balanced = make_head("logreg", params=params).fit(X, y).predict(X)
    plain = make_head("logreg", params={**params, "class_weight": None}).fit(X, y).predict(X)
    assert (balanced == 1).sum() > (plain == 1).sum()  # the rare score is predicted more when weighted
    with pytest.raises(BadInputError, match="class_weight=sqrt"):
        make_head("logreg", params={"class_weight": "sqrt"}).fit(X, y)


def test_lgbm_regression_chooses_its_cuts_on_held_out_predictions():
    data = planted(n_images=30, per_image=10, dim=8, seed=5)
    X, y = dense(data), data.labels
    head = make_head("lgbm", "regression", params={"n_estimators": 80}).fit(X, y, data.images)
    _, val = validation_indices(np.arange(len(y)), y, data.images, "images", 0.1, 42)
    raw = head._raw(X)
    assert np.array_equal(head.cuts_, search_cuts(raw[val], y[val], "macro_f1")[0])
    assert not np.array_equal(head.cuts_, search_cuts(raw, y, "macro_f1")[0])
