"""Posts at scale: `score` pairs/s and peak memory at two sizes, `suggest` time and the HNSW recall@K.

Synthetic caches of N images and 100k hashtags (random unit vectors, float16 as embed stores them;
speed does not depend on the values), a posts parquet of N posts with 10 hashtags each, and a logreg
run fitted on 5,000 random labelled pairs. Each measurement runs in a fresh process, so its peak
resident memory (VmHWM) is its own:
  - score: 100k and 1M posts (1M and 10M scored pairs); target: peak memory within 1.2x between the
    sizes, >= 200k pairs/s on 2 cores for logreg;
  - suggest: 100k images against 100k hashtags, K = 20, exact and HNSW, recall@20 of HNSW against exact.

    python benchmarks/posts_scale.py                  # the issue's sizes (about 10 minutes on 2 cores)
    python benchmarks/posts_scale.py --images 20000 50000 --suggest-images 5000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from heads import _status_mb  # noqa: E402

TAGS_PER_POST = 10


def unit_rows(rng, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float16)


def write_cache(path: Path, n_images: int, n_tags: int, dim: int, seed: int = 0) -> None:
    """A consolidated cache, committed in blocks as embed commits its parts."""
    from tagcons.cache import CacheMeta, CacheWriter

    rng = np.random.default_rng(seed)
    meta = CacheMeta(
        backbone="bench", model_id="bench/random", revision=None, projection_dim=dim, text_template="{}",
        store_dtype="float16",
    )  # fmt: skip
    with CacheWriter(path, meta) as writer:
        for lo in range(0, n_images, 200_000):
            keys = [f"img_{i:08d}.jpg" for i in range(lo, min(lo + 200_000, n_images))]
            writer.commit(images=(keys, ["0" * 64] * len(keys), unit_rows(rng, len(keys), dim)))
        writer.commit(texts=([f"tag{i:06d}" for i in range(n_tags)], unit_rows(rng, n_tags, dim)))
        writer.consolidate()


def write_posts(path: Path, n_posts: int, n_tags: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    tags = rng.integers(0, n_tags, size=(n_posts, TAGS_PER_POST))
    frame = pd.DataFrame(
        {
            "post_id": np.arange(n_posts),
            "image": [f"img_{i:08d}.jpg" for i in range(n_posts)],
            "hashtags": [[f"tag{t:06d}" for t in row] for row in tags],
        }
    )
    frame.to_parquet(path, index=False)


def fit_run(root: Path, cache: Path, n_images: int, n_tags: int) -> Path:
    from tagcons.configs import FitHeadConfig
    from tagcons.heads import fit_head

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    n = 5000
    pairs = pd.DataFrame(
        {
            "Image Filename": [f"img_{i:08d}.jpg" for i in rng.integers(0, n_images, n)],
            "Hashtag": [f"tag{t:06d}" for t in rng.integers(0, n_tags, n)],
            "Score": rng.integers(1, 6, n),
        }
    )
    pairs.to_csv(root / "train.csv", index=False)
    config = FitHeadConfig(data=root / "train.csv", cache=cache, head="logreg", out=root / "run")
    config.head_params = {"Cs": (1.0,)}
    return fit_head(config).run_dir


def measured(task: dict) -> dict:
    """Run one task (`measure`) in a fresh interpreter; its JSON result plus wall time and peak memory."""
    started = time.perf_counter()
    command = [sys.executable, __file__, "--measure", json.dumps(task)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result


def measure(task: dict) -> dict:
    """In the child process: score or suggest as the task says, timed, with this process's peak memory."""
    from tagcons.configs import ScoreConfig, SuggestConfig
    from tagcons.posts.score import score_posts
    from tagcons.posts.suggest import suggest_tags

    started = time.perf_counter()
    if task.pop("command") == "score":
        summary = score_posts(ScoreConfig(**task, overwrite=True))
        result = {"pairs": summary.stats.n_pairs, "scored": summary.n_scored}
    else:
        summary = suggest_tags(SuggestConfig(**task, overwrite=True))
        result = {"images": summary.stats.n_posts, "suggestions": summary.n_suggested}
    seconds = time.perf_counter() - started
    result |= {
        "seconds": round(seconds, 2),
        "peak_rss_mib": peak_rss_mib(),
    }
    if "scored" in result:
        result["pairs_per_second"] = round(result["scored"] / seconds)
    return result


def peak_rss_mib() -> int:
    """This process's own peak resident memory (VmHWM, which starts afresh at exec). Not ru_maxrss: Linux
    carries the parent's peak into a child started by fork/vfork and exec, so every child reported the
    parent's peak (the parent builds the caches and posts tables)."""
    return round(_status_mb("VmHWM"))


def score_task(cache: Path, posts: Path, out: Path, run: Path | None) -> dict:
    return {"command": "score", "cache": str(cache), "posts": str(posts), "out": str(out), "run": run and str(run)}


def suggest_task(cache: Path, posts: Path, out: Path, index: str, k: int) -> dict:
    return {"command": "suggest", "cache": str(cache), "posts": str(posts), "out": str(out), "index": index, "k": k}


def recall_at_k(exact: Path, approx: Path) -> float:
    want, got = (
        pd.read_parquet(exact, columns=["post_id", "hashtag"]),
        pd.read_parquet(approx, columns=["post_id", "hashtag"]),
    )
    shared = want.merge(got, on=["post_id", "hashtag"], how="inner")
    return round(len(shared) / len(want), 4)


def run(args) -> dict:
    report = {
        "benchmark": "posts_scale",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "dim": args.dim,
        "hashtags": args.hashtags,
        "tags_per_post": TAGS_PER_POST,
        "score": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in args.images:
            cache, posts = root / f"cache_{n}.h5", root / f"posts_{n}.parquet"
            write_cache(cache, n, args.hashtags, args.dim)
            write_posts(posts, n, args.hashtags)
            run_dir = fit_run(root / f"fit_{n}", cache, n, args.hashtags)
            for head in ("logreg", None):
                entry = measured(score_task(cache, posts, root / f"scored_{n}.parquet", run_dir if head else None))
                report["score"].append({"images": n, "head": head or "cosine", **entry})
                print(report["score"][-1], flush=True)
        report["suggest"] = suggest_report(root, args)
    logreg = [e for e in report["score"] if e["head"] == "logreg"]
    if len(logreg) >= 2:
        report["score_memory_ratio_largest_to_smallest"] = round(
            logreg[-1]["peak_rss_mib"] / logreg[0]["peak_rss_mib"], 3
        )
    return report


def suggest_report(root: Path, args) -> dict:
    n = args.suggest_images
    cache, posts = root / "suggest_cache.h5", root / "suggest_posts.parquet"
    write_cache(cache, n, args.hashtags, args.dim, seed=5)
    write_posts(posts, n, args.hashtags, seed=6)
    entry = {"images": n, "hashtags": args.hashtags, "k": args.k}
    for index in ("exact", "hnsw"):
        entry[index] = measured(suggest_task(cache, posts, root / f"suggest_{index}.parquet", index, args.k))
        print(index, entry[index], flush=True)
    entry["hnsw_recall_at_k"] = recall_at_k(root / "suggest_exact.parquet", root / "suggest_hnsw.parquet")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--hashtags", type=int, default=100_000)
    parser.add_argument("--suggest-images", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "posts_scale.json")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the child process's task (JSON)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
