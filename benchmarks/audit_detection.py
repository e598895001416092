"""Audit benchmark: how many planted wrong scores the audit's top holds, ordinal ranking vs cleanlab's own.

    python benchmarks/audit_detection.py [--heads lgbm logreg] [--features concat rich] [--seeds 1]

Two planted caches, whose true scores are known:
- `demo`: the demo set (`tagcons/demo/dataset.py`, 150 drawn images x 12 hashtags, scored by its
  rule, no flips, no duplicates) embedded once with the `tiny` backbone. The rule is categorical
  (a colour named or not), so the fold models' own errors can be far apart on the scale (1 vs 5);
- `ordinal`: 150 synthetic images x 12 texts whose text embedding moves along one direction with
  the score (as the head tests plant it), so the models' errors are mostly one step.
A cache does not hold scores, so each noise condition is only a new pairs file: 5% of the rows moved
one step (`one_step`, 5 -> 4, 1 -> 2), or two or three steps as the demo generator moves them
(`two_plus_steps`, 5 -> 3 or 2, 1 -> 3 or 4). Nothing here touches test data: the planted scores
are the truth and every probability the audit ranks is out of fold.

For each cache, condition, head and feature kind, one audit's out-of-fold probabilities are ranked
three ways: `ordinal-distance` (the default: Σ p_k·min(|k − given|, 2)), the same uncapped
(Σ p_k·|k − given|), and `self-confidence` (cleanlab's `find_label_issues` order and its
self-confidence quality). Reported: the share of the planted flips in the top 5% of each ranking
(as many pairs as were flipped), the flagged count (cleanlab's confident-joint estimate, the same
under every ranking), the precision of the flagged pairs, and the out-of-fold macro-F1 against the
given scores. Writes benchmarks/results/audit_detection.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.audit.run import AuditConfig, expected_distance, label_issues, run_audit
from tagcons.cache import CacheMeta, CacheWriter
from tagcons.configs import DemoConfig, EmbedConfig
from tagcons.demo.dataset import make_demo_set
from tagcons.embed.extractor import run_embed

HERE = Path(__file__).resolve().parent
SHARE = 0.05
CONDITIONS = ("one_step", "two_plus_steps")
RANKINGS = ("ordinal-distance", "ordinal-distance-uncapped", "self-confidence")
LABELS = (1, 2, 3, 4, 5)
SHARES = (0.04, 0.10, 0.16, 0.27, 0.43)  # the study's score distribution, as the demo draws it


def demo_cache(root: Path) -> tuple[Path, pd.DataFrame]:
    demo = make_demo_set(root / "demo", DemoConfig(flip_fraction=0.0, duplicate_fraction=0.0))
    cache = root / "demo.h5"
    run_embed(EmbedConfig(data=demo.pairs_csv, images=demo.images_dir, backbone="tiny", out=cache, workers=0))
    return cache, pd.read_csv(demo.pairs_csv)


def ordinal_cache(root: Path, n_images: int = 150, per_image: int = 12, dim: int = 16) -> tuple[Path, pd.DataFrame]:
    """Texts whose embedding moves with the score along one direction and towards their image (noisy)."""
    rng = np.random.default_rng(9)
    direction = rng.normal(size=dim) / np.sqrt(dim)
    images = {f"img_{i:03d}.png": rng.normal(size=dim) for i in range(n_images)}
    rows, texts = [], {}
    for key, vec in images.items():
        for j in range(per_image):
            score = int(rng.choice(5, p=SHARES)) + 1
            text = f"tag_{key[4:7]}_{j}"
            unit = vec / np.linalg.norm(vec)
            texts[text] = 0.5 * rng.normal(size=dim) + (score - 3) * direction + (score - 1) * unit
            rows.append((key, text, score))
    cache = root / "ordinal.h5"
    meta = CacheMeta(backbone="synthetic", model_id="benchmark/ordinal", revision=None, projection_dim=dim)
    with CacheWriter(cache, meta) as writer:
        keys = list(images)
        image_rows = np.stack([images[k] for k in keys]).astype(np.float32)
        text_rows = np.stack(list(texts.values())).astype(np.float32)
        writer.commit(
            images=(keys, [f"{i:064x}" for i in range(len(keys))], image_rows), texts=(list(texts), text_rows)
        )
        writer.consolidate()
    return cache, pd.DataFrame(rows, columns=["Image Filename", "Hashtag", "Score"])


def ranked(oof: np.ndarray, given: np.ndarray, rank_by: str) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, ranking) as the audit makes them, or for the uncapped distance with cleanlab's count."""
    if rank_by != "ordinal-distance-uncapped":
        return label_issues(given, oof, LABELS, rank_by)
    flagged, _ = label_issues(given, oof, LABELS, "self-confidence")
    ranking = np.argsort(-expected_distance(given, oof, LABELS, max_steps=None), kind="stable")
    return ranking[: len(flagged)], ranking


def moved(score: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """Each score moved away from the rule's: one step, or two or three (down unless that leaves 1-5)."""
    step = np.ones(len(score), dtype=int) if condition == "one_step" else 2 + rng.integers(0, 2, len(score))
    return np.where(score - step >= 1, score - step, np.minimum(score + step, 5))


def noisy_pairs(frame: pd.DataFrame, condition: str, seed: int, path: Path) -> set:
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    flipped = rng.choice(len(frame), int(round(SHARE * len(frame))), replace=False)
    noisy = frame.copy()
    noisy.loc[flipped, "Score"] = moved(frame["Score"].to_numpy()[flipped], condition, rng)
    noisy.to_csv(path, index=False)
    return set(zip(frame["Image Filename"].iloc[flipped], frame["Hashtag"].iloc[flipped]))


def detection(oof: np.ndarray, given: np.ndarray, keys: list, planted: set, rank_by: str) -> dict:
    flagged, ranking = ranked(oof, given, rank_by)
    top = ranking[: len(planted)]

    def hits(rows) -> int:
        return sum(keys[i] in planted for i in rows)

    return {
        "top_share_recall": hits(top) / len(planted),
        "n_flagged": int(len(flagged)),
        "flagged_precision": hits(flagged) / max(len(flagged), 1),
        "flagged_recall": hits(flagged) / len(planted),
    }


def one_audit(cache: Path, pairs: Path, head: str, features: str, out: Path, planted: set) -> dict:
    """One audit's out-of-fold probabilities, ranked every way."""
    started = time.perf_counter()
    result = run_audit(AuditConfig(cache=cache, data=pairs, out=out, head=head, features=features, folds=5))
    frame = pd.read_csv(pairs)  # every pair is in the cache and none is a duplicate: oof rows are these rows
    keys, given = list(zip(frame["Image Filename"], frame["Hashtag"])), frame["Score"].to_numpy()
    assert len(given) == len(result.oof_proba)
    return {
        "oof_macro_f1": result.summary["oof_macro_f1"],
        **{rank_by: detection(result.oof_proba, given, keys, planted, rank_by) for rank_by in RANKINGS},
        "seconds": time.perf_counter() - started,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| cache | flips | head | features | OOF macro-F1 | top-5% recall: ordinal (default) | uncapped | "
        "cleanlab | flagged | precision: ordinal | cleanlab |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        o, u, c = r["ordinal-distance"], r["ordinal-distance-uncapped"], r["self-confidence"]
        lines.append(
            f"| {r['cache']} | {r['condition']} | {r['head']} | {r['features']} | {r['oof_macro_f1']:.3f} | "
            f"{o['top_share_recall']:.2f} | {u['top_share_recall']:.2f} | {c['top_share_recall']:.2f} | "
            f"{o['n_flagged']} | {o['flagged_precision']:.2f} | {c['flagged_precision']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=["lgbm", "logreg"])
    parser.add_argument("--features", nargs="+", default=["concat", "rich"])
    parser.add_argument("--seeds", type=int, default=1, help="noise plantings per condition")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "audit_detection.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, (cache, frame) in {"demo": demo_cache(root), "ordinal": ordinal_cache(root)}.items():
            for seed in range(args.seeds):
                for condition in CONDITIONS:
                    pairs = root / f"{name}_{condition}_{seed}.csv"
                    planted = noisy_pairs(frame, condition, seed, pairs)
                    for head in args.heads:
                        for features in args.features:
                            out = root / f"audit_{name}_{condition}_{seed}_{head}_{features}"
                            row = one_audit(cache, pairs, head, features, out, planted)
                            setting = {"cache": name, "condition": condition, "seed": seed, "head": head}
                            results.append({**setting, "features": features, **row})
                            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    caches = {
        "demo": "the demo set, 150 images x 12 tags, rule scores, tiny backbone",
        "ordinal": "150 synthetic images x 12 texts, the text embedding moving with the score",
    }
    payload = {"caches": caches, "share_flipped": SHARE, "top": "as many pairs as were flipped", "results": results}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
