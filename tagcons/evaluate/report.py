"""`tagcons report`: one self-contained HTML page for a study's runs.

Sections: a summary (headline metrics with their intervals, baselines, the paired differences that
`compare` computes), one section per run (confusion matrix, reliability diagram, predicted vs true
scores, training curves), metrics per category, and galleries of the worst errors and of the pairs
two runs disagree on most.

The page needs nothing but itself: CSS inline, plots and thumbnails as data URIs, no script, and a
Content-Security-Policy meta tag that forbids any other source. Every user string (hashtags, file
names, column values) goes through Jinja2's autoescaping.

The rooms: `report_runs` reads run folders (and embeds only their own PNG files), `report_tables`
shapes the tables, `report_figures` the figures, `report_categories` the per-category metrics,
`report_galleries` the thumbnails and galleries; this module assembles the page and writes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import ReportConfig
from tagcons.errors import BadInputError
from tagcons.evaluate import compare
from tagcons.evaluate.report_audit import audit_views, exclusion_rows
from tagcons.evaluate.report_categories import (
    CATEGORY_METRICS,
    MIN_CATEGORY_IMAGES,
    category_function,
    category_rows,
)
from tagcons.evaluate.report_figures import curves_png, distribution_png, forest_uri, reliability_png
from tagcons.evaluate.report_galleries import THUMBNAIL_PX, Thumbnails, disagreements, worst_errors
from tagcons.evaluate.report_groups import (
    RANK_METRIC,
    ReportGroup,
    best_marks,
    ranked,
    shared_baselines,
    test_row_groups,
)
from tagcons.evaluate.report_runs import RunView, load_runs, rows_note
from tagcons.evaluate.report_tables import (
    BASELINE_METRICS,
    CALIBRATION_METRICS,
    calibration_view,
    confusion_view,
    decoding_rows,
    difference_groups,
    summary_rows,
)
from tagcons.evaluate.rundir import AUDIT_JSON, write_text_staged
from tagcons.outputs import refuse_existing_file

log = logging.getLogger(__name__)

__all__ = ["ReportConfig", "render_report", "report_context", "write_report"]

TEMPLATE_PACKAGE, TEMPLATE_FOLDER, TEMPLATE_NAME = "tagcons.evaluate", "templates", "report.html.j2"


def run_section(run: RunView) -> dict:
    return {
        "name": run.name,
        "rows": rows_note(run),
        "n": len(run.predictions),
        "confusion": confusion_view(run),
        "distribution": distribution_png(run),
        "reliability": reliability_png(run),
        "calibration": calibration_view(run),
        "curves": curves_png(run),
        "decodings": decoding_rows(run),
        "decode": run.metrics.get("decode"),
    }


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, (float, np.floating)) else str(value)


def _signed(value, digits: int = 3) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def _environment():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, TEMPLATE_FOLDER),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _number
    environment.filters["signed"] = _signed
    return environment


def group_section(group: ReportGroup, config: ReportConfig, thumbnail) -> dict:
    """One test-row group: its forest plot, its baselines once, and the two best runs' disagreements."""
    marks = best_marks(group)
    baselines = shared_baselines(group)
    best_two = ranked(group)[:2] if len(group.runs) > 1 else None
    return {
        "label": group.label,
        "reason": group.reason,
        "names": [run.name for run in group.runs],
        "n": len(group.runs[0].predictions),
        "test_hash": group.runs[0].test_hash[:12],
        "forest": forest_uri(group, marks),
        "baselines": baselines,
        "marks": marks,
        "disagree": {
            "names": [run.name for run in best_two],
            "items": disagreements(*best_two, config.worst, thumbnail),
        }
        if best_two
        else None,
    }


def report_context(config: ReportConfig) -> dict:
    """Everything the template shows, as plain values."""
    runs = load_runs(config.run_dirs)
    category_of = category_function(config)
    thumbnail = Thumbnails(config.images)
    groups = test_row_groups(runs)
    sections = [group_section(group, config, thumbnail) for group in groups]
    marks = {name: mark for section in sections for name, mark in section["marks"].items()}
    labels = {name: section["label"] for section in sections for name in section["names"]}
    return {
        "metric_names": compare.METRIC_COLUMNS,
        "baseline_metrics": BASELINE_METRICS,
        "category_metrics": CATEGORY_METRICS,
        "calibration_metrics": CALIBRATION_METRICS,
        "summary": summary_rows(runs, marks, labels),
        "groups": sections,
        "rank_metric": RANK_METRIC,
        "paired_metrics": compare.PAIRED_METRICS,
        "differences": difference_groups(runs, [group.group for group in groups]),
        "runs": [run_section(run) for run in runs],
        "categories": category_rows(runs, category_of) if category_of else None,
        "category_source": config.category_from or config.category_col,
        "min_category_images": MIN_CATEGORY_IMAGES,
        "audits": audit_views(runs, config.audit),
        "exclusions": exclusion_rows(runs),
        "worst": [{"name": run.name, "items": worst_errors(run, config.worst, thumbnail)} for run in runs],
        "disagree": [section for section in sections if section["disagree"]],
        "has_images": config.images is not None,
        "thumbnail_px": THUMBNAIL_PX,
        "version": _version(),
    }


def _version() -> str:
    from tagcons import __version__

    return __version__


def render_report(config: ReportConfig) -> str:
    return _environment().get_template(TEMPLATE_NAME).render(**report_context(config))


def write_report(config: ReportConfig) -> Path:
    """Render the page and write it to ``config.out``; returns the path."""
    out = Path(config.out)
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: folder does not exist; create it or pick another --out")
    if config.images is not None and not Path(config.images).is_dir():
        raise BadInputError(f"{config.images}: images folder not found; check the --images path")
    _check_audit_folder(config.audit)
    refuse_existing_file(out, config.overwrite)
    html = render_report(config)
    write_text_staged(out, html, "--out")
    log.info("report: %s (%.1f MB)", out, len(html.encode("utf-8")) / 1e6)
    return out


def _check_audit_folder(folder: Path | None) -> None:
    if folder is None:
        return
    if not Path(folder).is_dir():
        raise BadInputError(f"{folder}: audit folder not found; check the --audit path")
    if not (Path(folder) / AUDIT_JSON).is_file():
        raise BadInputError(f"{folder}: holds no {AUDIT_JSON}; pass a folder written by `tagcons audit --out`")
