"""`tagcons audit`: out-of-fold probabilities + cleanlab find planted label flips, ranked by ordinal distance;
--exclude-pairs keeps its list off the training side only."""

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import run_cli
from test_heads_support import planted, write_cache, write_pairs

import tagcons.heads.fit as fit_module
from tagcons.audit.run import AuditConfig, expected_distance, label_issues, run_audit
from tagcons.cli import main
from tagcons.data.exclude import listed_rows
from tagcons.data.pairs import load_pairs
from tagcons.errors import BadInputError
from tagcons.heads import FitHeadConfig, fit_head
from tagcons.heads.base import Head
from tagcons.heads.logreg import LogregHead

FLIP_SHARE = 0.05


def flip_labels(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move a share of the scores at least two steps away (a clear error, as a careless rater makes)."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = np.where(
        labels[flipped] >= 3, labels[flipped] - 2 - rng.integers(0, 2, len(flipped)), labels[flipped] + 2
    )
    noisy = np.clip(noisy, 1, 5)
    return noisy, flipped


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    data = planted(n_images=80, per_image=10, dim=16, strength=1.5, seed=9)
    data.labels, flipped = flip_labels(data.labels, FLIP_SHARE, seed=1)
    return {
        "root": root,
        "data": data,
        "pairs": write_pairs(data, root / "pairs.csv"),
        "cache": write_cache(data, root / "cache.h5"),
        "flipped": flipped,
        "flipped_keys": {(data.images[i], data.texts[i]) for i in flipped},
        "n": len(data.labels),
    }


@pytest.fixture(scope="module")
def audited(noisy):
    config = AuditConfig(cache=noisy["cache"], data=noisy["pairs"], out=noisy["root"] / "audit", head="logreg")
    return run_audit(config)


def test_audit_puts_most_flipped_labels_in_its_top_five_percent(noisy, audited):
    result = audited
    top = result.issues.head(int(np.ceil(FLIP_SHARE * noisy["n"])))
    found = {(i, t) for i, t in zip(top["image"], top["hashtag"])} & noisy["flipped_keys"]
    assert len(found) >= 0.6 * len(noisy["flipped_keys"]), (len(found), len(noisy["flipped_keys"]))
    summary = json.loads((result.out / "audit.json").read_text())
    assert summary["n_flagged"] == len(result.issues) and summary["n_pairs"] == noisy["n"]
    assert set(summary["noise_rate"]) == {"1", "2", "3", "4", "5"}
    assert sum(sum(row.values()) for row in summary["given_vs_suggested"].values()) == summary["n_flagged"]
    assert summary["rank_by"] == "ordinal-distance" and summary["features"] == "rich"  # the defaults
    frame = pd.read_csv(result.out / "audit.csv")
    columns = ["rank", "image", "hashtag", "given_score", "suggested_score", "p_given", "expected_distance"]
    assert list(frame.columns) == columns
    assert frame["expected_distance"].is_monotonic_decreasing  # farthest from the model's belief first


def test_the_ordinal_ranking_puts_two_step_flips_higher_than_self_confidence(noisy, audited):
    y, oof, labels = noisy["data"].labels, audited.oof_proba, (1, 2, 3, 4, 5)
    position = {}
    for rank_by in ("ordinal-distance", "self-confidence"):
        flagged, ranking = label_issues(y, oof, labels, rank_by)
        position[rank_by] = np.argsort(ranking)[noisy["flipped"]]  # where each planted flip is ranked
        top = ranking[: len(noisy["flipped"])]
        position[rank_by + " top"] = np.isin(noisy["flipped"], top).sum()
    assert position["ordinal-distance"].mean() < position["self-confidence"].mean(), position
    assert position["ordinal-distance top"] >= position["self-confidence top"], position
    # as many flagged either way: cleanlab's count from its confident joint
    assert len(label_issues(y, oof, labels)[0]) == len(label_issues(y, oof, labels, "self-confidence")[0])


def test_the_expected_distance_counts_steps_up_to_two():
    oof = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    y = np.array([0, 2, 3])
    want = [0.2 + 0.3 * 2 + 0.4 * 2, 0.0, 0.5 * 2]
    np.testing.assert_allclose(expected_distance(y, oof, (0, 1, 2, 3)), want)
    np.testing.assert_allclose(expected_distance(y, oof, (0, 1, 2, 3), max_steps=None), [2.0, 0.0, 1.5])
    two = np.array([[0.3, 0.7], [0.9, 0.1]])  # on a two-score scale it is 1 - p_given
    np.testing.assert_allclose(expected_distance(np.array([0, 1]), two, (0, 1)), [0.7, 0.9])


def test_the_audit_refuses_a_cache_from_a_backbone_fine_tuned_on_the_audited_pairs(noisy):
    data = noisy["data"]
    trained = [f"{data.images[0]}\t{data.texts[0]}", "elsewhere.png\tother"]
    cache = write_cache(data, noisy["root"] / "finetuned.h5", settings={"trained_keys": trained})
    config = AuditConfig(cache=cache, data=noisy["pairs"], out=noisy["root"] / "refused", head="logreg", folds=2)
    with pytest.raises(
        BadInputError, match=r"^the cache's backbone .*: its weights were trained on 1 of the \d+ pairs"
    ):
        run_audit(config)
    assert not (noisy["root"] / "refused").exists()


def test_fit_head_exclude_pairs_leaves_the_listed_pairs_out_of_training_only(noisy, tmp_path):
    listed = pd.DataFrame({"image": ["cat_000.png", "cat_001.png"], "hashtag": ["#tag_000_0", "#tag_001_3"]})
    listed.to_csv(tmp_path / "reviewed.csv", index=False)
    kw = dict(cache=noisy["cache"], data=noisy["pairs"], head="threshold", split="pairs", test_size=0.5)
    full = fit_head(FitHeadConfig(out=tmp_path / "full", **kw))
    fewer = fit_head(FitHeadConfig(out=tmp_path / "fewer", exclude_pairs=tmp_path / "reviewed.csv", **kw))
    in_test = fewer.metrics["excluded_pairs"]["n_listed_in_test"]
    assert fewer.metrics["n_test"] == full.metrics["n_test"] and fewer.metrics["n_excluded"] == 2
    assert fewer.metrics["n_train"] == full.metrics["n_train"] - (2 - in_test)
    fit_keys = json.loads((fewer.run_dir / "part_keys.json").read_text())["fit"]
    assert not {"cat_000.png\t#tag_000_0", "cat_001.png\t#tag_001_3"} & set(fit_keys)


def _hashes(run_dir):
    return json.loads((run_dir / "config.json").read_text())["parts"]


def test_excluding_audit_flagged_pairs_keeps_the_test_part_whole_and_raises_no_score(tmp_path):
    # shuffled scores: nothing to learn. Leaving the pairs a similar model gets wrong out of the test part too
    # had raised logreg's test macro-F1 by selection alone (0.172 -> 0.315); now the test part is the same
    data = planted(n_images=60, per_image=10, dim=8, strength=1.0, seed=3)
    data.labels = np.random.default_rng(0).permutation(data.labels)
    pairs, cache = write_pairs(data, tmp_path / "pairs.csv"), write_cache(data, tmp_path / "cache.h5")
    audit = run_audit(AuditConfig(cache=cache, data=pairs, out=tmp_path / "audit", head="logreg", folds=3))
    assert len(audit.issues) > 0.1 * len(data.labels)  # no signal: a weak model flags many pairs
    kw = dict(cache=cache, data=pairs, head="logreg", head_params={"C": 1.0, "threads": 1})
    full = fit_head(FitHeadConfig(out=tmp_path / "full", **kw))
    cleaned = fit_head(FitHeadConfig(out=tmp_path / "cleaned", exclude_pairs=audit.out / "audit.csv", **kw))
    assert _hashes(cleaned.run_dir)["test"] == _hashes(full.run_dir)["test"]
    assert _hashes(cleaned.run_dir)["fit"] != _hashes(full.run_dir)["fit"]
    assert cleaned.metrics["n_test"] == full.metrics["n_test"]
    assert cleaned.metrics["test_rows_hash"] == full.metrics["test_rows_hash"]
    assert cleaned.metrics["macro_f1"] < full.metrics["macro_f1"] + 0.05, (cleaned.metrics, full.metrics)
    beside = cleaned.metrics["excluded_pairs"]  # the cleaned-rows figure is reported beside, labelled
    assert beside["cleaned_test"]["rows"] == "test rows not listed in --exclude-pairs"
    assert beside["cleaned_test"]["n"] == full.metrics["n_test"] - beside["n_listed_in_test"] > 0


def test_audit_command_prints_the_top_ten(noisy, capsys):
    out = noisy["root"] / "cli_audit"
    main(["audit", "--cache", str(noisy["cache"]), "--data", str(noisy["pairs"]), "--out", str(out),
          "--head", "logreg", "--folds", "3", "--param", "C=0.1"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "pairs flagged" in lines[0] and lines[1].lstrip().startswith("1.") and len(lines) == 11


class FoldSpy:
    """The images each fold model trained or was calibrated on, and the images it scored (by cache row)."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.seen, self.scored = {}, {}
        self.alive = []  # every head seen, kept alive: a collected head's id could be reused by the next fold's
        fit, calibrated_proba, calibrate = LogregHead.fit, Head.calibrated_proba, fit_module.calibrate_head

        def spied_fit(head, X, y, groups=None):
            self.alive.append(head)
            self.seen.setdefault(id(head), set()).update(X.image_index.tolist())
            return fit(head, X, y, groups)

        def spied_calibrate(head, X_val, *args, **kwargs):
            self.seen.setdefault(id(head), set()).update(X_val.image_index.tolist())
            return calibrate(head, X_val, *args, **kwargs)

        def spied_proba(head, X, *args, **kwargs):
            self.scored.setdefault(id(head), set()).update(X.image_index.tolist())
            return calibrated_proba(head, X, *args, **kwargs)

        patch.setattr(LogregHead, "fit", spied_fit)
        patch.setattr(fit_module, "calibrate_head", spied_calibrate)
        patch.setattr(Head, "calibrated_proba", spied_proba)


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    """A noisy set whose cache lacks its first image (its pairs are not audited), audited under a FoldSpy."""
    root = tmp_path_factory.mktemp("audit_gap")
    data = planted(n_images=36, per_image=8, dim=12, strength=1.5, seed=4)
    data.labels, _ = flip_labels(data.labels, 0.1, seed=2)
    missing = data.images[0]
    pairs, cache = write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5", skip_images=(missing,))
    with pytest.MonkeyPatch.context() as patch:
        spy = FoldSpy(patch)
        result = run_audit(AuditConfig(cache, pairs, root / "audit", head="logreg", folds=3, head_params={"C": 0.3}))
    return {"data": data, "pairs": pairs, "cache": cache, "missing": missing, "spy": spy, "result": result}


def test_no_fold_model_has_seen_an_image_it_scores(gappy):
    spy, n_pairs = gappy["spy"], gappy["result"].summary["n_pairs"]
    assert len(spy.scored) == 3 and set(spy.scored) <= set(spy.seen)
    for head, scored in spy.scored.items():
        assert not scored & spy.seen[head], sorted(scored & spy.seen[head])
    assert len(set().union(*spy.scored.values())) == 35 and n_pairs == 35 * 8  # every cached image scored once


def test_audit_csv_names_only_the_pairs_audited_and_exclude_pairs_drops_exactly_those(gappy):
    data, audit_csv = gappy["data"], gappy["result"].out / "audit.csv"
    listed = pd.read_csv(audit_csv)
    given = {(i, t): int(s) for i, t, s in zip(data.images, data.texts, data.labels)}
    assert len(listed) >= 3
    assert gappy["missing"] not in set(listed["image"])  # its pairs were never audited
    for row in listed.itertuples():
        assert given.get((row.image, row.hashtag)) == row.given_score, row  # the very pair that was judged
    table = load_pairs(gappy["pairs"])
    excluded = listed_rows(table, audit_csv)  # what --exclude-pairs keeps off the training sides
    named = set(zip(listed["image"], listed["hashtag"]))
    assert set(zip(table.images[excluded], table.texts[excluded])) == named and excluded.sum() == len(listed)


SPARSE = ["cat_000.png", "cat_001.png", "cat_002.png"]  # the only images with scores below 3


def _small_table(root, labels_of, n_images=16, seed=3):
    data = planted(n_images=n_images, per_image=4, dim=8, seed=seed)
    data.labels = labels_of(data)
    return write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5")


@pytest.mark.parametrize(
    "scale, labels_of, n_images, seed",
    [
        ("0-1", lambda d: np.where(np.isin(d.images, ["cat_000.png", "cat_001.png"]), d.labels >= 4, 1), 12, 0),
        ("0-3", lambda d: np.where(np.isin(d.images, SPARSE), d.labels - 2, 3).clip(0), 16, 1),
    ],
)
def test_audit_of_a_small_table_whose_validation_parts_hold_one_score_runs(
    tmp_path, capsys, scale, labels_of, n_images, seed
):
    pairs, cache = _small_table(tmp_path, labels_of, n_images, seed)
    args = [
        "-q",
        "audit",
        "--cache",
        cache,
        "--data",
        pairs,
        "--scale",
        scale,
        "--folds",
        "3",
        "--out",
        tmp_path / "audit",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "only score" in err and "--val-size" in err  # the calibration fallback says so
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert set(summary["noise_rate"]) == {str(k) for k in range(int(scale[0]), int(scale[-1]) + 1)}


def test_too_many_folds_get_advice_the_audit_can_follow(noisy, tmp_path):
    """The audit has --folds, not --split: the advice names the number of folds the images allow."""
    from tagcons.errors import BadInputError

    config = AuditConfig(cache=noisy["cache"], data=noisy["pairs"], out=tmp_path / "audit", head="logreg", folds=81)
    with pytest.raises(BadInputError, match=r"only 80 distinct images for 81 image-grouped folds; use at most 80") as e:
        run_audit(config)
    assert "--split" not in str(e.value)
