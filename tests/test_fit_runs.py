"""A fit-head run's numbers against the runs and parts they summarise, on a 0-4 scale (so nothing
falls back to the study's 1-5 by accident): repeats are the single-seed runs pooled, the majority
baseline is the training side's mode, and the bookkeeping adds up."""

import dataclasses
import json
import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from numbers_helpers import assert_same_numbers
from test_heads_support import dense, planted, write_cache

from tagcons.data.splits import folds_then_drop
from tagcons.errors import BadInputError
from tagcons.evaluate.intervals import bootstrap_intervals, repeat_summary
from tagcons.evaluate.provenance import side_hashes
from tagcons.heads import FitHeadConfig, fit_head, load_head
from tagcons.heads.fit import split_spec

SCALE = (0, 1, 2, 3, 4)
LOGREG = {"C": 1.0, "threads": 1}  # a fixed C: no inner search (test_heads_fit covers it and its groups)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit_runs")
    data = planted(n_images=24, per_image=8, dim=8, seed=6)
    pairs = root / "pairs.csv"
    # 0-4, most often 0: a default 1-5 scale anywhere shows (e.g. a majority baseline counting scores 1-5)
    frame = pd.DataFrame({"Image Filename": data.images, "Hashtag": data.texts, "Score": 5 - data.labels})
    frame.to_csv(pairs, index=False)
    cache = write_cache(data, root / "c.h5", skip_images=["cat_005.png"])
    return {"root": root, "pairs": pairs, "cache": cache, "frame": frame}


def _fit(files, out, **kw):
    config = FitHeadConfig(data=files["pairs"], cache=files["cache"], out=files["root"] / out, scale="0-4", **kw)
    return fit_head(config)


def _outcome(run_dir):
    """(y_true, y_pred, images, proba) of a run's test rows, as its predictions.csv holds them."""
    frame = pd.read_csv(run_dir / "predictions.csv")
    proba = frame[[f"p{k}" for k in SCALE]].to_numpy()
    return frame["true"].to_numpy(), frame["pred"].to_numpy(), frame["image"].to_numpy(), proba


def test_repeats_pool_the_single_seed_runs_with_the_runs_seed_for_the_bootstrap(files):
    repeated = _fit(files, "repeated", head="logreg", head_params=LOGREG, seed=7, repeats=2)
    single = [_fit(files, f"seed_{s}", head="logreg", head_params=LOGREG, seed=s) for s in (7, 8)]
    want = repeat_summary([_outcome(r.run_dir) for r in single], [7, 8], bootstrap_seed=7, labels=SCALE)
    want["distinct_splits"] = 2
    want["per_seed"] = [{**s, "rows": f"test of seed {seed}'s split"} for s, seed in zip(want["per_seed"], (7, 8))]
    want["rows"] = "test of each seed's split; ci95_pooled resamples them all"
    assert_same_numbers(repeated.metrics["repeats"], want)  # recomputed from predictions.csv: last digits may differ
    # the run itself is the first seed's
    assert repeated.metrics["macro_f1"] == pytest.approx(single[0].metrics["macro_f1"], rel=1e-12)


def test_repeats_count_their_distinct_splits_and_warn_when_seeds_repeat_one(files, monkeypatch, caplog):
    import tagcons.heads.fit as fit

    distinct = _fit(files, "three_seeds", head="threshold", repeats=3, seed=1).metrics["repeats"]["distinct_splits"]
    assert distinct == 3  # 24 images: every seed its own test part
    real_split = fit.split_then_drop
    monkeypatch.setattr(fit, "split_then_drop", lambda *args: real_split(*args[:-1], 1 + (args[-1] == 3)))
    with caplog.at_level(logging.WARNING, logger="tagcons.data.splits"):
        metrics = _fit(files, "same_seeds", head="threshold", repeats=3, seed=1).metrics
    assert metrics["repeats"]["distinct_splits"] == 2
    assert "seeds 2 (as 1) gave the same split as an earlier seed: 2 distinct splits in 3 repeats" in caplog.text


def test_the_majority_baseline_is_the_training_sides_mode_and_the_rows_add_up(files):
    result = _fit(files, "threshold", head="threshold", seed=3)
    metrics, run = result.metrics, result.run_dir
    sides = json.loads((run / "part_keys.json").read_text())
    train_keys = set(sides["fit"]) | set(sides["validation"] or [])
    frame = files["frame"]
    keys = frame["Image Filename"] + "\t" + frame["Hashtag"]
    train_scores = frame["Score"][keys.isin(train_keys)].to_numpy()
    counts = np.bincount(train_scores, minlength=5)
    assert metrics["baselines"]["majority"]["label"] == int(np.flatnonzero(counts == counts.max()).max())
    assert metrics["baseline"] == metrics["baselines"]["majority"]
    assert set(metrics["baselines"]) == {"majority", "text_only", "image_prior"}
    assert metrics["n_train"] == len(train_keys) and metrics["n_test"] == len(sides["test"])
    assert metrics["n_train"] + metrics["n_test"] + metrics["n_dropped_fit"] + metrics["n_dropped_test"] == 192
    assert metrics["n_dropped_fit"] + metrics["n_dropped_test"] == 8  # cat_005.png's pairs have no embedding
    config = json.loads((run / "config.json").read_text())
    assert config["scale"] == "0-4" and config["split_spec"]["seed"] == 3 and config["n_pairs"] == 184


def test_cross_validation_tests_every_usable_row_once_and_refits_on_all_of_them(files):
    result = _fit(files, "cv", head="logreg", head_params=LOGREG, cv=3, seed=5)
    metrics, sides = result.metrics, json.loads((result.run_dir / "part_keys.json").read_text())
    assert metrics["cv"] == 3 and len(metrics["per_fold"]) == 3 and metrics["n_test"] == 184
    assert sum(fold["n"] for fold in metrics["per_fold"]) == 184
    assert [fold["rows"] for fold in metrics["per_fold"]] == ["test of fold 1", "test of fold 2", "test of fold 3"]
    assert metrics["rows"] == "out-of-fold" and metrics["baselines"]["majority"]["rows"] == "out-of-fold"
    assert metrics["n_dropped_fit"] == metrics["n_dropped_test"] == 8  # each unusable row is out of every fold
    assert len(sides["test"]) == 184 and len(sides["fit"]) + len(sides["validation"]) == 184
    fit_images = {key.split("\t")[0] for key in sides["fit"]}
    assert not fit_images & {key.split("\t")[0] for key in sides["validation"]}  # the refit's sides, by image
    assert 184 * 2 / 3 - 10 < metrics["n_train"] < 184 * 2 / 3 + 10  # the mean training side of a fold
    assert all(set(fold["per_class"]) == {"0", "1", "2", "3", "4"} for fold in metrics["per_fold"])
    frame = files["frame"]
    usable = (frame["Image Filename"] != "cat_005.png").to_numpy()
    folds = folds_then_drop(frame["Score"].to_numpy(), frame["Image Filename"].to_numpy(), usable, "images", 3, 5)
    scores = frame["Score"].to_numpy()[usable]
    want = [np.bincount(scores[p.test], minlength=5).tolist() for p in folds]  # each fold's scores, by seed 5
    assert [[fold["per_class"][str(k)]["support"] for k in SCALE] for fold in metrics["per_fold"]] == want


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"split": "rows"}, r"^unknown --split 'rows'; choose one of images, pairs$"),
        ({"cv": 1}, r"^--cv 1: cross-validation needs at least 2 folds$"),
        ({"repeats": 0}, r"^--repeats 0: needs at least 1$"),
        ({"cache": None}, r"^head 'threshold' reads embeddings: pass --cache \(a cache from `tagcons embed`\)$"),
        ({"dedupe": "fuzzy"}, r"^unknown --dedupe 'fuzzy'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_read(files, settings, message):
    config = {"data": files["pairs"], "cache": files["cache"], "out": files["root"] / "never", **settings}
    with pytest.raises(BadInputError, match=message):
        fit_head(FitHeadConfig(head="threshold", **config))
    assert not (files["root"] / "never").exists()


def test_an_output_folder_holding_a_run_or_a_file_is_refused_unless_overwriting(files):
    first = _fit(files, "again", head="threshold")
    with pytest.raises(
        BadInputError, match=r"again: already holds a run; pass --overwrite to replace it, or choose another --out$"
    ):
        _fit(files, "again", head="threshold")
    assert_same_numbers(_fit(files, "again", head="threshold", overwrite=True).metrics, first.metrics)
    (files["root"] / "a_file").write_text("")
    with pytest.raises(BadInputError, match=r"a_file: exists and is not a directory; choose another --out$"):
        _fit(files, "a_file", head="threshold")


def test_a_cache_without_any_of_the_pairs_names_the_embed_command(files):
    other = files["root"] / "other_pairs.csv"
    pd.DataFrame({"Image Filename": ["x.png", "y.png"], "Hashtag": ["a", "b"], "Score": [1, 4]}).to_csv(other)
    with pytest.raises(
        BadInputError, match=r"none of the 2 pairs in .*other_pairs\.csv has embeddings in this cache; "
    ):
        fit_head(FitHeadConfig(data=other, cache=files["cache"], out=files["root"] / "none", head="threshold"))


def test_a_cache_whose_images_all_failed_says_why_and_does_not_advise_embedding(files, tmp_path):
    data = planted(n_images=4, per_image=3, dim=8, seed=1)
    failed = sorted(data.image_embeds)[:3]
    cache = write_cache(data, tmp_path / "failed.h5", failed_images=failed)
    pairs = tmp_path / "pairs.csv"
    frame = pd.DataFrame({"Image Filename": data.images, "Hashtag": data.texts, "Score": data.labels})
    frame[frame["Image Filename"].isin(failed)].to_csv(pairs)
    with pytest.raises(BadInputError, match=rf"3 images that failed to embed \('{failed[0]}': cannot identify") as e:
        fit_head(FitHeadConfig(data=pairs, cache=cache, out=tmp_path / "run", head="threshold"))
    assert "tagcons embed" not in str(e.value)


def test_an_exclusion_list_of_every_pair_is_named_instead_of_the_cache(files):
    listed = files["root"] / "every_pair.csv"
    files["frame"].rename(columns={"Image Filename": "image", "Hashtag": "hashtag"}).to_csv(listed, index=False)
    with pytest.raises(BadInputError, match=r"every_pair\.csv: lists every one of the \d+ pairs of .*pairs\.csv"):
        _fit(files, "excluded_all", head="threshold", exclude_pairs=listed)


def test_a_cache_from_a_backbone_trained_on_the_test_rows_is_refused(files):
    keys = (files["frame"]["Image Filename"] + "\t" + files["frame"]["Hashtag"]).tolist()
    root = files["root"]
    data = planted(n_images=24, per_image=8, dim=8, seed=6)  # the fixture's embeddings
    trained_on_all = write_cache(data, root / "finetuned.h5", settings={"trained_keys": keys})
    config = FitHeadConfig(data=files["pairs"], cache=trained_on_all, out=root / "leak", head="threshold", scale="0-4")
    with pytest.raises(
        BadInputError, match=r"^the cache's backbone .*: its weights were trained on \d+ of the \d+ pairs"
    ):
        fit_head(config)
    trained_on_none = write_cache(data, root / "finetuned_elsewhere.h5", settings={"trained_keys": ["x.png\ty"]})
    config.cache, config.out = trained_on_none, root / "no_leak"
    assert fit_head(config).metrics["n_test"] > 0


def test_training_curves_are_titled_with_the_head_and_backbone(files, monkeypatch):
    import tagcons.heads.fit as fit

    drawn = []

    def plot(history, path, title):
        drawn.append((history, title))
        path.write_bytes(b"png")

    monkeypatch.setattr(fit, "plot_training_curves", plot)
    result = _fit(files, "mlp", head="mlp", head_params={"max_epochs": 2, "threads": 1})
    assert drawn == [(result.head.history_, "mlp (tiny)")] and len(result.head.history_["train_loss"]) == 2
    assert (result.run_dir / fit.CURVES_FILE).read_bytes() == b"png"  # drawn into the run directory


def test_the_result_carries_the_saved_head_and_the_pairs_left_out(files):
    excluded = files["root"] / "audit.csv"
    listed = files["frame"].iloc[:3].rename(columns={"Image Filename": "image", "Hashtag": "hashtag"})
    listed[["image", "hashtag"]].to_csv(excluded, index=False)  # as `tagcons audit` writes audit.csv
    result = _fit(files, "excluding", head="threshold", exclude_pairs=excluded)
    assert result.n_excluded == 3 and result.metrics["n_excluded"] == 3  # the pairs the file lists
    assert result.n_missing_embeddings == result.metrics["n_missing_embeddings"] == 8  # cat_005.png's
    assert np.array_equal(result.head.thresholds_, load_head(result.run_dir).thresholds_)


def test_the_reuse_check_covers_every_repeats_test_rows(files):
    def test_keys(seed):
        run = _fit(files, f"keys_{seed}", head="threshold", seed=seed).run_dir
        return set(json.loads((run / "part_keys.json").read_text())["test"])

    only_in_8 = test_keys(8) - test_keys(7) - test_keys(6)
    assert only_in_8
    data = planted(n_images=24, per_image=8, dim=8, seed=6)
    cache = write_cache(data, files["root"] / "trained_on_8.h5", settings={"trained_keys": sorted(only_in_8)})
    config = FitHeadConfig(data=files["pairs"], cache=cache, out=files["root"] / "repeated_leak", head="threshold")
    config.scale, config.seed, config.repeats = "0-4", 7, 2
    with pytest.raises(BadInputError, match=f"trained on {len(only_in_8)} of the"):
        fit_head(config)


@pytest.mark.parametrize(
    "settings, spec",
    [
        ({"head": "logreg", "seed": 4}, {"kind": "images", "seed": 4, "test_size": 0.2, "cv": None, "repeats": 1}),
        (
            {"head": "logreg", "seed": 4, "cv": 3, "split": "pairs", "repeats": 2, "val_size": 0.3},
            {"kind": "pairs", "seed": 4, "test_size": None, "cv": 3, "repeats": 2, "dedupe": "none", "val_size": 0.3},
        ),
        ({"head": "threshold", "test_size": 0.4}, {"test_size": 0.4, "dedupe": "exact", "val_size": None}),
    ],
)
def test_the_split_spec_holds_what_recomputes_the_parts(settings, spec):
    """Nothing fitted: the spec of a config as config.json records it (no validation side without probabilities)."""
    defaults = {"kind": "images", "seed": 42, "test_size": 0.2, "cv": None, "repeats": 1, "dedupe": "exact"}
    got = split_spec(FitHeadConfig(data="pairs.csv", cache="c.h5", out="run", **settings))
    assert got == {**defaults, "val_size": 0.1, **spec}


def test_a_run_records_how_its_rows_were_split_and_counted(files):
    held_out = _fit(files, "spec_holdout", head="logreg", head_params=LOGREG, seed=4)
    config = json.loads((held_out.run_dir / "config.json").read_text())
    assert config["split_spec"] == split_spec(
        FitHeadConfig(**{k: config[k] for k in ("data", "cache", "out", "head")}, seed=4)
    )
    metrics = held_out.metrics
    assert metrics["dedupe"] == "exact" and metrics["n_duplicates_removed"] == 0
    sides = json.loads((held_out.run_dir / "part_keys.json").read_text())
    assert metrics["n_validation"] == len(sides["validation"]) > 0
    assert metrics["calibration"]["rows"] == "test"
    cv = _fit(files, "spec_cv", head="logreg", head_params=LOGREG, seed=4, cv=2, split="pairs", repeats=2)
    config = json.loads((cv.run_dir / "config.json").read_text())
    assert config["split_spec"]["repeats"] == 2 and config["split_spec"]["cv"] == 2
    assert cv.metrics["calibration"]["rows"] == "out-of-fold" and cv.metrics["dedupe"] == "none"


def test_a_run_on_the_scale_shifted_by_one_is_the_same_run(files):
    """0-4 scores fitted as 0-4 and the same scores + 1 fitted as 1-5: every number agrees (nothing assumes 1-5)."""
    shifted = files["root"] / "shifted.csv"
    files["frame"].assign(Score=files["frame"]["Score"] + 1).to_csv(shifted, index=False)
    common = {"cache": files["cache"], "head": "logreg", "head_params": LOGREG, "seed": 2}
    zero = fit_head(FitHeadConfig(data=files["pairs"], out=files["root"] / "zero", scale="0-4", **common)).metrics
    one = fit_head(FitHeadConfig(data=shifted, out=files["root"] / "one", scale="1-5", **common)).metrics
    assert zero["calibration"]["temperature"] == pytest.approx(one["calibration"]["temperature"], abs=1e-9)
    for name in ("accuracy", "macro_f1", "qwk", "mae_expected"):
        assert zero[name] == pytest.approx(one[name], abs=1e-9), name
    for name in ("text_only", "image_prior", "majority"):
        assert zero["baselines"][name]["macro_f1"] == pytest.approx(one["baselines"][name]["macro_f1"], abs=1e-12)
    assert one["baselines"]["majority"]["label"] == zero["baselines"]["majority"]["label"] + 1


def test_config_json_records_what_the_run_resolved(files):
    result = _fit(files, "resolved", head="threshold", head_params={"n_grid": 20}, dedupe="none", seed=1)
    config = json.loads((result.run_dir / "config.json").read_text())
    sides = json.loads((result.run_dir / "part_keys.json").read_text())
    assert config["kind"] == "fit-head" and config["backbone"] == "tiny" and config["model_id"] == "test/tiny"
    assert config["text_template"] == "{}" and config["head_params_resolved"]["n_grid"] == 20
    assert config["head_params_resolved"] == json.loads(json.dumps(result.head.get_params()))
    assert config["n_excluded"] == 0 and config["n_missing_embeddings"] == 8 and config["n_pairs"] == 184
    assert config["parts"] == side_hashes(sides) and config["parts"]["fit"] and config["parts"]["test"]
    assert result.metrics["dedupe"] == "none" and config["split_spec"]["dedupe"] == "none"


def test_a_held_out_run_fits_validates_and_tests_on_disjoint_sides_with_its_seed(files, monkeypatch):
    import tagcons.evaluate.rundir as rundir

    titles = []
    monkeypatch.setattr(rundir, "plot_confusion_matrix", lambda *args, title, **kw: titles.append(title))
    result = _fit(files, "sides", head="logreg", head_params=LOGREG, seed=9, test_size=0.5)  # 12 images to resample
    sides = {name: set(keys) for name, keys in json.loads((result.run_dir / "part_keys.json").read_text()).items()}
    assert sides["fit"] and sides["validation"] and sides["test"]
    assert not (
        sides["fit"] & sides["validation"] or sides["fit"] & sides["test"] or sides["validation"] & sides["test"]
    )
    assert len(sides["fit"]) == result.metrics["n_train"] - result.metrics["n_validation"]
    assert "repeats" not in result.metrics  # one seed: no spread over seeds to report
    assert titles == ["logreg, concat features, images split"]
    y, pred, images, proba = _outcome(result.run_dir)
    want = bootstrap_intervals(y, pred, images, proba, seed=9, labels=SCALE)["ci95"]  # resampled by image, seed 9
    assert_same_numbers(result.metrics["ci95"], want)  # recomputed from predictions.csv: last digits may differ
    majority = np.full(len(y), result.metrics["baselines"]["majority"]["label"])
    want = bootstrap_intervals(y, majority, images, seed=9, labels=SCALE)["ci95"]
    assert_same_numbers(result.metrics["baselines"]["majority"]["ci95"], want)


def test_a_head_without_probabilities_has_no_validation_side(files):
    run = _fit(files, "no_validation", head="threshold").run_dir
    assert json.loads((run / "part_keys.json").read_text())["validation"] is None


def test_cross_validation_titles_its_folds_and_its_refit_repeats_exactly(files, monkeypatch):
    import tagcons.evaluate.rundir as rundir

    titles = []
    monkeypatch.setattr(rundir, "plot_confusion_matrix", lambda *args, title, **kw: titles.append(title))
    runs = [_fit(files, f"cv_again_{n}", head="logreg", head_params=LOGREG, cv=3, seed=5) for n in (1, 2)]
    keys = [(run.run_dir / "part_keys.json").read_text() for run in runs]
    assert keys[0] == keys[1]  # the refit's validation side comes from the run's seed
    assert titles == ["logreg, concat features, images split, 3-fold"] * 2


def test_pairs_lost_on_only_one_side_of_the_split_are_reported(files, caplog):
    with caplog.at_level(logging.WARNING, logger="tagcons.heads.fit"):
        metrics = _fit(files, "lost_once", head="threshold", seed=3).metrics
    assert (metrics["n_dropped_fit"] == 0) != (metrics["n_dropped_test"] == 0)  # one image: one side of the split
    lost = f"{metrics['n_dropped_fit']} training and {metrics['n_dropped_test']} test pairs dropped after the split"
    assert lost in caplog.text
    assert "have no embedding and are left out" in caplog.text
    assert re.search(r"'cat_005\.png'\) \(after the split, from the side each fell on\)$", caplog.text, re.M)


def test_a_folder_holding_only_metrics_or_only_a_config_is_a_run(files):
    for name in ("metrics.json", "config.json"):
        folder = files["root"] / f"only_{name}"
        folder.mkdir()
        (folder / name).write_text("{}")
        with pytest.raises(
            BadInputError, match=r"already holds a run; pass --overwrite to replace it, or choose another --out$"
        ):
            _fit(files, folder.name, head="threshold")


def test_a_head_that_reads_no_embeddings_runs_without_a_cache_on_every_pair(files):
    excluded = files["root"] / "exclude_two.csv"
    files["frame"].iloc[:2].rename(columns={"Image Filename": "image", "Hashtag": "hashtag"}).to_csv(excluded)
    config = FitHeadConfig(data=files["pairs"], cache=None, out=files["root"] / "no_cache", head="text-only")
    config.scale, config.seed, config.exclude_pairs, config.strip_hash = "0-4", 3, excluded, True
    result = fit_head(config)
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert {k: recorded[k] for k in ("backbone", "model_id", "text_template", "cache_fingerprint")} == dict.fromkeys(
        ("backbone", "model_id", "text_template", "cache_fingerprint")
    )
    assert recorded["n_pairs"] == 192 and recorded["n_excluded"] == 2 and recorded["n_missing_embeddings"] == 0
    metrics = result.metrics
    in_training = 2 - metrics["excluded_pairs"]["n_listed_in_test"]  # the listed pairs leave the training side only
    assert metrics["n_train"] + metrics["n_test"] == 192 - in_training
    assert metrics["n_dropped_fit"] + metrics["n_dropped_test"] == 0
    assert metrics["n_duplicates_removed"] == 0 and result.n_missing_embeddings == 0
    texts = pd.read_csv(result.run_dir / "predictions.csv")["text"]
    assert not texts.str.startswith("#").any()  # --strip-hash applies without a cache too


def test_the_caches_strip_hash_and_template_reach_the_run_and_its_features(files):
    data = planted(n_images=24, per_image=8, dim=8, seed=6)  # the fixture's embeddings, text keys without '#'
    stripped = dataclasses.replace(data, text_embeds={t.lstrip("#"): v for t, v in data.text_embeds.items()})
    cache = write_cache(
        stripped,
        files["root"] / "stripped.h5",
        skip_images=["cat_005.png"],
        settings={"strip_hash": True},
        text_template="a photo of {}",
    )
    config = FitHeadConfig(data=files["pairs"], cache=cache, out=files["root"] / "stripped_rich", head="logreg")
    config.scale, config.features, config.head_params = "0-4", "rich", LOGREG
    result = fit_head(config)
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert recorded["text_template"] == "a photo of {}" and result.metrics["n_test"] > 0
    assert result.n_missing_embeddings == 8  # cat_005.png only: every '#' hashtag was found without its '#'
    assert result.head.input_width() == dense(data, "rich").shape[1]  # the --features the run asked for
    config.out, config.strip_hash = files["root"] / "kept_hash", False  # told not to strip: no hashtag matches
    with pytest.raises(BadInputError, match=r"none of the 192 pairs in .* has embeddings in this cache"):
        fit_head(config)


def test_a_cache_without_a_text_template_is_taken_as_the_plain_hashtag(files):
    import h5py

    bare = files["root"] / "no_template.h5"
    shutil.copyfile(files["cache"], bare)
    with h5py.File(bare, "a") as h5:
        del h5.attrs["text_template"]
    config = FitHeadConfig(data=files["pairs"], cache=bare, out=files["root"] / "no_template", head="threshold")
    config.scale = "0-4"
    assert json.loads((fit_head(config).run_dir / "config.json").read_text())["text_template"] == "{}"


def test_the_head_gets_the_runs_objective_and_two_folds_are_enough(files):
    qwk = _fit(files, "objective_qwk", head="threshold", objective="qwk", cv=2)
    assert qwk.head.objective == "qwk" and qwk.metrics["cv"] == 2


def test_progress_bars_reach_the_heads_that_draw_them(files, monkeypatch):
    import tagcons.heads.fit as fit

    monkeypatch.setattr(fit, "plot_training_curves", lambda *args, **kw: None)  # not what is tested here
    quiet = _fit(files, "progress_off", head="mlp", head_params={"max_epochs": 1, "threads": 1})
    loud = _fit(files, "progress_on", head="mlp", head_params={"max_epochs": 1, "threads": 1}, progress=True)
    assert quiet.head.progress is False and loud.head.progress is True
    logreg = _fit(files, "progress_logreg", head="logreg", head_params=LOGREG, progress=True)
    assert "progress" not in logreg.head.get_params()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"head": "threshold"}, r"^--decode expected needs a head with probabilities; 'threshold' only ranks$"),
        ({"head": "logreg", "val_size": 0.0}, r"^--decode expected "),
    ],
)
def test_expected_score_decoding_needs_probabilities_and_a_validation_part(files, settings, message):
    with pytest.raises(BadInputError, match=message):
        _fit(files, "never_expected", decode="expected", **settings)


def test_expected_score_decoding_fits_its_cuts_on_the_validation_part(files):
    result = _fit(files, "expected", head="logreg", head_params=LOGREG, decode="expected")
    assert result.metrics["decode"] == "expected" and result.head.rule_.decode == "expected"


def test_duplicates_and_an_inferred_scale_are_recorded_as_resolved(files):
    doubled = files["root"] / "doubled.csv"
    pd.concat([files["frame"], files["frame"].iloc[:3]]).to_csv(doubled, index=False)
    config = FitHeadConfig(
        data=doubled, cache=files["cache"], out=files["root"] / "auto", head="threshold", scale="auto"
    )
    result = fit_head(config)
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert recorded["scale"] == "0-4" and result.metrics["n_duplicates_removed"] == 3  # images split: exact dedupe
    config.out, config.dedupe = files["root"] / "kept", "none"
    assert fit_head(config).metrics["n_duplicates_removed"] == 0
