"""A rerun of `tagcons embed` over a finished cache: wall time of the whole command (a fresh process,
as a user runs it), and whether it imported transformers.

A small image set (--images PNGs, two hashtags each) is embedded once with the tiny backbone, then the
same command is rerun --repeats times; the reruns must find everything cached, take the cache lock,
hash the files and stop before the model loads.

    python benchmarks/noop_embed.py
    python benchmarks/noop_embed.py --images 500 --repeats 5
    python benchmarks/noop_embed.py --baseline OLD_CHECKOUT     # also time another checkout, same inputs

Wall time on a shared machine depends on its load; the CPU time (user + sys of the child) is steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUN = """
import sys
from tagcons.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
print("transformers imported:", "transformers" in sys.modules)
"""


def make_set(root: Path, n_images: int) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir()
    rows = ["Image Filename,Hashtag,Score"]
    for i in range(n_images):
        Image.new("RGB", (64, 64), (i % 256, (7 * i) % 256, 90)).save(images / f"img_{i:04d}.png")
        rows += [f"img_{i:04d}.png,#tag{i % 50},{1 + i % 5}", f"img_{i:04d}.png,#other{i % 30},{1 + (i + 2) % 5}"]
    pairs = root / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images


def timed_run(args: list[str], tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(  # cwd: `python -c` puts the working folder first on sys.path
        [sys.executable, "-c", RUN, *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "transformers": "transformers imported: True" in done.stdout}


def measure(tree: Path, n_images: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pairs, images = make_set(Path(tmp), n_images)
        args = ["-q", "embed", "--data", str(pairs), "--images", str(images), "--backbone", "tiny"]
        args += ["--out", str(Path(tmp) / "c.h5"), "--workers", "0"]
        first = timed_run(args, tree)
        reruns = [timed_run(args, tree) for _ in range(repeats)]
    return {
        "first_embed_wall_s": round(first["wall_s"], 2),
        "noop_rerun_wall_s": [round(r["wall_s"], 2) for r in reruns],
        "noop_rerun_cpu_s": [round(r["cpu_s"], 2) for r in reruns],
        "noop_rerun_median_wall_s": round(statistics.median(r["wall_s"] for r in reruns), 2),
        "noop_rerun_median_cpu_s": round(statistics.median(r["cpu_s"] for r in reruns), 2),
        "transformers_imported": any(r["transformers"] for r in reruns),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="Another checkout to time the same way.")
    options = parser.parse_args()
    result = {"images": options.images, "this_tree": measure(ROOT, options.images, options.repeats)}
    if options.baseline:
        result["baseline"] = measure(options.baseline, options.images, options.repeats)
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    result["load_average"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "noop_embed.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
