"""Given folds (`fit-head --folds`, `audit --folds-file`): a study's own folds, joined like `tagcons evaluate`,
refused when they leave holes, split an image or give one fold; a fitted run shares the imported run's rows."""

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import run_cli

from tagcons.configs import AuditConfig, FitHeadConfig, PairColumns

STUDY_COLUMNS = PairColumns(image="post_id", text="hashtag", label="label")
COLUMN_FLAGS = ["--image-col", "post_id", "--text-col", "hashtag", "--label-col", "label"]


@pytest.fixture
def study(tmp_path):
    """24 posts of 5 pairs, the hashtag's first letter telling its score; folds 0-2 by post; an exact duplicate row."""
    rng = np.random.default_rng(7)
    images = np.repeat([f"p_{i:02d}.png" for i in range(24)], 5)
    labels = rng.integers(1, 6, len(images))
    texts = [f"#{'abcde'[s - 1]}{'xyz'[i % 3]}{i}" for i, s in enumerate(labels)]
    pairs = pd.DataFrame({"sample_id": np.arange(1, 121), "post_id": images, "hashtag": texts, "label": labels})
    pairs = pd.concat([pairs, pairs.iloc[[0]].assign(sample_id=121)], ignore_index=True)  # an exact duplicate pair
    pairs.to_csv(tmp_path / "pairs.csv", index=False, encoding="utf-8-sig")
    folds = pairs[["sample_id", "post_id"]].assign(fold=pairs["post_id"].str[2:4].astype(int) % 3)
    folds.to_csv(tmp_path / "folds.csv", index=False)
    return tmp_path, pairs, folds


def _fit(root, folds="folds.csv", out="fit", **settings):
    from tagcons.heads import fit_head

    config = FitHeadConfig(
        data=root / "pairs.csv", head="text-only", out=root / out, folds=root / folds, key_col="sample_id"
    )
    config.columns = STUDY_COLUMNS
    for key, value in settings.items():
        setattr(config, key, value)
    return fit_head(config)


def test_fit_head_uses_the_given_folds_and_keeps_every_row(study, capsys):
    root, pairs, folds = study
    result = _fit(root)
    config = json.loads((root / "fit" / "config.json").read_text())
    spec = config["split_spec"]
    assert spec["kind"] == "given" and spec["cv"] == 3 and spec["dedupe"] == "none" and spec["grouping"] == "images"
    assert config["split"] == "given"
    assert spec["given_folds"]["joined_on"] == "sample_id" and spec["given_folds"]["folds"] == [0, 1, 2]
    assert len(spec["given_folds"]["sha256"]) == 64
    sizes = folds["fold"].value_counts().sort_index().tolist()
    assert [f["n"] for f in result.metrics["per_fold"]] == sizes  # each fold tested on exactly its given rows
    assert result.metrics["n_test"] == len(pairs) and result.metrics["n_duplicates_removed"] == 0
    assert set(result.metrics["fold_summary"]["mean"]) >= {"macro_f1", "adjacent_accuracy"}
    # an imported run of predictions on the same pairs is tested on the same rows
    pairs[["sample_id"]].assign(pred=pairs["label"]).to_csv(root / "oof.csv", index=False)
    args = ["-q", "evaluate", "--predictions", root / "oof.csv", "--data", root / "pairs.csv", "--out", root / "imp"]
    code, _, err = run_cli([*args, "--key-col", "sample_id", *COLUMN_FLAGS], capsys)
    assert code == 0, err
    imported = json.loads((root / "imp" / "metrics.json").read_text())
    assert imported["test_rows_hash"] == result.metrics["test_rows_hash"] == config["parts"]["test"]


def _fit_cli(root, capsys, folds, extra=()):
    args = ["-q", "fit-head", "--head", "text-only", "--data", root / "pairs.csv", "--folds", root / folds]
    return run_cli([*args, "--key-col", "sample_id", "--out", root / "cli_run", *COLUMN_FLAGS, *extra], capsys)


def _one_line_exit_2(code, err, *fragments):
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_a_fold_file_with_holes_exits_2_naming_the_pairs(study, capsys):
    root, _, folds = study
    folds.drop(index=[3, 4]).to_csv(root / "holes.csv", index=False)
    code, _, err = _fit_cli(root, capsys, "holes.csv")
    _one_line_exit_2(code, err, "holes.csv", "assigns no fold to 2 pairs", "lines 5, 6", "give every pair a fold")


def test_an_image_in_two_folds_exits_2_with_an_example_unless_allowed(study, capsys):
    root, _, folds = study
    folds.assign(fold=np.arange(len(folds)) % 3).to_csv(root / "by_pair.csv", index=False)
    code, _, err = _fit_cli(root, capsys, "by_pair.csv")
    _one_line_exit_2(code, err, "by_pair.csv", "images have pairs in more than one fold", "'p_00.png' in folds")
    assert "--allow-split-images" in err
    code, _, err = _fit_cli(root, capsys, "by_pair.csv", ["--allow-split-images"])
    assert code == 0, err


def test_one_fold_and_an_unknown_row_exit_2(study, capsys):
    root, _, folds = study
    folds.assign(fold=0).to_csv(root / "one.csv", index=False)
    _one_line_exit_2(*_fit_cli(root, capsys, "one.csv")[::2], "one.csv", "needs at least 2 folds")
    pd.concat([folds, folds.iloc[[0]].assign(sample_id=999)]).to_csv(root / "extra.csv", index=False)
    _one_line_exit_2(*_fit_cli(root, capsys, "extra.csv")[::2], "extra.csv", "'999'", "have no row in")


def test_given_folds_refuse_cv_and_repeats(study):
    from tagcons.errors import BadInputError

    root, _, _ = study
    with pytest.raises(BadInputError, match="drop --cv and --repeats"):
        _fit(root, cv=5)


def test_audit_scores_each_pair_from_the_given_fold_that_did_not_train_on_it(study, monkeypatch):
    from tagcons.audit import run as audit_run

    root, pairs, folds = study
    seen = []
    fit_calibrated = __import__("tagcons.heads.fit", fromlist=["_fit_calibrated"])._fit_calibrated

    def spy(fit_config, data, train, seed):
        seen.append(set(data.usable_table.images[train]))
        return fit_calibrated(fit_config, data, train, seed)

    monkeypatch.setattr("tagcons.heads.fit._fit_calibrated", spy)
    config = AuditConfig(cache=None, data=root / "pairs.csv", out=root / "audit", head="text-only")
    config.columns, config.folds_file, config.key_col = STUDY_COLUMNS, root / "folds.csv", "sample_id"
    result = audit_run.run_audit(config)
    assert result.summary["folds"] == 3 and result.summary["given_folds"]["folds"] == [0, 1, 2]
    by_fold = folds.groupby("fold")["post_id"].apply(set)
    assert seen == [set(pairs["post_id"]) - by_fold[f] for f in (0, 1, 2)]


def test_finetune_tests_on_the_given_test_fold_and_trains_on_the_others(tmp_path):
    from embed_helpers import make_image_set

    from tagcons.configs import FinetuneConfig
    from tagcons.distributed import setup
    from tagcons.errors import BadInputError
    from tagcons.finetune.config import resolve
    from tagcons.finetune.partition import load_partition
    from tagcons.finetune.run import _split_spec

    pairs_path, images = make_image_set(tmp_path, n_images=12, tags_per_image=3)
    pairs = pd.read_csv(pairs_path)
    pairs.assign(fold=pairs["Image Filename"].str[4:6].astype(int) % 3).to_csv(tmp_path / "folds.csv", index=False)
    config = FinetuneConfig(data=pairs_path, images=images, backbone="tiny", out=tmp_path / "ft", val_size=0.0)
    config.folds, config.test_fold = tmp_path / "folds.csv", 1
    dist = setup("cpu")
    try:
        partition = load_partition(resolve(config), dist)
        config.test_fold = 7
        with pytest.raises(BadInputError, match=r"--test-fold 7: .* has folds \[0, 1, 2\]"):
            load_partition(resolve(config), dist)
    finally:
        dist.close()
    tested = set(partition.table.images[partition.test])
    assert tested == {f"cat_{i:02d}.png" for i in range(12) if i % 3 == 1}
    assert not tested & set(partition.table.images[partition.fit]) and len(partition.fit) + len(partition.test) == 36
    config.test_fold = 1
    spec = _split_spec(config, partition)
    assert spec["kind"] == "given" and spec["dedupe"] == "none" and spec["given_folds"]["test_fold"] == 1
