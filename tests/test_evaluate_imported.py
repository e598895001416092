"""`tagcons evaluate`: predictions made elsewhere become a run that compare reads like any other; bad inputs exit 2."""

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import run_cli

from tagcons.cli import main
from tagcons.evaluate.compare import paired_differences
from tagcons.evaluate.metrics import compute_metrics

COLUMNS = ["--image-col", "post_id", "--text-col", "hashtag", "--label-col", "label"]


@pytest.fixture
def study(tmp_path):
    """A small study: pairs 1-5 with a sample_id, and out-of-fold predictions 0-4 (as the study writes them)."""
    rng = np.random.default_rng(4)
    images = np.repeat([f"p_{i:02d}.png" for i in range(30)], 6)
    labels = rng.integers(1, 6, len(images))
    pairs = pd.DataFrame(
        {"sample_id": np.arange(1, len(images) + 1), "post_id": images, "hashtag": [f"#t{i}" for i in range(180)]}
    )
    pairs["label"] = labels
    pairs.to_csv(tmp_path / "pairs.csv", index=False, encoding="utf-8-sig")
    fold = np.repeat(np.arange(30) % 3, 6)
    pred = np.where(rng.random(len(labels)) < 0.6, labels, rng.integers(1, 6, len(labels)))
    oof = pd.DataFrame(
        {"sample_id": pairs["sample_id"], "true_label": labels - 1, "pred_label": pred - 1, "fold": fold}
    ).sample(frac=1.0, random_state=0)
    oof.to_csv(tmp_path / "oof.csv", index=False)
    return tmp_path, pairs, oof


def _evaluate(root, capsys, predictions="oof.csv", out="run", extra=()):
    args = ["-q", "evaluate", "--predictions", root / predictions, "--data", root / "pairs.csv", "--out", root / out]
    args += ["--key-col", "sample_id", "--pred-col", "pred_label", "--pred-offset", "1", *COLUMNS, *extra]
    return run_cli(args, capsys)


def test_imported_run_has_a_fit_head_runs_shape_and_the_folds_mean_and_sd(study, capsys):
    root, pairs, oof = study
    code, out, err = _evaluate(root, capsys, extra=["--fold-col", "fold", "--true-col", "true_label"])
    assert code == 0, err
    run = root / "run"
    assert {"config.json", "metrics.json", "predictions.csv", "part_keys.json"} <= {p.name for p in run.iterdir()}
    config, metrics = (json.loads((run / name).read_text()) for name in ("config.json", "metrics.json"))
    assert config["source"] == "imported" and len(config["predictions_sha256"]) == 64
    assert config["column_mapping"]["pred"] == "pred_label" and config["joined_on"] == "sample_id"
    joined = oof.merge(pairs, on="sample_id")
    assert metrics["macro_f1"] == pytest.approx(compute_metrics(joined["label"], joined["pred_label"] + 1)["macro_f1"])
    per_fold = [
        compute_metrics(g["label"], g["pred_label"] + 1)["macro_f1"] for _, g in joined.groupby("fold", sort=True)
    ]
    assert [f["fold"] for f in metrics["per_fold"]] == [0, 1, 2]
    assert metrics["fold_summary"]["mean"]["macro_f1"] == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert metrics["fold_summary"]["sd"]["macro_f1"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-12)
    low, high = metrics["ci95"]["adjacent_accuracy"]
    assert low <= metrics["adjacent_accuracy"] <= high and "out-of-fold" in metrics["rows"]
    assert metrics["n_test_images"] == 30 and config["parts"]["test"] == metrics["test_rows_hash"]
    assert "over 3 folds" in out


def test_imported_runs_on_the_same_rows_compare_in_one_group(study, capsys):
    root, pairs, oof = study
    shuffled = oof.assign(pred_label=np.random.default_rng(1).permutation(oof["pred_label"].to_numpy()))
    shuffled.to_csv(root / "other.csv", index=False)
    assert _evaluate(root, capsys, out="a")[0] == 0
    assert _evaluate(root, capsys, predictions="other.csv", out="b")[0] == 0
    (group,) = paired_differences([root / "a", root / "b"])
    assert group.differences["macro_f1"]["best"] == "a"
    assert group.difference("qwk", "b").ci95 is not None


def test_joins_on_image_and_hashtag_without_a_key_column(study, capsys):
    root, pairs, oof = study
    by_pair = oof.merge(pairs[["sample_id", "post_id", "hashtag"]], on="sample_id").drop(columns="sample_id")
    by_pair.to_csv(root / "by_pair.tsv", index=False, sep="\t")
    assert _evaluate(root, capsys, predictions="by_pair.tsv", out="a")[0] == 0
    assert _evaluate(root, capsys, out="b")[0] == 0
    hashes = [json.loads((root / r / "metrics.json").read_text())["test_rows_hash"] for r in ("a", "b")]
    assert hashes[0] == hashes[1]
    assert json.loads((root / "a" / "config.json").read_text())["joined_on"] == "image + hashtag"


def _one_line_exit_2(code, err, *fragments):
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_a_row_that_joins_no_pair_exits_2_naming_its_line(study, capsys):
    root, _, oof = study
    oof.iloc[:3].assign(sample_id=[9001, 9002, 3]).to_csv(root / "bad.csv", index=False)
    code, _, err = _evaluate(root, capsys, predictions="bad.csv")
    _one_line_exit_2(code, err, "bad.csv", "lines 2, 3", "'9001'", "have no row in")


def test_a_pair_predicted_twice_exits_2(study, capsys):
    root, _, oof = study
    pd.concat([oof.iloc[:3], oof.iloc[:1]]).to_csv(root / "twice.csv", index=False)
    code, _, err = _evaluate(root, capsys, predictions="twice.csv")
    _one_line_exit_2(code, err, "twice.csv", "more than once", "lines 2, 5")


def test_true_scores_that_disagree_exit_2_naming_the_rows(study, capsys):
    root, _, oof = study
    wrong = oof.copy()
    wrong.iloc[4, wrong.columns.get_loc("true_label")] = (wrong.iloc[4]["true_label"] + 1) % 5
    wrong.to_csv(root / "wrong.csv", index=False)
    code, _, err = _evaluate(root, capsys, predictions="wrong.csv", extra=["--true-col", "true_label"])
    _one_line_exit_2(code, err, "wrong.csv", "differs from the score", "at lines 6 ", "pairs.csv", "--pred-offset")


def test_predictions_outside_the_scale_exit_2(study, capsys):
    root, _, oof = study
    oof.assign(pred_label=oof["pred_label"] + 1).to_csv(root / "shifted.csv", index=False)  # 1-5 with offset 1: 6
    code, _, err = _evaluate(root, capsys, predictions="shifted.csv")
    _one_line_exit_2(code, err, "shifted.csv", "outside the scale 1-5", "--pred-offset")


def test_missing_or_non_integer_prediction_exits_2(study, capsys):
    root, _, oof = study
    broken = oof.astype({"pred_label": float})
    broken.iloc[2, broken.columns.get_loc("pred_label")] = 2.5
    broken.to_csv(root / "half.csv", index=False)
    _one_line_exit_2(*_evaluate(root, capsys, predictions="half.csv")[::2], "not a whole number at lines 4")


def test_probability_columns_are_kept_and_must_sum_to_one(study, capsys):
    root, _, oof = study
    proba = np.full((len(oof), 5), 0.2)
    with_proba = oof.assign(**{f"q{k}": proba[:, k] for k in range(5)})
    with_proba.to_csv(root / "proba.csv", index=False)
    flags = [x for k in range(5) for x in ("--proba-col", f"q{k}")]
    assert _evaluate(root, capsys, predictions="proba.csv", extra=flags)[0] == 0
    predictions = pd.read_csv(root / "run" / "predictions.csv")
    assert predictions["expected"].to_numpy() == pytest.approx(3.0)
    with_proba.assign(q0=0.5).to_csv(root / "bad_proba.csv", index=False)
    code, _, err = _evaluate(root, capsys, predictions="bad_proba.csv", out="r2", extra=flags)
    _one_line_exit_2(code, err, "do not sum to 1")


def test_a_key_naming_several_pairs_exits_2_naming_the_pairs_file(study, capsys):
    root, pairs, _ = study
    pairs.assign(sample_id=pairs["sample_id"].where(pairs["sample_id"] != 2, 1)).to_csv(root / "pairs.csv", index=False)
    code, _, err = _evaluate(root, capsys)
    _one_line_exit_2(code, err, "pairs.csv", "sample_id '1' appears more than once (lines 2, 3)", "--key-col")


def test_a_parquet_predictions_file_joins_like_a_csv(study, capsys):
    root, _, oof = study
    oof.to_parquet(root / "oof.parquet", index=False)
    assert _evaluate(root, capsys, predictions="oof.parquet", out="pq", extra=["--fold-col", "fold"])[0] == 0
    assert _evaluate(root, capsys, out="csv", extra=["--fold-col", "fold"])[0] == 0
    runs = [json.loads((root / name / "metrics.json").read_text()) for name in ("pq", "csv")]
    assert runs[0]["test_rows_hash"] == runs[1]["test_rows_hash"]
    assert runs[0]["fold_summary"]["mean"]["qwk"] == pytest.approx(runs[1]["fold_summary"]["mean"]["qwk"])


def test_the_published_studys_columns_are_read_without_column_flags(tmp_path, capsys):
    """dataset.csv of the published study names post_id, hashtag and label: the issue's commands give no
    column flags, and a file with those columns and none of the seed table's is read by them."""
    from tagcons.data.pairs import STUDY_V2_COLUMNS, PairColumns, resolve_columns

    rng = np.random.default_rng(0)
    posts = np.repeat([f"beauty_{i:04d}.png" for i in range(12)], 5)
    labels = rng.integers(1, 6, len(posts))
    frame = pd.DataFrame({"sample_id": np.arange(len(posts)), "post_id": posts, "label": labels})
    frame.insert(2, "hashtag", [f"#t{i % 7}" for i in range(len(posts))])
    frame.to_csv(tmp_path / "dataset.csv", index=False)
    oof = frame[["sample_id", "post_id"]].assign(
        true_label=labels - 1, pred_label=labels - 1, fold=np.arange(len(posts)) // 12
    )
    oof.to_csv(tmp_path / "oof.csv", index=False)
    assert resolve_columns(tmp_path / "dataset.csv", PairColumns()) == STUDY_V2_COLUMNS
    assert resolve_columns(tmp_path / "dataset.csv", PairColumns(image="x")) == PairColumns(image="x")  # asked for
    args = ["evaluate", "--predictions", tmp_path / "oof.csv", "--data", tmp_path / "dataset.csv", "--key-col"]
    args += [
        "sample_id",
        "--pred-col",
        "pred_label",
        "--fold-col",
        "fold",
        "--pred-offset",
        "1",
        "--out",
        tmp_path / "r",
    ]
    try:
        main([str(a) for a in args])
    except SystemExit as exit_info:
        pytest.fail(f"exit {exit_info.code}: {capsys.readouterr().err}")
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["accuracy"] == 1.0
