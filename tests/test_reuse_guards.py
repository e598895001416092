"""Leak guards on reused weights outside fine-tuning: a cache embedded from a fine-tuned backbone
(its trained rows travel in the cache) and `predict` on a head's own training rows."""

import logging

import pytest
from embed_helpers import embed, make_image_set
from test_heads_support import planted, write_cache, write_pairs

import tagcons.cache
from tagcons.cli import main
from tagcons.data.pairs import load_pairs
from tagcons.data.splits import train_test_split_indices
from tagcons.embed.backbones import load_backbone
from tagcons.evaluate.provenance import TRAINED_KEYS_SETTING, table_keys, write_side_keys
from tagcons.heads import FitHeadConfig, fit_head


def test_embed_with_a_fine_tuned_backbone_records_its_trained_rows(tmp_path):
    pairs, images = make_image_set(tmp_path)
    folder = tmp_path / "finetuned"
    load_backbone("tiny").save_pretrained(folder)
    keys = table_keys(load_pairs(pairs))
    write_side_keys(folder, {"fit": keys[:20], "validation": keys[20:24], "test": keys[24:]})
    embed(pairs, images, tmp_path / "ft.h5", backbone=str(folder))
    embed(pairs, images, tmp_path / "plain.h5")
    with tagcons.cache.open(tmp_path / "ft.h5") as cache, tagcons.cache.open(tmp_path / "plain.h5") as plain:
        assert cache.settings[TRAINED_KEYS_SETTING] == sorted(keys[:24])
        assert TRAINED_KEYS_SETTING not in plain.settings


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    data = planted(n_images=20, per_image=6, dim=8, seed=3)
    pairs = write_pairs(data, root / "pairs.csv")
    table = load_pairs(pairs)
    train, test = train_test_split_indices(table.labels, table.images, "images", 0.2, 42)
    return root, data, pairs, table_keys(table.subset(train)), table_keys(table.subset(test))


def _cache(root, data, name, trained):
    return write_cache(data, root / name, settings={TRAINED_KEYS_SETTING: sorted(trained)})


def test_fit_head_refuses_a_test_part_the_cache_backbone_trained_on(synthetic, capsys):
    root, data, pairs, train, test = synthetic
    cache = _cache(root, data, "all.h5", list(train) + list(test))  # e.g. a fine-tune run with --split pairs
    argv = ["fit-head", "--cache", str(cache), "--data", str(pairs), "--head", "threshold"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(root / "refused")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"trained on {len(test)} of the {len(test)} pairs" in message and "--split" in message
    assert not (root / "refused").exists()
    with pytest.raises(SystemExit):  # --cv tests every row, so any trained row leaks
        main([*argv, "--out", str(root / "refused_cv"), "--cv", "3"])


def test_fit_head_accepts_a_backbone_trained_on_its_training_rows_only(synthetic):
    root, data, pairs, train, _ = synthetic
    cache = _cache(root, data, "train_only.h5", train)
    result = fit_head(FitHeadConfig(cache=cache, data=pairs, head="threshold", out=root / "ok"))
    assert result.metrics["n_test"] > 0


def test_predict_on_the_heads_training_rows_warns_and_says_so(synthetic, caplog, capsys):
    root, data, pairs, train, test = synthetic
    cache = write_cache(data, root / "plain.h5")
    run = fit_head(FitHeadConfig(cache=cache, data=pairs, head="threshold", out=root / "run")).run_dir
    write_side_keys(run, {"fit": train, "validation": None, "test": test})  # what fit-head runs record
    with caplog.at_level(logging.WARNING):
        main(["predict", "--run", str(run), "--cache", str(cache), "--data", str(pairs), "--out", str(root / "p.csv")])
    said = capsys.readouterr().out
    assert f"{len(train)} of the {len(train) + len(test)} scored pairs trained this head" in said
    assert "trained this head" in caplog.text
