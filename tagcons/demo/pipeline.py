"""`tagcons demo`: the whole job offline on the `tiny` backbone, in the order a user would run it.

generate the demo set -> embed it into a cache -> fit every head with the honest image split ->
a short end-to-end fine-tune -> one comparison table -> an audit of the demo set's labels (the
generator flips 5% of the scores; the audit should put most of them near the top) -> the report -> its
pairs as posts, scored and given suggestions (`tagcons score`, `tagcons suggest`). Each step is
the same library call the corresponding command makes, so the demo exercises exactly what users
run. Rerunning reuses the set and the cache (nothing is re-encoded) and replaces the runs.
Because it replaces things, it writes only into a new or empty folder, or one holding its marker
file (a previous demo output).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tagcons.configs import DemoRunConfig, EmbedConfig
from tagcons.demo.dataset import make_demo_set
from tagcons.demo.posts import score_and_suggest
from tagcons.embed.extractor import run_embed
from tagcons.errors import BadInputError
from tagcons.evaluate.compare import comparison_frame, paired_differences, render_markdown, write_comparison
from tagcons.evaluate.report import ReportConfig, write_report

log = logging.getLogger(__name__)

# The study's head settings barely move in 20 epochs on the tiny backbone's features; the demo shows
# the mlp with its `robust` recipe (the study's recipe is one `--param recipe=paper` away).
DEMO_HEAD_PARAMS = {"recipe": "robust"}  # the mlp's setting (fit_heads gives each head the settings it has)
DEMO_CATEGORY = "^([a-z]+)_"  # the demo's images are named <scene>_<nn>.png
DEMO_MARKER = ".tagcons-demo"
LEGACY_DEMO_NAMES = {
    "data",
    "runs",
    "cache.h5",
    "cache.h5.lock",
    "cache.h5.parts",
    "compare.md",
    "compare.csv",
    "report.html",
    "audit",
}


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
    report_path: Path
    audit_line: str = ""  # how many flagged, and how many of the planted flips the audit's top holds
    posts_lines: list[str] = field(default_factory=list)  # the demo's posts scored and given suggestions


def run_demo(config: DemoRunConfig) -> DemoReport:
    out = Path(config.out)
    claim_output_folder(out)
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
    run_dirs = _fit(config.heads, cache, demo_set.pairs_csv, out, config.progress)
    if config.finetune_epochs > 0:
        run_dirs.append(_finetune(demo_set, out, config))
    groups = paired_differences(run_dirs)
    table_path, _ = write_comparison(groups, out / "compare.md")
    audit_line = _audit(cache, demo_set, out, config.progress)
    report_path = write_report(
        ReportConfig(
            run_dirs,
            out / "report.html",
            demo_set.images_dir,
            category_from=DEMO_CATEGORY,
            overwrite=True,
            audit=out / "audit",
        )
    )
    posts_lines = score_and_suggest(demo_set.pairs_csv, cache, run_dirs, out)
    return DemoReport(
        out,
        demo_set.pairs_csv,
        demo_set.images_dir,
        cache,
        run_dirs,
        comparison_frame(groups),
        render_markdown(groups),
        table_path,
        report_path,
        audit_line,
        posts_lines,
    )


def _audit(cache: Path, demo_set, out: Path, progress: bool) -> str:
    """`tagcons audit` on the demo set, checked against the flips the generator planted."""
    from tagcons.audit.run import AuditConfig, run_audit

    audit = AuditConfig(cache=cache, data=demo_set.pairs_csv, out=out / "audit", progress=progress, overwrite=True)
    result = run_audit(audit)
    flipped = pd.read_csv(demo_set.flipped_csv)
    planted = set(zip(flipped["Image Filename"], flipped["Hashtag"]))
    top = result.issues.head(len(planted))
    found = len(planted & set(zip(top["image"], top["hashtag"])))
    return (
        f"audit: {result.summary['n_flagged']} of {result.summary['n_pairs']} pairs flagged; its top {len(top)} "
        f"hold {found} of the {len(planted)} scores the generator flipped ({out / 'audit' / 'audit.csv'})"
    )


def claim_output_folder(out: Path) -> None:
    """Refuse a non-empty folder the demo did not write (a rerun replaces runs/); mark the folder as ours."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: is a file; pass a new or empty folder as --out")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).is_file() and not _unmarked_demo_output(out):
        raise BadInputError(
            f"{out}: folder is not empty and was not written by `tagcons demo` (no {DEMO_MARKER} file); "
            "the demo replaces its runs there, so pass a new or empty folder as --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `tagcons demo`; a rerun replaces the demo's files here\n")


def _unmarked_demo_output(out: Path) -> bool:
    """A demo output written before the marker existed: its comparison table and only the demo's names."""
    return (out / "compare.md").is_file() and {p.name for p in out.iterdir()} <= LEGACY_DEMO_NAMES


def _fit(heads, cache: Path, pairs: Path, out: Path, progress: bool) -> list[Path]:
    """Every head on one join of the cache (as `fit-head --head all`): one run each under runs/."""
    from tagcons.heads import FitHeadConfig, fit_heads

    config = FitHeadConfig(
        cache=cache,
        data=pairs,
        head=heads[0],
        out=out / "runs",
        split="images",
        head_params=DEMO_HEAD_PARAMS,
        overwrite=True,
        progress=progress,
    )
    return [result.run_dir for result in fit_heads(config, heads)]


def _finetune(demo_set, out: Path, config: DemoRunConfig) -> Path:
    from tagcons.finetune import FinetuneConfig, run_finetune

    run_dir = out / "runs" / "finetune"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own run: a rerun starts it afresh
    finetune_config = FinetuneConfig(
        data=demo_set.pairs_csv,
        images=demo_set.images_dir,
        backbone="tiny",
        out=run_dir,
        epochs=config.finetune_epochs,
        workers=min(config.workers, 2),
        progress=config.progress,
    )
    run_finetune(finetune_config)
    return run_dir
