import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from tagcons.data.pairs import PairTable
from tagcons.errors import BadInputError
from tagcons.evaluate.compare import compare_runs, render_markdown, write_comparison
from tagcons.evaluate.metrics import compute_metrics, majority_baseline, pooled_and_per_fold
from tagcons.evaluate.plots import plot_training_curves
from tagcons.evaluate.rundir import write_config, write_evaluation

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mae", "qwk", "spearman")


def test_metrics_match_sklearn_with_labels_fixed_to_1_to_5():
    y_true = np.array([1, 2, 3, 4, 5, 5, 4, 4])
    y_pred = np.array([2, 2, 3, 4, 4, 5, 4, 3])
    m = compute_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=[1, 2, 3, 4, 5], average="macro", zero_division=0)
    )
    assert m["qwk"] == pytest.approx(cohen_kappa_score(y_true, y_pred, weights="quadratic"))
    assert m["mae"] == pytest.approx(3 / 8)
    assert m["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["n"] == 8 and set(HEADLINE) <= set(m)


def _reference_qwk(y_true, y_pred, k=5):
    """Quadratic weighted kappa over the full 1..k scale, written out from its definition."""
    observed = np.zeros((k, k))
    np.add.at(observed, (np.asarray(y_true) - 1, np.asarray(y_pred) - 1), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2 / (k - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_qwk_weighs_distances_on_the_full_scale_when_middle_scores_are_absent():
    # A small test part with scores {1, 2, 5} only: 5 vs 2 is three steps apart, not one.
    y_true = np.array([1, 1, 2, 2, 5, 5, 5, 5])
    y_pred = np.array([1, 2, 2, 1, 5, 5, 2, 5])
    qwk = compute_metrics(y_true, y_pred)["qwk"]
    assert qwk == pytest.approx(_reference_qwk(y_true, y_pred)) and qwk == pytest.approx(7 / 9)
    assert qwk != pytest.approx(cohen_kappa_score(y_true, y_pred, weights="quadratic"))  # the 3-label value


def test_expected_score_mae_from_probabilities():
    proba = np.array([[0, 0, 0, 0.5, 0.5], [1, 0, 0, 0, 0]])
    m = compute_metrics([5, 1], [5, 1], proba)
    assert m["mae_expected"] == pytest.approx(0.25)


def test_majority_baseline_predicts_training_mode_and_has_no_spearman():
    base = majority_baseline([5, 5, 4, 1], [4, 5, 5, 3])
    assert base["label"] == 5 and base["accuracy"] == 0.5 and base["spearman"] is None
    json.dumps(base, allow_nan=False)  # JSON-able: no NaN (json.dumps accepts NaN unless told not to)


def test_pooled_and_per_fold():
    folds = [(np.array([1, 2]), np.array([1, 2]), None), (np.array([3, 4]), np.array([3, 5]), None)]
    pooled, per_fold = pooled_and_per_fold(folds)
    assert pooled["n"] == 4 and pooled["accuracy"] == 0.75
    assert [f["accuracy"] for f in per_fold] == [1.0, 0.5]


def _table(n=30, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "image": [f"i{i % 5}.png" for i in range(n)],
            "text": [f"t{i}" for i in range(n)],
            "label": rng.integers(1, 6, n).astype(np.int8),
            "line": np.arange(n) + 2,
        }
    )
    return PairTable(frame, "pairs.csv")


def test_write_evaluation_writes_metrics_predictions_and_confusion_png(tmp_path):
    table = _table()
    proba = np.full((len(table), 5), 0.2)
    metrics = write_evaluation(tmp_path, table, table.labels, proba, {"n_train": 120, "baseline": {"macro_f1": 0.1}})
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["accuracy"] == 1.0 == metrics["accuracy"]
    assert on_disk["n_train"] == 120 and on_disk["n_test"] == 30 and on_disk["baseline"]["macro_f1"] == 0.1
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == ["image", "text", "true", "pred", "expected", "p1", "p2", "p3", "p4", "p5"]
    assert predictions["expected"].iloc[0] == pytest.approx(3.0)
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_reliability_png_puts_each_bin_at_its_confidence_and_accuracy(tmp_path):
    from PIL import Image, ImageColor

    from tagcons.evaluate.plots import CURVE_COLOURS, RELIABILITY_BOX, RELIABILITY_SIZE, _at, plot_reliability

    before = [{"confidence": 0.3, "accuracy": 0.1}, {"confidence": 0.9, "accuracy": 0.6}]
    after = [{"confidence": 0.35, "accuracy": 0.4}, {"confidence": 0.85, "accuracy": 0.9}]
    path = plot_reliability({"before": before, "after": after}, tmp_path / "r.png", title="reliability")
    picture = Image.open(path).convert("RGB")
    assert picture.size == RELIABILITY_SIZE

    def colour_at(confidence, accuracy):
        x, y = _at(RELIABILITY_BOX, confidence, accuracy)
        return picture.getpixel((round(x), round(y)))

    for colour, bins in zip(CURVE_COLOURS, (before, after)):
        for b in bins:  # each bin's marker, in its curve's colour
            assert colour_at(b["confidence"], b["accuracy"]) == ImageColor.getrgb(colour)
    assert colour_at(0.3, 0.4) == colour_at(0.9, 0.1) == (255, 255, 255)  # nothing where no bin is
    assert _at(RELIABILITY_BOX, 0, 0) == (RELIABILITY_BOX[0], RELIABILITY_BOX[3])  # accuracy grows upwards


def test_confusion_png_colours_each_cell_by_its_share_of_the_true_score(tmp_path):
    from PIL import Image

    from tagcons.evaluate.plots import BLUES, _matrix_box, plot_confusion_matrix

    # true 1: both predicted 1 (share 1); true 2: one each (share 0.5 / 0.5); the 1 -> 2 cell is empty (share 0)
    path = plot_confusion_matrix([1, 1, 2, 2], [1, 1, 1, 2], tmp_path / "cm.png", labels=(1, 2))
    picture = Image.open(path).convert("RGB")
    left, top, right, _ = _matrix_box(2)
    cell = (right - left) / 2

    def corner_colour(i, j):  # near a cell's corner, away from its count
        return np.array(picture.getpixel((int(left + j * cell + 4), int(top + i * cell + 4))))

    assert np.abs(corner_colour(0, 0) - BLUES[-1]).max() <= 1  # share 1: the darkest blue
    assert np.abs(corner_colour(0, 1) - BLUES[0]).max() <= 1  # share 0: the palest
    assert BLUES[-1][0] < corner_colour(1, 0)[0] < BLUES[0][0]  # share 0.5: in between


def test_training_curves_accept_any_subset(tmp_path):
    path = plot_training_curves({"train_loss": [1.0, 0.5], "val_qwk": [0.1, 0.3]}, tmp_path / "curves.png")
    assert path.stat().st_size > 1000


def _fake_run(root, name, head, macro_f1, mae, extra_config=None, extra_metrics=None):
    run = root / name
    write_config(
        run, {"backbone": "clip", "head": head, "split": "images", "features": "concat", **(extra_config or {})}, "fp"
    )
    metrics = {k: 0.5 for k in HEADLINE}
    metrics.update(macro_f1=macro_f1, mae=mae, n_train=100, n_test=25, baseline={"macro_f1": 0.12})
    metrics.update(extra_metrics or {})
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_compare_marks_best_per_column_lowest_mae(tmp_path):
    runs = [
        _fake_run(tmp_path, "a", "logreg", 0.40, 0.9, extra_metrics={"test_rows_hash": "h1"}),
        _fake_run(tmp_path, "b", "mlp", 0.45, 1.1, extra_metrics={"test_rows_hash": "h1"}),
        _fake_run(tmp_path, "c", "finetune", 0.30, 0.8, {"recipe": "robust"}, {"test_rows_hash": "h1"}),
    ]
    frame = compare_runs(runs)
    assert list(frame["head"]) == ["logreg", "mlp", "finetune"] and "recipe" in frame
    lines = render_markdown(frame).splitlines()
    assert lines[0].startswith("tested on the same 25 pairs")
    assert "**0.4500**" in lines[5] and "**0.8000**" in lines[6] and "**0.9000**" not in lines[4]
    markdown, csv = write_comparison(frame, tmp_path / "table.md")
    assert "| run |" in markdown.read_text() and pd.read_csv(csv).shape[0] == 3


def test_compare_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(BadInputError, match="config.json: not found"):
        compare_runs([tmp_path])
    with pytest.raises(BadInputError, match="not a directory"):
        compare_runs([tmp_path / "nope"])


def test_quick_scores_equal_compute_metrics():
    from tagcons.evaluate.metrics import quick_scores

    rng = np.random.default_rng(0)
    for _ in range(5):
        y_true, y_pred = rng.integers(1, 6, 50), rng.integers(1, 6, 50)
        quick, full = quick_scores(y_true, y_pred), compute_metrics(y_true, y_pred)
        for key in ("accuracy", "macro_f1", "qwk"):
            assert quick[key] == pytest.approx(full[key], abs=1e-12)
