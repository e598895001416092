"""fit-head's protocol: split first then drop, dedupe, provenance, shortcut baselines, repeats."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tagcons.cli import main
from tagcons.data.pairs import load_pairs
from tagcons.data.splits import train_test_split_indices
from tagcons.evaluate.provenance import keys_hash, read_side_keys
from tagcons.heads import FitHeadConfig, fit_head, load_head


def _study_cache(table, path, skip_image: str):
    """A cache of the study's table with random 8-d embeddings, every image but ``skip_image``."""
    from tagcons.cache import CacheMeta, CacheWriter

    rng = np.random.default_rng(0)
    images = [k for k in table.unique_images() if k != skip_image]
    texts = table.unique_texts()
    meta = CacheMeta(backbone="tiny", model_id="test/tiny", revision=None, projection_dim=8, settings={})
    with CacheWriter(path, meta) as writer:
        writer.commit(
            images=(
                images,
                [hashlib.sha256(k.encode()).hexdigest() for k in images],
                rng.normal(size=(len(images), 8)).astype(np.float32),
            ),
            texts=(texts, rng.normal(size=(len(texts), 8)).astype(np.float32)),
        )
        writer.consolidate()
    return path


def _keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(zip(frame["image"], frame["text"]))


def test_dropping_one_image_keeps_every_other_study_test_row(reference_csv, tmp_path):
    table = load_pairs(reference_csv)
    _, study_test = train_test_split_indices(table.labels, None, "pairs", 0.2, 42)
    study_rows = table.frame.iloc[study_test]
    skipped = study_rows["image"].iloc[0]
    cache = _study_cache(table, tmp_path / "cache.h5", skipped)
    run = fit_head(FitHeadConfig(cache=cache, data=reference_csv, head="threshold", split="pairs", out=tmp_path / "r"))
    tested = pd.read_csv(run.run_dir / "predictions.csv", keep_default_na=False)
    expected = study_rows[study_rows["image"] != skipped]
    assert len(expected) >= len(study_rows) - 20 and _keys(tested) == _keys(expected)
    dropped = int((study_rows["image"] == skipped).sum())
    assert run.metrics["n_dropped_test"] == dropped and run.metrics["n_duplicates_removed"] == 0


def test_dedupe_counts_match_the_table(reference_csv, tmp_path):
    frame = load_pairs(reference_csv).frame
    duplicates = int(frame.duplicated(["image", "text", "label"]).sum())
    assert duplicates == 230  # the study's table: 28 images whose hashtag list appears twice
    images = fit_head(FitHeadConfig(data=reference_csv, head="image-prior", out=tmp_path / "images")).metrics
    assert images["n_duplicates_removed"] == duplicates and images["dedupe"] == "exact"
    assert images["n_train"] + images["n_test"] == len(frame) - duplicates
    pairs = fit_head(FitHeadConfig(data=reference_csv, head="image-prior", split="pairs", out=tmp_path / "p")).metrics
    assert pairs["n_duplicates_removed"] == 0 and pairs["n_train"] + pairs["n_test"] == len(frame)
    forced = FitHeadConfig(data=reference_csv, head="image-prior", split="pairs", dedupe="exact", out=tmp_path / "x")
    assert fit_head(forced).metrics["n_duplicates_removed"] == duplicates


@pytest.fixture
def shortcut_pairs(tmp_path):
    """Scores readable from the hashtag's word and from the image, nothing else."""
    rng = np.random.default_rng(1)
    words = {1: "awful", 2: "poor", 3: "fair", 4: "good", 5: "superb"}
    rows = []
    for i in range(40):
        image_score = int(rng.integers(1, 6))
        for j in range(6):
            score = image_score if j < 4 else int(rng.integers(1, 6))
            rows.append((f"img_{i:02d}.png", f"#{words[score]}{i}x{j}", score))
    path = tmp_path / "pairs.csv"
    pd.DataFrame(rows, columns=["Image Filename", "Hashtag", "Score"]).to_csv(path, index=False)
    return path


def test_text_only_head_reads_hashtags_and_saves_without_pickle(shortcut_pairs, tmp_path):
    result = fit_head(FitHeadConfig(data=shortcut_pairs, head="text-only", out=tmp_path / "text"))
    assert result.metrics["macro_f1"] > 0.8
    assert set(result.metrics["baselines"]) == {"majority", "text_only", "image_prior"}
    assert result.metrics["baselines"]["text_only"]["macro_f1"] == pytest.approx(result.metrics["macro_f1"])
    assert result.metrics["baseline"] == result.metrics["baselines"]["majority"]
    low, high = result.metrics["baselines"]["image_prior"]["ci95"]["macro_f1"]
    assert low <= result.metrics["baselines"]["image_prior"]["macro_f1"] <= high
    table = load_pairs(shortcut_pairs)
    restored = load_head(result.run_dir)
    assert (restored.predict(table) == result.head.predict(table)).all()
    assert not list(result.run_dir.glob("*.pkl"))


def test_image_prior_leaks_under_the_pairs_split_only(shortcut_pairs, tmp_path):
    pairs = fit_head(FitHeadConfig(data=shortcut_pairs, head="image-prior", split="pairs", out=tmp_path / "p"))
    images = fit_head(FitHeadConfig(data=shortcut_pairs, head="image-prior", split="images", out=tmp_path / "i"))
    assert pairs.metrics["accuracy"] > images.metrics["accuracy"] + 0.2
    assert len(set(pd.read_csv(images.run_dir / "predictions.csv")["pred"])) == 1  # unseen images: global mean


def test_provenance_of_a_holdout_and_a_cv_run(shortcut_pairs, tmp_path):
    holdout = fit_head(FitHeadConfig(data=shortcut_pairs, head="image-prior", seed=3, out=tmp_path / "h")).run_dir
    config = json.loads((holdout / "config.json").read_text())
    metrics = json.loads((holdout / "metrics.json").read_text())
    assert config["split_spec"] == {
        "kind": "images",
        "seed": 3,
        "test_size": 0.2,
        "cv": None,
        "repeats": 1,
        "dedupe": "exact",
        "val_size": None,
    }
    parts = read_side_keys(holdout)
    tested = pd.read_csv(holdout / "predictions.csv")
    assert parts["test"] == {f"{i}\t{t}" for i, t in zip(tested["image"], tested["text"])}
    assert config["parts"]["test"] == metrics["test_rows_hash"] == keys_hash(parts["test"])
    assert config["parts"]["fit"] == keys_hash(parts["fit"]) and not parts["fit"] & parts["test"]
    assert metrics["n_test_images"] == tested["image"].nunique() and set(metrics["ci95"]) >= {"macro_f1", "qwk"}
    cv = fit_head(FitHeadConfig(data=shortcut_pairs, head="image-prior", cv=3, out=tmp_path / "cv")).run_dir
    cv_parts = read_side_keys(cv)
    assert cv_parts["fit"] == cv_parts["test"] and len(cv_parts["test"]) == 240  # refit on all; all tested once


def test_repeats_report_mean_sd_and_pooled_interval(shortcut_pairs, tmp_path):
    config = FitHeadConfig(
        data=shortcut_pairs, head="image-prior", split="pairs", repeats=3, seed=5, out=tmp_path / "r"
    )
    repeats = fit_head(config).metrics["repeats"]
    assert repeats["seeds"] == [5, 6, 7] and len(repeats["per_seed"]) == 3
    assert repeats["sd"]["macro_f1"] > 0 and repeats["ci95_pooled"]["macro_f1"][0] < repeats["mean"]["macro_f1"]


def test_cli_fit_head_needs_a_cache_only_for_heads_that_read_features(shortcut_pairs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "fit-head", "--data", str(shortcut_pairs), "--head", "logreg", "--out", str(tmp_path / "l")])
    assert exit_info.value.code == 2 and "pass --cache" in capsys.readouterr().err
    main(["-q", "fit-head", "--data", str(shortcut_pairs), "--head", "text-only", "--out", str(tmp_path / "t")])
    assert "macro_f1" in capsys.readouterr().out and (tmp_path / "t" / "part_keys.json").is_file()
