"""`tagcons audit`: out-of-fold probabilities + cleanlab find planted label flips; --exclude-pairs uses its list."""

import json

import numpy as np
import pandas as pd
import pytest
from test_heads_support import planted, write_cache, write_pairs

from tagcons.audit.run import AuditConfig, run_audit
from tagcons.cli import main
from tagcons.heads import FitHeadConfig, fit_head

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


def test_too_many_folds_get_advice_the_audit_can_follow(noisy, tmp_path):
    """The audit has --folds, not --split: the advice names the number of folds the images allow."""
    from tagcons.errors import BadInputError

    config = AuditConfig(cache=noisy["cache"], data=noisy["pairs"], out=tmp_path / "audit", head="logreg", folds=81)
    with pytest.raises(BadInputError, match=r"only 80 distinct images for 81 image-grouped folds; use at most 80") as e:
        run_audit(config)
    assert "--split" not in str(e.value)
