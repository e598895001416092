"""Where `tagcons embed` spends its CPU time: cProfile with a CPU clock over one in-process run (issue 29).

The run uses --workers 0, so decoding, preprocessing, the forward pass and the cache writes all happen
in this process and cProfile sees them; the clock is `time.process_time` (CPU seconds of the whole
process, every torch thread included), so the split holds on a loaded machine where wall time does
not. Prints the CPU seconds per stage (a function's cumulative time, stages by the functions that
start them) and the top functions, and saves them as JSON.

    python benchmarks/profile_embed.py                                   # ViT-B/32, 32 JPEGs of 1080 px
    nice python benchmarks/profile_embed.py --model tiny --n 16 --side 256 --out /tmp/profile.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from embed_efficiency import MODELS, write_jpegs  # noqa: E402
from embed_throughput import build_checkpoint  # noqa: E402

from tagcons.embed import onnx_runtime  # noqa: E402
from tagcons.embed.extractor import EmbedConfig, run_embed  # noqa: E402

# stage -> (file suffix, function name) of the call that does it; cumulative CPU time is read there.
STAGES = {
    "hash files (plan)": ("embed/extractor.py", "plan_images"),
    "load model": ("embed/backbones.py", "load_backbone"),
    "decode images": ("data/images.py", "open_image"),
    "preprocess (processor call)": ("data/image_batches.py", "__call__"),
    "image forward": ("embed/features.py", "image_features"),
    "image pass (all of it)": ("embed/image_encoding.py", "embed_images"),
    "text pass (all of it)": ("embed/text_encoding.py", "embed_texts"),
    "text forward": ("embed/features.py", "text_features"),
    "tokenize": ("embed/features.py", "tokenize"),
    "count cut texts": ("embed/text_encoding.py", "count_truncated"),
    "commit image parts": ("cache/writer.py", "commit_images"),
    "consolidate cache": ("cache/writer.py", "consolidate"),
    "whole command": ("embed/extractor.py", "run_embed"),
}


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    found = {}
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        for stage, (suffix, name) in STAGES.items():
            if function == name and filename.endswith(suffix):
                found[stage] = found.get(stage, 0.0) + cumulative
    return found


def top_functions(stats: pstats.Stats, n: int) -> list[dict]:
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:n]  # by own (total) time
    return [
        dict(function=f"{Path(filename).name}:{line}:{function}", own_seconds=own, cumulative_seconds=cumulative)
        for (filename, line, function), (_, _, own, cumulative, _) in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit-b-32", choices=MODELS)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--side", type=int, default=1080)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runtime", default="torch", choices=onnx_runtime.RUNTIMES)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile_embed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tagcons-profile-") as tmp:
        work = Path(tmp)
        os.environ[onnx_runtime.HOME_ENV] = str(work / "onnx-home")
        pairs, images = write_jpegs(work, args.n, args.side)
        source = "tiny" if args.model == "tiny" else str(build_checkpoint(args.model, work))
        config = EmbedConfig(
            data=pairs,
            images=images,
            backbone=source,
            out=work / "c.h5",
            batch_size=args.batch_size,
            workers=0,
            device="cpu",
            runtime=args.runtime,
        )
        profiler = cProfile.Profile(time.process_time)
        wall = time.perf_counter()
        profiler.runcall(run_embed, config)
        wall = time.perf_counter() - wall
    stats = pstats.Stats(profiler)
    stages = stage_seconds(stats)
    for stage, seconds in stages.items():
        print(f"{stage:30s} {seconds:7.2f} CPU s")
    top = top_functions(stats, args.top)
    for row in top:
        print(f"{row['own_seconds']:7.2f} own {row['cumulative_seconds']:7.2f} cum  {row['function']}")
    report = dict(
        benchmark="profile_embed",
        clock="process_time (CPU seconds, all threads)",
        wall_seconds=wall,
        load_average=os.getloadavg(),
        settings=vars(args) | {"out": None, "workers": 0},
        stages=stages,
        top_functions=top,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
