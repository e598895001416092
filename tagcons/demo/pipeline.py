"""`tagcons demo`: the whole job offline on the `tiny` backbone, in the order a user would run it.

generate the demo set -> embed it into a cache -> fit every head with the honest image split ->
a short end-to-end fine-tune -> one comparison table. Each step is the same library call the
corresponding command makes, so the demo exercises exactly what users run. Rerunning reuses the
set and the cache (nothing is re-encoded) and replaces the runs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tagcons.demo.dataset import DemoConfig, make_demo_set
from tagcons.embed.extractor import EmbedConfig, default_workers, run_embed
from tagcons.evaluate.compare import comparison_frame, paired_differences, render_markdown, write_comparison

log = logging.getLogger(__name__)

# The study's head settings barely move in 20 epochs on the tiny backbone's features; the demo shows
# the mlp with its `robust` recipe (the study's recipe is one `--param recipe=paper` away).
DEMO_HEAD_PARAMS = {"mlp": {"recipe": "robust"}}
DEMO_HEADS = ("threshold", "logreg", "mlp", "lgbm", "text-only", "image-prior")


@dataclass
class DemoRunConfig:
    out: Path = Path("demo_out")
    data: DemoConfig = field(default_factory=DemoConfig)
    heads: tuple[str, ...] = DEMO_HEADS
    finetune_epochs: int = 3  # 0 skips the fine-tune
    workers: int = field(default_factory=default_workers)
    progress: bool = False


@dataclass
class DemoReport:
    out: Path
    pairs_csv: Path
    images_dir: Path
    cache: Path
    run_dirs: list[Path]
    table: pd.DataFrame
    markdown: str
    table_path: Path


def run_demo(config: DemoRunConfig) -> DemoReport:
    out = Path(config.out)
    demo_set = make_demo_set(out / "data", config.data)
    cache = out / "cache.h5"
    run_embed(
        EmbedConfig(
            data=demo_set.pairs_csv,
            images=demo_set.images_dir,
            backbone="tiny",
            out=cache,
            workers=config.workers,
            progress=config.progress,
        )
    )
    run_dirs = [_fit(head, cache, demo_set.pairs_csv, out, config.progress) for head in config.heads]
    if config.finetune_epochs > 0:
        run_dirs.append(_finetune(demo_set, out, config))
    groups = paired_differences(run_dirs)
    table_path, _ = write_comparison(groups, out / "compare.md")
    return DemoReport(
        out,
        demo_set.pairs_csv,
        demo_set.images_dir,
        cache,
        run_dirs,
        comparison_frame(groups),
        render_markdown(groups),
        table_path,
    )


def _fit(head: str, cache: Path, pairs: Path, out: Path, progress: bool) -> Path:
    from tagcons.heads import FitHeadConfig, fit_head

    config = FitHeadConfig(
        cache=cache,
        data=pairs,
        head=head,
        out=out / "runs" / head,
        split="images",
        head_params=DEMO_HEAD_PARAMS.get(head, {}),
        overwrite=True,
        progress=progress,
    )
    return fit_head(config).run_dir


def _finetune(demo_set, out: Path, config: DemoRunConfig) -> Path:
    from tagcons.finetune import FinetuneConfig, run_finetune

    run_dir = out / "runs" / "finetune"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own run: a rerun starts it afresh
    settings = FinetuneConfig(
        data=str(demo_set.pairs_csv),
        images=str(demo_set.images_dir),
        backbone="tiny",
        out=str(run_dir),
        epochs=config.finetune_epochs,
        workers=min(config.workers, 2),
        progress=config.progress,
    )
    run_finetune(settings)
    return run_dir
