"""The score scale is a setting: any ordered integer range, recorded in the run and read back by predict."""

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import run_cli
from test_heads_support import planted, write_cache, write_pairs

from tagcons.data import load_pairs
from tagcons.errors import BadInputError
from tagcons.heads import make_head
from tagcons.labels import (
    MAX_SCORE,
    NO_LABEL,
    ScoreScale,
    class_weights,
    infer_scale,
    parse_scale,
    resolve_scale,
    scale_from_config,
)


@pytest.fixture(scope="module")
def zero_based(tmp_path_factory):
    """A 0-3 relevance grade: the planted 1-5 scores with 1 and 2 merged, shifted to start at 0."""
    root = tmp_path_factory.mktemp("scale")
    data = planted(n_images=24, per_image=8, dim=8, seed=4)
    data.labels = np.maximum(data.labels - 2, 0)
    return {"root": root, "pairs": write_pairs(data, root / "pairs.csv"), "cache": write_cache(data, root / "c.h5")}


def test_parse_and_infer_scales():
    assert parse_scale("0-3") == ScoreScale(0, 3) and parse_scale(" 1 - 7 ").labels == tuple(range(1, 8))
    assert resolve_scale("auto", [0, 1, 1, 0]) == ScoreScale(0, 1)
    for bad in ("5-1", "1to5", "-1-3"):
        with pytest.raises(BadInputError, match="scale"):
            parse_scale(bad)
    np.testing.assert_allclose(class_weights([0, 0, 0, 2], classes=(0, 1, 2)), [4 / 9, 0.0, 4 / 3])


def test_each_score_has_its_own_column_on_a_scale_starting_anywhere():
    for scale in (ScoreScale(0, 3), ScoreScale(1, 5), ScoreScale(2, 6)):
        columns = scale.column_of(np.asarray(scale.labels, dtype=np.int8))
        assert columns.tolist() == list(range(scale.n_classes)) and columns.dtype.kind == "i", scale
        assert np.asarray(scale.labels)[scale.column_of([scale.high, scale.low])].tolist() == [scale.high, scale.low]


def test_scale_bounds_and_the_default_of_runs_that_recorded_none():
    assert ScoreScale(0, MAX_SCORE).n_classes == MAX_SCORE + 1 and ScoreScale(0, 1).labels == (0, 1)
    for low, high in ((3, 3), (4, 2), (-1, 3), (0, MAX_SCORE + 1)):
        with pytest.raises(BadInputError, match=f"score scale {low}-{high}"):
            ScoreScale(low, high)
    assert scale_from_config({}) == ScoreScale(1, 5) and scale_from_config({"scale": "0-3"}) == ScoreScale(0, 3)
    assert infer_scale([NO_LABEL, 2, 6, NO_LABEL]) == ScoreScale(2, 6)
    for unlabelled in ([], [NO_LABEL, NO_LABEL]):
        with pytest.raises(BadInputError, match=r"^--scale auto needs labelled rows; name the scale instead"):
            infer_scale(unlabelled)


def test_labels_off_the_scale_are_refused_with_the_fix(write_csv):
    path = write_csv([["a.png", "x", 7], ["b.png", "y", 1]])
    with pytest.raises(BadInputError, match="outside 1-5 at lines 2.*--scale"):
        load_pairs(path)
    assert load_pairs(path, scale="1-7").scale == ScoreScale(1, 7)
    assert load_pairs(path, scale="auto").scale == ScoreScale(1, 7)


def test_auto_scale_warns_naming_the_scores_no_row_holds_and_where_the_stray_one_is(write_csv, caplog):
    rows = [["a.png", "x", s] for s in (1, 2, 3, 4, 5, 5, 4)] + [["b.png", "typo", 9]]
    with caplog.at_level("WARNING", logger="tagcons"):
        assert load_pairs(write_csv(rows), scale="auto").scale == ScoreScale(1, 9)
    assert "made the scale 1-9" in caplog.text and "no row holds scores 6, 7, 8" in caplog.text
    assert "score 9 is on lines 9" in caplog.text and "--scale LOW-HIGH" in caplog.text


def test_auto_scale_says_nothing_when_every_score_occurs_and_a_named_scale_never_warns(write_csv, caplog):
    with caplog.at_level("WARNING", logger="tagcons"):
        assert load_pairs(write_csv([["a.png", "x", s] for s in (1, 2, 3)]), scale="auto").scale == ScoreScale(1, 3)
        load_pairs(write_csv([["a.png", "x", 1], ["b.png", "y", 3]]), scale="1-5")  # absent 2, 4, 5: chosen
    assert "no row holds" not in caplog.text


@pytest.mark.parametrize("name", ["threshold", "logreg", "mlp", "lgbm"])
def test_heads_learn_classes_from_y(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    y = np.where(X[:, 0] > 0, 7, 2)  # two scores, neither of them 1-5 neighbours
    params = {"mlp": {"max_epochs": 3}, "lgbm": {"n_estimators": 20, "min_data_in_leaf": 5}}.get(name, {})
    head = make_head(name, params=params).fit(X, y)
    assert head.classes_.tolist() == [2, 7]
    assert set(head.predict(X)) <= {2, 7} and head.predict_proba(X).shape == (120, 2)


def test_fit_head_and_predict_on_a_zero_based_scale(zero_based, capsys):
    root, pairs, cache = zero_based["root"], zero_based["pairs"], zero_based["cache"]
    code, _, err = run_cli(
        ["-q", "fit-head", "--cache", cache, "--data", pairs, "--head", "logreg"] + ["--out", root / "run"], capsys
    )
    assert code == 2 and "outside 1-5" in err  # the default scale is the study's
    args = ["-q", "fit-head", "--cache", cache, "--data", pairs, "--head", "logreg", "--scale", "auto"]
    assert run_cli([*args, "--out", root / "run"], capsys)[0] == 0
    assert json.loads((root / "run" / "config.json").read_text())["scale"] == "0-3"
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"0", "1", "2", "3"}
    predicted = pd.read_csv(root / "run" / "predictions.csv")
    assert [c for c in predicted if c.startswith("p") and c != "pred"] == ["p0", "p1", "p2", "p3"]
    out = root / "scored.csv"
    code, _, _ = run_cli(
        ["-q", "predict", "--run", root / "run", "--cache", cache, "--data", pairs, "--out", out], capsys
    )
    assert code == 0 and set(pd.read_csv(out)["pred"]) <= {0, 1, 2, 3}
