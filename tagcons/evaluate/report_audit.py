"""The report's audit section: what `tagcons audit` wrote (audit.json's counts and noise rates, audit.csv's
first flagged pairs) when a run folder holds an audit or `--audit DIR` names one, and each run's
`--exclude-pairs` record.

An audit's figures are out-of-fold over every pair of the pairs file it audited, not a run's test rows;
the section says so. Its files are read as the run's figures are (`report_runs.run_file`: regular files
only), and shown as escaped text.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pandas as pd

from tagcons.evaluate.report_runs import RunView, run_file
from tagcons.evaluate.rundir import AUDIT_CSV, AUDIT_JSON

log = logging.getLogger(__name__)

AUDIT_SHOWN = 10  # flagged pairs listed per audit
AUDIT_COLUMNS = ("rank", "image", "hashtag", "given_score", "suggested_score", "p_given", "expected_distance")


def audit_views(runs: list[RunView], folder: Path | None) -> list[dict]:
    """One view per audit found: in ``folder`` (``--audit``) and in each run folder, each folder once."""
    sources = ([(Path(folder), str(folder))] if folder is not None else []) + [(r.path, f"run {r.name}") for r in runs]
    seen, views = set(), []
    for path, source in sources:
        key = str(Path(path).resolve())
        if key in seen:
            continue
        seen.add(key)
        view = _audit_view(Path(path), source)
        if view is not None:
            views.append(view)
    return views


def _audit_view(folder: Path, source: str) -> dict | None:
    payload = run_file(folder, AUDIT_JSON)
    if payload is None:
        return None
    try:
        summary = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: not a JSON audit summary (%s); left out of the report", folder / AUDIT_JSON, e)
        return None
    if not isinstance(summary, dict):
        return None
    return {
        "source": source,
        "summary": summary,
        "noise": sorted((summary.get("noise_rate") or {}).items(), key=lambda item: _score_order(item[0])),
        "columns": AUDIT_COLUMNS,
        "top": _flagged(folder),
    }


def _score_order(score: str) -> tuple:
    try:
        return (0, float(score))
    except ValueError:
        return (1, score)


def _flagged(folder: Path) -> list[list]:
    payload = run_file(folder, AUDIT_CSV)
    if payload is None:
        return []
    try:
        frame = pd.read_csv(io.BytesIO(payload), dtype={"image": str, "hashtag": str}, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        log.warning("%s: not an audit table (%s); left out of the report", folder / AUDIT_CSV, e)
        return []
    if not set(AUDIT_COLUMNS) <= set(frame.columns):
        log.warning("%s: not an audit table (columns differ); left out of the report", folder / AUDIT_CSV)
        return []
    return frame.loc[:, list(AUDIT_COLUMNS)].head(AUDIT_SHOWN).values.tolist()


def exclusion_rows(runs: list[RunView]) -> list[dict]:
    """Runs fitted with `--exclude-pairs`: how many pairs the list named, and how many of them are test rows."""
    rows = []
    for run in runs:
        excluded = run.metrics.get("excluded_pairs")
        if isinstance(excluded, dict):
            rows.append(
                {"run": run.name, "listed": excluded.get("n_listed"), "in_test": excluded.get("n_listed_in_test")}
            )
    return rows
