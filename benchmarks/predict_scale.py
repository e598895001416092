"""`predict` at two table sizes: pairs/s and peak memory of the streamed pairs table.

A synthetic cache (random unit vectors, float16 as embed stores them) of `--images` images and
`--hashtags` hashtags, a logreg run fitted on 5,000 random labelled pairs of it (posts_scale.py's
cache and run), and unlabelled pairs tables of each `--pairs` size (with a `post_id` column that
predict carries) in the `--format` given. Each predict runs in a fresh process, so its peak resident
memory (ru_maxrss) is its own. The claim: peak memory does not grow with the table's rows (the
ratio largest / smallest near 1 at a fixed `--chunk-rows`).

    python benchmarks/predict_scale.py                       # 200k and 1M pairs (a few minutes on 2 cores)
    python benchmarks/predict_scale.py --pairs 2000 8000 --images 500 --hashtags 500 --dim 32 --chunk-rows 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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

from posts_scale import fit_run, write_cache  # noqa: E402  (the same synthetic cache and run)


def write_pairs(path: Path, n_pairs: int, n_images: int, n_tags: int, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "post_id": [f"p{i:09d}" for i in range(n_pairs)],
            "Image Filename": [f"img_{i:08d}.jpg" for i in rng.integers(0, n_images, n_pairs)],
            "Hashtag": [f"tag{t:06d}" for t in rng.integers(0, n_tags, n_pairs)],
        }
    )
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def measured(task: dict) -> dict:
    """Run one predict in a fresh interpreter; its JSON result plus wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(task)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result


def measure(task: dict) -> dict:
    """In the child process: predict, timed, with this process's peak memory."""
    from tagcons.configs import PredictConfig
    from tagcons.heads import predict

    started = time.perf_counter()
    result = predict(PredictConfig(**task, overwrite=True))
    seconds = time.perf_counter() - started
    return {
        "scored": result.n_scored,
        "seconds": round(seconds, 2),
        "pairs_per_second": round(result.n_scored / seconds),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run(args) -> dict:
    report = {
        "benchmark": "predict_scale",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "images": args.images,
        "hashtags": args.hashtags,
        "dim": args.dim,
        "chunk_rows": args.chunk_rows,
        "format": args.format,
        "predict": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache.h5"
        write_cache(cache, args.images, args.hashtags, args.dim)
        run_dir = fit_run(root / "fit", cache, args.images, args.hashtags)
        for n in args.pairs:
            pairs = root / f"pairs_{n}.{args.format}"
            write_pairs(pairs, n, args.images, args.hashtags)
            task = {"run": str(run_dir), "cache": str(cache), "data": str(pairs), "chunk_rows": args.chunk_rows}
            entry = measured({**task, "out": str(root / f"scored_{n}.{args.format}")})
            report["predict"].append({"pairs": n, **entry})
            print(report["predict"][-1], flush=True)
    sizes = report["predict"]
    report["memory_ratio_largest_to_smallest"] = round(sizes[-1]["peak_rss_mib"] / sizes[0]["peak_rss_mib"], 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--hashtags", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "predict_scale.json")
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
