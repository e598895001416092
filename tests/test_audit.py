"""`tagcons audit`: out-of-fold probabilities + cleanlab find planted label flips; --exclude-pairs uses its list."""

import json

import numpy as np
import pandas as pd
import pytest
from test_heads_support import planted, write_cache, write_pairs

import tagcons.heads.fit as fit_module
from tagcons.audit.exclude import excluded_rows
from tagcons.audit.run import AuditConfig, run_audit
from tagcons.cli import main
from tagcons.data.pairs import load_pairs
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
        "pairs": write_pairs(data, root / "pairs.csv"),
        "cache": write_cache(data, root / "cache.h5"),
        "flipped_keys": {(data.images[i], data.texts[i]) for i in flipped},
        "n": len(data.labels),
    }


def test_audit_puts_most_flipped_labels_in_its_top_five_percent(noisy):
    result = run_audit(
        AuditConfig(cache=noisy["cache"], data=noisy["pairs"], out=noisy["root"] / "audit", head="logreg", folds=5)
    )
    top = result.issues.head(int(np.ceil(FLIP_SHARE * noisy["n"])))
    found = {(i, t) for i, t in zip(top["image"], top["hashtag"])} & noisy["flipped_keys"]
    assert len(found) >= 0.6 * len(noisy["flipped_keys"]), (len(found), len(noisy["flipped_keys"]))
    summary = json.loads((result.out / "audit.json").read_text())
    assert summary["n_flagged"] == len(result.issues) and summary["n_pairs"] == noisy["n"]
    assert set(summary["noise_rate"]) == {"1", "2", "3", "4", "5"}
    assert sum(sum(row.values()) for row in summary["given_vs_suggested"].values()) == summary["n_flagged"]
    frame = pd.read_csv(result.out / "audit.csv")
    assert list(frame.columns) == ["rank", "image", "hashtag", "given_score", "suggested_score", "p_given"]
    assert frame["p_given"].is_monotonic_increasing  # worst (least believed) label first


def test_fit_head_exclude_pairs_leaves_out_the_listed_pairs(noisy, tmp_path):
    listed = pd.DataFrame({"image": ["cat_000.png", "cat_001.png"], "hashtag": ["#tag_000_0", "#tag_001_3"]})
    listed.to_csv(tmp_path / "reviewed.csv", index=False)
    kw = dict(cache=noisy["cache"], data=noisy["pairs"], head="threshold", split="pairs", test_size=0.5)
    full = fit_head(FitHeadConfig(out=tmp_path / "full", **kw)).metrics
    fewer = fit_head(FitHeadConfig(out=tmp_path / "fewer", exclude_pairs=tmp_path / "reviewed.csv", **kw)).metrics
    assert full["n_train"] + full["n_test"] - 2 == fewer["n_train"] + fewer["n_test"]


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
        fit, calibrated_proba, calibrate = LogregHead.fit, Head.calibrated_proba, fit_module.calibrate_head

        def spied_fit(head, X, y, groups=None):
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
    excluded = excluded_rows(table, audit_csv)  # what --exclude-pairs leaves out
    named = set(zip(listed["image"], listed["hashtag"]))
    assert set(zip(table.images[excluded], table.texts[excluded])) == named and excluded.sum() == len(listed)
