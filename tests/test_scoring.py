"""`predict` (tagcons.heads.scoring): what it reads from the run, what it refuses, what it writes."""

import dataclasses
import json
import logging
import shlex

import numpy as np
import pandas as pd
import pytest
from numbers_helpers import assert_same_numbers
from test_heads_support import planted, write_cache, write_pairs

from tagcons.configs import PairColumns
from tagcons.errors import BadInputError, FingerprintMismatchError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.heads import FitHeadConfig, PredictConfig, fit_head, predict
from tagcons.heads.scoring import embed_command

COLUMNS = PairColumns(image="photo", text="tag", label="grade")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A logreg run fitted on a pairs file with its own column names, and its cache."""
    root = tmp_path_factory.mktemp("scoring")
    data = planted(n_images=20, per_image=6, dim=8, seed=4)
    pairs = root / "pairs.csv"
    pd.DataFrame({"photo": data.images, "tag": data.texts, "grade": data.labels}).to_csv(pairs, index=False)
    cache = write_cache(data, root / "c.h5", skip_images=["cat_000.png"])
    config = FitHeadConfig(data=pairs, cache=cache, out=root / "run", head="logreg", columns=COLUMNS)
    config.head_params = {"Cs": (1.0,), "threads": 1}
    return {"root": root, "pairs": pairs, "cache": cache, "run": fit_head(config).run_dir, "data": data}


def test_predict_reads_the_runs_columns_and_writes_into_a_new_folder(fitted, caplog):
    out = fitted["root"] / "new" / "deeper" / "scores.csv"
    with caplog.at_level(logging.WARNING):
        result = predict(PredictConfig(run=fitted["run"], cache=fitted["cache"], data=fitted["pairs"], out=out))
    frame = pd.read_csv(out)
    assert result.n_scored == len(frame) == 114 and result.n_missing == 6
    assert set(frame["image"]) == set(fitted["data"].images) - {"cat_000.png"}
    assert result.metrics["n"] == 114 and 0.0 <= result.metrics["accuracy"] <= 1.0
    fit_rows = json.loads((fitted["run"] / "part_keys.json").read_text())
    n_trained = len(set(fit_rows["fit"]) | set(fit_rows.get("validation") or []))
    assert result.n_trained_on == n_trained > 0
    assert f"{n_trained} of the 114 scored pairs trained this head" in caplog.text


def test_the_embed_command_for_missing_pairs_names_the_runs_backbone_and_the_cache_settings(tmp_path):
    config = PredictConfig(run=tmp_path / "run", cache=tmp_path / "c.h5", data=tmp_path / "new pairs.csv", out="o.csv")
    command = shlex.split(embed_command(config, {"backbone": "clip", "model_id": "openai/x"}, strip_hash=True))
    assert command == [
        "tagcons", "embed", "--data", str(tmp_path / "new pairs.csv"), "--images", "IMAGES_DIR",
        "--backbone", "clip", "--out", str(tmp_path / "c.h5"), "--strip-hash",
    ]  # fmt: skip
    config.images = tmp_path / "imgs"
    command = shlex.split(embed_command(config, {"backbone": None, "model_id": "org/model"}, strip_hash=False))
    assert command[5:8] == [str(tmp_path / "imgs"), "--backbone", "org/model"] and "--strip-hash" not in command


def _edited_run(fitted, tmp_path, **changes):
    """A copy of the fitted run whose config.json has ``changes``."""
    run = tmp_path / "edited"
    run.mkdir()
    for path in fitted["run"].iterdir():
        if path.is_file():
            (run / path.name).write_bytes(path.read_bytes())
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **changes}))
    return run


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"features": "fancy"}, r"config\.json: features 'fancy' is not one of concat, rich; the run directory was"),
        ({"features": "rich"}, r"config\.json: its features give \d+ columns but the head in .*head\.json was fitted"),
    ],
)
def test_a_damaged_run_config_names_the_file_and_the_fix(fitted, tmp_path, changes, message):
    run = _edited_run(fitted, tmp_path, **changes)
    with pytest.raises(BadInputError, match=message):
        predict(PredictConfig(run=run, cache=fitted["cache"], data=fitted["pairs"], out=tmp_path / "o.csv"))


def test_a_cache_of_other_features_is_refused_naming_the_setting_that_differs(fitted, tmp_path):
    other = write_cache(fitted["data"], tmp_path / "other.h5", text_template="a photo of {}")
    expected = rf"^{other}: embedded with other settings than the cache run {fitted['run']} was trained on "
    expected += r"\(run's vs this cache's: text_template '\{\}' vs 'a photo of \{\}'\); embed the pairs"
    with pytest.raises(FingerprintMismatchError, match=expected) as info:
        predict(PredictConfig(run=fitted["run"], cache=other, data=fitted["pairs"], out=tmp_path / "o.csv"))
    assert "backbone" not in str(info.value)  # the same backbone: no advice to use it
    clip = write_cache(fitted["data"], tmp_path / "clip.h5", backbone="clip")
    with pytest.raises(FingerprintMismatchError, match=r"model_id 'test/tiny' vs 'test/clip'"):
        predict(PredictConfig(run=fitted["run"], cache=clip, data=fitted["pairs"], out=tmp_path / "o.csv"))


def test_a_run_that_does_not_record_its_caches_settings_shows_both_fingerprints(fitted, tmp_path):
    run = _edited_run(fitted, tmp_path, cache_settings=None)
    other = write_cache(fitted["data"], tmp_path / "other.h5", text_template="a photo of {}")
    with pytest.raises(FingerprintMismatchError, match=r"fingerprint \w+ vs \w+; the run does not record its cache"):
        predict(PredictConfig(run=run, cache=other, data=fitted["pairs"], out=tmp_path / "o.csv"))


def test_predictions_on_the_scale_sum_to_one_and_decode_to_the_predicted_score(fitted, tmp_path):
    out = tmp_path / "scores.csv"
    predict(PredictConfig(run=fitted["run"], cache=fitted["cache"], data=fitted["pairs"], out=out))
    frame = pd.read_csv(out)
    proba = frame[["p1", "p2", "p3", "p4", "p5"]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0)
    prior = json.loads((fitted["run"] / "head.json").read_text())["rule"]["prior"]
    assert prior is not None  # balanced weights divided out of the probabilities; argmax decides as the head did
    assert np.array_equal(frame["pred"], (proba / np.asarray(prior)).argmax(axis=1) + 1)
    assert np.allclose(frame["expected"], proba @ np.arange(1, 6))


def _run_copy(fitted, tmp_path, drop=(), drop_files=()):
    """A copy of the fitted run without the config.json keys ``drop`` and the files ``drop_files``."""
    run = _edited_run(fitted, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in drop}))
    for name in drop_files:
        (run / name).unlink()
    return run


def test_a_run_recorded_without_columns_or_features_reads_the_defaults(fitted, tmp_path):
    run = _run_copy(fitted, tmp_path, drop=("columns", "features"))
    pairs = write_pairs(fitted["data"], tmp_path / "default_columns.csv")
    result = predict(PredictConfig(run=run, cache=fitted["cache"], data=pairs, out=tmp_path / "o.csv"))
    assert result.n_scored == 114 and result.metrics["n"] == 114  # the Score column, concatenated features


def test_a_run_without_its_part_keys_counts_no_pair_as_trained_on(fitted, tmp_path, caplog):
    run = _run_copy(fitted, tmp_path, drop_files=("part_keys.json",))
    with caplog.at_level(logging.WARNING):
        result = predict(PredictConfig(run=run, cache=fitted["cache"], data=fitted["pairs"], out=tmp_path / "o.csv"))
    assert result.n_trained_on == 0 and "trained this head" not in caplog.text


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    """A run on a 0-4 scale, fitted on a cache embedded with --strip-hash (its text keys have no '#')."""
    root = tmp_path_factory.mktemp("stripped")
    data = planted(n_images=20, per_image=6, dim=8, seed=5)
    texts = {text.lstrip("#"): vector for text, vector in data.text_embeds.items()}
    cache = write_cache(dataclasses.replace(data, text_embeds=texts), root / "c.h5", settings={"strip_hash": True})
    pairs = root / "pairs.csv"
    frame = pd.DataFrame({"Image Filename": data.images, "Hashtag": data.texts, "Score": data.labels - 1})
    frame.to_csv(pairs, index=False)
    config = FitHeadConfig(data=pairs, cache=cache, out=root / "run", head="logreg", scale="0-4")
    config.head_params = {"Cs": (1.0,), "threads": 1}
    return {"root": root, "pairs": pairs, "cache": cache, "run": fit_head(config).run_dir, "frame": frame}


def test_predict_scores_on_the_runs_own_scale_with_probabilities(stripped, tmp_path):
    out = tmp_path / "scores.csv"
    result = predict(PredictConfig(run=stripped["run"], cache=stripped["cache"], data=stripped["pairs"], out=out))
    frame = pd.read_csv(out)
    proba = frame[[f"p{k}" for k in range(5)]].to_numpy()
    assert frame["true"].dtype.kind == "i" and set(frame["pred"]) <= set(range(5))
    assert_same_numbers(result.metrics, compute_metrics(frame["true"], frame["pred"], proba, labels=(0, 1, 2, 3, 4)))
    assert "mae_expected" in result.metrics  # scored with the probabilities too
    tested = pd.read_csv(stripped["run"] / "predictions.csv")  # the run's own test rows, scored when it was fitted
    again = tested[["image", "text"]].merge(frame, on=["image", "text"], validate="one_to_one")
    columns = ["pred", *(f"p{k}" for k in range(5))]
    assert np.allclose(again[columns].to_numpy(), tested[columns].to_numpy(), atol=1e-9)


def test_the_caches_strip_hash_normalises_the_pairs_unless_told_otherwise(stripped, tmp_path, caplog):
    pairs = tmp_path / "more.csv"
    extra = pd.DataFrame({"Image Filename": ["new.png"], "Hashtag": ["#tag_000_0"], "Score": [1]})
    pd.concat([stripped["frame"], extra]).to_csv(pairs, index=False)
    with caplog.at_level(logging.WARNING):
        result = predict(PredictConfig(run=stripped["run"], cache=stripped["cache"], data=pairs, out=tmp_path / "o"))
    assert result.n_scored == 120 and result.n_missing == 1  # '#tag_000_0' found as 'tag_000_0'
    assert "--out " + shlex.quote(str(stripped["cache"])) + " --strip-hash" in caplog.text  # embed as the cache was
    config = PredictConfig(
        run=stripped["run"], cache=stripped["cache"], data=pairs, out=tmp_path / "o2", strip_hash=False
    )
    with pytest.raises(BadInputError, match=r"none of the 121 pairs has embeddings in the cache"):
        predict(config)  # kept their '#': no text key matches


def test_pairs_whose_images_failed_are_named_with_the_reason_and_no_embed_advice(fitted, tmp_path, caplog):
    failed = write_cache(fitted["data"], tmp_path / "failed.h5", failed_images=["cat_000.png"])
    with caplog.at_level(logging.WARNING):
        result = predict(PredictConfig(run=fitted["run"], cache=failed, data=fitted["pairs"], out=tmp_path / "o.csv"))
    assert result.n_missing == 6
    assert "6 images" not in caplog.text and "1 images that failed to embed ('cat_000.png': cannot identify image)" in (
        caplog.text
    )
    assert "tagcons embed" not in caplog.text  # re-embedding cannot mend a file that fails to decode


def test_predict_refuses_a_folder_or_an_existing_file_as_out_before_reading(fitted, tmp_path):
    with pytest.raises(BadInputError, match=r"is a folder; pass the predictions CSV to write as --out"):
        predict(PredictConfig(run=fitted["run"], cache=fitted["cache"], data=fitted["pairs"], out=tmp_path))
    (tmp_path / "taken.csv").write_text("kept")
    with pytest.raises(BadInputError, match=r"taken\.csv: already exists; pass --overwrite to replace it"):
        predict(
            PredictConfig(
                run=tmp_path / "no_run", cache=fitted["cache"], data=fitted["pairs"], out=tmp_path / "taken.csv"
            )
        )
    assert (tmp_path / "taken.csv").read_text() == "kept"
