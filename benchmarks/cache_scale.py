"""Cache at scale: write, consolidate, look up and scan N images x D dims (synthetic features), each
beside this disk's own sequential write/read speed measured in the same run.

    python benchmarks/cache_scale.py                 # 1,000,000 x 768 float16 (~1.5 GB), a few minutes
    python benchmarks/cache_scale.py --rows 50000    # quick

Reads are cold where Linux allows: after fsync, posix_fadvise(DONTNEED) evicts the file's pages
(dropping the whole page cache needs root). `build_cache` is importable for other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

import tagcons
import tagcons.cache as tc

BLOCK = 64 << 20
N_TEXTS = 1000


def bench_meta(dim: int, store_dtype: str = "float16") -> tc.CacheMeta:
    return tc.CacheMeta(
        backbone="synthetic",
        model_id="synthetic/bench",
        revision=None,
        projection_dim=dim,
        store_dtype=store_dtype,
        settings={"benchmark": True},
    )


def image_key(i: int) -> str:
    return f"images/{i // 1000:04d}/{i:08d}.jpg"


def _part(lo: int, hi: int, dim: int, rng: np.random.Generator):
    keys = [image_key(i) for i in range(lo, hi)]
    shas = [f"{i:064x}" for i in range(lo, hi)]
    embeds = rng.standard_normal((hi - lo, dim), dtype=np.float32).astype(np.float16)
    return keys, shas, embeds


def build_cache(
    path: Path, rows: int, dim: int, part_rows: int = 65536, store_dtype: str = "float16", seed: int = 0
) -> dict:
    """Write `rows` synthetic images (+ N_TEXTS texts) as embed would: one commit per `part_rows`,
    then consolidate. Returns timings; data generation is not timed."""
    rng = np.random.default_rng(seed)
    commit_s, nbytes = 0.0, 0
    with tc.CacheWriter(path, bench_meta(dim, store_dtype)) as w:
        texts = [f"#tag{j}" for j in range(N_TEXTS)]
        w.commit_texts(texts, rng.standard_normal((N_TEXTS, dim), dtype=np.float32))
        for lo in range(0, rows, part_rows):
            keys, shas, embeds = _part(lo, min(lo + part_rows, rows), dim, rng)
            start = time.perf_counter()
            w.commit_images(keys, shas, embeds)
            commit_s += time.perf_counter() - start
            nbytes += embeds.nbytes
        stats = w.consolidate()
    return {"commit_s": commit_s, "commit_bytes": nbytes, "consolidate_s": stats.seconds, "parts": stats.parts}


def evict(path: Path) -> None:
    """Drop a file's (clean) pages from the page cache so the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_speed(folder: Path, nbytes: int) -> dict:
    """Sequential write (with fsync) and cold read of one file, in 64 MiB blocks."""
    path = folder / "disk_speed.bin"
    block = np.random.default_rng(1).integers(0, 255, BLOCK, dtype=np.uint8).tobytes()
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // BLOCK)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write_s = time.perf_counter() - start
    size = path.stat().st_size
    evict(path)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(BLOCK):
            pass
    read_s = time.perf_counter() - start
    path.unlink()
    return {"bytes": size, "write_MBps": size / write_s / 1e6, "read_MBps": size / read_s / 1e6}


def bench_reads(path: Path, rows: int, n_lookup: int, seed: int = 0) -> dict:
    evict(path)
    out = {}
    start = time.perf_counter()
    with tc.open(path) as cache:
        cache.index("images")
        cache.index("texts")
        out["open_and_index_s"] = time.perf_counter() - start
        rng = np.random.default_rng(seed)
        images = [image_key(int(i)) for i in rng.integers(0, rows, n_lookup)]
        texts = [f"#tag{int(j)}" for j in rng.integers(0, N_TEXTS, n_lookup)]
        for label in ("cold", "warm"):  # warm: the same rows again, now in the page cache
            start = time.perf_counter()
            res = cache.lookup(images, texts)
            out[f"lookup_{label}_s"] = seconds = time.perf_counter() - start
            out[f"lookup_{label}_keys_per_s"] = n_lookup / seconds
            assert res.present.all() and res.image_embeds.shape == (n_lookup, cache.projection_dim)
    for label, dtype in (("float32", np.float32), ("stored", None)):
        evict(path)
        out.update({f"{k}_{label}": v for k, v in _full_scan(path, dtype).items()})
    return out


def _full_scan(path: Path, dtype) -> dict:
    """iter_rows over all images; MB/s counts bytes on disk (not the float32 copy)."""
    start, nbytes, n = time.perf_counter(), 0, 0
    with tc.open(path) as cache:
        itemsize = np.dtype(cache.attrs["store_dtype"]).itemsize
        for keys, embeds in cache.iter_rows("images", dtype=dtype):
            n += len(keys)
            nbytes += embeds.shape[0] * embeds.shape[1] * itemsize
    scan_s = time.perf_counter() - start
    assert n == _rows_in(path)
    return {"scan_s": scan_s, "scan_MBps": nbytes / scan_s / 1e6}


def _rows_in(path: Path) -> int:
    with tc.open(path) as cache:
        return len(cache.image_keys)


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numpy": np.__version__,
        "tagcons": tagcons.__version__,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(rows: int, dim: int, part_rows: int, n_lookup: int, base: str | None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="tagcons-cache-bench-", dir=base))
    try:
        path = folder / "cache.h5"
        write = build_cache(path, rows, dim, part_rows)
        file_bytes = path.stat().st_size
        disk = disk_speed(folder, max(file_bytes, BLOCK))
        reads = bench_reads(path, rows, n_lookup)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    write["commit_MBps"] = write["commit_bytes"] / write["commit_s"] / 1e6
    write["consolidate_MBps"] = write["commit_bytes"] / write["consolidate_s"] / 1e6
    return {
        "rows": rows,
        "dim": dim,
        "load_average_at_end": os.getloadavg(),
        "store_dtype": "float16",
        "part_rows": part_rows,
        "n_lookup": n_lookup,
        "cache_bytes": file_bytes,
        "disk": disk,
        "write": write,
        "read": reads,
        "peak_rss_MB": peak_rss_mb(),
        "machine": machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def table(r: dict) -> str:
    d, w, rd = r["disk"], r["write"], r["read"]
    lines = [
        f"cache: {r['rows']:,} images x {r['dim']} {r['store_dtype']} = {r['cache_bytes'] / 1e9:.2f} GB "
        f"({w['parts']} parts of {r['part_rows']:,} rows)",
        f"{'measure':<34}{'value':>14}{'disk seq.':>12}{'ratio':>8}",
        _row("commit (write parts, fsync)", w["commit_MBps"], "MB/s", d["write_MBps"]),
        _row("consolidate (read parts + write)", w["consolidate_MBps"], "MB/s", d["write_MBps"]),
        _row("full scan, as stored (cold)", rd["scan_MBps_stored"], "MB/s", d["read_MBps"]),
        _row("full scan, float32 (cold)", rd["scan_MBps_float32"], "MB/s", d["read_MBps"]),
        _row(f"random lookup {r['n_lookup']:,} (cold)", rd["lookup_cold_keys_per_s"], "keys/s"),
        _row(f"random lookup {r['n_lookup']:,} (warm)", rd["lookup_warm_keys_per_s"], "keys/s"),
        _row("open + key index", rd["open_and_index_s"], "s"),
        _row("consolidate time", w["consolidate_s"], "s"),
        _row("peak RSS", r["peak_rss_MB"], "MB"),
    ]
    return "\n".join(lines)


def _row(name: str, value: float, unit: str, disk: float | None = None) -> str:
    ref = f"{disk:>12.0f}{value / disk:>8.0%}" if disk else ""
    return f"{name:<34}{value:>10.1f} {unit:<4}" + ref


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--part-rows", type=int, default=65536)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--tmp", default=None, help="folder for the temporary cache (default: system temp)")
    parser.add_argument("--out", default="benchmarks/results/cache_scale.json")
    args = parser.parse_args(argv)
    result = run(args.rows, args.dim, args.part_rows, args.lookups, args.tmp)
    print(table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
