"""`predict` (tagcons.heads.scoring): what it reads from the run, what it refuses, what it writes."""

import json
import logging
import shlex

import numpy as np
import pandas as pd
import pytest
from test_heads_support import planted, write_cache

from tagcons.configs import PairColumns
from tagcons.errors import BadInputError, FingerprintMismatchError
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


def test_a_cache_of_other_features_is_refused_with_both_fingerprints(fitted, tmp_path):
    other = write_cache(fitted["data"], tmp_path / "other.h5", backbone="clip")
    run_fingerprint = json.loads((fitted["run"] / "config.json").read_text())["cache_fingerprint"]
    expected = rf"differs from {run_fingerprint}, the one run .* \(backbone tiny\)"
    with pytest.raises(FingerprintMismatchError, match=expected):
        predict(PredictConfig(run=fitted["run"], cache=other, data=fitted["pairs"], out=tmp_path / "o.csv"))


def test_predictions_on_the_scale_sum_to_one_and_decode_to_the_predicted_score(fitted, tmp_path):
    out = tmp_path / "scores.csv"
    predict(PredictConfig(run=fitted["run"], cache=fitted["cache"], data=fitted["pairs"], out=out))
    frame = pd.read_csv(out)
    proba = frame[["p1", "p2", "p3", "p4", "p5"]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(frame["pred"], proba.argmax(axis=1) + 1)  # the run decodes by argmax
    assert np.allclose(frame["expected"], proba @ np.arange(1, 6))
