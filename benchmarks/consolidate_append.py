"""Bytes written by consolidating 1% new rows into a large cache: zero-copy segments against the plain
rewrite. Target: under 5% of the cache's size (the plain rewrite writes all of it again).

For each mode a cache of --rows images is built (as embed writes it), then --new-fraction new rows
are committed and consolidated twice in a row (the first turns the plain file into the base segment
by a hard link; the second is the steady state). Bytes written are what the process handed to
write() during consolidation (/proc/self/io wchar); the cache's size counts every file it spans.
Also timed: reading every image row back after the appends (through the index when segmented).

    python benchmarks/consolidate_append.py                       # 1,000,000 x 768 float16 (~1.5 GB)
    python benchmarks/consolidate_append.py --rows 20000 --dim 64   # a quick check that it works

Real figures need a quiet machine with the disk space for two such caches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from cache_scale import _part, bench_meta, build_cache  # noqa: E402

import tagcons.cache as tc  # noqa: E402
from tagcons.cache import segments  # noqa: E402

TARGET_FRACTION = 0.05
MODES = {"zero_copy": 0, "plain_rewrite": 10**15}  # segments.SEGMENT_MIN_ROWS per mode


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def spanned_bytes(path: Path) -> int:
    return path.stat().st_size + sum(p.stat().st_size for p in segments.segment_files(path))


def append(path: Path, lo: int, hi: int, dim: int) -> dict:
    keys, shas, embeds = _part(lo, hi, dim, np.random.default_rng(lo))
    with tc.CacheWriter(path, bench_meta(dim)) as w:
        w.commit_images(keys, shas, embeds)
        before, start = written_bytes(), time.perf_counter()
        w.consolidate()
        seconds, written = time.perf_counter() - start, written_bytes() - before
    size = spanned_bytes(path)
    return {
        "new_rows": hi - lo,
        "seconds": round(seconds, 3),
        "bytes_written": written,
        "cache_bytes": size,
        "fraction_of_cache": round(written / size, 5),
    }


def run_mode(folder: Path, rows: int, new: int, dim: int) -> dict:
    path = folder / "c.h5"
    build_cache(path, rows, dim)
    first = append(path, rows, rows + new, dim)
    second = append(path, rows + new, rows + 2 * new, dim)
    return {"first_append": first, "second_append": second, "read_all_images_seconds": read_seconds(path)}


def read_seconds(path: Path) -> float:
    """`tagcons.cache.open(...).image_embeddings()` after the appends (through the index when segmented)."""
    start = time.perf_counter()
    with tc.open(path) as cache:
        cache.image_embeddings()
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "consolidate_append.json")
    args = parser.parse_args()
    new = max(1, int(args.rows * args.new_fraction))
    results = {}
    for mode, min_rows in MODES.items():
        segments.SEGMENT_MIN_ROWS = min_rows
        with tempfile.TemporaryDirectory() as tmp:
            results[mode] = run_mode(Path(tmp), args.rows, new, args.dim)
    worst = max(r["fraction_of_cache"] for r in results["zero_copy"].values() if isinstance(r, dict))
    result = {
        "benchmark": "consolidate_append",
        "command": "python benchmarks/consolidate_append.py " + " ".join(sys.argv[1:]),
        "rows": f"{args.rows} synthetic images x {args.dim} float16, then 2 x {new} new rows",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        **results,
        "target_fraction": TARGET_FRACTION,
        "meets_target": worst < TARGET_FRACTION,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
